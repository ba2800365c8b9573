"""Mirage's explicit options for the official code's choices: the support-threshold schedule selected on validation
graphs (never the test split), isolated nodes dropped before mining, and the size record (unit, N, E, F, D, ratio).

Graphs are tiny and built here; the ``gnn`` scorer is the graph evaluator, the other scorers are stand-ins whose
score is set by the test."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")
from torch_geometric.data import Data  # noqa: E402

import evaluators  # noqa: E402,F401  (registers the "gnn" support scorer)
from ddistill.config import ConfigError, from_dict  # noqa: E402
from ddistill.data.graph import GraphDataset, GraphDatasetInfo  # noqa: E402
from synthesizers.mirage import SUPPORT_SCORERS, Mirage, MirageConfig  # noqa: E402
from synthesizers.mirage.selection import SupportSelection, pick_best, subset_thresholds  # noqa: E402
from synthesizers.random_graphs import RandomGraphs, RandomGraphsConfig  # noqa: E402
from tests._helpers import toy_graphs  # noqa: E402


class _NotAGraph:
    """Stands in for the test split: any attempt to read it as a graph fails loudly."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read (attribute {name!r})")


def _no_test(data: GraphDataset) -> GraphDataset:
    return GraphDataset(data.train, data.val, [_NotAGraph() for _ in data.test], data.info)


@pytest.fixture
def scripted_scorer(monkeypatch):
    """A scorer whose score is ``scorer_kwargs["by_support"][str(candidate support)]``; it records what it saw."""
    seen = []

    def scorer(candidate, selection, kwargs, seed):
        seen.append({"support": candidate.meta["support"], "thresholds": candidate.meta["thresholds"],
                     "selection": selection, "seed": seed})
        return {"score": kwargs["by_support"][str(candidate.meta["support"])]}

    monkeypatch.setitem(SUPPORT_SCORERS._entries, "scripted", scorer)
    return seen


def _schedule_config(schedule, scores, split="train_holdout", **kw) -> MirageConfig:
    return from_dict(MirageConfig, {
        "hops": 1, "support_schedule": schedule, "progress": False,
        "selection": {"split": split, "scorer": "scripted", "scorer_kwargs": {"by_support": scores}}, **kw})


def _same_set(a, b) -> bool:
    return sorted(a.tensors) == sorted(b.tensors) and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


# --- the support schedule -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train_holdout", "val"])
def test_schedule_keeps_the_best_validating_threshold_and_records_every_one(scripted_scorer, split):
    data = _no_test(toy_graphs())
    cfg = _schedule_config([0.75, 0.5, 0.25], {"0.75": 60.0, "0.5": 90.0, "0.25": 80.0}, split)
    synset = Mirage(cfg, seed=3).fit(data)
    sched = synset.meta["support_schedule"]
    assert sched["selected"] == 1 and synset.meta["support"] == 0.5 and sched["split"] == split
    assert [e["support"] for e in sched["entries"]] == [0.75, 0.5, 0.25]
    assert [e["validation_score"] for e in sched["entries"]] == [60.0, 90.0, 80.0]
    for e in sched["entries"]:
        alone = Mirage(MirageConfig(hops=1, support=e["support"], progress=False)).fit(data).meta
        assert e["distilled_bytes"] == alone["distilled_bytes"] and e["thresholds"] == alone["thresholds"]
        assert e["compression_ratio"] == pytest.approx(alone["distilled_bytes"] / alone["full_tree_bytes"])
    # The shipped set is the chosen threshold mined on every training graph.
    assert _same_set(synset, Mirage(MirageConfig(hops=1, support=0.5, progress=False)).fit(data))
    assert all(s["seed"] == 3 for s in scripted_scorer)


