"""Discretisers: turn graph node / edge features into discrete labels and back.

Mirage (and any method hashing graphs) needs categorical labels; a GNN needs model-input features. A
:class:`Discretiser` is fitted on the training graphs, maps features to labels (:meth:`Discretiser.node_labels`,
:meth:`Discretiser.edge_labels`), maps labels back to the features of a materialised node (:meth:`Discretiser.featurise`)
and saves its state in a synthetic set so the evaluator featurises the real test graphs identically.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ...registry import Registry
from .pack import GraphPack

DISCRETISERS = Registry("discretiser")

#: Cardinalities of OGB's 9 atom / 3 bond feature columns (``ogb.utils.features.get_{atom,bond}_feature_dims``).
OGB_ATOM_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
OGB_BOND_DIMS = (5, 6, 2)


# --------------------------------------------------------------------------------------------
# graph helpers
# --------------------------------------------------------------------------------------------
def simple_undirected(edge_index: Tensor | np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique undirected edges {a, b} (a < b) without self-loops, and for each the index of its first directed
    occurrence in ``edge_index`` (whose label it keeps). Matches the official C++ code, which adds each
    unordered pair once.

    Shape: edge_index (2, E) -> a (M,), b (M,), first (M,) int64.
    """
    ei = edge_index.cpu().numpy() if isinstance(edge_index, Tensor) else np.asarray(edge_index)
    src, dst = ei[0].astype(np.int64), ei[1].astype(np.int64)
    keep = np.flatnonzero(src != dst)
    a, b = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    _, first = np.unique(a * max(int(num_nodes), 1) + b, return_index=True)
    return a[first], b[first], keep[first]


def degrees(pack: GraphPack) -> np.ndarray:
    """(N,) number of distinct neighbours of every node (self-loops ignored)."""
    a, b, _ = simple_undirected(pack.edge_index, pack.num_nodes)
    return np.bincount(np.concatenate([a, b]), minlength=pack.num_nodes).astype(np.int64)


