import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from ddistill.cli import main
from ddistill.data import EvalData
from ddistill.utils.train import TrainRecipe
from evaluators.nas import SEARCH_SPACE, NASConfig, NASEvaluator, enumerate_space, spearman
from synthesizers import SYNTHESIZERS

from tests._helpers import FAST


def test_space_is_the_dc_720():
    space = enumerate_space()
    assert len(space) == 720 and len({tuple(a.values()) for a in space}) == 720
    assert set(SEARCH_SPACE) == {"width", "depth", "act", "norm", "pool"}


def test_spearman_against_scipy_and_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 6.0, 7.0, 8.0, 7.0]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    x, y = [10.0, 20.0, 30.0, 40.0], [1.0, 3.0, 2.0, 4.0]
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert spearman(x, y) == pytest.approx(0.8)


def _random_proxy_and_config(real, *, ipc: int, num_architectures: int, proxy_epochs: int, **kwargs):
    """A random real proxy of ``ipc`` images per class and a NAS config over 4 small ConvNets (1 real epoch)."""
    rnd = SYNTHESIZERS.get("random")
    proxy = rnd(rnd.Config(ipc=ipc), seed=0).fit(real)
    space = {"width": [8, 16], "depth": [1, 2], "act": ["relu"], "norm": ["instancenorm"], "pool": ["avgpooling"]}
    cfg = NASConfig(space=space, num_architectures=num_architectures, proxy=TrainRecipe(epochs=proxy_epochs,
                    augment="none"), real=TrainRecipe(epochs=1, augment="none"), val_size=200, perf=FAST, **kwargs)
    return proxy, cfg


def test_nas_on_digits(digits):
    real, test = digits
    proxy, cfg = _random_proxy_and_config(real, ipc=5, num_architectures=3, proxy_epochs=5)
    res = NASEvaluator(cfg, seed=0).evaluate(proxy, EvalData(test=test, train=real))
    d = res.details
    assert res.metric == "spearman" and -1.0 <= res.values[0] <= 1.0
    assert d["num_architectures"] == 3 and d["val_size"] == 200 and d["real_train_size"] == len(real) - 200
    assert d["selected"] in d["architectures"] and d["proxy_search_seconds"] > 0
    # Controls: the ceiling (two real rankings) and the random subset of the proxy's size; the cost beside them.
    c = d["controls"]
    assert -1.0 <= c["real_repeat"]["mean"] <= 1.0 and c["real_repeat"]["real_val_accuracy"] != d["real_val_accuracy"]
    assert c["random_subset"]["size"] == len(proxy) and len(c["random_subset"]["proxy_val_accuracy"]) == 3
    assert d["cost"]["real_over_proxy"] > 0
    alone = NASEvaluator(dataclasses.replace(cfg, controls=[]), seed=0).evaluate(proxy, EvalData(test=test, train=real))
    assert alone.values == res.values and "controls" not in alone.details
    with pytest.raises(ValueError, match="needs the real training split"):
        NASEvaluator(cfg).evaluate(proxy, test)


def test_nas_random_subset_control_draws_several_subsets(digits):
    real, test = digits
    proxy, cfg = _random_proxy_and_config(real, ipc=3, num_architectures=4, proxy_epochs=3, controls=["random_subset"])
    data = EvalData(test=test, train=real)
    one = NASEvaluator(cfg, seed=0).evaluate(proxy, data).details["controls"]["random_subset"]
    three = NASEvaluator(dataclasses.replace(cfg, random_subset_draws=3), seed=0).evaluate(proxy, data)
    c = three.details["controls"]["random_subset"]
    rhos = [d["spearman"] for d in c["draws"]]
    assert len(rhos) == 3 and "draws" not in one and "std" not in one
    # Draw 0 is the one-draw control (same stream); the others draw other images, so their accuracies differ.
    assert c["draws"][0]["proxy_val_accuracy"] == one["proxy_val_accuracy"] and rhos[0] == one["mean"]
    assert c["draws"][1]["proxy_val_accuracy"] != c["draws"][0]["proxy_val_accuracy"]
    assert c["mean"] == pytest.approx(sum(rhos) / 3) and c["std"] == pytest.approx(float(np.std(rhos)))
    with pytest.raises(ValueError, match="random_subset_draws must be an integer >= 1"):
        NASConfig(random_subset_draws=0)


