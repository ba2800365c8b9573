"""The official Mirage TU split as a dataset option: PyG's ``dataset.shuffle()`` after ``torch.manual_seed(0)``,
first 10 % test, next 10 % val, rest train, reproduced with a private generator (the global RNG is never reseeded).

The TU files are written by the test (graphs of distinct sizes, so every graph can be told apart)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ddistill.data.graph import GRAPH_SPLITS, load_graph_dataset, official_split


def _global_randperm(n: int, seed: int) -> torch.Tensor:
    """What the official scripts run (``torch.manual_seed(seed)``, then ``torch.randperm``), on a forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.randperm(n)


@pytest.mark.parametrize("n", [1, 9, 10, 11, 188, 1113, 4110])
def test_official_split_is_the_global_seed_0_permutation(n):
    train, val, test = official_split(n)
    k = (n + 9) // 10
    assert (len(test), len(val), len(train)) == (k, min(k, max(n - k, 0)), max(n - 2 * k, 0))
    assert np.array_equal(np.concatenate([test, val, train]), _global_randperm(n, 0).numpy())
    assert np.array_equal(np.concatenate(official_split(n, seed=5)[::-1]), _global_randperm(n, 5).numpy())


def test_official_split_equals_pyg_dataset_shuffle():
    tg = pytest.importorskip("torch_geometric")

    class Indices(tg.data.Dataset):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

        def len(self) -> int:
            return self.n

        def get(self, idx: int):
            return tg.data.Data(y=torch.tensor([idx]), num_nodes=1)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        shuffled, perm = Indices(4110).shuffle(return_perm=True)
    train, val, test = official_split(4110)
    assert np.array_equal(np.concatenate([test, val, train]), perm.numpy())
    assert [int(shuffled[i].y) for i in range(3)] == test[:3].tolist()


def test_official_split_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    official_split(100)
    assert torch.equal(state, torch.get_rng_state())


def _write_tu(root: Path, sizes: list[int], name: str = "MUTAG") -> None:
    """Paths of ``sizes[g]`` nodes (node label 1), class g % 2 (labels -1 / 1), in the official TU zip layout."""
    a, indicator, labels, node_labels, node = [], [], [], [], 0
    for g, n in enumerate(sizes):
        for u in range(n - 1):
            a += [f"{node + u + 1}, {node + u + 2}", f"{node + u + 2}, {node + u + 1}"]
        indicator += [str(g + 1)] * n
        node_labels += ["1"] * n
        labels.append("1" if g % 2 else "-1")
        node += n
    root.mkdir(parents=True, exist_ok=True)
    files = {"A": a, "graph_indicator": indicator, "graph_labels": labels, "node_labels": node_labels}
    with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
        for key, lines in files.items():
            zf.writestr(f"{name}/{name}_{key}.txt", "\n".join(lines) + "\n")


def test_tu_loader_takes_the_official_split(tmp_path, monkeypatch):
    pytest.importorskip("torch_geometric")
    monkeypatch.setenv("DDISTILL_CACHE", str(tmp_path / "cache"))  # not the session cache, which may hold real MUTAG
    sizes = [3 + g for g in range(23)]  # graph g has 3 + g nodes: its size names it
    _write_tu(tmp_path, sizes)
    data = load_graph_dataset("mutag", tmp_path, split_protocol="official")
    train, val, test = official_split(len(sizes))
    for part, idx in ((data.train, train), (data.val, val), (data.test, test)):
        assert [int(g.num_nodes) for g in part] == [sizes[i] for i in idx]  # the shuffled order is kept
    assert (len(data.test), len(data.val), len(data.train)) == (3, 3, 17)
    assert "official" in data.info.split
    default = load_graph_dataset("mutag", tmp_path)
    assert "stratified" in default.info.split and len(default.test) == 2
    with pytest.raises(ValueError, match="dataset split_protocol 'kfold' is unknown; choose from"):
        load_graph_dataset("mutag", tmp_path, split_protocol="kfold")
    assert GRAPH_SPLITS.names() == ["official", "stratified"]


def test_molecules_accept_only_their_scaffold_split(tmp_path):
    with pytest.raises(ValueError,
                       match="dataset split_protocol 'official_tu' is not available for ogbg_molbace; choose from"):
        load_graph_dataset("ogbg_molbace", tmp_path, split_protocol="official_tu")
