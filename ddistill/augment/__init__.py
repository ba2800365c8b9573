"""Augmentations for dataset distillation: differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021) and
an identity, registered in :data:`AUGMENTS` under ``"dsa"`` and ``"none"``."""
from __future__ import annotations

from ddistill.augment import functional
from ddistill.augment.dsa import DIGIT_STRATEGY, DSA, FULL_STRATEGY, VALID_OPS, NoAugment, default_strategy
from ddistill.registry import Registry

AUGMENTS = Registry("augmentation")
AUGMENTS.register("dsa")(DSA)
AUGMENTS.register("none")(NoAugment)


def build_augment(name: str, dataset: str = "", strategy: str | None = None):
    """The augmentation ``name`` ("dsa" or "none"); DSA uses ``strategy`` or the dataset's default (no flip
    for digit datasets, as the DC authors do). Unknown names raise a KeyError listing the choices."""
    cls = AUGMENTS.get(name)
    if cls is DSA:
        return cls(strategy=strategy or default_strategy(dataset))
    return cls()

__all__ = [
    "AUGMENTS",
    "build_augment",
    "DSA",
    "NoAugment",
    "default_strategy",
    "FULL_STRATEGY",
    "DIGIT_STRATEGY",
    "VALID_OPS",
    "functional",
]
