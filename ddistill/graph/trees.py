"""Computation trees for Mirage (Gupta et al., "Mirage: Model-Agnostic Graph Distillation for Graph
Classification", ICLR 2024), steps 1-4 and 6 of the method (official ``pygcanl.cpp``).

An L-layer message-passing GNN computes the embedding of node v from its *L-hop computation tree*: the BFS
unrolling of the graph from v to depth L in which every expanded node gets **all** its neighbours as children
(its BFS parent included) and there are no self-loops. Mirage hashes these trees on discrete node / edge labels,
turns every graph into the *set* of its trees' ids, and mines frequent tree-sets per class.

Three pieces live here:

- **Discretisers** (:data:`DISCRETISERS`) turn node / edge features into discrete labels (Mirage needs
  categorical labels) and, in reverse, labels into the model-input features of tree nodes.
- **Canonical tree ids** (:class:`TreeTable`, :func:`computation_tree_ids`). Trees are hash-consed: a tree is
  the key ``(node_label, sorted((edge_label, child_id), ...))`` interned to an integer through a dict, so two
  trees get the same id iff they are isomorphic as labelled unordered rooted trees. Ids are computed level by
  level, ``id_0(v) = intern(label(v), ())`` and ``id_k(v) = intern(label(v), sorted multiset of (edge_label(v,u),
  id_{k-1}(u)) over neighbours u)``, which is exactly the canonical hash of the depth-k computation tree and costs
  O(L E log E) instead of the O(z d^L) unrolling of the official C++/Python code. :meth:`TreeTable.canonical`
  expands an id into the nested sorted tuple ``(node_label, ((edge_label, child), ...))``, which is
  independent of id assignment. (The official NCI1 / IMDB scripts encode trees as decimal digit strings, which
  can collide once labels reach 8; tuples cannot.)
- **Materialisation** (:func:`materialise_tree_sets`): a tree-set becomes one training "graph", the disjoint
  union of its trees with edges directed child -> parent and a root mask, and its **canonical encoding**, whose
  size in bytes is Mirage's compression metric (:func:`tree_set_bytes`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddistill.data.graph import GraphPack
from ddistill.registry import Registry

DISCRETISERS = Registry("discretiser")

#: Cardinalities of OGB's 9 atom / 3 bond feature columns (``ogb.utils.features.get_{atom,bond}_feature_dims``).
OGB_ATOM_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
OGB_BOND_DIMS = (5, 6, 2)

# A child reference (edge_label, child_id) is packed into one int64, edge label in the high 32 bits: a bijection
# while ids < 2**32 and labels < 2**31, so sorting / hashing packed codes equals doing it on the pairs.
_SHIFT = 32
_MASK = (1 << _SHIFT) - 1

#: Bytes per integer of the canonical encodings (int32).
INT_BYTES = 4


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


# --------------------------------------------------------------------------------------------
# canonical trees
# --------------------------------------------------------------------------------------------
Canonical = tuple  # (node_label, ((edge_label, Canonical), ...)) with children sorted


class TreeTable:
    """Hash-consed labelled unordered rooted trees.

    Tree ``t`` is stored as ``labels[t]`` and ``children[t]``, a sorted tuple of packed ``(edge_label, child_id)``
    codes; the dict from that key to ``t`` makes equal (isomorphic) trees share one id. Children are always
    interned before their parents, so ``child_id < t``.
    """

    def __init__(self) -> None:
        self._index: dict[tuple[int, tuple[int, ...]], int] = {}
        self.labels: list[int] = []
        self.children: list[tuple[int, ...]] = []
        self._sizes: list[int] = []
        self._canonical: dict[int, Canonical] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def intern(self, label: int, children: tuple[int, ...]) -> int:
        """Id of the tree with root ``label`` and the given *sorted* packed child codes."""
        key = (label, children)
        tid = self._index.get(key)
        if tid is None:
            tid = len(self.labels)
            self._index[key] = tid
            self.labels.append(label)
            self.children.append(children)
        return tid

    def intern_canonical(self, tree: Canonical) -> int:
        """Id of a tree given as a nested ``(label, ((edge_label, subtree), ...))`` tuple (any child order)."""
        label, kids = tree
        codes = sorted((int(e) << _SHIFT) | self.intern_canonical(sub) for e, sub in kids)
        return self.intern(int(label), tuple(codes))

    def children_of(self, tid: int) -> list[tuple[int, int]]:
        """``[(edge_label, child_id), ...]`` of tree ``tid``."""
        return [(c >> _SHIFT, c & _MASK) for c in self.children[tid]]

    def canonical(self, tid: int) -> Canonical:
        """The nested sorted tuple ``(node_label, ((edge_label, child), ...))`` of tree ``tid``; children are
        sorted by their own canonical tuples, so the form does not depend on how ids were assigned."""
        out = self._canonical.get(tid)
        if out is None:
            kids = tuple(sorted((e, self.canonical(c)) for e, c in self.children_of(tid)))
            out = (self.labels[tid], kids)
            self._canonical[tid] = out
        return out

    def size(self, tid: int) -> int:
        """Number of nodes of tree ``tid``."""
        # Children have smaller ids, so one forward pass fills sizes in dependency order.
        for t in range(len(self._sizes), tid + 1):
            self._sizes.append(1 + sum(self._sizes[c & _MASK] for c in self.children[t]))
        return self._sizes[tid]

    def preorder(self, tid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Tree ``tid`` unrolled in pre-order (children in ascending code order).

        Shape: four (n,) int64 arrays: node label, parent position (-1 for the root), label of the edge to the
        parent (-1 for the root), number of children.
        """
        labels: list[int] = []
        parents: list[int] = []
        elabels: list[int] = []
        nchild: list[int] = []
        stack = [(tid, -1, -1)]
        while stack:
            t, parent, e = stack.pop()
            me = len(labels)
            labels.append(self.labels[t])
            parents.append(parent)
            elabels.append(e)
            kids = self.children[t]
            nchild.append(len(kids))
            for code in reversed(kids):  # reversed so the stack pops them in ascending order
                stack.append((code & _MASK, me, code >> _SHIFT))
        return (np.asarray(labels, dtype=np.int64), np.asarray(parents, dtype=np.int64),
                np.asarray(elabels, dtype=np.int64), np.asarray(nchild, dtype=np.int64))


