"""Shared fixtures: tiny real data (scikit-learn digits, which ships with the package) and fast settings."""
from __future__ import annotations

import pytest
import torch

from ddistill.data import load_real
from tests._helpers import FAST, SHARED_DATA, one_torch_thread  # noqa: F401  (re-exported for older imports)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with one_torch_thread():
        yield


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
