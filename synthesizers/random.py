"""The ``random`` baseline: IPC real images drawn uniformly per class (the "random subset" rows)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ddistill.data import RealData
from ddistill.synset import SyntheticSet
from ddistill.utils.seed import make_generator

from ._selection import selection_set
from .base import SYNTHESIZERS, Synthesizer


@dataclass
class RandomConfig:
    """Args:
        ipc: images per class.
    """

    ipc: int = 10

    def __post_init__(self) -> None:
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")


@SYNTHESIZERS.register("random")
class RandomSubset(Synthesizer):
    """IPC random real images per class, drawn with the synthesizer's seed."""

    Config = RandomConfig

    def synthesize(self, real: RealData) -> SyntheticSet:
        self.check_ipc(real, self.config.ipc)
        gen = make_generator(self.seed)
        idx = torch.cat([real.sample_indices(c, self.config.ipc, gen, strict=True) for c in range(real.num_classes)])
        return selection_set(self, real, idx, ipc=self.config.ipc)
