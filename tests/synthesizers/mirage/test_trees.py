"""Computation trees, canonical ids, discretisers and materialisation (Mirage steps 1-4 and 6)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")
from torch_geometric.data import Data  # noqa: E402

from ddistill.data.graph import GraphPack  # noqa: E402
from ddistill.data.graph.discretise import (  # noqa: E402
    DISCRETISERS,
    OGB_ATOM_DIMS,
    OGB_BOND_DIMS,
    build_discretiser,
    discretiser_from_state,
)
from synthesizers.mirage.trees import (  # noqa: E402
    TreeSet,
    TreeTable,
    computation_tree_ids,
    encode_tree_sets,
    graph_transactions,
    materialise_tree_sets,
    tree_set_bytes,
)


def _undirected(edges: list[tuple[int, int]]) -> torch.Tensor:
    both = [(u, v) for u, v in edges] + [(v, u) for u, v in edges]
    return torch.tensor(both, dtype=torch.long).t().reshape(2, -1)


def _graph(labels: list[int], edges: list[tuple[int, int]], edge_labels: list[int] | None = None, *,
           num_labels: int = 3, num_edge_labels: int = 2, y: int = 0) -> Data:
    """A PyG graph with one-hot node (and edge) labels; edges listed once, stored in both directions."""
    x = torch.nn.functional.one_hot(torch.tensor(labels), num_labels).float()
    d = Data(x=x, edge_index=_undirected(edges), y=torch.tensor([y]), num_nodes=len(labels))
    if edge_labels is not None:
        el = torch.tensor(edge_labels + edge_labels, dtype=torch.long)
        d.edge_attr = torch.nn.functional.one_hot(el, num_edge_labels).float()
    return d


def _trees(graphs: list[Data], hops: int, table: TreeTable | None = None) -> tuple[np.ndarray, TreeTable, GraphPack]:
    pack = GraphPack.from_data_list(graphs)
    disc = build_discretiser("onehot_argmax").fit(pack)
    table = table if table is not None else TreeTable()
    ids = computation_tree_ids(disc.node_labels(pack), pack.edge_index, disc.edge_labels(pack), hops, table)
    return ids, table, pack


def _bfs_tree(adj: dict[int, list[tuple[int, int]]], labels: list[int], root: int, hops: int) -> tuple:
    """Reference: the official BFS unrolling (every expanded node gets all its neighbours, parent included),
    then the nested sorted tuple of the resulting tree. Written independently of the library."""
    nodes = [(labels[root], [])]  # (label, [(edge_label, child position)])
    queue = [(root, 0, 0)]
    while queue:
        v, depth, me = queue.pop(0)
        if depth >= hops:
            continue
        for u, e in adj[v]:
            nodes.append((labels[u], []))
            nodes[me][1].append((e, len(nodes) - 1))
            queue.append((u, depth + 1, len(nodes) - 1))

    def canon(i: int) -> tuple:
        label, kids = nodes[i]
        return (label, tuple(sorted((e, canon(c)) for e, c in kids)))

    return canon(0)


# --- a hand-made graph with a hand-written expectation ----------------------------------------------------------
def test_path_graph_trees_match_hand_written_expectation():
    # a(0) -e0- b(1) -e1- c(2): every expanded node gets all its neighbours, including its BFS parent.
    ids, table, _ = _trees([_graph([0, 1, 2], [(0, 1), (1, 2)], [0, 1])], hops=2)
    leaf = lambda lab: (lab, ())  # noqa: E731
    expected = [
        (0, ((0, (1, ((0, leaf(0)), (1, leaf(2))))),)),
        (1, ((0, (0, ((0, leaf(1)),))), (1, (2, ((1, leaf(1)),))))),
        (2, ((1, (1, ((0, leaf(0)), (1, leaf(2))))),)),
    ]
    assert [table.canonical(int(t)) for t in ids[2]] == expected
    assert [table.canonical(int(t)) for t in ids[0]] == [leaf(0), leaf(1), leaf(2)]
    assert table.canonical(int(ids[1][1])) == (1, ((0, leaf(0)), (1, leaf(2))))
    assert [table.size(int(t)) for t in ids[2]] == [4, 5, 4]
    labels, parents, elabels, nchild = table.preorder(int(ids[2][1]))
    assert labels.tolist() == [1, 0, 1, 2, 1] and parents.tolist() == [-1, 0, 1, 0, 3]
    assert elabels.tolist() == [-1, 0, 0, 1, 1] and nchild.tolist() == [2, 1, 0, 1, 0]


def test_level_by_level_ids_equal_bfs_unrolling_on_random_graphs():
    rng = random.Random(0)
    table = TreeTable()
    for trial in range(12):
        n = rng.randint(1, 9)
        edges = sorted({tuple(sorted(rng.sample(range(n), 2))) for _ in range(rng.randint(0, 2 * n))} if n > 1 else [])
        labels = [rng.randrange(3) for _ in range(n)]
        elabels = [rng.randrange(2) for _ in edges]
        hops = trial % 4
        ids, table, _ = _trees([_graph(labels, edges, elabels)], hops, table)
        adj: dict[int, list[tuple[int, int]]] = {v: [] for v in range(n)}
        for (u, v), e in zip(edges, elabels):
            adj[u].append((v, e))
            adj[v].append((u, e))
        for v in range(n):
            assert table.canonical(int(ids[hops][v])) == _bfs_tree(adj, labels, v, hops)
            assert table.size(int(ids[hops][v])) == len(table.preorder(int(ids[hops][v]))[0])


def test_duplicate_edges_and_self_loops_are_ignored():
    g = _graph([0, 1], [(0, 1)], None)
    noisy = Data(x=g.x, edge_index=torch.tensor([[0, 1, 0, 0, 1], [1, 0, 1, 0, 1]]), y=g.y, num_nodes=2)
    a, ta, _ = _trees([g], 2)
    b, tb, _ = _trees([noisy], 2)
    assert [ta.canonical(int(t)) for t in a[2]] == [tb.canonical(int(t)) for t in b[2]]


# --- canonical hashing: isomorphic trees hash equal, others do not ------------------------------------------
def test_isomorphic_graphs_relabelled_and_reordered_give_equal_tree_ids():
    labels = [0, 1, 2, 1, 0]
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 3)]
    elabels = [0, 1, 0, 1, 1]
    perm = [3, 0, 4, 1, 2]  # node v of the first graph is node perm[v] of the second
    labels2 = [0] * 5
    for v, p in enumerate(perm):
        labels2[p] = labels[v]
    edges2 = [(perm[v], perm[u]) for u, v in reversed(edges)]  # reversed order, swapped endpoints
    table = TreeTable()
    ids1, _, _ = _trees([_graph(labels, edges, elabels)], 3, table)
    ids2, _, _ = _trees([_graph(labels2, edges2, list(reversed(elabels)))], 3, table)
    for v, p in enumerate(perm):
        assert ids1[3][v] == ids2[3][p]
    # one edge label changed: the trees that see that edge must change
    ids3, _, _ = _trees([_graph(labels, edges, [0, 1, 0, 1, 0])], 3, table)
    assert set(ids3[3].tolist()).isdisjoint(ids1[3].tolist())
    # one node label changed
    ids4, _, _ = _trees([_graph([0, 1, 2, 1, 1], edges, elabels)], 3, table)
    assert ids4[3].tolist() != ids1[3].tolist()


def test_intern_canonical_ignores_child_order_and_distinguishes_structure():
    table = TreeTable()
    t1 = (0, ((0, (1, ())), (1, (2, ((0, (1, ())),)))))
    t2 = (0, ((1, (2, ((0, (1, ())),))), (0, (1, ()))))  # same tree, children listed in another order
    t3 = (0, ((0, (1, ())), (1, (2, ((1, (1, ())),)))))  # differs in one deep edge label
    t4 = (0, ((0, (1, ((0, (1, ())),))), (1, (2, ()))))  # same labels and edge multiset, other shape
    a, b, c, d = (table.intern_canonical(t) for t in (t1, t2, t3, t4))
    assert a == b and len({a, c, d}) == 3
    assert table.canonical(a) == table.canonical(b) == t1
    # labels >= 8 cannot collide (the official digit-string encoding can)
    assert table.intern_canonical((10, ((0, (1, ())),))) != table.intern_canonical((1, ((0, (0, ())),)))


def test_transactions_are_sets_of_tree_ids_per_graph():
    g1 = _graph([0, 0, 0], [(0, 1), (1, 2), (0, 2)], y=0)  # triangle: one tree type
    g2 = _graph([0, 1], [(0, 1)], y=1)
    ids, _, pack = _trees([g1, g2], 1)
    trans = graph_transactions(ids[1], pack.ptr)
    assert len(trans) == 2 and trans[0].tolist() == [ids[1][0]] and sorted(trans[1].tolist()) == sorted(ids[1][3:5])


# --- discretisers --------------------------------------------------------------------------------------------
def test_discretiser_registry_and_errors():
    assert {"onehot_argmax", "ogb_atom_tuple", "degree"} <= set(DISCRETISERS.names())
    with pytest.raises(KeyError, match="choose from"):
        build_discretiser("bogus")
    cont = Data(x=torch.rand(3, 2), edge_index=torch.zeros(2, 0, dtype=torch.long), y=torch.tensor([0]), num_nodes=3)
    with pytest.raises(ValueError, match="not one-hot"):
        build_discretiser("onehot_argmax").fit(GraphPack.from_data_list([cont]))


def test_onehot_and_degree_discretisers_round_trip():
    g = _graph([0, 2, 1, 2], [(0, 1), (1, 2), (1, 3)], [1, 0, 1])
    pack = GraphPack.from_data_list([g])
    disc = build_discretiser("onehot_argmax").fit(pack)
    assert disc.node_labels(pack).tolist() == [0, 2, 1, 2]
    assert torch.equal(disc.decode_nodes(disc.node_labels(pack)), pack.x)
    assert torch.equal(disc.decode_edges(disc.edge_labels(pack)), pack.edge_attr)
    restored = discretiser_from_state(disc.state_dict())
    assert torch.equal(restored.featurise(pack).x, pack.x) and restored.edge_spec() == {"kind": "linear", "dim": 2}

    bare = Data(edge_index=g.edge_index, y=g.y, num_nodes=4)
    bpack = GraphPack.from_data_list([bare])
    deg = build_discretiser("degree").fit(bpack)
    assert deg.node_labels(bpack).tolist() == [1, 3, 1, 1]
    assert deg.node_spec() == {"kind": "categorical", "cardinalities": [4]}
    capped = build_discretiser("degree", max_degree=2).fit(bpack)
    assert capped.featurise(bpack).x.flatten().tolist() == [1, 2, 1, 1]


def test_ogb_tuple_discretiser_round_trips_and_matches_ogb_dims():
    x = torch.tensor([[5, 0, 4, 5, 3, 0, 2, 0, 0], [7, 0, 2, 5, 1, 0, 2, 0, 0], [5, 0, 4, 5, 3, 0, 2, 0, 0]])
    g = Data(x=x, edge_index=_undirected([(0, 1), (1, 2)]), edge_attr=torch.tensor([[0, 0, 0], [1, 0, 1]] * 2),
             y=torch.tensor([1]), num_nodes=3)
    pack = GraphPack.from_data_list([g])
    disc = build_discretiser("ogb_atom_tuple").fit(pack)
    labels = disc.node_labels(pack)
    assert labels[0] == labels[2] != labels[1]
    assert torch.equal(disc.decode_nodes(labels), x)
    assert torch.equal(disc.decode_edges(disc.edge_labels(pack)), pack.edge_attr)
    unseen = GraphPack.from_data_list([Data(x=x + 1, edge_index=g.edge_index, y=g.y, num_nodes=3)])
    with pytest.raises(KeyError, match="vocabulary"):
        disc.node_labels(unseen)
    assert discretiser_from_state(disc.state_dict()).node_spec()["cardinalities"] == list(OGB_ATOM_DIMS)
    from ddistill.data.graph import import_ogb

    import_ogb()
    from ogb.utils.features import get_atom_feature_dims, get_bond_feature_dims

    assert list(OGB_ATOM_DIMS) == get_atom_feature_dims() and list(OGB_BOND_DIMS) == get_bond_feature_dims()


# --- materialisation and bytes ------------------------------------------------------------------------------
def test_materialised_tree_sets_are_disjoint_unions_with_child_to_parent_edges():
    ids, table, _ = _trees([_graph([0, 1, 2], [(0, 1), (1, 2)], [0, 1])], hops=2)
    t0, t1 = int(ids[2][0]), int(ids[2][1])
    sets = [TreeSet((t0, t1), support=7, label=1), TreeSet((t1,), support=3, label=0)]
    disc = build_discretiser("onehot_argmax").fit(GraphPack.from_data_list([_graph([0, 1, 2], [(0, 1)], [0])]))
    pack = materialise_tree_sets(table, sets, disc)
    assert pack.ptr.tolist() == [0, 9, 14] and pack.edge_ptr.tolist() == [0, 7, 11]
    assert pack.y.tolist() == [1, 0] and pack.weight.tolist() == [7.0, 3.0]
    assert pack.root_mask.nonzero().flatten().tolist() == [0, 4, 9]
    src, dst = pack.edge_index
    # every non-root node sends exactly one message (to its parent); roots send none; messages stay in their tree
    assert sorted(src.tolist()) == [i for i in range(14) if i not in (0, 4, 9)]
    assert not pack.root_mask[src].any()
    assert torch.equal(pack.x.argmax(1), pack.node_data["node_label"])
    assert (pack.edge_batch() == pack.batch()[src]).all() and (pack.batch()[src] == pack.batch()[dst]).all()
    enc = encode_tree_sets(table, sets)
    assert enc["tree_nodes"].shape == (9, 3) and enc["set_trees"].tolist() == [0, 1, 1]
    bytes_ = tree_set_bytes(table, [s.trees for s in sets])
    assert bytes_ == 4 * (3 * (4 + 5) + (3 + 2) + (3 + 1))
    assert bytes_ == 4 * (enc["tree_nodes"].numel() + enc["set_info"].numel() + len(sets) + enc["set_trees"].numel())


def test_graph_pack_select_matches_per_graph_slices():
    graphs = [_graph([0, 1, 2], [(0, 1), (1, 2)], [0, 1], y=0), _graph([1], [], [], y=1),
              _graph([2, 2], [(0, 1)], [1], y=1)]
    pack = GraphPack.from_data_list(graphs)
    sub = pack.select([2, 0, 2])
    got = sub.to_data_list()
    for d, i in zip(got, [2, 0, 2]):
        assert torch.equal(d.x, graphs[i].x) and torch.equal(d.edge_index, graphs[i].edge_index)
        assert torch.equal(d.edge_attr, graphs[i].edge_attr) and int(d.y) == int(graphs[i].y)