# --------------------------------------------------------------------------------------------
# discretisers
# --------------------------------------------------------------------------------------------
class Discretiser(ABC):
    """Maps node / edge features to discrete labels (Mirage hashes trees on categorical labels) and back.

    Life cycle: :meth:`fit` on the training graphs; :meth:`node_labels` / :meth:`edge_labels` label them;
    :meth:`decode_nodes` / :meth:`decode_edges` give the model-input features of tree nodes / edges;
    :meth:`featurise` gives the same model-input features for real graphs (val / test, full-data baseline), so
    trees and real graphs are encoded identically. :meth:`state_dict` (JSON) is stored in the synthetic set's
    metadata so evaluators can featurise test graphs without refitting.

    Args:
        use_edge_labels: hash on edge labels and feed edge features to the GNN (False: every edge label is 0).
    """

    name: ClassVar[str] = ""

    def __init__(self, *, use_edge_labels: bool = True) -> None:
        self.use_edge_labels = bool(use_edge_labels)

    @abstractmethod
    def fit(self, pack: GraphPack) -> "Discretiser":
        """Learns whatever vocabulary the labels need from the training graphs."""

    @abstractmethod
    def node_labels(self, pack: GraphPack) -> np.ndarray:
        """Shape: (N,) int64 labels."""

    def edge_labels(self, pack: GraphPack) -> np.ndarray:
        """Shape: (E,) int64 labels (default: all 0, i.e. unlabelled edges)."""
        return np.zeros(pack.num_edges, dtype=np.int64)

    @abstractmethod
    def decode_nodes(self, labels: np.ndarray) -> Tensor:
        """Model-input node features of labels. Shape: (N,) -> (N, F) float or (N, K) long."""

    def decode_edges(self, labels: np.ndarray) -> Tensor | None:
        """Model-input edge features of labels, or None when edges carry no features. Shape: (E,) -> (E, D)."""
        return None

    @abstractmethod
    def featurise(self, pack: GraphPack) -> GraphPack:
        """The pack with ``x`` / ``edge_attr`` replaced by the model-input features."""

    @abstractmethod
    def node_spec(self) -> dict[str, Any]:
        """How a GNN should encode ``x``: ``{"kind": "linear", "dim": F}`` or
        ``{"kind": "categorical", "cardinalities": [...]}`` (see :mod:`ddistill.models.gnn`)."""

    def edge_spec(self) -> dict[str, Any] | None:
        """How a GNN should encode ``edge_attr`` (None: no edge features)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state enough for :meth:`featurise` and the specs (not for decoding)."""
        return {"name": self.name, "use_edge_labels": self.use_edge_labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.use_edge_labels = bool(state.get("use_edge_labels", True))


def build_discretiser(name: str, **kwargs: Any) -> Discretiser:
    """A fresh discretiser by registry name (unknown names raise a KeyError listing the choices)."""
    return DISCRETISERS.get(name)(**kwargs)


def discretiser_from_state(state: dict[str, Any]) -> Discretiser:
    """Rebuilds a fitted discretiser from :meth:`Discretiser.state_dict` (e.g. ``synset.meta["discretiser_state"]``)."""
    disc = build_discretiser(state["name"])
    disc.load_state_dict(state)
    return disc


@DISCRETISERS.register("onehot_argmax")
class OneHotArgmax(Discretiser):
    """One-hot categorical features -> label index (TU node labels; edge labels when present). NCI1 in the
    official code: 37 node labels, constant edge label."""

    name = "onehot_argmax"

    def __init__(self, *, use_edge_labels: bool = True) -> None:
        super().__init__(use_edge_labels=use_edge_labels)
        self.num_node_features = 0
        self.num_edge_features = 0

    @staticmethod
    def _check(t: Tensor, what: str) -> None:
        ok = bool(((t == 0) | (t == 1)).all()) and bool((t.sum(1) == 1).all())
        if not ok:
            raise ValueError(f"onehot_argmax needs one-hot categorical {what} features; these are not one-hot. "
                             f"Mirage hashes discrete labels only: discretise continuous features first, or choose "
                             f"another discretiser from {DISCRETISERS.names()}")

    def fit(self, pack: GraphPack) -> "OneHotArgmax":
        if pack.x is None:
            raise ValueError("the graphs have no node features; use the 'degree' discretiser")
        self._check(pack.x, "node")
        self.num_node_features = int(pack.x.shape[1])
        if self.use_edge_labels and pack.edge_attr is not None and pack.edge_attr.numel() > 0:
            self._check(pack.edge_attr, "edge")
            self.num_edge_features = int(pack.edge_attr.shape[1])
        else:
            self.num_edge_features = 0
        return self

    def node_labels(self, pack: GraphPack) -> np.ndarray:
        return pack.x.argmax(1).cpu().numpy().astype(np.int64)

    def edge_labels(self, pack: GraphPack) -> np.ndarray:
        if self.num_edge_features == 0:
            return super().edge_labels(pack)
        return pack.edge_attr.argmax(1).cpu().numpy().astype(np.int64)

    def decode_nodes(self, labels: np.ndarray) -> Tensor:
        return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), self.num_node_features).float()

    def decode_edges(self, labels: np.ndarray) -> Tensor | None:
        if self.num_edge_features == 0:
            return None
        return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), self.num_edge_features).float()

    def featurise(self, pack: GraphPack) -> GraphPack:
        edge_attr = pack.edge_attr.float() if self.num_edge_features else None
        return pack.with_features(pack.x.float(), edge_attr)

    def node_spec(self) -> dict[str, Any]:
        return {"kind": "linear", "dim": self.num_node_features}

    def edge_spec(self) -> dict[str, Any] | None:
        return {"kind": "linear", "dim": self.num_edge_features} if self.num_edge_features else None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "num_node_features": self.num_node_features,
                "num_edge_features": self.num_edge_features}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.num_node_features = int(state["num_node_features"])
        self.num_edge_features = int(state["num_edge_features"])


