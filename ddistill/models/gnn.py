"""Message-passing GNNs for graph classification, as used to evaluate Mirage (Gupta et al., ICLR 2024).

One :class:`GNN` class with a registered convolution (``gcn``, ``gin``, ``gat`` from PyTorch Geometric, and
``gcn_ogb``, the OGB-style edge-aware GCN layer of the official code, :class:`OGBGCNConv`) and a
sum readout that, as in the official ``global_pool_custom``, sums over the **root nodes only** when a
``root_mask`` is given (Mirage tree-sets: each root embedding is the embedding of one computation tree) and over
**all nodes** otherwise (real graphs). With exactly L layers on L-hop trees the root embedding equals the node's
embedding in the original graph for GIN and GAT; GCN's symmetric normalisation differs at the leaves, whose
degree the tree does not record.

Node / edge inputs are encoded from a *feature spec* (the discretiser's, see :mod:`ddistill.graph.trees`):
``{"kind": "linear", "dim": F}`` (one-hot floats), ``{"kind": "categorical", "cardinalities": [...]}`` (sum of
per-column embeddings, as OGB's ``AtomEncoder``/``BondEncoder``; the official code fed raw integer codes as
floats instead) or None.

PyG is imported lazily so that importing :mod:`ddistill.models` never needs it.

Example:
    >>> net = GNN_MODELS.build("gin", node_spec={"kind": "linear", "dim": 7}, edge_spec=None, num_classes=2)
    >>> logits = net(x, edge_index, batch, num_graphs)
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ddistill.registry import Registry

GNN_MODELS = Registry("gnn")
FEATURE_ENCODERS = Registry("feature encoder")
CONVS = Registry("graph convolution")


# --------------------------------------------------------------------------------------------
# feature encoders
# --------------------------------------------------------------------------------------------
@FEATURE_ENCODERS.register("linear")
class LinearEncoder(nn.Module):
    """Float features (e.g. one-hot labels) -> hidden. Shape: (N, dim) -> (N, hidden)."""

    def __init__(self, hidden: int, *, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(int(dim), hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x.float())


@FEATURE_ENCODERS.register("categorical")
class CategoricalEncoder(nn.Module):
    """Integer feature columns -> sum of one embedding per column (OGB ``AtomEncoder`` style).

    Values beyond a column's cardinality (unseen at distillation time) share the last row, rather than failing.

    Shape: (N, K) long -> (N, hidden).
    """

    def __init__(self, hidden: int, *, cardinalities: list[int]) -> None:
        super().__init__()
        self.cardinalities = [int(c) for c in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(c, hidden) for c in self.cardinalities)
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = x.long().reshape(x.shape[0], -1)
        if x.shape[1] != len(self.embeddings):
            raise ValueError(f"expected {len(self.embeddings)} feature columns, got {x.shape[1]}")
        out = 0
        for j, emb in enumerate(self.embeddings):
            out = out + emb(x[:, j].clamp(0, self.cardinalities[j] - 1))
        return out  # type: ignore[return-value]


@FEATURE_ENCODERS.register("onehot_embedding")
class OneHotEmbedding(nn.Module):
    """One-hot rows -> one embedding row per label, ``h = x @ W`` with no bias (OGB ``AtomEncoder`` style for a
    single label column: for a one-hot row with its 1 at label l this is exactly ``W[l]``, an ``nn.Embedding``
    lookup; the ``linear`` encoder adds a bias shared by every label). Xavier-uniform initialised, as OGB's
    encoders.

    Shape: (N, dim) float -> (N, hidden).
    """

    def __init__(self, hidden: int, *, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(int(dim), hidden))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x.float() @ self.weight


#: How ``embed_onehot=True`` (the OGB-style models) re-reads a spec kind: one-hot floats become per-label embeddings.
_EMBEDDING_KINDS = {"linear": "onehot_embedding"}


def build_encoder(spec: dict[str, Any] | None, hidden: int, *, embed_onehot: bool = False) -> nn.Module | None:
    """The encoder of a feature spec (None -> None). ``embed_onehot``: encode ``linear`` (one-hot) specs with
    :class:`OneHotEmbedding` (per-label embeddings, no bias) instead of a linear layer."""
    if spec is None:
        return None
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    kind = _EMBEDDING_KINDS.get(spec["kind"], spec["kind"]) if embed_onehot else spec["kind"]
    return FEATURE_ENCODERS.get(kind)(hidden, **kwargs)


# --------------------------------------------------------------------------------------------
# convolutions: uniform call conv(x, edge_index, edge_attr)
# --------------------------------------------------------------------------------------------
class _Conv(nn.Module):
    """Adapts a PyG layer to ``forward(x, edge_index, edge_attr)``."""

    def __init__(self, layer: nn.Module, uses_edges: bool) -> None:
        super().__init__()
        self.layer = layer
        self.uses_edges = uses_edges

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        if self.uses_edges and edge_attr is not None:
            return self.layer(x, edge_index, edge_attr)
        return self.layer(x, edge_index)


@CONVS.register("gcn")
def _gcn(hidden: int, has_edges: bool) -> nn.Module:
    """PyG ``GCNConv`` (Kipf & Welling): symmetric normalisation with self-loops; edge features are not used
    (GCNConv takes scalar edge weights only)."""
    from torch_geometric.nn import GCNConv

    return _Conv(GCNConv(hidden, hidden), uses_edges=False)


@CONVS.register("gin")
def _gin(hidden: int, has_edges: bool) -> nn.Module:
    """PyG ``GINConv`` with a 2-layer MLP and learnable eps (Xu et al.); ``GINEConv`` when edges have features."""
    from torch_geometric.nn import GINConv, GINEConv

    mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
    if has_edges:
        return _Conv(GINEConv(mlp, train_eps=True), uses_edges=True)
    return _Conv(GINConv(mlp, train_eps=True), uses_edges=False)


@CONVS.register("gat")
def _gat(hidden: int, has_edges: bool) -> nn.Module:
    """PyG ``GATConv`` with one head (as the official code), edge features in the attention when present."""
    from torch_geometric.nn import GATConv

    return _Conv(GATConv(hidden, hidden, heads=1, edge_dim=hidden if has_edges else None), uses_edges=has_edges)


class OGBGCNConv(nn.Module):
    """The edge-aware GCN layer of OGB's graph-property examples (``examples/graphproppred/mol/conv.py``,
    ``GCNConv``), which the official Mirage models are built on; not PyG's ``GCNConv``.

    For node features h (N, H), directed edges (j -> i) in ``edge_index`` (row = source j, col = target i) and edge
    embeddings e (E, H) (a per-layer ``BondEncoder``-style embedding of the edge labels)::

        x      = W h + c                                   (a linear layer)
        deg_v  = outdeg(v) + 1,   outdeg(v) = #{edges with source v}
        norm   = deg_j^{-1/2} deg_i^{-1/2}                 per edge (j -> i)
        out_i  = sum_{(j -> i)} norm * ReLU(x_j + e_ji)  +  ReLU(x_i + r) / deg_i

    with r (1, H) a learned root embedding (``root_emb``). On undirected real graphs outdeg = degree; on Mirage
    tree-sets (edges child -> parent) every non-root node has outdeg 1 and a root 0. Without edge features the
    layer uses one learned edge embedding for every edge: the official TU scripts give every edge the constant
    attribute 1 and embed it with a ``BondEncoder``, which is that.

    Shape: h (N, H), edge_index (2, E) long, edge_attr (E, H) or None -> (N, H).
    """

    def __init__(self, hidden: int, has_edges: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        self.root_emb = nn.Embedding(1, hidden)
        self.edge_const = None if has_edges else nn.Parameter(torch.empty(1, hidden))
        if self.edge_const is not None:
            nn.init.xavier_uniform_(self.edge_const)

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        x = self.linear(h)
        n = x.shape[0]
        src, dst = edge_index[0], edge_index[1]
        deg = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(
            0, src, torch.ones_like(src, dtype=x.dtype)) + 1.0
        inv_sqrt = deg.pow(-0.5)
        norm = (inv_sqrt[src] * inv_sqrt[dst]).unsqueeze(1)
        if edge_attr is None:
            edge_attr = (self.edge_const if self.edge_const is not None
                         else torch.zeros(1, x.shape[1], dtype=x.dtype, device=x.device)).expand(src.shape[0], -1)
        messages = norm * torch.relu(x[src] + edge_attr)
        out = torch.zeros_like(x).index_add_(0, dst, messages)
        return out + torch.relu(x + self.root_emb.weight) / deg.unsqueeze(1)


@CONVS.register("gcn_ogb")
def _gcn_ogb(hidden: int, has_edges: bool) -> nn.Module:
    """:class:`OGBGCNConv`, the official code's GCN layer (OGB's), edge embeddings in every message."""
    return OGBGCNConv(hidden, has_edges)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class GNN(nn.Module):
    """Encoder -> ``layers`` x (conv, [batch norm], ReLU except after the last, dropout) -> jumping knowledge ->
    sum readout (roots only when a root mask is given) -> dropout -> linear classifier.

    The layer order follows the official ``GNN_node`` / ``GCN`` modules of Mirage.

    Args:
        conv: registry name in :data:`CONVS` (``gcn``, ``gin``, ``gat``).
        node_spec: node feature spec; None means featureless nodes (a learned constant input).
        edge_spec: edge feature spec, or None.
        num_classes: logits per graph.
        hidden: width of every layer.
        layers: message-passing layers (should equal Mirage's hops L; the evaluator warns otherwise).
        dropout: dropout after every layer and before the classifier.
        batch_norm: BatchNorm1d after every convolution.
        jk: ``"last"`` (last layer's node embeddings) or ``"sum"`` (sum over layers).
        hops: depth L of the computation trees the model will be trained on, if any; a different ``layers`` warns,
            because then root embeddings no longer equal the real graphs' node embeddings (the official code does
            not enforce this: its molhiv GAT uses 2 layers on 3-hop trees).
        embed_onehot: encode one-hot (``linear``) node / edge specs as per-label embeddings (OGB ``AtomEncoder`` /
            ``BondEncoder`` style, :class:`OneHotEmbedding`) instead of a linear layer; the ``gcn_ogb`` model sets it.
    """

    def __init__(self, conv: str = "gcn", *, node_spec: dict[str, Any] | None, edge_spec: dict[str, Any] | None,
                 num_classes: int, hidden: int = 128, layers: int = 2, dropout: float = 0.5, batch_norm: bool = False,
                 jk: str = "last", hops: int | None = None, embed_onehot: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"a GNN needs at least one layer, got {layers}")
        if hops is not None and hops != layers:
            warnings.warn(f"the GNN has {layers} layers but the tree-sets hold {hops}-hop computation trees; Mirage "
                          f"assumes layers == L", stacklevel=2)
        if jk not in _JK:
            raise ValueError(f"unknown jk '{jk}'; choose from {sorted(_JK)}")
        make_conv = CONVS.get(conv)
        self.conv_name = conv
        self.num_layers = layers
        self.dropout = dropout
        self.jk = jk
        self.node_encoder = build_encoder(node_spec, hidden, embed_onehot=embed_onehot)
        if self.node_encoder is None:
            self.constant = nn.Parameter(torch.zeros(1, hidden))
            nn.init.normal_(self.constant, std=1.0)
        # One edge encoder per layer, as OGB's edge-aware convolutions embed bonds afresh at every layer.
        self.edge_encoders = nn.ModuleList(build_encoder(edge_spec, hidden, embed_onehot=embed_onehot)
                                           for _ in range(layers)) \
            if edge_spec is not None else None
        self.convs = nn.ModuleList(make_conv(hidden, edge_spec is not None) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) if batch_norm else nn.Identity() for _ in range(layers))
        self.classifier = nn.Linear(hidden, num_classes)
        self.embed_dim = hidden

    def node_embeddings(self, x: Tensor | None, edge_index: Tensor, edge_attr: Tensor | None = None,
                        num_nodes: int | None = None) -> Tensor:
        """Shape: x (N, ...) -> (N, hidden)."""
        if self.node_encoder is not None and x is not None:
            h = self.node_encoder(x)
        else:
            n = int(num_nodes if num_nodes is not None else (x.shape[0] if x is not None else 0))
            h = self.constant.expand(n, -1)
        outs = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            e = self.edge_encoders[i](edge_attr) if self.edge_encoders is not None and edge_attr is not None else None
            h = norm(conv(h, edge_index, e))
            if i < self.num_layers - 1:
                h = torch.relu(h)
            h = nn.functional.dropout(h, self.dropout, self.training)
            outs.append(h)
        return _JK[self.jk](outs)

    def embed(self, x: Tensor | None, edge_index: Tensor, batch: Tensor, num_graphs: int,
              edge_attr: Tensor | None = None, root_mask: Tensor | None = None) -> Tensor:
        """Graph embeddings: sum of node embeddings over ``root_mask`` (all nodes if None).

        Shape: batch (N,) graph index -> (num_graphs, hidden).
        """
        h = self.node_embeddings(x, edge_index, edge_attr, num_nodes=batch.shape[0])
        if root_mask is not None:
            h, batch = h[root_mask], batch[root_mask]
        return torch.zeros(num_graphs, h.shape[1], device=h.device, dtype=h.dtype).index_add_(0, batch, h)

    def forward(self, x: Tensor | None, edge_index: Tensor, batch: Tensor, num_graphs: int,
                edge_attr: Tensor | None = None, root_mask: Tensor | None = None) -> Tensor:
        """Shape: -> (num_graphs, num_classes) logits."""
        g = self.embed(x, edge_index, batch, num_graphs, edge_attr, root_mask)
        return self.classifier(nn.functional.dropout(g, self.dropout, self.training))


_JK: dict[str, Callable[[list[Tensor]], Tensor]] = {
    "last": lambda hs: hs[-1],
    "sum": lambda hs: torch.stack(hs).sum(0),
}


def _variant(conv: str) -> Callable[..., GNN]:
    def build(**kwargs: Any) -> GNN:
        return GNN(conv, **kwargs)

    build.__doc__ = f"GNN with {conv} convolutions (see :class:`GNN` for the arguments)."
    return build


for _conv in ("gcn", "gin", "gat"):
    GNN_MODELS.register(_conv)(_variant(_conv))


@GNN_MODELS.register("gcn_ogb")
def _gcn_ogb_model(**kwargs: Any) -> GNN:
    """The official Mirage GCN: :class:`OGBGCNConv` layers (OGB's edge-aware GCN) on per-label node / edge
    embeddings (``embed_onehot=True``), inside the same :class:`GNN` (layer order, JK, root-sum readout)."""
    return GNN("gcn_ogb", embed_onehot=True, **kwargs)


#: Cross-architecture pools of GNNs (``ddistill evaluate --pool gnn``; Mirage is model-agnostic).
GNN_POOLS: dict[str, list[str]] = {"gnn": ["gcn", "gin", "gat"]}


def create_gnn(name: str, *, node_spec: dict[str, Any] | None, edge_spec: dict[str, Any] | None, num_classes: int,
               **overrides: Any) -> GNN:
    """Builds the registered GNN ``name`` (unknown names raise a KeyError listing the choices)."""
    return GNN_MODELS.get(name)(node_spec=node_spec, edge_spec=edge_spec, num_classes=num_classes, **overrides)


__all__ = ["CONVS", "FEATURE_ENCODERS", "GNN", "GNN_MODELS", "GNN_POOLS", "CategoricalEncoder", "LinearEncoder",
           "OGBGCNConv", "OneHotEmbedding", "build_encoder", "create_gnn"]