def test_selection_never_sees_the_test_split_and_holds_out_training_graphs(scripted_scorer):
    data = _no_test(toy_graphs())
    Mirage(_schedule_config([0.5], {"0.5": 1.0}), seed=0).fit(data)
    sel = scripted_scorer[0]["selection"]
    train_ids = {id(g) for g in data.train}
    assert sel.val is sel.test, "the selection graphs play val and test; the real test split is never passed"
    assert all(id(g) in train_ids for g in sel.val)                      # held-out *training* graphs
    assert not {id(g) for g in sel.val} & {id(g) for g in sel.train}    # not mined on
    assert len(sel.val) + len(sel.train) == len(data.train)
    # thresholds of the mined subset ask the same share of each class
    full = Mirage(MirageConfig(hops=1, support=0.5, progress=False)).fit(data).meta["thresholds"]
    y = np.array([int(g.y) for g in data.train])
    y_sub = np.array([int(g.y) for g in sel.train])
    expected = [max(1, math.ceil(full[c] * (y_sub == c).sum() / (y == c).sum() - 1e-9)) for c in (0, 1)]
    assert scripted_scorer[0]["thresholds"] == expected


def test_official_val_split_scores_on_the_validation_graphs(scripted_scorer):
    data = _no_test(toy_graphs())
    Mirage(_schedule_config([0.5], {"0.5": 1.0}, "val"), seed=0).fit(data)
    sel = scripted_scorer[0]["selection"]
    assert [id(g) for g in sel.val] == [id(g) for g in data.val] and len(sel.train) == len(data.train)


def test_ties_keep_the_earlier_threshold_and_infeasible_ones_are_recorded(scripted_scorer):
    data = toy_graphs()
    cfg = _schedule_config([1000, 0.5, 0.25], {"0.5": 75.0, "0.25": 75.0})
    synset = Mirage(cfg).fit(data)
    entries = synset.meta["support_schedule"]["entries"]
    assert "lower `support`" in entries[0]["error"] and "validation_score" not in entries[0]
    assert synset.meta["support"] == 0.5
    with pytest.raises(ValueError, match="no support_schedule entry could be scored"):
        Mirage(_schedule_config([1000, 2000], {})).fit(data)
    assert pick_best([None, 2.0, math.nan, 2.0]) == 1
    assert subset_thresholds({0: 10, 1: 3}, {0: 100, 1: 30}, {0: 90, 1: 27}) == {0: 9, 1: 3}


def test_official_nci1_schedule_preset():
    cfg = Mirage.config_from_preset("official_nci1_schedule")
    assert cfg.support_schedule == [[440, 570], [420, 550]] and cfg.selection.split == "val"
    assert cfg.drop_shared and cfg.drop_isolated_nodes and cfg.hops == 2


def test_schedule_options_fail_naming_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="selection.split 'random' is unknown; choose from"):
        from_dict(MirageConfig, {"support_schedule": [0.5], "selection": {"split": "random"}})
    with pytest.raises(ConfigError, match="holdout_fraction"):
        from_dict(MirageConfig, {"support_schedule": [0.5], "selection": {"holdout_fraction": 1.0}})
    with pytest.raises(ConfigError, match="support_schedule is empty"):
        from_dict(MirageConfig, {"support_schedule": []})
    with pytest.raises(ValueError, match="selection.scorer 'nope' is not registered; choose from"):
        Mirage(MirageConfig(hops=1, support_schedule=[0.5], selection=SupportSelection(scorer="nope"),
                            progress=False)).fit(toy_graphs())


def test_gnn_scorer_trains_on_the_candidates_without_the_test_split():
    data = _no_test(toy_graphs())
    cfg = from_dict(MirageConfig, {"hops": 1, "support_schedule": [0.5, 0.25], "progress": False, "selection": {
        "split": "val", "scorer_kwargs": {"model": "gin", "hidden": 16, "num_runs": 2, "top_k": 1, "threads": 1,
                                          "train": {"epochs": 3, "batch_size": 4}}}})
    synset = Mirage(cfg, seed=1).fit(data)
    entries = synset.meta["support_schedule"]["entries"]
    for e in entries:
        v = e["validation"]
        assert v["metric"] == "accuracy" and len(v["val_all_runs"]) == 2 and len(v["runs_reported"]) == 1
        assert e["validation_score"] == pytest.approx(v["val_all_runs"][v["runs_reported"][0]])
    assert synset.meta["support"] in (0.5, 0.25)
    again = Mirage(cfg, seed=1).fit(data)
    assert again.meta["support_schedule"]["entries"] == entries  # seeded: reproducible