def test_nas_real_ranking_is_trained_once_per_evaluator(digits, monkeypatch):
    from evaluators import nas

    real, test = digits
    rnd = SYNTHESIZERS.get("random")
    proxies = [rnd(rnd.Config(ipc=3), seed=s).fit(real) for s in (0, 1)]
    space = {"width": [8], "depth": [1, 2], "act": ["relu"], "norm": ["none"], "pool": ["avgpooling"]}
    cfg = NASConfig(space=space, num_architectures=2, proxy=TrainRecipe(epochs=2, augment="none"),
                    real=TrainRecipe(epochs=1, augment="none"), val_size=200, perf=FAST, controls=[])
    sizes = []
    train = nas.train_classifier
    monkeypatch.setattr(nas, "train_classifier", lambda net, x, *a, **k: sizes.append(len(x)) or train(net, x, *a, **k))
    evaluator = NASEvaluator(cfg, seed=0)
    data = EvalData(test=test, train=real)
    first, second = (evaluator.evaluate(p, data) for p in proxies)
    real_size = len(real) - 200
    assert sizes.count(real_size) == 2 and sizes.count(30) == 4  # 2 real fits in all, 2 proxy fits per proxy
    assert first.details["real_val_accuracy"] == second.details["real_val_accuracy"]
    fresh = NASEvaluator(cfg, seed=0).evaluate(proxies[1], data)
    assert fresh.details["real_val_accuracy"] == second.details["real_val_accuracy"]  # the cache changes no result


def test_cli_continual_and_nas(tmp_path, digits):
    real, _ = digits
    rnd = SYNTHESIZERS.get("random")
    synset = rnd(rnd.Config(ipc=2), seed=0).fit(real)
    synset.meta["data"] = {"name": "digits"}
    path = synset.save(tmp_path / "s.pt")
    assert main(["evaluate", str(path), "--evaluator", "continual", "evaluator.num_orders=1",
                 "evaluator.models_per_order=1", "evaluator.train.epochs=2", "evaluator.stages=2",
                 "evaluator.model_kwargs={depth: 2, width: 8}", "evaluator.perf.compile=false",
                 "evaluator.progress=false", "--out", str(tmp_path / "c.json")]) == 0
    assert main(["evaluate", str(path), "--evaluator", "nas", "evaluator.num_architectures=2",
                 "evaluator.space={width: [8], depth: [1, 2], act: [relu], norm: [none], pool: [avgpooling]}",
                 "evaluator.proxy.epochs=2", "evaluator.real.epochs=1", "evaluator.val_size=100",
                 "evaluator.perf.compile=false", "evaluator.progress=false", "--out", str(tmp_path / "n.json")]) == 0


def test_nas_names_an_architecture_too_deep_for_the_images_and_warns_on_chance_rankings(digits):
    real, test = digits
    proxy, cfg = _random_proxy_and_config(real, ipc=2, num_architectures=2, proxy_epochs=2, controls=[])
    data = EvalData(test=test, train=real)
    deep = dataclasses.replace(cfg, space={**cfg.space, "depth": [4], "pool": ["maxpooling"]})
    with pytest.raises(ValueError, match=r"'depth': 4.*does not fit 8x8 images.*evaluator.space"):
        NASEvaluator(deep, seed=0).evaluate(proxy, data)
    # Any other build error is named as such, not as a size problem (the check tells them apart by exception type).
    misspelled = dataclasses.replace(cfg, space={**cfg.space, "norm": ["instancenrom"]})
    with pytest.raises(ValueError, match=r"'instancenrom'.*cannot be built") as err:
        NASEvaluator(misspelled, seed=0).evaluate(proxy, data)
    assert "does not fit" not in str(err.value)
    # A proxy whose every label is class 0 trains every architecture to answer 0 (chance on the balanced validation
    # split): its Spearman is noise, and the result says so.
    proxy.tensors["y"] = proxy.y * 0
    res = NASEvaluator(cfg, seed=0).evaluate(proxy, data)
    assert any("every proxy-trained architecture is near chance" in w for w in res.details["warnings"])
    # (every architecture answers 0: equal accuracies, no ranking at all)
    assert math.isnan(res.mean) and any("Spearman is undefined" in w for w in res.details["warnings"])
