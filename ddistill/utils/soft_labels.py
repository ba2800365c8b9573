"""Soft-label training from a teacher, as DD-Ranking defines it (NUS-HPC-AI-Lab/DD-Ranking v0.2.0, ``ddranking/loss``;
re-implemented, not copied).

The student learns from a teacher's logits instead of (or next to) the hard labels:

- ``kl``: ``KL(softmax(t / T) || softmax(s / T))`` averaged over the batch (``batchmean``), times ``T^2`` when
  ``scale_loss``;
- ``sce``: soft cross-entropy ``-sum_c softmax(t / T)_c log softmax(s / T)_c``, averaged over the batch, times
  ``T^2`` when ``scale_loss``;
- ``mse_gt``: ``mse_weight * MSE(s, t) + ce_weight * CE(s, y)`` on the raw logits and the hard labels.

Two label modes: ``fixed`` (DD-Ranking ``S``): one soft label per image, the teacher's logits on the unaugmented
image, stored once; ``relabel`` (DD-Ranking ``M``, SRe2L/RDED style): the teacher labels every augmented batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .perf import PerfConfig

__all__ = ["CRITERIA", "LABEL_MODES", "SoftLabelConfig", "soft_label_loss"]

#: DD-Ranking's soft-label criteria.
CRITERIA = ("kl", "sce", "mse_gt")
#: ``fixed`` = DD-Ranking's mode S, ``relabel`` = its mode M.
LABEL_MODES = ("fixed", "relabel")


@dataclass
class SoftLabelConfig:
    """How a student learns from a teacher's soft labels.

    Args:
        teacher: a ``ddistill.classifier`` file (:mod:`ddistill.classifier_file`); None = train one on the real
            training split with the evaluator's teacher recipe (same architecture as the student, as DD-Ranking's
            configs use).
        criterion: ``kl``, ``sce`` or ``mse_gt``.
        temperature: T of ``kl`` / ``sce`` (DD-Ranking's configs: 1 for DATM, 20-30 for SRe2L-style sets).
        scale_loss: multiply ``kl`` / ``sce`` by T^2.
        mse_weight, ce_weight: the two weights of ``mse_gt``.
        mode: ``fixed`` (one soft label per image, from the unaugmented image) or ``relabel`` (the teacher labels every
            augmented batch).
    """

    teacher: str | None = None
    criterion: str = "kl"
    temperature: float = 1.0
    scale_loss: bool = False
    mse_weight: float = 1.0
    ce_weight: float = 0.0
    mode: str = "relabel"

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown soft-label criterion '{self.criterion}'; choose from {list(CRITERIA)}")
        if self.mode not in LABEL_MODES:
            raise ValueError(f"unknown soft-label mode '{self.mode}'; choose from {list(LABEL_MODES)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def soft_label_loss(cfg: SoftLabelConfig) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """``loss(student_logits, teacher_logits, hard_labels)`` for ``cfg.criterion``. Shape: (B, K), (B, K), (B,)."""
    t = float(cfg.temperature)
    scale = t * t if cfg.scale_loss else 1.0

    def kl(s: Tensor, target: Tensor, y: Tensor | None) -> Tensor:
        return scale * F.kl_div(F.log_softmax(s.float() / t, 1), F.softmax(target.float().detach() / t, 1),
                                reduction="batchmean")

    def sce(s: Tensor, target: Tensor, y: Tensor | None) -> Tensor:
        return scale * -(F.softmax(target.float() / t, 1) * F.log_softmax(s.float() / t, 1)).sum(1).mean()

    def mse_gt(s: Tensor, target: Tensor, y: Tensor | None) -> Tensor:
        loss = cfg.mse_weight * F.mse_loss(s.float(), target.float())
        if cfg.ce_weight:
            if y is None:
                raise ValueError("soft-label criterion mse_gt with ce_weight > 0 needs hard labels")
            loss = loss + cfg.ce_weight * F.cross_entropy(s.float(), y)
        return loss

    return {"kl": kl, "sce": sce, "mse_gt": mse_gt}[cfg.criterion]


class TeacherBatchLoss:
    """``train_classifier(loss_fn=...)`` for soft-label training: augments the batch, gets the targets (stored soft
    labels in ``fixed`` mode, the teacher's logits on the augmented batch in ``relabel`` mode) and applies the
    criterion.

    Args:
        cfg: the soft-label protocol.
        teacher: the frozen teacher (eval mode), or None in ``fixed`` mode.
        augment: module called as ``augment(x, generator=g)``.
        generator: the training loop's generator.
        perf: speed settings.

    ``mse_gt``'s CE term uses the batch's hard labels in ``relabel`` mode and, in ``fixed`` mode (where the rows hold
    the stored soft labels), the teacher's own argmax.
    """

    def __init__(self, cfg: SoftLabelConfig, teacher: nn.Module | None, augment: nn.Module, generator: torch.Generator,
                 perf: PerfConfig) -> None:
        self.cfg, self.teacher, self.augment, self.generator, self.perf = cfg, teacher, augment, generator, perf
        self.criterion = soft_label_loss(cfg)

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor, epoch: int) -> Tensor:
        xa = self.perf.prepare_input(self.augment(xb, generator=self.generator))
        if self.cfg.mode == "relabel":
            with torch.no_grad(), self.perf.autocast(xb.device):
                target = self.teacher(xa).float()
            hard = yb if yb.dim() == 1 else yb.argmax(1)
        else:
            target, hard = yb, yb.argmax(1)
        with self.perf.autocast(xb.device):
            out = model(xa)
        return self.criterion(out, target, hard)
