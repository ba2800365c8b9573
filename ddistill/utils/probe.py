"""Frozen-feature evaluation: batched feature extraction and a linear probe (multinomial logistic regression on
frozen features), used to score teachers and pre-trained backbones (KRR-ST's transfer protocol, ``selfsup_dd``
``algorithms/linear_eval.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .seed import make_generator, seeded_rng
from .train import TrainRecipe, predict, train_classifier

__all__ = ["LinearProbeConfig", "extract_features", "linear_probe"]


@dataclass
class LinearProbeConfig:
    """Logistic regression on frozen features (defaults: ``selfsup_dd`` ``algorithms/linear_eval.py``).

    Args:
        iterations: SGD steps.
        lr: initial learning rate (cosine-annealed to 0).
        momentum: SGD momentum.
        weight_decay: L2 on the linear layer.
        batch_size: features per step.
        standardize: z-score features with the train statistics first (an invertible affine map, so the model
            class is unchanged; it only conditions SGD -- the official code does not do it).
    """

    iterations: int = 5000
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 512
    standardize: bool = True

    def recipe(self) -> TrainRecipe:
        """The probe's SGD as a :class:`TrainRecipe` (a fixed number of steps, cosine, no augmentation)."""
        return TrainRecipe(iterations=self.iterations, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, batch_size=self.batch_size, schedule="cosine",
                           augment="none")


def extract_features(encoder: nn.Module | Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int = 1024,
                     device: torch.device | str = "cpu") -> Tensor:
    """``encoder(x)`` in eval mode, batched, on ``device``. Shape: (N, C, H, W) -> (N, D) float32."""
    return predict(encoder, x, batch_size=batch_size, device=device)


def linear_probe(
    encoder: nn.Module | Callable[[Tensor], Tensor],
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    progress: bool = False,
) -> float:
    """Top-1 test accuracy (%) of multinomial logistic regression on frozen ``encoder`` features.

    Features are computed once (eval mode, no augmentation); a linear layer is trained by SGD with momentum and a
    cosine schedule on mini-batches of them (``selfsup_dd`` ``linear_eval.py`` recipe).

    Args:
        encoder: maps encoded images to vectors (a module, or e.g. ``net.embed``).
        train: ``(x, y)`` encoded training images and int64 labels.
        test: ``(x, y)`` encoded test images and labels.
        config: probe hyper-parameters.
        num_classes: number of classes (None = from the labels).
        generator: CPU generator for the initialisation and batch order.
        device: where features and the probe live.
        batch_size: feature-extraction batch size.
        progress: progress bar over the SGD steps.

    Shape:
        train/test x: (N, C, H, W); y: (N,).
    """
    cfg = config or LinearProbeConfig()
    device = torch.device(device)
    f_tr = extract_features(encoder, train[0], batch_size=batch_size, device=device)
    f_te = extract_features(encoder, test[0], batch_size=batch_size, device=device)
    y_tr, y_te = train[1].to(device), test[1].to(device)
    if cfg.standardize:
        mean, std = f_tr.mean(0, keepdim=True), f_tr.std(0, keepdim=True).clamp_min(1e-6)
        f_tr, f_te = (f_tr - mean) / std, (f_te - mean) / std
    k = int(num_classes or int(max(int(y_tr.max()), int(y_te.max()))) + 1)
    generator = generator or make_generator(0)
    with seeded_rng(int(torch.randint(2**62, (1,), generator=generator))):
        linear = nn.Linear(f_tr.shape[1], k)
    linear = linear.to(device)
    train_classifier(linear, f_tr, y_tr, cfg.recipe(), generator=generator,
                     progress="linear probe" if progress else False)
    with torch.no_grad():
        pred = linear(f_te).argmax(1)
    return 100.0 * (pred == y_te).float().mean().item()
