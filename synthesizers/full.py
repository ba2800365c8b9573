"""The ``full`` pseudo-synthesizer: the whole real training set, for the upper-bound row."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ddistill.data import RealData
from ddistill.synset import SyntheticSet

from ._selection import selection_set
from .base import SYNTHESIZERS, Synthesizer


@dataclass
class FullConfig:
    """No hyper-parameters: every real training image is kept."""


@SYNTHESIZERS.register("full")
class FullDataset(Synthesizer):
    Config = FullConfig

    def synthesize(self, real: RealData) -> SyntheticSet:
        return selection_set(self, real, torch.arange(len(real)), ipc=None, record_indices=False)
