"""K networks trained in one vectorised pass (``torch.func.stack_module_state`` + ``vmap``), step for step the same
procedure as K calls of :func:`ddistill.utils.train.train_classifier`.

Every network keeps its own generator: its epoch permutations and its augmentation draws are taken from it in exactly
the order the sequential loop takes them, so each network sees the same batches, the same augmented images and
starts from the same weights as it would alone. The K forward/backward passes run as one batched computation
(functorch turns a convolution over stacked weights into one grouped convolution); the optimiser updates the stacked
parameters element-wise, which is each network's own update. Results match the sequential loop up to the
floating-point order of the batched kernels (not bit for bit).

Not supported (the caller falls back to the sequential loop): batch normalisation (its running statistics are
updated in place, which ``vmap`` cannot batch), ``iterations`` mode, per-batch loss functions (soft-label
teachers) and the channels-last / bf16 / compile speed settings (the batched pass is its own speed path).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .progress import progress_bar
from .train import TrainRecipe, cosine_lr, step_decay

__all__ = ["batchable", "train_classifiers_batched"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def batchable(model: nn.Module, recipe: TrainRecipe) -> str | None:
    """None when :func:`train_classifiers_batched` can train ``model`` with ``recipe``, else the reason it cannot."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "batch normalisation updates running statistics in place"
    if recipe.iterations is not None:
        return "iterations mode"
    if isinstance(recipe.lr, str):
        return f"non-numeric learning rate {recipe.lr!r}"
    return None


def train_classifiers_batched(
    models: Sequence[nn.Module],
    xs: Sequence[Tensor],
    ys: Sequence[Tensor],
    recipe: TrainRecipe,
    *,
    generators: Sequence[torch.Generator],
    augment: nn.Module | None = None,
    criterion: LossFn | None = None,
    progress: bool | str = False,
    on_epoch_end: Callable[[int, list[float]], None] | None = None,
) -> list[float]:
    """Trains ``models`` in place, network ``i`` on ``(xs[i], ys[i])`` with ``generators[i]``; returns each network's
    mean loss over its last epoch.

    Args:
        models: K networks of one architecture (their weights differ), on one device.
        xs, ys: per-network training data, all of the same length N. Shape: (N, C, H, W), (N,) or (N, K').
        recipe: as for ``train_classifier`` (``epochs`` mode).
        generators: one CPU generator per network (shuffling and augmentation).
        augment: called as ``augment(xb, generator=g)`` per network and batch.
        criterion: ``loss(out, y)`` (mean over the batch); default cross-entropy.
        progress: a progress bar (a string is its label).
        on_epoch_end: ``(epoch, losses)`` after every epoch, with ``models`` holding the current weights.
    """
    k = len(models)
    if not (k == len(xs) == len(ys) == len(generators)) or k == 0:
        raise ValueError(f"train_classifiers_batched: {k} models, {len(xs)} inputs, {len(ys)} targets and "
                         f"{len(generators)} generators must match and be > 0")
    reason = batchable(models[0], recipe)
    if reason:
        raise ValueError(f"these networks cannot be trained batched: {reason}")
    n = int(xs[0].shape[0])
    if any(int(x.shape[0]) != n for x in xs):
        raise ValueError("train_classifiers_batched: every network needs the same number of training samples")
    criterion = criterion or (lambda out, t: F.cross_entropy(out.float(), t))
    device = xs[0].device
    for m in models:
        m.train()
    params, buffers = stack_module_state(list(models))
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    batched_forward = vmap(forward, in_dims=(0, 0, 0), randomness="different")
    leaves = list(params.values())
    lr = float(recipe.lr)

    def new_optimizer(rate: float, momentum: float | None = None) -> torch.optim.Optimizer:
        return recipe.make_optimizer(leaves, rate, momentum=momentum)

    def write_back() -> None:
        with torch.no_grad():
            for name, stacked in params.items():
                for i, m in enumerate(models):
                    m.get_parameter(name).copy_(stacked[i])

    opt = new_optimizer(lr)
    decay_at = recipe.decay_epoch()
    steps_per_epoch = math.ceil(n / recipe.batch_size) if n else 0
    total_steps = steps_per_epoch * recipe.epochs
    last = [float("nan")] * k
    step = 0
    for epoch in progress_bar(range(recipe.epochs), enabled=progress or False, leave=False,
                              desc=progress if isinstance(progress, str) else "train (batched)"):
        lr, opt = step_decay(recipe, epoch, decay_at, lr, opt, new_optimizer)
        # Each network draws its permutation from its own generator, as the sequential loop does at this point.
        orders = [torch.randperm(n, generator=g).to(device) for g in generators]
        totals = [0.0] * k
        count = 0
        for start in range(0, n, recipe.batch_size):
            if recipe.schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(step, total_steps, float(recipe.lr))
            batches, targets = [], []
            for i in range(k):
                idx = orders[i][start : start + recipe.batch_size]
                xb = xs[i][idx]
                batches.append(augment(xb, generator=generators[i]) if augment is not None else xb)
                targets.append(ys[i][idx])
            out = batched_forward(params, buffers, torch.stack(batches))
            losses = [criterion(out[i], targets[i]) for i in range(k)]
            loss = torch.stack(losses).sum()  # networks are independent: each gets its own mean-loss gradient
            if not torch.isfinite(loss):
                bad = [i for i, v in enumerate(losses) if not torch.isfinite(v)]
                raise FloatingPointError(f"training loss became non-finite for network(s) {bad} at epoch {epoch}; "
                                         f"lower the learning rate ({opt.param_groups[0]['lr']:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = int(batches[0].shape[0])
            for i in range(k):
                totals[i] += float(losses[i].detach()) * b
            count += b
            step += 1
        last = [t / max(count, 1) for t in totals]
        if on_epoch_end is not None:
            write_back()
            on_epoch_end(epoch, last)
    write_back()
    return last