# --- isolated nodes before mining ---------------------------------------------------------------------------------
def _with_isolated(n_per_class: int = 6) -> GraphDataset:
    """Class 0: a label-0 triangle, class 1: a label-2 path; every graph also has one isolated label-1 node."""
    def graph(labels, edges, y):
        ei = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).t().reshape(2, -1)
        return Data(x=torch.nn.functional.one_hot(torch.tensor(labels), 3).float(), edge_index=ei,
                    y=torch.tensor([y]), num_nodes=len(labels))

    graphs = []
    for _ in range(n_per_class):
        graphs.append(graph([0, 0, 0, 1], [(0, 1), (1, 2), (2, 0)], 0))
        graphs.append(graph([2, 2, 2, 1], [(0, 1), (1, 2)], 1))
    info = GraphDatasetInfo("isolated", 2, "onehot", "none", 3, 0, "accuracy", "onehot_argmax", "in-memory")
    return GraphDataset(graphs, graphs[:2], graphs[:2], info)


def _tree_sets(synset) -> list[tuple[int, ...]]:
    ptr = synset.tensors["set_ptr"].tolist()
    trees = synset.tensors["set_trees"].tolist()
    return [tuple(trees[ptr[i]:ptr[i + 1]]) for i in range(len(ptr) - 1)]


def _one_node_trees(synset) -> set[int]:
    sizes = torch.diff(synset.tensors["tree_ptr"]).tolist()
    return {t for t, n in enumerate(sizes) if n == 1}


def test_drop_isolated_nodes_removes_their_trees_before_mining():
    data = _with_isolated()
    base = dict(hops=1, support=1.0 - 1e-9, progress=False)  # every graph of the class
    default = Mirage(MirageConfig(**base)).fit(data)
    before = Mirage(MirageConfig(**base, drop_isolated_nodes=True)).fit(data)
    after = Mirage(MirageConfig(**base, drop_single_node_trees=True)).fit(data)
    # default: the isolated node's one-node tree is an item, frequent in every graph, so it is in tree-sets
    assert any(set(s) & _one_node_trees(default) for s in _tree_sets(default))
    # before mining: it is no item at all; no tree-set holds it and none repeats
    assert not any(set(s) & _one_node_trees(before) for s in _tree_sets(before))
    assert len(set(_tree_sets(before))) == len(_tree_sets(before)) < len(_tree_sets(default))
    # after mining (the ogbg code's disjointed_union): removed from the sets, which then repeat
    sets_after = [tuple(sorted(s)) for s in _tree_sets(after)]
    assert len(set(sets_after)) < len(sets_after)
    # the whole training set's size is the same data either way
    assert before.meta["full_tree_bytes"] == default.meta["full_tree_bytes"]


# --- the size record --------------------------------------------------------------------------------------------
def test_every_graph_set_states_its_size_unit_and_compression_ratio():
    data = toy_graphs()
    mirage = Mirage(MirageConfig(hops=1, support=0.5, progress=False)).fit(data)
    rnd = RandomGraphs(RandomGraphsConfig(graphs_per_class=2, hops=1), seed=0).fit(data)
    for synset, full_key in ((mirage, "full_tree_bytes"), (rnd, "full_graph_bytes")):
        size, t = synset.meta["size"], synset.tensors
        assert "int32" in size["unit"] and size["bytes_per_int"] == 4
        assert size["N"] == t["x"].shape[0] and size["E"] == t["edge_index"].shape[1]
        assert size["F"] == t["x"].shape[1] == 3 and size["D"] == 0 and size["F_labels"] == 1
        assert size["NxF"] == size["N"] * size["F"] and size["ExD"] == 0
        assert size["distilled_bytes"] == synset.meta["distilled_bytes"]
        assert size["full_train_bytes"] == synset.meta[full_key]
        assert size["compression_ratio"] == pytest.approx(synset.meta["distilled_bytes"] / synset.meta[full_key])
        assert size["full_train"]["graphs"] == len(data.train)
    assert mirage.meta["size"]["E"] == mirage.meta["size"]["N"] - int(mirage.tensors["root_mask"].sum())
