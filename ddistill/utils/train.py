"""The one training recipe type (:class:`TrainRecipe`) and the loop that runs it, shared by every evaluator, the
coreset baselines, expert training and the linear probe.

The loop follows DC's ``evaluate_synset``/``epoch`` (Zhao et al., ICLR 2021): SGD with momentum and weight decay, one
x0.1 learning-rate step, augmentation applied to every training batch with fresh per-sample parameters. DC's implicit
details are explicit fields here: the number of epochs actually run, the epoch at which the rate drops, and whether
the optimiser (and its momentum) is rebuilt at the drop. The same loop also runs a fixed number of SGD steps with a
cosine schedule (KRR-ST's fine-tuning and linear probe).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .perf import PerfConfig
from .progress import progress_bar

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "TrainRecipe", "accuracy", "cosine_lr", "criterion_for", "predict",
           "soft_cross_entropy", "step_decay", "train_classifier"]

LossFn = Callable[[Tensor, Tensor], Tensor]
#: ``batch_loss(model, xb, yb, epoch) -> loss`` on the *unaugmented* batch: owns augmentation, forward and criterion.
BatchLossFn = Callable[[nn.Module, Tensor, Tensor, int], Tensor]

#: Learning-rate schedules of :class:`TrainRecipe`.
LR_SCHEDULES = ("step", "cosine", "constant")
#: Optimisers of :class:`TrainRecipe` (``momentum`` applies to SGD only).
OPTIMIZERS = ("sgd", "adam", "adamw")


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


def cosine_lr(step: int, total: int, base: float, final: float = 0.0) -> float:
    """Cosine annealing from ``base`` at step 0 to ``final`` at step ``total`` (``CosineAnnealingLR(T_max=total)``
    stepped after every step)."""
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


@dataclass
class TrainRecipe:
    """How a network is trained: the recipe nested in every evaluator config (``train:``, ``pretrain:``,
    ``finetune:``) and in the expert config. Defaults: DC's evaluation (SGD 0.01, momentum 0.9, wd 5e-4, batch 256,
    x0.1 at half, DSA).

    Args:
        epochs: epochs actually run (DC's ``Epoch=1000`` runs 1001: set 1001 to mirror it exactly).
        iterations: run this many SGD steps instead (the data reshuffled at every epoch boundary; the last batch of
            an epoch may be smaller); None = ``epochs`` whole epochs.
        lr: initial learning rate, or ``"learned"`` where the evaluated set stores a learned rate (trajectory
            matching; the classifier evaluator reads it).
        momentum, weight_decay: optimiser settings (momentum: SGD only).
        batch_size: mini-batch size.
        optimizer: ``"sgd"`` (the papers' evaluation), ``"adam"`` or ``"adamw"`` (e.g. the GNNs of the graph
            evaluator).
        schedule: ``"step"`` (one x``lr_decay`` drop at ``lr_decay_at``), ``"cosine"`` (annealed to 0 over all
            steps, per step) or ``"constant"``.
        lr_decay_at: with ``schedule="step"``, the first epoch trained with the decayed rate: an epoch index,
            ``"half"`` (= epochs // 2), ``"half+N"`` (= epochs // 2 + N; AST's experts use ``half+2``) or ``"never"``.
        lr_decay: factor of the drop.
        rebuild_optimizer_at_decay: DC builds a new SGD at the drop, which discards momentum; False keeps it
            (``MultiStepLR``).
        momentum_after_decay: the momentum of the optimiser rebuilt at the drop (AST's evaluation: 0.8); None = the
            same ``momentum``.
        augment: augmentation of every training batch: ``"dsa"``, ``"none"``, ``"pad_crop_flip"``, or a mapping
            ``{name: dsa, strategy: ..., scale: 1.2, ...}`` with the augmentation's arguments (see
            :func:`ddistill.augment.build_augment`). DSA's strategy defaults to the dataset's.
    """

    epochs: int = 1000
    iterations: int | None = None
    lr: float | str = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    optimizer: str = "sgd"
    schedule: str = "step"
    lr_decay_at: int | str = "half"
    lr_decay: float = 0.1
    rebuild_optimizer_at_decay: bool = True
    momentum_after_decay: float | None = None
    augment: str | dict[str, Any] = "dsa"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}'; choose from {list(OPTIMIZERS)}")
        if self.schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; choose from {list(LR_SCHEDULES)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.iterations is not None and self.iterations < 0:
            raise ValueError(f"iterations must be >= 0 or null, got {self.iterations}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.lr, str) and self.lr != "learned":
            raise ValueError(f"lr must be a number or 'learned', not {self.lr!r}")
        self.decay_epoch()  # validates lr_decay_at

    def decay_epoch(self) -> int | None:
        """First epoch index trained with ``lr * lr_decay`` (None: no drop)."""
        at = self.lr_decay_at
        if self.schedule != "step" or at == "never" or self.lr_decay == 1.0:
            return None
        if isinstance(at, int) and not isinstance(at, bool):
            return at
        if isinstance(at, str) and at.replace(" ", "").startswith("half"):
            rest = at.replace(" ", "")[4:]
            try:
                return self.epochs // 2 + (int(rest) if rest else 0)
            except ValueError:
                pass
        raise ValueError(f"lr_decay_at must be an epoch index, 'half', 'half+N' or 'never', not {at!r}")

    def make_optimizer(self, params: Any, lr: float | None = None, *, momentum: float | None = None
                       ) -> torch.optim.Optimizer:
        """The recipe's optimiser over ``params`` at ``lr`` (default: the recipe's) and ``momentum`` (SGD; default:
        the recipe's)."""
        rate = float(self.lr if lr is None else lr)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=rate, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=rate, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=rate, momentum=self.momentum if momentum is None else momentum,
                               weight_decay=self.weight_decay)

    def with_lr(self, lr: float) -> "TrainRecipe":
        """A copy with a numeric learning rate (e.g. the set's learned one)."""
        return replace(self, lr=float(lr))


def step_decay(recipe: TrainRecipe, epoch: int, decay_at: int | None, lr: float, opt: torch.optim.Optimizer,
               new_optimizer: Callable[[float, float | None], torch.optim.Optimizer]
               ) -> tuple[float, torch.optim.Optimizer]:
    """The recipe's step decay at the start of ``epoch``: ``(lr, opt)`` unchanged before ``decay_at``; at it, the rate
    times ``lr_decay`` and either a new optimiser (the official codes rebuild SGD, dropping momentum, optionally with
    ``momentum_after_decay``) or the same one with its groups' rate changed (momentum kept, as ``StepLR``)."""
    if decay_at is None or epoch != decay_at or decay_at < 0:
        return lr, opt
    lr *= recipe.lr_decay
    if recipe.rebuild_optimizer_at_decay:
        return lr, new_optimizer(lr, recipe.momentum_after_decay)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr, opt


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    recipe: TrainRecipe,
    *,
    augment: nn.Module | None = None,
    criterion: LossFn | None = None,
    generator: torch.Generator | None = None,
    perf: PerfConfig | None = None,
    progress: bool | str = False,
    on_epoch_end: Callable[[int, float], None] | None = None,
    loss_fn: BatchLossFn | None = None,
) -> float:
    """Trains ``model`` in place on (x, y) with ``recipe``; returns the mean loss of the last epoch (or of the
    last ``len(x) / batch_size`` steps in iterations mode).

    Args:
        model: the network (already on x's device).
        x: inputs (N, C, H, W) (or (N, D) for features), encoded.
        y: targets: (N,) long, or (N, K) float for soft/regression labels.
        recipe: the SGD recipe (its ``lr`` must be a number here; its ``augment`` spec is built by the caller).
        augment: called as ``augment(xb, generator=generator)`` on every batch (fresh per-sample params).
        criterion: loss(out, y); default cross-entropy.
        generator: CPU generator for shuffling and augmentation.
        perf: memory-format / autocast settings (already resolved).
        progress: a progress bar (a string is its label; drawn only on a terminal).
        on_epoch_end: hook ``(epoch, mean_loss)`` after every whole epoch, e.g. for expert trajectory snapshots.
        loss_fn: optional ``loss_fn(model, xb, yb, epoch) -> loss`` replacing augmentation, forward and criterion
            for each batch ``xb`` as drawn (unaugmented). Expert training uses it for AST's epoch-dependent
            clipping factor and its gradient penalty on the clean input. It must draw any randomness from
            ``generator``; mutually exclusive with ``augment`` and ``criterion``.
    """
    if loss_fn is not None and (augment is not None or criterion is not None):
        raise ValueError("train_classifier: pass either loss_fn or augment/criterion, not both (loss_fn owns the "
                         "augmentation and the criterion of each batch)")
    if isinstance(recipe.lr, str):
        raise ValueError(f"train_classifier needs a numeric learning rate, got {recipe.lr!r} (resolve 'learned' from "
                         f"the set first)")
    perf = perf or PerfConfig(False, False)
    criterion = criterion or (lambda out, t: F.cross_entropy(out.float(), t))
    device = x.device
    n = x.shape[0]
    lr = float(recipe.lr)

    def new_optimizer(rate: float, momentum: float | None = None) -> torch.optim.Optimizer:
        return recipe.make_optimizer(model.parameters(), rate, momentum=momentum)

    def batch_loss(xb: Tensor, yb: Tensor, epoch: int) -> Tensor:
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
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; lower the learning rate "
                                     f"({opt.param_groups[0]['lr']:g}) or check the inputs for NaN")
        return loss

    opt = new_optimizer(lr)
    model.train()
    if recipe.iterations is not None:
        return _train_iterations(recipe, n, opt, batch_loss, x, y, generator, progress)

    decay_at = recipe.decay_epoch()
    steps_per_epoch = math.ceil(n / recipe.batch_size) if n else 0
    total_steps = steps_per_epoch * recipe.epochs
    last = float("nan")
    step = 0
    for epoch in progress_bar(range(recipe.epochs), enabled=progress or False, leave=False,
                              desc=progress if isinstance(progress, str) else "train"):
        lr, opt = step_decay(recipe, epoch, decay_at, lr, opt, new_optimizer)
        order = torch.randperm(n, generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, n, recipe.batch_size):
            if recipe.schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(step, total_steps, float(recipe.lr))
            idx = order[start : start + recipe.batch_size]
            loss = batch_loss(x[idx], y[idx], epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            count += idx.numel()
            step += 1
        last = total / max(count, 1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, last)
    return last


def _train_iterations(recipe: TrainRecipe, n: int, opt: torch.optim.Optimizer,
                      batch_loss: Callable[[Tensor, Tensor, int], Tensor], x: Tensor, y: Tensor,
                      generator: torch.Generator | None, progress: bool | str) -> float:
    """``recipe.iterations`` SGD steps over per-epoch shuffles (``selfsup_dd``'s infinite loader): the lr is set before
    every step (cosine or constant); a new permutation is drawn whenever the previous one is used up."""
    total = int(recipe.iterations or 0)
    base = float(recipe.lr)
    order, cursor, epoch = torch.randperm(n, generator=generator), 0, 0
    recent: list[float] = []
    window = max(1, math.ceil(n / recipe.batch_size))
    for it in progress_bar(range(total), enabled=progress or False, leave=False,
                           desc=progress if isinstance(progress, str) else "train"):
        if recipe.schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = cosine_lr(it, total, base)
        if cursor >= n:
            order, cursor, epoch = torch.randperm(n, generator=generator), 0, epoch + 1
        idx = order[cursor : cursor + recipe.batch_size].to(x.device)
        cursor += recipe.batch_size
        loss = batch_loss(x[idx], y[idx], epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent = (recent + [float(loss.detach())])[-window:]
    return sum(recent) / len(recent) if recent else float("nan")


@torch.no_grad()
def predict(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int = 1024,
            perf: PerfConfig | None = None, device: torch.device | str | None = None) -> Tensor:
    """Outputs of ``model`` (a module, or a bound method such as ``net.embed``) for all of ``x`` in eval mode,
    batched; the module's train/eval mode is restored afterwards.

    Shape: (N, ...) -> (N, K) float32 (flattened to 2-d).
    """
    perf = perf or PerfConfig(False, False)
    module = model if isinstance(model, nn.Module) else getattr(model, "__self__", None)
    was_training = module.training if isinstance(module, nn.Module) else None
    if isinstance(module, nn.Module):
        module.eval()
    outs = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        if device is not None:
            xb = xb.to(device)
        xb = perf.prepare_input(xb)
        with perf.autocast(xb.device):
            outs.append(model(xb).float().flatten(1))
    if isinstance(module, nn.Module) and was_training is not None:
        module.train(was_training)
    return torch.cat(outs)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024, perf: PerfConfig | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on (x, y)."""
    pred = predict(model, x, batch_size=batch_size, perf=perf).argmax(1)
    return (pred == y.to(pred.device)).float().mean().item()
