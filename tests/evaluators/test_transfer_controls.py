"""The transfer evaluator's controls, its leak-free class split and its pre-training fit check, on digits."""
from __future__ import annotations

import pytest

from ddistill.data import DataSpec, Encoding, load_data, load_eval_data
from ddistill.models import create_model
from ddistill.utils.probe import LinearProbeConfig
from ddistill.utils.train import TrainRecipe
from evaluators.transfer import TransferConfig, TransferEvaluator, default_targets, shares_labels
from synthesizers.krr_st.teacher import save_teacher
from synthesizers.random import RandomConfig, RandomSubset

from tests._helpers import FAST

NET = {"model": "convnet_bn", "model_kwargs": {"width": 8, "depth": 2}}
SOURCE = DataSpec(name="digits", classes=[0, 1, 2, 3, 4])


def _cfg(epochs: int, **kw) -> TransferConfig:
    base = dict(num_runs=1, probe=LinearProbeConfig(iterations=200), pretrain_recipe={"epochs": epochs, "batch_size": 32},
                finetune=TrainRecipe(iterations=40, batch_size=64, schedule="cosine", augment="none"),
                perf=FAST, progress=False, **NET)
    base.update(kw)
    return TransferConfig(**base)


def _evaluate(ev, synset, spec):
    enc = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
    return ev.evaluate(synset, load_eval_data(spec, ev.needs(synset.meta), encoding=enc))


@pytest.fixture(scope="module")
def source_set():
    real, _ = load_data(SOURCE)
    assert real.num_classes == 5 and int(real.y.max()) == 4
    return RandomSubset(RandomConfig(ipc=6), seed=0).fit(real)


def test_class_split_is_the_leak_free_default_and_whole_data_is_flagged(source_set):
    assert [t.classes for t in default_targets(SOURCE, 10)] == [[5, 6, 7, 8, 9]]
    assert shares_labels(SOURCE, DataSpec(name="digits", classes=[5, 6])) is False
    assert shares_labels(SOURCE, DataSpec(name="digits")) is True
    assert shares_labels(SOURCE, DataSpec(name="cifar10")) is False
    ev = TransferEvaluator(_cfg(100, controls=["no_pretraining", "random_subset"]), seed=0)
    res = _evaluate(ev, source_set, SOURCE)
    d = res.details
    assert d["downstream"] == "digits[5,6,7,8,9]" and d["label_leak"] is False and "warnings" not in d
    c = d["controls"]
    assert c["random_subset"]["label_leak"] is False and len(c["no_pretraining"]["values"]) == 1
    assert c["random_subset"]["pretrain_fit"]["train_accuracy"] > 0
    # Fit of the set's own pre-training: accuracy on its images and on held-out source test images (classes 0-4).
    fit = d["pretrain_fit"]
    assert fit["fitted"] and fit["train_accuracy"] >= 90.0 and 20.0 < fit["heldout_accuracy"] <= 100.0
    assert d["gain_over_controls"]["no_pretraining"] == pytest.approx(res.mean - c["no_pretraining"]["mean"])
    # A hard-label set made from all of digits and transferred to digits saw the target's labels: flagged.
    real, _ = load_data(DataSpec(name="digits"))
    whole = RandomSubset(RandomConfig(ipc=3), seed=0).fit(real)
    res = _evaluate(TransferEvaluator(_cfg(2, controls=[]), seed=0), whole, DataSpec(name="digits"))
    assert res.details["label_leak"] is True and any("labels" in w for w in res.details["warnings"])


