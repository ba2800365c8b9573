"""The official Mirage GCN (``gcn_ogb``): OGB's edge-aware GCN layer, checked against its equations written out node
by node, and the per-label embeddings it encodes one-hot inputs with."""
from __future__ import annotations

import math

import pytest
import torch

from ddistill.models.gnn import (GNN_MODELS, CategoricalEncoder, LinearEncoder, OGBGCNConv, OneHotEmbedding,
                                 create_gnn)


def _reference(conv: OGBGCNConv, h: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """out_i = sum_{j -> i} ReLU(x_j + e_ji) / sqrt(deg_j deg_i) + ReLU(x_i + r) / deg_i, deg = out-degree + 1."""
    x = conv.linear(h)
    src, dst = edge_index.tolist()
    deg = [1 + src.count(v) for v in range(x.shape[0])]
    rows = []
    for i in range(x.shape[0]):
        acc = torch.relu(x[i] + conv.root_emb.weight[0]) / deg[i]
        for k, (j, t) in enumerate(zip(src, dst)):
            if t == i:
                acc = acc + torch.relu(x[j] + e[k]) / math.sqrt(deg[j] * deg[i])
        rows.append(acc)
    return torch.stack(rows)


def test_ogb_gcn_layer_follows_its_equations_on_a_directed_graph():
    torch.manual_seed(0)
    conv = OGBGCNConv(8, has_edges=True)
    h = torch.randn(5, 8)
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 4, 4], [1, 0, 2, 1, 1, 0, 3]])  # out-degrees 1, 2, 1, 1, 2
    e = torch.randn(edge_index.shape[1], 8)
    with torch.no_grad():
        assert torch.allclose(conv(h, edge_index, e), _reference(conv, h, edge_index, e), atol=1e-6)


def test_without_edge_features_every_edge_gets_one_learned_embedding():
    torch.manual_seed(1)
    conv = OGBGCNConv(4, has_edges=False)
    h = torch.randn(3, 4)
    edge_index = torch.tensor([[1, 2], [0, 0]])  # a tree, children -> root: the root's out-degree is 0
    with torch.no_grad():
        out = conv(h, edge_index, None)
        ref = _reference(conv, h, edge_index, conv.edge_const.expand(2, -1))
        assert torch.allclose(out, ref, atol=1e-6)
        x = conv.linear(h)
        # the root (deg 1) keeps its whole self term; each leaf (deg 2) half of it and receives nothing
        assert torch.allclose(out[1], torch.relu(x[1] + conv.root_emb.weight[0]) / 2, atol=1e-6)
    assert conv.edge_const.requires_grad and OGBGCNConv(4, has_edges=True).edge_const is None


def test_one_hot_embedding_is_a_bias_free_lookup():
    enc = OneHotEmbedding(6, dim=4)
    labels = torch.tensor([2, 0, 3])
    assert torch.equal(enc(torch.nn.functional.one_hot(labels, 4).float()), enc.weight[labels])


def test_gcn_ogb_model_embeds_every_label_and_classifies_graphs():
    assert "gcn_ogb" in GNN_MODELS
    onehot = create_gnn("gcn_ogb", node_spec={"kind": "linear", "dim": 7}, edge_spec={"kind": "linear", "dim": 4},
                        num_classes=2, hidden=16, layers=2, dropout=0.0)
    assert isinstance(onehot.node_encoder, OneHotEmbedding)
    assert all(isinstance(m, OneHotEmbedding) for m in onehot.edge_encoders)
    assert all(isinstance(c, OGBGCNConv) for c in onehot.convs)
    cat = create_gnn("gcn_ogb", node_spec={"kind": "categorical", "cardinalities": [5, 3]}, edge_spec=None,
                     num_classes=3, hidden=8, layers=1)
    assert isinstance(cat.node_encoder, CategoricalEncoder) and cat.edge_encoders is None
    assert cat.convs[0].edge_const is not None
    # the other GNNs keep their linear encoders (they are PyG's layers)
    pytest.importorskip("torch_geometric")
    plain = create_gnn("gcn", node_spec={"kind": "linear", "dim": 7}, edge_spec=None, num_classes=2, hidden=8)
    assert isinstance(plain.node_encoder, LinearEncoder)

    x = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 4, 5]), 7).float()
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    edge_attr = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 4).float()
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    logits = onehot(x, edge_index, batch, 2, edge_attr)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert onehot.node_encoder.weight.grad is not None and onehot.convs[0].root_emb.weight.grad is not None
    with pytest.raises(KeyError, match="choose from"):
        create_gnn("gcn_official", node_spec=None, edge_spec=None, num_classes=2)
