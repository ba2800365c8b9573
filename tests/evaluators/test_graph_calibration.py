"""Graph evaluator options for Mirage: the decision threshold calibrated on the validation graphs (default) or not
(``calibration: none``, the official behaviour), the majority-class rate beside every score, scoring before each
epoch's training pass (the official loop) and the set's size record in the result.

The readout shift of Mirage-trained models (sum over a tree-set's roots in training, over all nodes of a real graph
in testing) is reproduced exactly by a GNN that adds a constant to one logit of real graphs only."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("torch_geometric")

from ddistill.data import EvalData  # noqa: E402
from ddistill.models.gnn import GNN, GNN_MODELS  # noqa: E402
from evaluators.graph import (CALIBRATIONS, EVAL_TIMINGS, GRAPH_METRICS, GraphEvalConfig,  # noqa: E402
                              GraphEvaluator, majority_rate)
from synthesizers.mirage import Mirage, MirageConfig  # noqa: E402
from tests._helpers import toy_graphs  # noqa: E402
from tests.evaluators.test_graph_controls import make_dataset  # noqa: E402


def _config(**kw) -> GraphEvalConfig:
    train = dataclasses.replace(GraphEvalConfig().train, epochs=kw.pop("epochs", 10), batch_size=4,
                                lr=kw.pop("lr", 1e-2))
    return GraphEvalConfig(**{"model": "gin", "hidden": 16, "num_runs": 2, "threads": 1, "progress": False,
                              "controls": [], "train": train, **kw})


class _ShiftedGIN(GNN):
    """A GIN whose real-graph logits (no root mask) get +40 on class 0: the readout shift, made deterministic."""

    def forward(self, x, edge_index, batch, num_graphs, edge_attr=None, root_mask=None):
        out = super().forward(x, edge_index, batch, num_graphs, edge_attr, root_mask)
        return out if root_mask is not None else out + torch.tensor([40.0, 0.0], device=out.device)


@pytest.fixture
def shifted(monkeypatch):
    monkeypatch.setitem(GNN_MODELS._entries, "shifted_gin", lambda **kw: _ShiftedGIN("gin", **kw))
    return "shifted_gin"


@pytest.fixture(scope="module")
def toy():
    data = toy_graphs()
    return data, Mirage(MirageConfig(hops=1, support=0.5, progress=False)).fit(data)


# --- the calibration itself ---------------------------------------------------------------------------------------
def test_val_bias_moves_the_threshold_back_and_leaves_the_ranking():
    y = torch.tensor([0] * 12 + [1] * 8)
    margin = torch.where(y == 1, 1.0, -1.0) + torch.linspace(-0.5, 0.5, 20)
    logits = torch.stack([torch.zeros(20), margin - 20.0], 1)  # every graph lands on class 0's side
    acc, auc = GRAPH_METRICS.get("accuracy"), GRAPH_METRICS.get("roc_auc")
    raw = torch.softmax(logits, 1)
    assert acc(raw, y) == pytest.approx(majority_rate(y, 2)) == pytest.approx(60.0)
    bias = CALIBRATIONS.get("val_bias")(logits, y)
    fixed = torch.softmax(logits + bias.float(), 1)
    assert acc(fixed, y) == 100.0 and auc(fixed, y) == pytest.approx(auc(raw, y))
    assert 15.0 < float(bias[1] - bias[0]) < 25.0 and float(bias.sum()) == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(CALIBRATIONS.get("none")(logits, y), torch.zeros(2, dtype=torch.float64))
    one_class = CALIBRATIONS.get("val_bias")(logits[:12], y[:12])  # a class absent from val: finite, regularised
    assert torch.isfinite(one_class).all()


def test_calibration_gives_a_usable_classifier_where_the_official_one_sits_at_the_majority_rate(toy, shifted):
    data, synset = toy
    kw = dict(model=shifted, extra_metrics=("roc_auc",), controls=["untrained"])
    official = GraphEvaluator(_config(calibration="none", **kw)).evaluate(synset, data)
    majority = official.details["majority_rate"]["test"]
    assert official.values == [majority, majority]  # every real graph predicted as class 0
    assert official.details["controls"]["majority_class"]["mean"] == majority
    assert any("majority-class rate" in w for w in official.details["warnings"])
    assert "control majority_class" in official.report()
    fixed = GraphEvaluator(_config(**kw)).evaluate(synset, data)
    assert fixed.details["calibration"] == "val_bias" and fixed.mean > majority + 20.0, fixed.values
    assert not any("majority-class rate" in w for w in fixed.details.get("warnings", []))
    assert all(b[1] - b[0] > 20.0 for b in fixed.details["calibration_bias"])  # it undid the +40 on class 0
    assert fixed.details["test_uncalibrated"] == [majority, majority]


def test_calibration_never_changes_a_binary_roc_auc(toy):
    data, synset = toy
    scores = {cal: GraphEvaluator(_config(calibration=cal, metric="roc_auc"), seed=2).evaluate(synset, data)
              for cal in CALIBRATIONS.names()}
    assert scores["none"].values == scores["val_bias"].values
    assert scores["none"].details["best_epoch"] == scores["val_bias"].details["best_epoch"]


def test_majority_rate_is_reported_beside_the_score(toy):
    data, synset = toy
    res = GraphEvaluator(_config(epochs=1)).evaluate(synset, data)
    for split, graphs in (("val", data.val), ("test", data.test)):
        y = torch.tensor([int(g.y) for g in graphs])
        assert res.details["majority_rate"][split] == pytest.approx(100.0 * torch.bincount(y).max().item() / len(y))
    assert majority_rate(torch.tensor([2, 2, 1]), 3) == pytest.approx(200.0 / 3)


# --- scoring before each epoch's training pass ------------------------------------------------------------------
def test_before_epoch_scores_the_untrained_model_and_never_the_last_pass():
    data = make_dataset("labels", seed=1)
    synset = Mirage(MirageConfig(hops=1, support=0.3, progress=False)).fit(data)
    kw = dict(metric="roc_auc", lr=0.05, epochs=1, controls=["untrained"])
    before = GraphEvaluator(_config(eval_timing="before_epoch", **kw)).evaluate(synset, EvalData(graphs=data))
    after = GraphEvaluator(_config(**kw)).evaluate(synset, EvalData(graphs=data))
    assert before.details["best_passes"] == [0, 0] and after.details["best_passes"] == [1, 1]
    assert before.values == before.details["controls"]["untrained"]["values"]  # the very untrained networks
    assert after.values != before.values


def test_scoring_points_of_each_timing(monkeypatch, toy):
    assert EVAL_TIMINGS.get("after_epoch")(5, 2) == [(1, "after"), (3, "after"), (4, "after")]
    assert EVAL_TIMINGS.get("before_epoch")(5, 2) == [(0, "before"), (2, "before"), (4, "before")]
    monkeypatch.setitem(GRAPH_METRICS._entries, "flat", lambda probs, y: 50.0)
    data, synset = toy
    for timing, passes in (("after_epoch", 4), ("before_epoch", 3)):
        res = GraphEvaluator(_config(metric="flat", epochs=4, eval_timing=timing)).evaluate(synset, data)
        assert res.details["best_epoch"] == [3, 3] and res.details["best_passes"] == [passes, passes], timing


def test_options_fail_naming_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"calibration 'platt' is unknown; choose from \['none', 'val_bias'\]"):
        GraphEvalConfig(calibration="platt")
    with pytest.raises(ValueError,
                       match=r"eval_timing 'middle' is unknown; choose from \['after_epoch', 'before_epoch'\]"):
        GraphEvalConfig(eval_timing="middle")


# --- the size record --------------------------------------------------------------------------------------------
def test_results_state_the_set_s_size_and_compression_ratio(toy):
    data, synset = toy
    res = GraphEvaluator(_config(epochs=1, num_runs=1)).evaluate(synset, data)
    assert res.details["size"] == synset.meta["size"] and res.details["size"]["compression_ratio"] < 1.0
    full = GraphEvaluator(_config(epochs=1, num_runs=1)).evaluate_real(data)
    size = full.details["size"]
    assert size["compression_ratio"] == 1.0 and "int32" in size["unit"]
    assert size["N"] == sum(int(g.num_nodes) for g in data.train)
    assert size["E"] == sum(int(g.edge_index.shape[1]) for g in data.train)
