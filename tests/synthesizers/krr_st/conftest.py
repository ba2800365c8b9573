"""Fixtures of the KRR-ST tests: one torch thread (tiny tensors: spinning threads on a shared machine cost more than
they give) and a tiny deterministic teacher."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ddistill.data import RealData
from tests._helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_torch_thread():
        yield


class TinyTeacher(nn.Module):
    """A fixed random map from 8x8 digits to 16-d vectors (stands in for a Barlow Twins ResNet)."""

    def __init__(self, seed: int = 0, dim: int = 16) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def tiny_teacher() -> nn.Module:
    return TinyTeacher()


class _NoLabels(RealData):
    """RealData whose labels (and everything derived from them) raise when touched."""

    def __getattribute__(self, name):
        if name in ("y", "_by_class"):
            raise AssertionError(f"real.{name} was read: this code path must be label-free")
        return super().__getattribute__(name)


def without_labels(real: RealData) -> RealData:
    """A shallow copy of ``real`` on which reading the labels fails the test."""
    blind = copy.copy(real)
    blind.__class__ = _NoLabels
    return blind
