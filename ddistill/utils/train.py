"""Training and testing loops shared by evaluators, baselines and expert training.

The loop follows DC's ``evaluate_synset``/``epoch`` (Zhao et al., ICLR 2021): SGD with momentum and
weight decay, one x0.1 learning-rate step, DSA applied to every training batch with fresh per-sample
parameters. DC's implicit details are explicit arguments here: the number of epochs actually run, the
epoch at which the rate drops, and whether the optimiser (and its momentum) is rebuilt at the drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .perf import PerfConfig

LossFn = Callable[[Tensor, Tensor], Tensor]
#: ``batch_loss(model, xb, yb, epoch) -> loss`` on the *unaugmented* batch: owns augmentation, forward and criterion.
BatchLossFn = Callable[[nn.Module, Tensor, Tensor, int], Tensor]


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy against a probability vector per sample. Shape: logits, target (B, K) -> ()."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def criterion_for(labels: str) -> LossFn:
    """The training loss for a label kind: ``hard`` (CE), ``soft`` (soft CE), ``regression`` (MSE)."""
    table: dict[str, LossFn] = {
        "hard": lambda out, y: F.cross_entropy(out.float(), y),
        "soft": soft_cross_entropy,
        "regression": lambda out, y: F.mse_loss(out.float(), y),
    }
    if labels not in table:
        raise ValueError(f"unknown label kind '{labels}'; choose from {sorted(table)}")
    return table[labels]


@dataclass
class TrainSchedule:
    """SGD recipe.

    Args:
        epochs: epochs actually run (DC's ``Epoch=1000`` runs 1001: set 1001 to mirror it exactly).
        lr: initial learning rate.
        momentum, weight_decay: SGD settings.
        batch_size: mini-batch size.
        lr_decay_epoch: epochs from this index on use ``lr * lr_decay``; None = ``epochs // 2``
            (DC: ``Epoch // 2 + 1``); -1 = never.
        lr_decay: multiplicative factor at the drop.
        rebuild_optimizer_at_decay: DC builds a new SGD at the drop, which discards momentum.
    """

    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    lr_decay_epoch: int | None = None
    lr_decay: float = 0.1
    rebuild_optimizer_at_decay: bool = True

    def decay_epoch(self) -> int:
        if self.lr_decay_epoch is None:
            return self.epochs // 2
        return self.lr_decay_epoch


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    schedule: TrainSchedule,
    *,
    augment: nn.Module | None = None,
    criterion: LossFn | None = None,
    generator: torch.Generator | None = None,
    perf: PerfConfig | None = None,
    progress: bool | str = False,
    on_epoch_end: Callable[[int, float], None] | None = None,
    loss_fn: BatchLossFn | None = None,
) -> float:
    """Trains ``model`` in place on (x, y); returns the mean loss of the last epoch.

    Args:
        model: the network (already on x's device).
        x: inputs (N, C, H, W) (or (N, D) for MLP-like data), encoded.
        y: targets: (N,) long, or (N, K) float for soft/regression labels.
        augment: called as ``augment(xb, generator=generator)`` on every batch (fresh per-sample params).
        criterion: loss(out, y); default cross-entropy.
        generator: CPU generator for shuffling and augmentation.
        perf: memory-format / autocast settings (already resolved).
        progress: show a tqdm bar over epochs (a string becomes its description).
        on_epoch_end: hook ``(epoch, mean_loss)``, e.g. for expert trajectory snapshots.
        loss_fn: optional ``loss_fn(model, xb, yb, epoch) -> loss`` replacing augmentation, forward and criterion
            for each batch ``xb`` as drawn (unaugmented). Expert training uses it for AST's epoch-dependent
            clipping factor and its gradient penalty on the clean input. It must draw any randomness from
            ``generator``; mutually exclusive with ``augment`` and ``criterion``.
    """
    if loss_fn is not None and (augment is not None or criterion is not None):
        raise ValueError("train_classifier: pass either loss_fn or augment/criterion, not both (loss_fn owns the "
                         "augmentation and the criterion of each batch)")
    perf = perf or PerfConfig(False, False)
    criterion = criterion or (lambda out, t: F.cross_entropy(out.float(), t))
    device = x.device
    n = x.shape[0]
    lr = schedule.lr

    def new_optimizer(rate: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=rate, momentum=schedule.momentum,
                               weight_decay=schedule.weight_decay)

    opt = new_optimizer(lr)
    decay_at = schedule.decay_epoch()
    model.train()
    last = float("nan")
    bar = tqdm(range(schedule.epochs), desc=progress if isinstance(progress, str) else "train",
               disable=not progress, leave=False, mininterval=1.0)
    for epoch in bar:
        if epoch == decay_at and decay_at >= 0:
            lr *= schedule.lr_decay
            if schedule.rebuild_optimizer_at_decay:
                opt = new_optimizer(lr)
            else:
                for group in opt.param_groups:
                    group["lr"] = lr
        order = torch.randperm(n, generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, n, schedule.batch_size):
            idx = order[start : start + schedule.batch_size]
            xb, yb = x[idx], y[idx]
            if loss_fn is not None:
                loss = loss_fn(model, xb, yb, epoch)
            else:
                if augment is not None:
                    xb = augment(xb, generator=generator)
                xb = perf.prepare_input(xb)
                with perf.autocast(device):
                    out = model(xb)
                loss = criterion(out, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}; lower the learning rate ({lr}) "
                    f"or check the inputs for NaN"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            count += idx.numel()
        last = total / max(count, 1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, last)
    return last


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, *, batch_size: int = 1024, perf: PerfConfig | None = None) -> Tensor:
    """Model outputs for all of ``x`` in eval mode. Shape: (N, ...) -> (N, K) float32."""
    perf = perf or PerfConfig(False, False)
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, x.shape[0], batch_size):
        xb = perf.prepare_input(x[start : start + batch_size])
        with perf.autocast(x.device):
            outs.append(model(xb).float())
    model.train(was_training)
    return torch.cat(outs)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024, perf: PerfConfig | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on (x, y)."""
    pred = predict(model, x, batch_size=batch_size, perf=perf).argmax(1)
    return (pred == y.to(pred.device)).float().mean().item()
