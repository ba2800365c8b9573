"""Constants shared by the tests (importable, unlike conftest.py)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ddistill.utils.perf import PerfConfig

#: ``../shared/data`` beside the repository (as on CI), or $DDISTILL_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("DDISTILL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

#: Eager fp32 for unit tests: compile warm-up would dominate second-long tests.
FAST = PerfConfig(channels_last=False, bf16=False, compile=False)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is faster and does not stall when other jobs hold the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def toy_graphs(n_per_class: int = 12, seed: int = 0):
    """A separable two-class graph dataset (needs torch_geometric): class 0 rings of label-0 atoms, class 1 stars with a
    label-1 centre and label-2 leaves, of random sizes; train / val / test = 16 / 4 / 4 graphs."""
    import numpy as np
    import torch
    from torch_geometric.data import Data

    from ddistill.data.graph import GraphDataset, GraphDatasetInfo

    def graph(labels: list[int], edges: list[tuple[int, int]], y: int) -> Data:
        ei = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).t().reshape(2, -1)
        x = torch.nn.functional.one_hot(torch.tensor(labels), 3).float()
        return Data(x=x, edge_index=ei, y=torch.tensor([y]), num_nodes=len(labels))

    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_per_class):
        k = int(rng.integers(3, 7))
        graphs.append(graph([0] * k, [(i, (i + 1) % k) for i in range(k)], 0))
        m = int(rng.integers(2, 6))
        graphs.append(graph([1] + [2] * m, [(0, i) for i in range(1, m + 1)], 1))
    info = GraphDatasetInfo("toy", 2, "onehot", "none", 3, 0, "accuracy", "onehot_argmax", "toy")
    return GraphDataset(graphs[: 2 * n_per_class - 8], graphs[-8:-4], graphs[-4:], info)
