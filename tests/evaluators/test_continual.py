import dataclasses

import pytest

from ddistill.data import EvalData
from ddistill.utils.train import TrainRecipe
from evaluators import EVALUATORS
from evaluators.continual import ContinualConfig, ContinualEvaluator, class_orders, stage_splits
from synthesizers import SYNTHESIZERS

from tests._helpers import FAST


def test_stage_splits():
    assert stage_splits(10, 5, list(range(10))) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert stage_splits(4, 2, [3, 1, 0, 2]) == [[3, 1], [0, 2]]
    with pytest.raises(ValueError, match=r"cannot be split into 3 equal stages; choose a divisor of 10: \[1, 2, 5, 10\]"):
        stage_splits(10, 3, list(range(10)))


def test_class_orders_are_permutations_and_seeded():
    orders = class_orders(10, 4, seed=1)
    assert orders[0] == list(range(10)) and len(orders) == 4
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert orders == class_orders(10, 4, seed=1) and orders != class_orders(10, 4, seed=2)


def test_memory_accounting_and_curve_on_digits(digits):
    real, test = digits
    rnd = SYNTHESIZERS.get("random")
    synset = rnd(rnd.Config(ipc=3), seed=0).fit(real)
    cfg = ContinualConfig(stages=5, num_orders=2, models_per_order=1, model="convnet",
                          model_kwargs={"depth": 2, "width": 16}, train=TrainRecipe(epochs=15, augment="none"), perf=FAST)
    res = ContinualEvaluator(cfg, seed=0).evaluate(synset, EvalData(train=real, test=test))
    d = res.details
    # memory grows by 2 classes x 3 images per stage; the model is retrained from scratch each stage
    assert d["memory_size_per_stage"] == [6, 12, 18, 24, 30]
    assert d["classes_per_stage"] == 2 and len(d["curve_mean"]) == 5 and len(d["curves"]) == 2
    assert len(res.values) == 2 and all(0.0 <= v <= 100.0 for v in res.values)
    # the first stage is a 2-way problem on its 2 classes: far above 50 % chance with 3 images per class
    assert d["curve_mean"][0] > 60.0
    # The control: a random real memory of the same per-class counts, same networks and seeds, per stage.
    c = d["controls"]["random_subset"]
    assert len(c["values"]) == 2 and len(c["curve_mean"]) == 5 and c["curve_mean"][0] > 60.0
    assert d["gain_over_random_subset_per_stage"][-1] == pytest.approx(d["curve_mean"][-1] - c["curve_mean"][-1])
    alone = ContinualEvaluator(dataclasses.replace(cfg, controls=[]), seed=0).evaluate(synset, test)
    assert alone.values == res.values and "controls" not in alone.details
    with pytest.raises(ValueError, match="controls: \\[\\]"):
        ContinualEvaluator(cfg, seed=0).evaluate(synset, test)
    assert "continual" in EVALUATORS.names()


def test_the_random_memory_control_can_win(digits):
    # A control that cannot fail is a defect: a memory of blank images must lose to a random real memory, and say so.
    real, test = digits
    rnd = SYNTHESIZERS.get("random")
    blank = rnd(rnd.Config(ipc=3), seed=0).fit(real)
    blank.tensors["x"] = blank.x * 0
    cfg = ContinualConfig(stages=5, num_orders=1, models_per_order=1, model="convnet",
                          model_kwargs={"depth": 2, "width": 16}, train=TrainRecipe(epochs=15, augment="none"),
                          perf=FAST)
    res = ContinualEvaluator(cfg, seed=0).evaluate(blank, EvalData(train=real, test=test))
    assert res.details["gain_over_random_subset_per_stage"][-1] < -30.0
    assert any("random real subset" in w for w in res.details["warnings"])


def test_the_whole_set_bound_per_stage(digits):
    # Opt-in bound: every real training image of the seen classes, same networks, the whole_set recipe. It must sit
    # above a 1-image-per-class memory, and adding it changes none of the set's numbers.
    real, test = digits
    rnd = SYNTHESIZERS.get("random")
    synset = rnd(rnd.Config(ipc=1), seed=0).fit(real)
    cfg = ContinualConfig(stages=2, num_orders=1, models_per_order=1, model="convnet",
                          model_kwargs={"depth": 2, "width": 16}, train=TrainRecipe(epochs=15, augment="none"),
                          controls=["whole_set"], perf=FAST)
    data = EvalData(train=real, test=test)
    res = ContinualEvaluator(cfg, seed=0).evaluate(synset, data)
    w = res.details["controls"]["whole_set"]
    counts = [int(sum(int(c) in range(5) for c in real.y)), len(real)]
    assert w["memory_size_per_stage"] == counts and w["epochs"] == 20 and len(w["curve_mean"]) == 2
    assert w["mean"] > res.mean + 10.0 and "random_subset" not in res.details["controls"]
    alone = ContinualEvaluator(dataclasses.replace(cfg, controls=[]), seed=0).evaluate(synset, data)
    assert alone.values == res.values
    with pytest.raises(ValueError, match="numeric train.lr and whole_set.lr"):
        ContinualConfig(whole_set=TrainRecipe(lr="learned"))
