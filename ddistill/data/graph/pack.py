"""Many graphs as one set of tensors (PyG ``InMemoryDataset`` slices / ``Batch`` layout, without PyG), so batches are
cut out with a few vectorised index operations instead of collating Python objects every step; and the byte size of
graphs in the library's plain encoding, and the size record every graph set carries (:func:`graph_size_meta`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import Tensor

@dataclass
class GraphPack:
    """Many graphs stored as one set of tensors, in PyG's ``Batch`` layout but without PyG.

    Node ``i`` of graph ``g`` is row ``ptr[g] + i``; the edges of graph ``g`` are columns
    ``edge_ptr[g]:edge_ptr[g+1]`` of ``edge_index``, which holds *global* node indices.

    Shape:
        x: (N, F) float or (N, K) long node features, or None (featureless graphs);
        edge_index: (2, E) long; edge_attr: (E, D) or None; ptr: (G+1,) long; edge_ptr: (G+1,) long;
        y: (G,) long; root_mask: (N,) bool or None (None: every node is a readout node, as for real graphs);
        weight: (G,) float or None (e.g. the support of a Mirage tree-set).
    """

    x: Tensor | None
    edge_index: Tensor
    ptr: Tensor
    edge_ptr: Tensor
    y: Tensor
    edge_attr: Tensor | None = None
    root_mask: Tensor | None = None
    weight: Tensor | None = None
    #: Further per-node / per-edge tensors carried through :meth:`select` (e.g. Mirage's discrete labels).
    node_data: dict[str, Tensor] = field(default_factory=dict)
    edge_data: dict[str, Tensor] = field(default_factory=dict)

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_data_list(cls, graphs: Sequence[Any]) -> "GraphPack":
        """Concatenates PyG-like ``Data`` objects (with ``x``, ``edge_index``, ``edge_attr``, ``y``, ``num_nodes``)."""
        if len(graphs) == 0:
            raise ValueError("cannot pack an empty list of graphs")
        num_nodes = torch.tensor([int(g.num_nodes) for g in graphs], dtype=torch.long)
        num_edges = torch.tensor([int(g.edge_index.shape[1]) for g in graphs], dtype=torch.long)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), num_nodes.cumsum(0)])
        edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), num_edges.cumsum(0)])
        shift = torch.repeat_interleave(ptr[:-1], num_edges)
        edge_index = torch.cat([g.edge_index.long() for g in graphs], dim=1) + shift
        has_x = [getattr(g, "x", None) is not None for g in graphs]
        if any(has_x) and not all(has_x):
            raise ValueError("some graphs have node features and some do not")
        x = torch.cat([g.x for g in graphs]) if all(has_x) else None
        has_e = [getattr(g, "edge_attr", None) is not None for g in graphs]
        edge_attr = None
        if any(has_e):
            if not all(has_e):
                raise ValueError("some graphs have edge features and some do not")
            edge_attr = torch.cat([g.edge_attr for g in graphs])
        y = torch.cat([torch.as_tensor(g.y).reshape(-1)[:1] for g in graphs]).long()
        return cls(x, edge_index, ptr, edge_ptr, y, edge_attr)

    # -- views ----------------------------------------------------------------------------------------------
    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        return int(self.ptr[-1])

    @property
    def num_edges(self) -> int:
        return int(self.edge_ptr[-1])

    def __len__(self) -> int:
        return self.num_graphs

    def batch(self) -> Tensor:
        """(N,) graph index of every node."""
        counts = self.ptr[1:] - self.ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_graphs, device=self.ptr.device), counts)

    def edge_batch(self) -> Tensor:
        """(E,) graph index of every edge."""
        counts = self.edge_ptr[1:] - self.edge_ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_graphs, device=self.ptr.device), counts)

    def select(self, index: Tensor | Sequence[int]) -> "GraphPack":
        """The graphs ``index`` (in that order, repeats allowed) as a new pack; vectorised, no Python loop.

        Shape: index (B,) long -> a pack of B graphs.
        """
        dev = self.ptr.device
        index = torch.as_tensor(index, dtype=torch.long, device=dev).reshape(-1)
        counts = self.ptr[index + 1] - self.ptr[index]
        new_ptr = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), counts.cumsum(0)])
        node_idx = _ranges(self.ptr[index], counts, new_ptr)
        ecounts = self.edge_ptr[index + 1] - self.edge_ptr[index]
        new_eptr = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), ecounts.cumsum(0)])
        edge_idx = _ranges(self.edge_ptr[index], ecounts, new_eptr)
        # An edge keeps its offset inside its graph: global index - old graph start + new graph start.
        shift = torch.repeat_interleave(new_ptr[:-1] - self.ptr[index], ecounts)
        return GraphPack(
            x=None if self.x is None else self.x[node_idx],
            edge_index=self.edge_index[:, edge_idx] + shift,
            ptr=new_ptr,
            edge_ptr=new_eptr,
            y=self.y[index],
            edge_attr=None if self.edge_attr is None else self.edge_attr[edge_idx],
            root_mask=None if self.root_mask is None else self.root_mask[node_idx],
            weight=None if self.weight is None else self.weight[index],
            node_data={k: v[node_idx] for k, v in self.node_data.items()},
            edge_data={k: v[edge_idx] for k, v in self.edge_data.items()},
        )

    def to(self, device: torch.device | str) -> "GraphPack":
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return GraphPack(mv(self.x), self.edge_index.to(device), self.ptr.to(device), self.edge_ptr.to(device),
                         self.y.to(device), mv(self.edge_attr), mv(self.root_mask), mv(self.weight),
                         {k: v.to(device) for k, v in self.node_data.items()},
                         {k: v.to(device) for k, v in self.edge_data.items()})

    def with_features(self, x: Tensor | None, edge_attr: Tensor | None) -> "GraphPack":
        """The same graphs with other node / edge features (e.g. a model's input encoding)."""
        return replace(self, x=x, edge_attr=edge_attr)

    # -- SyntheticSet interop -------------------------------------------------------------------------------
    _FIELDS = ("x", "edge_index", "ptr", "edge_ptr", "y", "edge_attr", "root_mask", "weight")

    def to_tensors(self) -> dict[str, Tensor]:
        """PyG field names (plus ``ptr``/``edge_ptr``/``root_mask``/``weight``) for a :class:`SyntheticSet`."""
        out = {k: getattr(self, k) for k in self._FIELDS if getattr(self, k) is not None}
        clash = (set(self.node_data) | set(self.edge_data)) & set(self._FIELDS)
        if clash:
            raise ValueError(f"node/edge data keys {sorted(clash)} clash with the pack's own fields")
        out.update(self.node_data)
        out.update(self.edge_data)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], node_keys: Sequence[str] = (),
                     edge_keys: Sequence[str] = ()) -> "GraphPack":
        """Inverse of :meth:`to_tensors`; ``node_keys`` / ``edge_keys`` name further tensors to carry along."""
        missing = [k for k in ("edge_index", "ptr", "edge_ptr", "y") if k not in tensors]
        if missing:
            raise ValueError(f"graph tensors lack {missing}; a graph set needs x, edge_index, ptr, edge_ptr and y "
                             f"(got {sorted(tensors)})")
        kw = {k: tensors.get(k) for k in cls._FIELDS}
        return cls(**kw, node_data={k: tensors[k] for k in node_keys if k in tensors},
                   edge_data={k: tensors[k] for k in edge_keys if k in tensors})

    def to_data_list(self) -> list[Any]:
        """PyG ``Data`` objects (for interoperability; training code uses the pack directly)."""
        from torch_geometric.data import Data

        out = []
        for g in range(self.num_graphs):
            n0, n1 = int(self.ptr[g]), int(self.ptr[g + 1])
            e0, e1 = int(self.edge_ptr[g]), int(self.edge_ptr[g + 1])
            d = Data(edge_index=self.edge_index[:, e0:e1] - n0, y=self.y[g:g + 1], num_nodes=n1 - n0)
            if self.x is not None:
                d.x = self.x[n0:n1]
            if self.edge_attr is not None:
                d.edge_attr = self.edge_attr[e0:e1]
            if self.root_mask is not None:
                d.root_mask = self.root_mask[n0:n1]
            out.append(d)
        return out


