"""Shared fixtures: tiny real data (scikit-learn digits, which ships with the package) and fast settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ddistill.data import load_real
from ddistill.utils.perf import PerfConfig

#: ``../shared/data`` beside the repository (as on CI), or $DDISTILL_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("DDISTILL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

#: Eager fp32 for unit tests: compile warm-up would dominate second-long tests.
FAST = PerfConfig(channels_last=False, bf16=False, compile=False)


@pytest.fixture(scope="session")
def digits():
    """(RealData, test ImageData) of scikit-learn's digits: 1,347 train / 450 test 8x8 images."""
    return load_real("digits")


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never write into the user's ~/.cache.
    monkeypatch.setenv("DDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped where CUDA is absent (as PyG's ``withCUDA``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