def test_label_leak_is_judged_by_label_space_not_by_dataset_name(tmp_path):
    # The JPEG mirror of CIFAR-10 is CIFAR-10, and digits / MNIST / SVHN label the same digits 0-9: a class split
    # must hold across them. Two image folders share labels only when they are the same folder; a folder against
    # anything else is unknown (None), never "no leak".
    src = DataSpec(name="cifar10_jpeg", root="x", classes=[0, 1, 2, 3, 4])
    assert shares_labels(src, DataSpec(name="cifar10")) is True
    assert shares_labels(src, DataSpec(name="cifar10", classes=[2, 7])) is True
    assert shares_labels(src, DataSpec(name="cifar10", classes=[5, 6, 7, 8, 9])) is False
    assert shares_labels(src, DataSpec(name="cifar100")) is False
    assert shares_labels(SOURCE, DataSpec(name="mnist", classes=[0, 1])) is True
    assert shares_labels(SOURCE, DataSpec(name="svhn", classes=[5, 6, 7, 8, 9])) is False
    a = DataSpec(name="imagefolder", root=str(tmp_path / "a"))
    b = DataSpec(name="imagefolder", root=str(tmp_path / "b"))
    assert shares_labels(a, DataSpec(name="imagefolder", root=str(tmp_path / "a" / ".." / "a"))) is True
    assert shares_labels(a, b) is None and shares_labels(a, DataSpec(name="cifar10")) is None
    assert shares_labels(DataSpec(name="imagefolder"), a) is None


def test_controls_are_paired_and_never_change_the_sets_numbers(source_set):
    alone = _evaluate(TransferEvaluator(_cfg(5, num_runs=2, controls=[]), seed=3), source_set, SOURCE)
    full = _evaluate(TransferEvaluator(_cfg(5, num_runs=2), seed=3), source_set, SOURCE)
    assert alone.values == full.values
    # teacher_probe needs a teacher: skipped, with the reason, never silently.
    assert "no teacher" in full.details["controls"]["teacher_probe"]["skipped"]


def test_an_unfitted_pretraining_is_flagged(source_set):
    res = _evaluate(TransferEvaluator(_cfg(1, num_runs=1, controls=[], pretrain_recipe={"epochs": 1, "lr": 1e-6}),
                                      seed=0), source_set, SOURCE)
    assert not res.details["pretrain_fit"]["fitted"]
    assert any("did not fit" in w for w in res.details["warnings"])
    assert "warning: pre-training did not fit" in res.report()


def test_teacher_controls_and_regression_fit(tmp_path, source_set):
    real, _ = load_data(SOURCE)
    teacher = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=4, depth=1)
    path = save_teacher(tmp_path / "teacher.pt", teacher, model="convnet_bn", model_kwargs={"width": 4, "depth": 1},
                        encoding=real.encoding, dataset="digits")
    # A regression set: random source images with the teacher's representations as targets (KRR-ST's start).
    synset = RandomSubset(RandomConfig(ipc=6), seed=1).fit(real)
    with __import__("torch").no_grad():
        synset.tensors["y"] = teacher.eval()(synset.x)
    synset.meta.update(labels="regression", teacher={"path": str(path)})
    ev = TransferEvaluator(_cfg(40, num_runs=1, controls=["random_teacher_targets", "teacher_probe"]), seed=0)
    res = _evaluate(ev, synset, SOURCE)
    fit = res.details["pretrain_fit"]
    assert {"train_mse", "train_r2", "heldout_mse", "heldout_r2"} <= set(fit)
    assert fit["train_r2"] > fit["heldout_r2"] - 0.5 and fit["train_r2"] <= 1.0
    c = res.details["controls"]
    assert c["teacher_probe"]["mean"] > 30.0 and c["teacher_probe"]["teacher"] == str(path)  # chance: 20 %
    assert c["random_teacher_targets"]["label_leak"] is False and "train_r2" in c["random_teacher_targets"][
        "pretrain_fit"]


def test_bad_controls_are_named():
    with pytest.raises(ValueError, match="unknown control"):
        TransferConfig(controls=["oracle"])
    with pytest.raises(ValueError, match="classes"):
        DataSpec(name="digits", classes=[1, 1])
    with pytest.raises(ValueError, match="covers every class"):
        default_targets(DataSpec(name="digits", classes=list(range(10))), 10)


# ---------------------------------------------------------------------------------------------------------------
# issue #15: pre-training precision, and what the random-subset control reads
# ---------------------------------------------------------------------------------------------------------------
def _regression_set(seed: int = 1):
    """Random source images with a fixed random network's outputs as regression targets (no teacher file)."""
    import torch

    real, _ = load_data(SOURCE)
    synset = RandomSubset(RandomConfig(ipc=4), seed=seed).fit(real)
    net = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=4, depth=1)
    with torch.no_grad():
        synset.tensors["y"] = net.eval()(synset.x)
    synset.meta.update(labels="regression")
    return synset


