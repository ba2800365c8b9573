"""The ``herding`` baseline: per class, greedily pick the real images whose running feature mean best
tracks the class mean (Welling 2009; the iCaRL exemplar rule, Rebuffi et al. 2017)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from ddistill.data import RealData
from ddistill.synset import SyntheticSet

from ._selection import EmbeddingConfig, embed_real, selection_set
from .base import SYNTHESIZERS, Callback, Synthesizer


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


@dataclass
class HerdingConfig:
    """Args:
        ipc: images per class.
        embedding: the network whose features are herded.
    """

    ipc: int = 10
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)


@SYNTHESIZERS.register("herding")
class Herding(Synthesizer):
    Config = HerdingConfig
    name = "herding"

    def fit(self, real: RealData, *, callbacks: Sequence[Callback] = (), **_: object) -> SyntheticSet:
        self.check_ipc(real, self.config.ipc)
        feats = embed_real(real, self.config.embedding, seed=self.seed, device=self.device)
        chosen = []
        for c in range(real.num_classes):
            idx = real.class_indices(c)
            chosen.append(idx[herding_select(feats[idx], self.config.ipc).to(idx.device)])
        return selection_set(self, real, torch.cat(chosen))
