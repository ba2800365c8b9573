"""The transfer evaluator: pre-train on a set, fine-tune downstream, on digits."""
from __future__ import annotations

import pytest
import torch

from ddistill.data import DataSpec, Encoding, EvalData, get_dataset, load_eval_data
from ddistill.models import create_model
from ddistill.utils.probe import LinearProbeConfig
from ddistill.utils.train import TrainRecipe
from evaluators.transfer import TransferConfig, TransferEvaluator, prepare_downstream, transplant_backbone
from synthesizers.krr_st import KRRST, KRRSTConfig
from synthesizers.random import RandomConfig, RandomSubset

from tests._helpers import FAST

NET = {"model": "convnet_bn", "model_kwargs": {"width": 8, "depth": 2}}


def _cfg(pretrain_epochs: int = 15, finetune_iterations: int = 150, **kw) -> TransferConfig:
    base = dict(num_runs=1, pretrain_recipe={"epochs": pretrain_epochs, "batch_size": 32},
                finetune=TrainRecipe(iterations=finetune_iterations, batch_size=64, schedule="cosine",
                                     augment={"name": "pad_crop_flip", "padding": 1, "flip": False}),
                perf=FAST, progress=False, **NET)
    base.update(kw)
    return TransferConfig(**base)


def _targets(train, test) -> EvalData:
    return EvalData(downstream={train.info.name: (train, test)})


@pytest.fixture(scope="module")
def krr_set():
    from ddistill.data import load_real

    from .conftest import TinyTeacher

    real, _ = load_real("digits")
    cfg = KRRSTConfig(num_images=40, num_models=2, online_iteration=3, iterations=3, batch_real=64, lr=1e-2,
                      perf=FAST, **NET)
    synset = KRRST(cfg, seed=0, teacher=TinyTeacher()).fit(real)
    synset.meta["data"] = {"name": "digits"}  # what the CLI records
    return synset


@pytest.fixture(scope="module")
def downstream():
    return get_dataset("digits", split="train"), get_dataset("digits", split="test")


def test_pretrain_then_finetune_beats_chance(krr_set, downstream):
    train, test = downstream
    res = TransferEvaluator(_cfg(linear_probe=True, probe=LinearProbeConfig(iterations=100)), seed=0).evaluate(
        krr_set, _targets(train, test))
    assert res.metric == "accuracy" and len(res.values) == 1 and res.values[0] > 30  # chance is 10 %
    d = res.details
    assert d["pretrain"] == "regression" and d["downstream"] == "digits" and d["resolution"] == [8, 8]
    assert d["model"] == "convnet_bn" and len(d["linear_probe"]) == 1 and d["linear_probe"][0] > 30


def test_seeds_reproduce_and_no_pretraining_baseline(krr_set, downstream):
    train, test = downstream
    cfg = _cfg(pretrain_epochs=3, finetune_iterations=20)
    a = TransferEvaluator(cfg, seed=1).evaluate(krr_set, _targets(train, test))
    b = TransferEvaluator(cfg, seed=1).evaluate(krr_set, _targets(train, test))
    assert a.values == b.values
    none = TransferEvaluator(_cfg(pretrain="none", finetune_iterations=20), seed=1).evaluate(
        krr_set, _targets(train, test))
    assert none.details["pretrain"] == "none" and none.details["pretrain_epochs"] == 0


def test_downstream_from_config_or_from_the_sets_source(krr_set):
    ev = TransferEvaluator(_cfg(pretrain_epochs=1, finetune_iterations=5, downstream=[DataSpec(name="digits")],
                                controls=[]), seed=0)
    data = load_eval_data(None, ev.needs({}))
    assert ev.evaluate(krr_set, data).details["downstream"] == "digits"
    # No evaluator.downstream: the source data block recorded in the set (CIFAR-100 -> CIFAR-100 in the paper; a
    # label-free set never saw those labels). The source's splits are read too: its test split for the held-out fit,
    # its training split for the random-subset control.
    ev = TransferEvaluator(_cfg(pretrain_epochs=1, finetune_iterations=5), seed=0)
    needs = ev.needs(krr_set.meta)
    assert [t.name for t in needs.downstream] == ["digits"] and needs.test and needs.train
    enc = Encoding.from_meta(krr_set.meta["encoding"], krr_set.tensors)
    res = ev.evaluate(krr_set, load_eval_data(DataSpec(name="digits"), needs, encoding=enc))
    assert res.values and res.details["label_leak"] is False and "random_subset" in res.details["controls"]
    bare = type(krr_set)(krr_set.tensors, {k: v for k, v in krr_set.meta.items() if k != "data"})
    with pytest.raises(ValueError, match="downstream"):
        ev.needs(bare.meta)
    with pytest.raises(ValueError, match="downstream datasets"):
        ev.evaluate(bare, EvalData())


def test_hard_label_sets_use_the_supervised_recipe(digits, downstream):
    real, _ = digits
    train, test = downstream
    synset = RandomSubset(RandomConfig(ipc=3), seed=0).fit(real)
    res = TransferEvaluator(_cfg(pretrain_epochs=2, finetune_iterations=10), seed=0).evaluate(
        synset, _targets(train, test))
    assert res.details["pretrain"] == "hard"
    with pytest.raises(ValueError, match="regression"):
        TransferConfig(pretrain="kip")


def test_transplant_keeps_the_new_head_and_copies_the_rest():
    pre = create_model("convnet_bn", in_channels=1, num_classes=16, image_size=8, width=4, depth=1)
    net = create_model("convnet_bn", in_channels=1, num_classes=10, image_size=8, width=4, depth=1)
    head = net.classifier.weight.detach().clone()
    transplant_backbone(pre, net)
    for k, v in pre.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(v, net.state_dict()[k])
    assert torch.equal(net.classifier.weight, head) and net.classifier.out_features == 10


def test_downstream_images_are_resized_to_the_source_resolution(downstream):
    train, _ = downstream
    x, y = prepare_downstream(train.subset(torch.arange(5)), (4, 4))
    assert x.shape == (5, 1, 4, 4) and torch.equal(y, train.y[:5])
    # Own normalisation: the resized pixels, mean/std-normalised with the downstream's constants.
    pixels = torch.nn.functional.interpolate(train.x[:5].float() / 255, size=(4, 4), mode="bilinear", antialias=True)
    torch.testing.assert_close(x, (pixels.clamp(0, 1) - train.info.mean[0]) / train.info.std[0])
