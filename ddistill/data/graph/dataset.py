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
                       download: bool = False) -> GraphDataset:
    """Loads a registered graph-classification dataset with its train / val / test split.

    Args:
        name: registry name (see :func:`list_graph_datasets`); unknown names raise a KeyError listing the choices.
        root: folder holding the staged files (``<NAME>.zip`` for TU, ``ogbg_<mol>/`` or ``<mol>.csv`` for
            molecules). None: only the cache (and ``download``).
        split_seed: seed of the random stratified TU split (molecules use the deterministic scaffold split).
        download: fetch missing files from the official source (PyG / OGB servers). Off by default.
    """
    return GRAPH_DATASETS.get(name)(root=root, split_seed=split_seed, download=download)


def list_graph_datasets() -> list[str]:
    return GRAPH_DATASETS.names()


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


