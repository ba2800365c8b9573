"""Augmentations, registered in :data:`AUGMENTS`: differentiable siamese augmentation (``dsa``; Zhao & Bilen, ICML
2021), random crop with padding plus flip (``pad_crop_flip``), DD-Ranking's batch mixing (``mixup``, ``cutmix``) and
the identity (``none``). ZCA is part of the data's encoding (``dataset.zca``), not an augmentation.

Every augmentation is an ``nn.Module`` called as ``aug(x, generator=g)`` with fresh per-sample parameters drawn from
``g``; DSA also takes sampled parameters (``aug(x, params)``) for siamese use.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ddistill.augment import functional
from ddistill.augment.crop_flip import RandomPadCropFlip, black_level
from ddistill.augment.dsa import DIGIT_STRATEGY, DSA, FULL_STRATEGY, VALID_OPS, NoAugment, default_strategy
from ddistill.augment.mix import CutMix, Mixup
from ddistill.registry import Registry

AUGMENTS = Registry("augmentation")
AUGMENTS.register("dsa")(DSA)
AUGMENTS.register("none")(NoAugment)
AUGMENTS.register("pad_crop_flip")(RandomPadCropFlip)
AUGMENTS.register("mixup")(Mixup)
AUGMENTS.register("cutmix")(CutMix)


def build_augment(spec: str | Mapping[str, Any] | None, dataset: str = "", strategy: str | None = None, *,
                  encoding: Any = None) -> nn.Module:
    """The augmentation ``spec``: a registry name (``"dsa"``, ``"none"``, ``"pad_crop_flip"``) or a mapping
    ``{name: ..., **constructor arguments}`` (e.g. ``{name: dsa, strategy: crop_flip, scale: 1.3}``).

    DSA's strategy is the mapping's ``strategy``, else ``strategy``, else the dataset's default (no flip for digit
    datasets, as the DC authors do). ``pad_crop_flip`` pads with the encoded black level of ``encoding`` (a
    :class:`~ddistill.data.Encoding`) unless the mapping gives ``fill``. Unknown names raise a KeyError listing the
    choices; unknown arguments a ValueError naming them.
    """
    if spec is None:
        spec = "none"
    kwargs: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        if "name" not in kwargs:
            raise ValueError(f"augmentation spec {dict(spec)} needs a name; choose from {AUGMENTS.names()}")
        spec = kwargs.pop("name")
    cls = AUGMENTS.get(spec)
    if cls is DSA:
        kwargs["strategy"] = kwargs.get("strategy") or strategy or default_strategy(dataset)
    if cls is RandomPadCropFlip and "fill" not in kwargs and encoding is not None:
        kwargs["fill"] = black_level(encoding)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"augmentation '{spec}': {e}") from None


__all__ = [
    "AUGMENTS",
    "build_augment",
    "DSA",
    "NoAugment",
    "RandomPadCropFlip",
    "Mixup",
    "CutMix",
    "black_level",
    "default_strategy",
    "FULL_STRATEGY",
    "DIGIT_STRATEGY",
    "VALID_OPS",
    "functional",
]
