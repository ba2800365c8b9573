"""Selecting classes of an image dataset (``dataset.classes``), shared by the in-RAM and the memory-mapped paths."""
from __future__ import annotations

from dataclasses import replace

import torch

from .info import DatasetInfo, ImageData

__all__ = ["class_lookup", "select_classes"]


def class_lookup(info: DatasetInfo, classes: list[int], *, where: str = "dataset") -> tuple[torch.Tensor, DatasetInfo]:
    """(old label -> new label, -1 for dropped classes; the info of the selection, names following). Shape: lookup
    (K,) int64."""
    k = info.num_classes
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise ValueError(f"{where}: dataset.classes {bad} out of range; it has classes 0..{k - 1}")
    lookup = torch.full((k,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    names = info.class_names
    names = tuple(names[c] for c in classes) if names else ()
    return lookup, replace(info, num_classes=len(classes), class_names=names)


def select_classes(data: ImageData, classes: list[int], *, where: str = "dataset") -> ImageData:
    """The images of ``classes`` only, relabelled ``classes[i] -> i`` (names follow). Shape: x (N', C, H, W)."""
    lookup, info = class_lookup(data.info, classes, where=where)
    new_y = lookup[data.y]
    keep = (new_y >= 0).nonzero().squeeze(1)
    return ImageData(data.x[keep], new_y[keep], info)
