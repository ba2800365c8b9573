"""Controls of the graph evaluator (issue #14): they can fail as well as pass, never change the set's own score, are
deterministic, and the warnings fire when a score does not beat them.

Data are built in memory: (a) ``size``: the label is the graph's size (n >= 10), node labels are noise; (b)
``labels``: the size is independent of the label, which shows in the node labels.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")
from torch_geometric.data import Data  # noqa: E402

from ddistill.data import EvalData  # noqa: E402
from ddistill.data.graph import GraphDataset, GraphDatasetInfo, GraphPack  # noqa: E402
from ddistill.synset import SyntheticSet  # noqa: E402
from evaluators.graph import GraphEvalConfig, GraphEvaluator  # noqa: E402
from evaluators.graph_controls import (  # noqa: E402
    CONTROLS,
    binary_auc,
    control_warnings,
    label_histogram,
    one_feature_probs,
    size_binned_auc,
    size_features,
)
from synthesizers.random_graphs import RandomGraphs, RandomGraphsConfig  # noqa: E402

TRIVIAL = ["num_nodes", "num_edges", "edge_density", "label_histogram"]


def _graph(rng: np.random.Generator, n: int, y: int, label_probs: list[float]) -> Data:
    """A path of ``n`` nodes plus two random chords, node labels drawn from ``label_probs``."""
    edges = {(i, i + 1) for i in range(n - 1)}
    for _ in range(2):
        u, v = sorted(rng.choice(n, 2, replace=False).tolist())
        edges.add((u, v))
    edges = sorted(edges)
    ei = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).t()
    labels = torch.as_tensor(rng.choice(3, n, p=label_probs))
    x = torch.nn.functional.one_hot(labels, 3).float()
    return Data(x=x, edge_index=ei, y=torch.tensor([y]), num_nodes=n)


def make_dataset(kind: str, metric: str = "roc_auc", seed: int = 0, sizes: tuple[int, int, int] = (160, 40, 120)
                 ) -> GraphDataset:
    """``size``: y = [n >= 10], node labels uniform; ``labels``: n independent of y, y shifts the node labels."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(sum(sizes)):
        n = int(rng.integers(4, 16))
        if kind == "size":
            y = int(n >= 10)
            probs = [1 / 3, 1 / 3, 1 / 3]
        else:
            y = int(rng.integers(0, 2))
            probs = [0.7, 0.15, 0.15] if y == 0 else [0.15, 0.7, 0.15]
        graphs.append(_graph(rng, n, y, probs))
    a, b, _ = sizes
    info = GraphDatasetInfo(kind, 2, "onehot", "none", 3, 0, metric, "onehot_argmax", "in-memory test data")
    return GraphDataset(graphs[:a], graphs[a:a + b], graphs[a + b:], info)


def _config(**kw) -> GraphEvalConfig:
    train = dataclasses.replace(GraphEvalConfig().train, epochs=kw.pop("epochs", 8), batch_size=8,
                                lr=kw.pop("lr", 1e-2))
    return GraphEvalConfig(**{"hidden": 16, "num_runs": 2, "threads": 1, "progress": False, "train": train, **kw})


def _set(data: GraphDataset) -> SyntheticSet:
    return RandomGraphs(RandomGraphsConfig(graphs_per_class=8, hops=1), seed=0).fit(data)


def _evaluate(data: GraphDataset, **kw):
    return GraphEvaluator(_config(**kw), seed=0).evaluate(_set(data), EvalData(graphs=data))