def computation_tree_ids(node_labels: np.ndarray, edge_index: Tensor | np.ndarray, edge_labels: np.ndarray,
                         hops: int, table: TreeTable | None = None, *, progress: bool = False) -> np.ndarray:
    """Canonical ids of every node's depth-0..L computation tree (Mirage steps 1-3).

    ``id_k(v) = intern(label(v), sorted {(edge_label(v, u), id_{k-1}(u)) : u in N(v)})``, evaluated for all nodes at
    once: nodes are grouped by degree d, each group's (label, d sorted child codes) rows are deduplicated with
    ``np.unique`` and only the distinct rows are interned in Python.

    Args:
        node_labels: discrete node labels (any graphs, concatenated; graphs never share edges).
        edge_index: directed edges (both directions of every undirected edge, as in PyG); duplicates and
            self-loops are ignored.
        edge_labels: label of every column of ``edge_index``.
        hops: L >= 0.
        table: the table to intern into (shared across calls so ids are comparable); a new one if None.

    Shape: node_labels (N,), edge_index (2, E), edge_labels (E,) -> (L + 1, N) int64.
    """
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    table = TreeTable() if table is None else table
    labels = np.asarray(node_labels, dtype=np.int64)
    n = labels.shape[0]
    elabels = np.asarray(edge_labels, dtype=np.int64)
    if elabels.size and (elabels.min() < 0 or elabels.max() >= 2 ** 31):
        raise ValueError("edge labels must lie in [0, 2**31)")
    a, b, first = simple_undirected(edge_index, n)
    lab = elabels[first] if first.size else np.zeros(0, dtype=np.int64)
    # A node's children are all its neighbours: message direction u -> v for both orientations.
    src, dst, elab = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([lab, lab])
    deg = np.bincount(dst, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(deg)[:-1]]).astype(np.int64)
    by_degree = np.argsort(deg, kind="stable")
    cuts = np.flatnonzero(np.diff(deg[by_degree])) + 1
    groups = [(int(deg[g[0]]), g) for g in np.split(by_degree, cuts) if g.size]

    ids = np.empty((hops + 1, n), dtype=np.int64)
    uniq, inv = np.unique(labels, return_inverse=True)
    ids[0] = np.array([table.intern(int(x), ()) for x in uniq.tolist()], dtype=np.int64)[inv.reshape(-1)]
    for k in tqdm(range(1, hops + 1), desc="computation trees", disable=not progress, leave=False):
        prev = ids[k - 1]
        if prev.size and prev.max() > _MASK:
            raise OverflowError("more than 2**32 distinct trees")
        codes = (elab << _SHIFT) | prev[src]
        order = np.lexsort((codes, dst))  # grouped by parent, child codes ascending: canonical child order
        sorted_codes = codes[order]
        cur = np.empty(n, dtype=np.int64)
        for d, nodes in groups:
            rows = np.empty((nodes.size, d + 1), dtype=np.int64)
            rows[:, 0] = labels[nodes]
            if d:
                rows[:, 1:] = sorted_codes[offsets[nodes][:, None] + np.arange(d)]
            urows, uinv = np.unique(rows, axis=0, return_inverse=True)
            uid = np.array([table.intern(r[0], tuple(r[1:])) for r in urows.tolist()], dtype=np.int64)
            cur[nodes] = uid[uinv.reshape(-1)]
        ids[k] = cur
    return ids


