"""Augmentations for dataset distillation: differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021) and
an identity, registered in :data:`AUGMENTS` under ``"dsa"`` and ``"none"``."""
from __future__ import annotations

from ddistill.augment import functional
from ddistill.augment.dsa import DIGIT_STRATEGY, DSA, FULL_STRATEGY, VALID_OPS, NoAugment, default_strategy
from ddistill.registry import Registry

AUGMENTS = Registry("augmentation")
AUGMENTS.register("dsa")(DSA)
AUGMENTS.register("none")(NoAugment)

__all__ = [
    "AUGMENTS",
    "DSA",
    "NoAugment",
    "default_strategy",
    "FULL_STRATEGY",
    "DIGIT_STRATEGY",
    "VALID_OPS",
    "functional",
]