def _stable(obj):
    """``obj`` without wall-clock fields, as JSON (NaN compares equal to NaN there)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if "seconds" not in k}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return json.dumps(strip(obj), sort_keys=True, default=str)


@pytest.fixture(scope="module")
def size_data():
    return make_dataset("size")


@pytest.fixture(scope="module")
def label_data():
    return make_dataset("labels", seed=1)


@pytest.fixture(scope="module")
def size_result(size_data):
    return _evaluate(size_data, controls=list(CONTROLS))


# --- the controls can fail and pass -----------------------------------------------------------------------------
def test_size_features_score_one_where_the_label_is_the_size(size_result):
    c = size_result.details["controls"]
    assert c["num_nodes"]["mean"] > 99.0, c["num_nodes"]
    assert c["num_nodes"]["fit"]["roc_auc"]["sign"] == 1.0
    assert c["label_histogram"]["mean"] > 95.0  # it sees the size too


def test_size_features_score_chance_where_the_label_is_not_the_size(label_data):
    res = _evaluate(label_data, controls=TRIVIAL, epochs=1)
    c = res.details["controls"]
    for name in ("num_nodes", "num_edges", "edge_density"):
        assert 35.0 < c[name]["mean"] < 65.0, (name, c[name])
    assert c["label_histogram"]["mean"] > 85.0, c["label_histogram"]
    assert res.mean > 70.0 and not any("num_nodes" in w for w in res.details.get("warnings", [])), res.report()


def test_accuracy_controls_are_fitted_on_the_training_graphs():
    acc_size = _evaluate(make_dataset("size", "accuracy"), controls=TRIVIAL, epochs=1).details["controls"]
    assert acc_size["num_nodes"]["mean"] > 95.0 and acc_size["num_nodes"]["fit"]["accuracy"]["model"] == "logistic"
    acc_labels = _evaluate(make_dataset("labels", "accuracy", seed=1), controls=TRIVIAL, epochs=1,
                           extra_metrics=("roc_auc",)).details["controls"]
    assert 35.0 < acc_labels["num_nodes"]["mean"] < 65.0
    assert acc_labels["label_histogram"]["mean"] > 80.0
    # the extra metric is the oriented raw feature, as for a roc_auc evaluation
    assert 35.0 < acc_labels["num_nodes"]["test_extra"]["roc_auc"] < 65.0


def test_the_feature_sign_is_chosen_on_the_training_graphs_never_on_test():
    f_train = np.arange(20.0)
    y_train = (f_train >= 10).astype(int)            # training graphs: bigger = class 1
    f_test = np.arange(20.0)
    y_test = torch.as_tensor((f_test < 10).astype(int))  # test graphs: the opposite
    probs, info = one_feature_probs(f_train, y_train, f_test, 2, "roc_auc")
    assert info["sign"] == 1.0
    assert binary_auc(probs[:, 1].numpy(), y_test.numpy() == 1) == 0.0
    probs, info = one_feature_probs(f_train, 1 - y_train, f_test, 2, "roc_auc")
    assert info["sign"] == -1.0 and binary_auc(probs[:, 1].numpy(), y_test.numpy() == 1) == 1.0


def test_size_features_count_undirected_edges_and_density():
    g = Data(x=torch.zeros(4, 1), edge_index=torch.tensor([[0, 1, 1, 2, 2, 2], [1, 0, 2, 1, 2, 0]]),
             y=torch.tensor([0]), num_nodes=4)  # edges {0,1}, {1,2}, {0,2} (one direction only), a self-loop
    single = Data(x=torch.zeros(1, 1), edge_index=torch.zeros(2, 0, dtype=torch.long), y=torch.tensor([1]),
                  num_nodes=1)
    f = size_features(GraphPack.from_data_list([g, single]))
    assert f["num_nodes"].tolist() == [4, 1] and f["num_edges"].tolist() == [3, 0]
    assert f["edge_density"].tolist() == [0.5, 0.0]


def test_label_histogram_counts_one_hot_and_categorical_labels():
    ei = torch.tensor([[0, 1], [1, 0]])
    g = Data(x=torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), edge_index=ei, y=torch.tensor([0]), num_nodes=3)
    h = label_histogram(GraphPack.from_data_list([g]), {"kind": "linear", "dim": 2}, None)
    assert h.tolist() == [[2.0, 1.0, 3.0, 1.0]]  # label counts, then nodes, edges
    g = Data(x=torch.tensor([[0, 2], [1, 2], [1, 9]]), edge_index=ei, y=torch.tensor([0]), num_nodes=3)
    h = label_histogram(GraphPack.from_data_list([g]), {"kind": "categorical", "cardinalities": [2, 3]}, None)
    assert h.tolist() == [[1.0, 2.0, 0.0, 0.0, 3.0, 3.0, 1.0]]  # 9 is outside [0, 3): the last bin, as the GNN


# --- size-binned ROC-AUC ------------------------------------------------------------------------------------------
def test_size_binned_auc_removes_what_size_explains():
    rng = np.random.default_rng(0)
    sizes = rng.choice([5, 10, 15, 20], 400)
    y = (rng.random(400) < sizes / 25).astype(int)       # size-confounded labels
    by_size = np.stack([-sizes, sizes], 1).astype(float)  # a "model" that only learned bigger = class 1
    assert binary_auc(sizes, y == 1) > 0.7
    binned = size_binned_auc(by_size, y, sizes, 4)
    assert binned["value"] == pytest.approx(50.0) and binned["bins_used"] == 4
    signal = by_size + np.stack([-y, y], 1) * 100.0       # a model that knows the label beyond size
    assert size_binned_auc(signal, y, sizes, 4)["value"] == pytest.approx(100.0)


def test_size_binned_auc_skips_and_counts_bins_with_one_class():
    sizes = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    y = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    probs = np.stack([1 - y, y], 1).astype(float)
    out = size_binned_auc(probs, y, sizes, 4)
    assert (out["bins_used"], out["bins_skipped"], out["graphs_skipped"]) == (2, 2, 4)
    assert out["value"] == pytest.approx(100.0)
    assert math.isnan(size_binned_auc(probs, np.zeros(8, dtype=int), sizes, 4)["value"])


def test_size_binned_is_reported_for_the_set_and_the_random_graphs_control(size_result):
    c = size_result.details["controls"]
    for name in ("size_binned", "random_graphs_size_binned"):
        assert len(c[name]["values"]) == 2 and c[name]["bins"] == 4
        assert c[name]["bins_used"] + c[name]["bins_skipped"] >= 1


# --- the untrained network and random graphs --------------------------------------------------------------------
def test_untrained_is_the_set_s_networks_at_epoch_zero(label_data):
    # lr 0: the set's networks never move, so its score is the untrained control's, run by run
    res = _evaluate(label_data, controls=["untrained"], lr=0.0, epochs=2)
    assert res.details["controls"]["untrained"]["values"] == res.values
    assert any("untrained" in w for w in res.details["warnings"])


def test_random_graphs_match_the_set_s_bytes_or_its_counts(size_data, size_result):
    rg = size_result.details["controls"]["random_graphs"]
    synset = _set(size_data)
    assert rg["matched"] == "bytes" and rg["budget_bytes"] == synset.meta["distilled_bytes"]
    for drawn in rg["drawn"]:
        assert min(drawn["graphs_per_class"]) >= 1
        assert drawn["bytes"] <= rg["budget_bytes"] or min(drawn["graphs_per_class"]) == 1
    assert rg["drawn"][0] != rg["drawn"][1]  # a fresh draw per run
    meta = {k: v for k, v in synset.meta.items() if k != "distilled_bytes"}
    res = GraphEvaluator(_config(controls=["random_graphs"], epochs=1), seed=0).evaluate(
        SyntheticSet(synset.tensors, meta), EvalData(graphs=size_data))
    rg = res.details["controls"]["random_graphs"]
    assert rg["matched"] == "count" and all(d["graphs_per_class"] == [8, 8] for d in rg["drawn"])


def test_full_data_skips_the_random_graphs_control(label_data):
    res = GraphEvaluator(_config(controls=["random_graphs", "num_nodes"], epochs=1, num_runs=1)).evaluate_real(
        label_data)
    assert "skipped" in res.details["controls"]["random_graphs"]
    assert "num_nodes" in res.details["controls"]


# --- the set's score, determinism, warnings -----------------------------------------------------------------------
def test_controls_never_change_the_set_s_score(size_data, size_result):
    bare = _evaluate(size_data, controls=[])
    assert "controls" not in bare.details
    assert bare.values == size_result.values
    for key in ("val", "test_all_runs", "best_epoch", "runs_reported"):
        assert bare.details[key] == size_result.details[key], key


def test_controls_are_deterministic(size_data, size_result):
    again = _evaluate(size_data, controls=list(CONTROLS))
    assert _stable(again.details["controls"]) == _stable(size_result.details["controls"])
    assert again.details.get("warnings") == size_result.details.get("warnings")


def test_a_score_at_the_size_floor_is_flagged(size_result):
    warnings = size_result.details["warnings"]
    assert any("num_nodes" in w for w in warnings), warnings
    report = size_result.report()
    assert "control num_nodes" in report and "warning:" in report


def test_control_warnings_compare_within_one_std():
    controls = {"num_nodes": {"mean": 79.0, "std": 0.0}, "num_edges": {"mean": 60.0, "std": 0.0},
                "untrained": {"mean": 60.0, "std": 1.0}, "label_histogram": {"mean": 90.0, "std": 0.0},
                "size_binned": {"mean": 51.0, "std": 2.0}}
    found = control_warnings("roc_auc", 80.0, 1.5, controls)
    assert any("within one std of the num_nodes score" in w for w in found)
    assert any("below a linear model" in w for w in found)
    assert not any("untrained" in w for w in found)
    assert any("at or below chance" in w for w in found)
    assert control_warnings("roc_auc", 85.0, 1.0, {"num_nodes": {"mean": 79.0, "std": 0.0},
                                                   "size_binned": {"mean": 70.0, "std": 2.0}}) == []
    assert control_warnings("roc_auc", 85.0, 1.0, {"num_nodes": {"mean": math.nan}}) == []


# --- config and data needs ----------------------------------------------------------------------------------------
def test_config_validates_controls():
    assert GraphEvalConfig().controls == list(CONTROLS) and "random_graphs" in CONTROLS
    with pytest.raises(ValueError, match="unknown graph control"):
        GraphEvalConfig(controls=["nodes"])
    with pytest.raises(ValueError, match="twice"):
        GraphEvalConfig(controls=["untrained", "untrained"])
    with pytest.raises(ValueError, match="size_bins"):
        GraphEvalConfig(size_bins=0)


def test_needs_asks_for_the_training_graphs_only_when_a_control_reads_them(label_data):
    assert GraphEvaluator(GraphEvalConfig()).needs({}).train
    assert not GraphEvaluator(GraphEvalConfig(controls=[])).needs({}).train
    assert not GraphEvaluator(GraphEvalConfig(controls=["untrained", "size_binned"])).needs({}).train
    no_train = dataclasses.replace(label_data, train=[])
    with pytest.raises(ValueError, match="controls: \\[\\]"):
        GraphEvaluator(_config(controls=["num_nodes"], epochs=1)).evaluate(_set(label_data), EvalData(graphs=no_train))
