"""The ``kcenter`` baseline: per class, greedy k-center (farthest-point) selection in feature space
(Sener & Savarese 2018), the first center being the image nearest the class mean."""
from __future__ import annotations

import torch
from torch import Tensor

from ._selection import CoresetSynthesizer
from .base import SYNTHESIZERS


def kcenter_select(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` greedy k-centers: repeatedly add the point farthest from the chosen set.

    Starts from the point nearest the mean (deterministic, unlike a random first center).

    Shape: features (n, D) -> (k,) long.
    """
    first = int(((features - features.mean(0)) ** 2).sum(1).argmin())
    picked = [first]
    mind = ((features - features[first]) ** 2).sum(1)
    for _ in range(1, k):
        i = int(mind.argmax())
        picked.append(i)
        mind = torch.minimum(mind, ((features - features[i]) ** 2).sum(1))
    return torch.tensor(picked, dtype=torch.long)


@SYNTHESIZERS.register("kcenter")
class KCenter(CoresetSynthesizer):
    select = staticmethod(kcenter_select)