def graph_transactions(tree_ids: np.ndarray, ptr: Tensor | np.ndarray) -> list[np.ndarray]:
    """Every graph as the *set* of its nodes' tree ids (Mirage step 4; multiplicity discarded).

    Shape: tree_ids (N,), ptr (G+1,) -> G sorted unique int64 arrays.
    """
    ptr = ptr.cpu().numpy() if isinstance(ptr, Tensor) else np.asarray(ptr)
    counts = np.diff(ptr)
    g = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    span = int(tree_ids.max()) + 1 if tree_ids.size else 1
    key = np.unique(g * span + tree_ids)
    per_graph = np.bincount(key // span, minlength=counts.size)
    return np.split(key % span, np.cumsum(per_graph)[:-1])


# --------------------------------------------------------------------------------------------
# tree-sets: canonical encoding, bytes, materialisation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeSet:
    """One distilled sample: a frequent set of computation trees of class ``label`` with its support count."""

    trees: tuple[int, ...]
    support: int
    label: int


def tree_set_bytes(table: TreeTable, tree_sets: Iterable[Sequence[int]]) -> int:
    """Size of the canonical tree-set encoding in bytes: Mirage's compression metric as defined here.

    The encoding (all integers int32, see :func:`encode_tree_sets`) stores every *distinct* tree used once, in
    pre-order as one ``(node label, label of the edge to the parent, number of children)`` triple per node, and
    every tree-set as ``(class, support, number of trees)`` followed by one tree index per tree::

        bytes = 4 * (3 * sum_{distinct trees t} |t| + sum_{tree-sets S} (3 + |S|))

    Applied to the full training set (every graph as the set of its L-hop trees) it gives the comparable size
    of the undistilled data.
    """
    sets = [tuple(s) for s in tree_sets]
    distinct = {t for s in sets for t in s}
    nodes = sum(table.size(t) for t in distinct)
    return INT_BYTES * (3 * nodes + sum(3 + len(s) for s in sets))


def encode_tree_sets(table: TreeTable, tree_sets: Sequence[TreeSet]) -> dict[str, Tensor]:
    """The canonical tree-set encoding as int32 tensors (what :func:`tree_set_bytes` counts).

    Shape:
        tree_nodes (M, 3): pre-order (label, edge label to parent or -1, number of children) of the K distinct trees;
        tree_ptr (K+1,): row offsets of each tree in ``tree_nodes``;
        set_trees (S,): tree indices of all tree-sets, concatenated; set_ptr (G+1,): offsets into ``set_trees``;
        set_info (G, 2): (class, support) of every tree-set.
    """
    order: dict[int, int] = {}
    for ts in tree_sets:
        for t in ts.trees:
            order.setdefault(t, len(order))
    rows = []
    lengths = []
    for t in order:
        labels, _, elabels, nchild = table.preorder(t)
        rows.append(np.stack([labels, elabels, nchild], axis=1))
        lengths.append(labels.size)
    tree_nodes = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
    set_trees = [order[t] for ts in tree_sets for t in ts.trees]
    set_sizes = [len(ts.trees) for ts in tree_sets]
    i32 = torch.int32
    return {
        "tree_nodes": torch.as_tensor(tree_nodes, dtype=i32).reshape(-1, 3),
        "tree_ptr": torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=i32),
        "set_trees": torch.as_tensor(set_trees, dtype=i32),
        "set_ptr": torch.as_tensor(np.concatenate([[0], np.cumsum(set_sizes)]), dtype=i32),
        "set_info": torch.as_tensor([[ts.label, ts.support] for ts in tree_sets], dtype=i32).reshape(-1, 2),
    }