def _ranges(starts: Tensor, counts: Tensor, new_ptr: Tensor) -> Tensor:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), vectorised.

    Shape: starts, counts (B,) -> (sum(counts),).
    """
    total = int(new_ptr[-1])
    offset_in_range = torch.arange(total, device=starts.device) - torch.repeat_interleave(new_ptr[:-1], counts)
    return torch.repeat_interleave(starts, counts) + offset_in_range


def graph_bytes(num_nodes: int, num_undirected_edges: int) -> int:
    """Bytes of a labelled graph in the library's plain graph encoding (int32 throughout).

    Per graph: class and node count (2 ints), one label per node, and (u, v, edge label) per undirected edge:
    ``4 * (2 + n + 3 m)``. Used for the full dataset and the ``random_graphs`` baseline so their sizes compare
    with Mirage's canonical tree-set bytes (:func:`ddistill.graph.trees.tree_set_bytes`), which use the same unit.
    """
    return 4 * (2 + int(num_nodes) + 3 * int(num_undirected_edges))


def pack_graph_bytes(pack: GraphPack) -> list[int]:
    """:func:`graph_bytes` of every graph of a pack (undirected edges counted once, self-loops dropped)."""
    src, dst = pack.edge_index
    keep = src < dst  # each undirected edge appears in both directions; count one of them
    und = torch.bincount(pack.edge_batch()[keep], minlength=pack.num_graphs)
    nodes = pack.ptr[1:] - pack.ptr[:-1]
    return [graph_bytes(n, m) for n, m in zip(nodes.tolist(), und.tolist())]


#: The unit of every byte count of a graph set: the library's encodings store int32 integers only.
BYTES_UNIT = "bytes (every stored integer is an int32: 4 bytes)"
BYTES_PER_INT = 4

#: What the size keys mean (written into every set's ``meta["size"]`` and the graph evaluator's result).
SIZE_DEFINITIONS = (
    "N: nodes and E: directed edges (edge_index columns) of the set's training graphs as the GNN sees them (Mirage: "
    "the materialised tree-sets, edges child -> parent); F / D: model-input node / edge feature widths (0: none); "
    "F_labels / D_labels: integer label columns per node / edge (one per one-hot label, one per OGB feature column), "
    "the width the official code's x / edge_attr have, so N*F_labels and E*D_labels are the products the official "
    "scripts print as the set's size (they never compute bytes; the published byte counts may use another unit); "
    "compression_ratio = distilled bytes / bytes of the whole training set in the same encoding and unit (< 1: "
    "smaller than the data it came from)")


def _width(t: Any) -> int:
    return 0 if t is None else (int(t.shape[1]) if t.dim() > 1 else 1)


def _label_columns(spec: dict[str, Any] | None) -> int:
    """Integer label columns per node / edge behind a feature spec: a one-hot block is one label, a categorical spec
    one column per cardinality."""
    if spec is None:
        return 0
    if spec.get("kind") == "categorical":
        return len(spec.get("cardinalities", []))
    return 1


def graph_size_meta(pack: GraphPack, node_spec: dict[str, Any] | None, edge_spec: dict[str, Any] | None, *,
                    distilled_bytes: int | None, full_bytes: int | None, encoding: str,
                    full: GraphPack | None = None) -> dict[str, Any]:
    """The size record of a graph set (``meta["size"]``): unit, bytes, N, E, F, D, N*F, E*D and the compression ratio.

    Args:
        pack: the set's training graphs as the GNN sees them.
        node_spec, edge_spec: the discretiser's feature specs (for the label-column counts).
        distilled_bytes: the set's size in ``encoding`` (None: unknown, e.g. a set from elsewhere).
        full_bytes: the whole training set's size in the same encoding and unit (None: unknown; no ratio).
        encoding: how the bytes were counted.
        full: the whole training set (its N and E are recorded beside the set's).
    """
    n, e = pack.num_nodes, pack.num_edges
    f, d = _width(pack.x), _width(pack.edge_attr)
    f_lab, d_lab = _label_columns(node_spec), _label_columns(edge_spec)
    out: dict[str, Any] = {
        "unit": BYTES_UNIT, "bytes_per_int": BYTES_PER_INT, "encoding": encoding,
        "distilled_bytes": None if distilled_bytes is None else int(distilled_bytes),
        "full_train_bytes": None if full_bytes is None else int(full_bytes),
        "compression_ratio": (float(distilled_bytes) / float(full_bytes) if distilled_bytes is not None and full_bytes
                              else math.nan),
        "graphs": pack.num_graphs, "N": n, "E": e, "F": f, "D": d, "NxF": n * f, "ExD": e * d,
        "F_labels": f_lab, "D_labels": d_lab, "NxF_labels": n * f_lab, "ExD_labels": e * d_lab,
        "definitions": SIZE_DEFINITIONS,
    }
    if full is not None:
        out["full_train"] = {"graphs": full.num_graphs, "N": full.num_nodes, "E": full.num_edges}
    return out
