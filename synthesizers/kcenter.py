"""The ``kcenter`` baseline: per class, greedy k-center (farthest-point) selection in feature space
(Sener & Savarese 2018), the first center being the image nearest the class mean."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from ddistill.data import RealData
from ddistill.synset import SyntheticSet

from ._selection import EmbeddingConfig, embed_real, selection_set
from .base import SYNTHESIZERS, Callback, Synthesizer


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


@dataclass
class KCenterConfig:
    """Args:
        ipc: images per class.
        embedding: the network whose features define distances.
    """

    ipc: int = 10
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)


@SYNTHESIZERS.register("kcenter")
class KCenter(Synthesizer):
    Config = KCenterConfig
    name = "kcenter"

    def fit(self, real: RealData, *, callbacks: Sequence[Callback] = (), **_: object) -> SyntheticSet:
        self.check_ipc(real, self.config.ipc)
        feats = embed_real(real, self.config.embedding, seed=self.seed, device=self.device)
        chosen = []
        for c in range(real.num_classes):
            idx = real.class_indices(c)
            chosen.append(idx[kcenter_select(feats[idx], self.config.ipc).to(idx.device)])
        return selection_set(self, real, torch.cat(chosen))