def drop_single_node_trees(table: TreeTable, tree_sets: Sequence[TreeSet]) -> list[TreeSet]:
    """Removes one-node trees (isolated nodes) from every tree-set and drops tree-sets left empty, as the
    official ``disjointed_union`` does ("skipping single node trees for now because it causes issues")."""
    out = []
    for ts in tree_sets:
        trees = tuple(t for t in ts.trees if table.size(t) > 1)
        if trees:
            out.append(TreeSet(trees, ts.support, ts.label))
    return out


def materialise_tree_sets(table: TreeTable, tree_sets: Sequence[TreeSet], discretiser: Discretiser) -> GraphPack:
    """Turns tree-sets into training graphs (Mirage step 6; official ``disjointed_union``, ``roots_to_embed``).

    Each tree-set becomes one graph: the disjoint union of its trees, edges directed child -> parent so messages
    flow to the roots, ``root_mask`` marking each tree's root (the readout sums over roots only), ``y`` = class
    and ``weight`` = support. Node / edge features come from ``discretiser.decode_*``; the discrete labels are
    kept as ``node_data["node_label"]`` and ``edge_data["edge_label"]``.

    Shape: G tree-sets -> a pack with x (N, ...), edge_index (2, N - #roots), root_mask (N,), y (G,), weight (G,).
    """
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    node_labels, edge_src, edge_dst, edge_labels, roots = [], [], [], [], []
    num_nodes, num_edges, ys, weights = [], [], [], []
    offset = 0
    if not tree_sets:
        raise ValueError("no tree-set to materialise")
    for ts in tree_sets:
        n0, e_count = offset, 0
        for t in ts.trees:
            if t not in cache:
                labels, parents, elabels, _ = table.preorder(t)
                cache[t] = (labels, parents, elabels)
            labels, parents, elabels = cache[t]
            child = np.flatnonzero(parents >= 0)
            node_labels.append(labels)
            edge_src.append(child + offset)
            edge_dst.append(parents[child] + offset)
            edge_labels.append(elabels[child])
            root = np.zeros(labels.size, dtype=bool)
            root[0] = True
            roots.append(root)
            offset += labels.size
            e_count += child.size
        num_nodes.append(offset - n0)
        num_edges.append(e_count)
        ys.append(ts.label)
        weights.append(float(ts.support))
    nl = np.concatenate(node_labels)
    el = np.concatenate(edge_labels)
    zero = torch.zeros(1, dtype=torch.long)
    return GraphPack(
        x=discretiser.decode_nodes(nl),
        edge_index=torch.as_tensor(np.stack([np.concatenate(edge_src), np.concatenate(edge_dst)]), dtype=torch.long),
        ptr=torch.cat([zero, torch.as_tensor(num_nodes).cumsum(0)]),
        edge_ptr=torch.cat([zero, torch.as_tensor(num_edges).cumsum(0)]),
        y=torch.as_tensor(ys, dtype=torch.long),
        edge_attr=discretiser.decode_edges(el),
        root_mask=torch.as_tensor(np.concatenate(roots)),
        weight=torch.as_tensor(weights, dtype=torch.float32),
        node_data={"node_label": torch.as_tensor(nl)},
        edge_data={"edge_label": torch.as_tensor(el)},
    )


__all__ = [
    "DISCRETISERS", "Discretiser", "DegreeLabels", "OgbAtomTuple", "OneHotArgmax", "TreeSet", "TreeTable",
    "build_discretiser", "computation_tree_ids", "degrees", "discretiser_from_state", "drop_single_node_trees",
    "encode_tree_sets",
    "graph_transactions", "materialise_tree_sets", "simple_undirected", "tree_set_bytes",
]
