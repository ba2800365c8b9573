"""Graph-classification datasets: the registry, the train / val / test container and the random stratified split.

Every loader returns a :class:`GraphDataset`: train / val / test lists of ``torch_geometric.data.Data`` with
``x`` (node features, or None), ``edge_index`` (both directions of every undirected edge), ``edge_attr``
(or None) and ``y`` of shape (1,), plus a :class:`GraphDatasetInfo`. Splits follow the protocol of Mirage
(Gupta et al., ICLR 2024, and its official code): a random stratified 80/10/10 split for TU datasets and
the OGB scaffold split for molecules. Nothing is downloaded unless ``download=True`` is passed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...registry import Registry

GRAPH_DATASETS = Registry("graph dataset")

# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphDatasetInfo:
    """Static facts about a graph-classification dataset.

    Args:
        name: registry name (``mutag``, ``ogbg_molbace``, ...).
        num_classes: number of classes K.
        node_features: how ``x`` is encoded: ``"onehot"`` (float one-hot categorical labels, TU),
            ``"ogb_atom"`` (long 9-column OGB atom features) or ``"none"`` (no node features, e.g. IMDB).
        edge_features: ``"onehot"``, ``"ogb_bond"`` (long 3-column OGB bond features) or ``"none"``.
        num_node_features: width of ``x`` (0 when there is none).
        num_edge_features: width of ``edge_attr`` (0 when there is none).
        metric: the metric of the papers' tables: ``"accuracy"`` (TU) or ``"roc_auc"`` (OGB / MoleculeNet).
        discretiser: default Mirage label discretiser (see :mod:`ddistill.graph.trees`).
        split: human-readable description of how the split was made.
    """

    name: str
    num_classes: int
    node_features: str
    edge_features: str
    num_node_features: int
    num_edge_features: int
    metric: str
    discretiser: str
    split: str


@dataclass
class GraphDataset:
    """Train / val / test lists of PyG ``Data`` graphs (each with ``y`` of shape (1,), long) and their info."""

    train: list[Any]
    val: list[Any]
    test: list[Any]
    info: GraphDatasetInfo
    #: the ``dataset:`` block it was loaded from (set by :func:`ddistill.data.load_data`).
    spec: Any = None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __repr__(self) -> str:
        return (f"GraphDataset({self.info.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)}, classes={self.info.num_classes}, metric={self.info.metric!r})")


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------
def load_graph_dataset(name: str, root: str | Path | None = None, *, split_seed: int = 0,
                       download: bool = False, split_protocol: str | None = None) -> GraphDataset:
    """Loads a registered graph-classification dataset with its train / val / test split.

    Args:
        name: registry name (see :func:`list_graph_datasets`); unknown names raise a KeyError listing the choices.
        root: folder holding the staged files (``<NAME>.zip`` for TU, ``ogbg_<mol>/`` or ``<mol>.csv`` for
            molecules). None: only the cache (and ``download``).
        split_seed: seed of the random TU split (molecules use the deterministic scaffold split).
        download: fetch missing files from the official source (PyG / OGB servers). Off by default.
        split_protocol: how TU graphs are split (:data:`GRAPH_SPLITS`): ``stratified`` (default, None) or
            ``official`` (the official Mirage TU scripts' shuffled 10 % test / 10 % val / rest train,
            :func:`official_split`); in a config, ``dataset: {kwargs: {split_protocol: official}}``. Molecules always
            use the scaffold split (``scaffold``; ``official`` names the same split there).
    """
    # Only when given: loaders registered elsewhere may predate the option.
    extra = {} if split_protocol is None else {"split_protocol": split_protocol}
    return GRAPH_DATASETS.get(name)(root=root, split_seed=split_seed, download=download, **extra)


def list_graph_datasets() -> list[str]:
    return GRAPH_DATASETS.names()


#: ``split(y, seed) -> (train, val, test)`` index arrays of the TU split protocols
#: (``dataset: {kwargs: {split_protocol: ...}}``).
GRAPH_SPLITS = Registry("graph split")

#: The fractions of the random stratified split of TU datasets (train, val, test).
TU_FRACTIONS = (0.8, 0.1, 0.1)


def official_split(num_graphs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split of the official Mirage TU scripts (``NCI1/graph-nci-finalize-reduce-curr.py``,
    ``IMDB-B/graph-TUD_finalize-curr.py``): the global torch seed set to 0, then ``dataset.shuffle()``, then with
    ``n = (G + 9) // 10`` the first n shuffled graphs are the test split, the next n the validation split and the
    rest the training split.

    PyG's ``Dataset.shuffle()`` is ``index_select(torch.randperm(len(self)))`` on the global generator; the same
    permutation comes from a private ``torch.Generator().manual_seed(seed)``, so the global RNG is never reseeded.
    Parts keep the shuffled order (what the scripts' ``dataset[a:b]`` slices hold).

    Shape: -> three int64 index arrays (train, val, test) of sizes G - 2n, n, n.
    """
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(int(num_graphs), generator=gen).numpy()
    n = (int(num_graphs) + 9) // 10
    return perm[2 * n:], perm[n:2 * n], perm[:n]


@GRAPH_SPLITS.register("official")
def _official(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return official_split(len(y), seed)


@GRAPH_SPLITS.register("stratified")
def _stratified(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return stratified_split(y, TU_FRACTIONS, seed)


def resolve_split(split_protocol: str | None, default: str = "stratified") -> str:
    """The split protocol's name (None: ``default``); an unknown one raises naming the key and the choices."""
    name = default if split_protocol is None else str(split_protocol).lower()
    if name not in GRAPH_SPLITS:
        raise ValueError(f"dataset split_protocol {split_protocol!r} is unknown; choose from {GRAPH_SPLITS.names()}")
    return name


def stratified_split(y: np.ndarray, fractions: tuple[float, float, float], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random stratified split: within every class, a ``numpy.random.Generator(seed)`` permutation is cut into
    val / test (``round(frac * n_c)`` each) and train (the rest). Each part is returned sorted.

    Shape: y (G,) int -> three index arrays.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


