"""The ``herding`` baseline: per class, greedily pick the real images whose running feature mean best
tracks the class mean (Welling 2009; the iCaRL exemplar rule, Rebuffi et al. 2017)."""
from __future__ import annotations

import torch
from torch import Tensor

from ._selection import CoresetSynthesizer
from .base import SYNTHESIZERS


def herding_select(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` herding exemplars.

    At step t picks argmin_i || mu - (S_{t-1} + f_i) / t || over unpicked i, where mu is the class mean
    and S the sum of picked features.

    Shape: features (n, D) -> (k,) long.
    """
    mu = features.mean(0)
    picked: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        dist = ((mu - (running + features) / t) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        picked.append(i)
        available[i] = False
        running += features[i]
    return torch.tensor(picked, dtype=torch.long)


@SYNTHESIZERS.register("herding")
class Herding(CoresetSynthesizer):
    select = staticmethod(herding_select)
