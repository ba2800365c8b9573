"""Computation trees for Mirage (Gupta et al., "Mirage: Model-Agnostic Graph Distillation for Graph
Classification", ICLR 2024), steps 1-4 and 6 of the method (official ``pygcanl.cpp``).

An L-layer message-passing GNN computes the embedding of node v from its *L-hop computation tree*: the BFS
unrolling of the graph from v to depth L in which every expanded node gets **all** its neighbours as children
(its BFS parent included) and there are no self-loops. Mirage hashes these trees on discrete node / edge labels,
turns every graph into the *set* of its trees' ids, and mines frequent tree-sets per class.

Two pieces live here (the discretisers that give nodes and edges their discrete labels are core graph-data tools,
:mod:`ddistill.data.graph.discretise`):

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

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ddistill.utils.progress import progress_bar
from ddistill.data.graph import Discretiser, GraphPack
from ddistill.data.graph.discretise import simple_undirected

# A child reference (edge_label, child_id) is packed into one int64, edge label in the high 32 bits: a bijection
# while ids < 2**32 and labels < 2**31, so sorting / hashing packed codes equals doing it on the pairs.
_SHIFT = 32
_MASK = (1 << _SHIFT) - 1

#: Bytes per integer of the canonical encodings (int32).
INT_BYTES = 4


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
    for k in progress_bar(range(1, hops + 1), desc="computation trees", enabled=progress, leave=False):
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
    "INT_BYTES", "TreeSet", "TreeTable", "computation_tree_ids", "drop_single_node_trees", "encode_tree_sets",
    "graph_transactions", "materialise_tree_sets", "tree_set_bytes",
]
