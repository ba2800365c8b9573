import pytest
import torch

from ddistill.utils.train import TrainRecipe
from evaluators import EVALUATORS, ClassifierConfig, ClassifierEvaluator, EvalResult
from synthesizers import SYNTHESIZERS

from tests._helpers import FAST


def _random_set(real, ipc=10, seed=0):
    return SYNTHESIZERS.get("random")(SYNTHESIZERS.get("random").Config(ipc=ipc), seed=seed).fit(real)


def test_eval_result_stats():
    r = EvalResult("accuracy", [50.0, 60.0])
    assert r.mean == 55.0 and r.std == 5.0  # population std, as np.std in the papers' code
    assert "55.00 ± 5.00" in str(r)


def test_beats_chance_on_digits_and_is_reproducible(digits):
    real, test = digits
    synset = _random_set(real, ipc=10)
    cfg = ClassifierConfig(model="convnet", model_kwargs={"depth": 2, "width": 32}, num_models=2,
                           train=TrainRecipe(epochs=40), perf=FAST)
    res = ClassifierEvaluator(cfg, seed=0).evaluate(synset, test)
    assert res.metric == "accuracy" and len(res.values) == 2
    assert res.mean > 50.0  # chance is 10 %
    again = ClassifierEvaluator(cfg, seed=0).evaluate(synset, test)
    assert again.values == res.values


def test_learned_lr_and_errors(digits):
    real, test = digits
    synset = _random_set(real, ipc=2)
    cfg = ClassifierConfig(model="mlp", num_models=1, train=TrainRecipe(epochs=2, lr="learned", augment="none"),
                           perf=FAST)
    with pytest.raises(ValueError, match="no learned lr"):
        ClassifierEvaluator(cfg).evaluate(synset, test)
    synset.tensors["lr"] = torch.tensor(0.02)
    res = ClassifierEvaluator(cfg).evaluate(synset, test)
    assert res.details["lr"] == pytest.approx(0.02)
    cifar_like = _random_set(real, ipc=1)
    cifar_like.meta["encoding"]["shape"] = [3, 32, 32]
    with pytest.raises(ValueError, match=r"encoding'\]\['shape'\] says"):  # the set itself is inconsistent
        ClassifierEvaluator(cfg).evaluate(cifar_like, test)
    cifar_like.tensors["x"] = torch.zeros(10, 3, 32, 32)  # a consistent 32 px set, tested on 8 px digits
    with pytest.raises(ValueError, match="wrong dataset"):
        ClassifierEvaluator(cfg).evaluate(cifar_like, test)


def test_whole_dataset_upper_bound(digits):
    real, test = digits
    cfg = ClassifierConfig(model="convnet", model_kwargs={"depth": 2, "width": 32}, num_models=1,
                           train=TrainRecipe(epochs=10, augment="none"), perf=FAST)
    res = ClassifierEvaluator(cfg).evaluate_real(real, test)
    assert res.details["train_size"] == len(real) and res.mean > 85.0


def test_registry():
    assert "classifier" in EVALUATORS.names()