@pytest.mark.parametrize("labels,precision,pretrain_bf16", [
    ("regression", "auto", False),  # the default: regression targets are fitted in float32 even with bf16 on
    ("regression", "bf16", True),
    ("hard", "auto", True),         # label pre-training follows perf.bf16
    ("hard", "fp32", False),
])
def test_pretraining_precision_is_explicit_and_recorded(monkeypatch, source_set, labels, precision, pretrain_bf16):
    import evaluators.transfer as transfer
    from ddistill.utils.perf import PerfConfig

    calls: list[tuple[str, bool]] = []
    real_train = transfer.train_classifier

    def spy(model, x, y, recipe, **kw):
        calls.append(("pretrain" if "criterion" in kw else "finetune", bool(kw["perf"].bf16)))
        return real_train(model, x, y, recipe, **kw)

    monkeypatch.setattr(transfer, "train_classifier", spy)
    synset = _regression_set() if labels == "regression" else source_set
    bf16_on = PerfConfig(channels_last=False, bf16=True, compile=False)
    cfg = _cfg(1, controls=[], perf=bf16_on, pretrain_precision=precision,
               finetune=TrainRecipe(iterations=2, batch_size=16, augment="none"))
    res = _evaluate(TransferEvaluator(cfg, seed=0), synset, SOURCE)
    assert calls == [("pretrain", pretrain_bf16), ("finetune", True)]
    d = res.details
    assert d["pretrain_precision"] == ("bf16" if pretrain_bf16 else "fp32") and d["finetune_precision"] == "bf16"
    assert d["pretrain_precision_rule"] == precision


def test_pretrain_perf_rule_and_bad_precision():
    from ddistill.utils.perf import PerfConfig
    from evaluators.transfer import pretrain_perf

    on = PerfConfig(channels_last=True, bf16=True, compile=False)
    assert pretrain_perf(on, "regression").bf16 is False and pretrain_perf(on, "regression").channels_last is True
    assert pretrain_perf(on, "soft").bf16 is True
    assert pretrain_perf(PerfConfig(False, False, False), "hard", "bf16").bf16 is True
    assert TransferConfig().pretrain_precision == "auto"
    with pytest.raises(ValueError, match=r"pretrain_precision.*'fp32'"):
        TransferConfig(pretrain_precision="half")


def test_random_subset_reads_source_images_and_source_labels_only(monkeypatch, source_set):
    import torch

    seen: list[tuple] = []
    original = TransferEvaluator._pretrain

    def capture(self, x, y, *args, **kw):
        seen.append((kw.get("stream", 0), x.detach().clone(), y.detach().clone()))
        return original(self, x, y, *args, **kw)

    monkeypatch.setattr(TransferEvaluator, "_pretrain", capture)
    ev = TransferEvaluator(_cfg(1, controls=["random_subset"], num_runs=2,
                                finetune=TrainRecipe(iterations=2, batch_size=16, augment="none")), seed=0)
    res = _evaluate(ev, source_set, SOURCE)
    real, _ = load_data(SOURCE)
    subsets = [(x, y) for stream, x, y in seen if stream]
    assert len(subsets) == 2  # one fresh draw per run
    for x, y in subsets:
        assert len(x) == len(source_set) and int(y.max()) <= 4 and set(y.tolist()) == {0, 1, 2, 3, 4}
        # Every image is a source training image, labelled with its own source label.
        match = (x[:, None] == real.x[None]).flatten(2).all(2)
        assert bool(match.any(1).all())
        assert torch.equal(y, real.y[match.float().argmax(1)])
    # ... and the target (fine-tuning, scoring) is the disjoint class split.
    target = default_targets(SOURCE, 10)[0]
    assert not set(target.classes) & set(SOURCE.classes) and res.details["downstream"] == target.label()
    assert res.details["controls"]["random_subset"]["label_leak"] is False