class _TupleVocab:
    """Sorted vocabulary of integer feature rows; row -> id by mixed-radix code + binary search."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = np.unique(rows, axis=0)
        self.radix = self.rows.max(0) + 1
        if float(np.prod(self.radix.astype(np.float64))) >= 2.0 ** 62:
            raise ValueError("feature tuples have too many distinct values per column to be coded in int64")
        # np.unique sorts rows lexicographically, which is the order of C-order mixed-radix codes.
        self.codes = self._code(self.rows)

    def _code(self, rows: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(rows.T), tuple(int(r) for r in self.radix))

    def ids(self, rows: np.ndarray) -> np.ndarray:
        if rows.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        if (rows < 0).any() or (rows >= self.radix).any():
            raise KeyError("feature tuple outside the fitted vocabulary; fit the discretiser on these graphs")
        code = self._code(rows)
        pos = np.searchsorted(self.codes, code)
        pos = np.minimum(pos, len(self.codes) - 1)
        if not np.array_equal(self.codes[pos], code):
            raise KeyError("feature tuple outside the fitted vocabulary; fit the discretiser on these graphs")
        return pos.astype(np.int64)


@DISCRETISERS.register("ogb_atom_tuple")
class OgbAtomTuple(Discretiser):
    """OGB molecules: the full 9-column atom feature tuple -> node label, the 3-column bond tuple -> edge label.

    The official code hashes (atom-type id, full-tuple id) per node; the full tuple determines the atom type, so
    hashing the tuple id alone gives the same tree equivalence. Trees' model inputs are the original integer
    tuples, which a GNN embeds per column (OGB ``AtomEncoder`` / ``BondEncoder`` style) instead of the official
    code's raw integer codes cast to float.
    """

    name = "ogb_atom_tuple"

    def __init__(self, *, use_edge_labels: bool = True) -> None:
        super().__init__(use_edge_labels=use_edge_labels)
        self._nodes: _TupleVocab | None = None
        self._edges: _TupleVocab | None = None
        self.node_cardinalities: list[int] = list(OGB_ATOM_DIMS)
        self.edge_cardinalities: list[int] = list(OGB_BOND_DIMS)
        self.has_edges = False

    @staticmethod
    def _cards(default: tuple[int, ...], vocab: _TupleVocab) -> list[int]:
        radix = [int(r) for r in vocab.radix]
        if len(radix) != len(default):
            return radix
        return [max(d, r) for d, r in zip(default, radix)]

    def fit(self, pack: GraphPack) -> "OgbAtomTuple":
        if pack.x is None or pack.x.is_floating_point():
            raise ValueError("ogb_atom_tuple needs integer (long) node feature tuples as in OGB molecules")
        self._nodes = _TupleVocab(pack.x.cpu().numpy())
        self.node_cardinalities = self._cards(OGB_ATOM_DIMS, self._nodes)
        self.has_edges = bool(self.use_edge_labels and pack.edge_attr is not None and pack.num_edges > 0)
        if self.has_edges:
            self._edges = _TupleVocab(pack.edge_attr.cpu().numpy())
            self.edge_cardinalities = self._cards(OGB_BOND_DIMS, self._edges)
        return self

    def _vocab(self, which: str) -> _TupleVocab:
        vocab = self._nodes if which == "node" else self._edges
        if vocab is None:
            raise RuntimeError("this ogb_atom_tuple discretiser was restored from a state dict and can only "
                               "featurise graphs; fit() it on training graphs to label or decode")
        return vocab

    def node_labels(self, pack: GraphPack) -> np.ndarray:
        return self._vocab("node").ids(pack.x.cpu().numpy())

    def edge_labels(self, pack: GraphPack) -> np.ndarray:
        if not self.has_edges:
            return super().edge_labels(pack)
        return self._vocab("edge").ids(pack.edge_attr.cpu().numpy())

    def decode_nodes(self, labels: np.ndarray) -> Tensor:
        return torch.from_numpy(self._vocab("node").rows[np.asarray(labels, dtype=np.int64)]).long()

    def decode_edges(self, labels: np.ndarray) -> Tensor | None:
        if not self.has_edges:
            return None
        return torch.from_numpy(self._vocab("edge").rows[np.asarray(labels, dtype=np.int64)]).long()

    def featurise(self, pack: GraphPack) -> GraphPack:
        edge_attr = pack.edge_attr.long() if self.has_edges else None
        return pack.with_features(pack.x.long(), edge_attr)

    def node_spec(self) -> dict[str, Any]:
        return {"kind": "categorical", "cardinalities": list(self.node_cardinalities)}

    def edge_spec(self) -> dict[str, Any] | None:
        return {"kind": "categorical", "cardinalities": list(self.edge_cardinalities)} if self.has_edges else None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "node_cardinalities": self.node_cardinalities,
                "edge_cardinalities": self.edge_cardinalities, "has_edges": self.has_edges}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.node_cardinalities = [int(c) for c in state["node_cardinalities"]]
        self.edge_cardinalities = [int(c) for c in state["edge_cardinalities"]]
        self.has_edges = bool(state["has_edges"])


@DISCRETISERS.register("degree")
class DegreeLabels(Discretiser):
    """Featureless graphs (IMDB-B/M in the official code): node label = node degree, edge label constant.

    Args:
        max_degree: degrees above it share one label (None: the largest training degree). Real graphs' degrees
            are clamped the same way when featurised.
    """

    name = "degree"

    def __init__(self, *, use_edge_labels: bool = True, max_degree: int | None = None) -> None:
        super().__init__(use_edge_labels=use_edge_labels)
        self.cap = max_degree
        self.max_degree = max_degree or 0

    def fit(self, pack: GraphPack) -> "DegreeLabels":
        seen = int(degrees(pack).max()) if pack.num_nodes else 0
        self.max_degree = seen if self.cap is None else int(self.cap)
        return self

    def node_labels(self, pack: GraphPack) -> np.ndarray:
        return np.minimum(degrees(pack), self.max_degree)

    def decode_nodes(self, labels: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1, 1)

    def featurise(self, pack: GraphPack) -> GraphPack:
        return pack.with_features(self.decode_nodes(self.node_labels(pack)), None)

    def node_spec(self) -> dict[str, Any]:
        return {"kind": "categorical", "cardinalities": [self.max_degree + 1]}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "max_degree": self.max_degree}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.max_degree = int(state["max_degree"])


