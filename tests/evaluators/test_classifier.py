import dataclasses

import pytest
import torch

from ddistill.classifier_file import load_classifier, save_classifier, train_real_classifier
from ddistill.data import EvalData
from ddistill.utils.soft_labels import SoftLabelConfig
from ddistill.utils.train import TrainRecipe
from ddistill.augment import AUGMENTS
from evaluators.base import resolve_model
from evaluators.classifier import PRESETS, LRSearchConfig
from evaluators import EVALUATORS, ClassifierConfig, ClassifierEvaluator, EvalResult
from synthesizers import SYNTHESIZERS

from tests._helpers import FAST


def _random_set(real, ipc=10, seed=0):
    return SYNTHESIZERS.get("random")(SYNTHESIZERS.get("random").Config(ipc=ipc), seed=seed).fit(real)


def test_eval_result_stats():
    r = EvalResult("accuracy", [50.0, 60.0])
    assert r.mean == 55.0 and r.std == 5.0  # population std, as np.std in the papers' code
    assert "55.00 ± 5.00" in str(r) and str(r).endswith("over 2 models")
    # One value, another unit, the parts of a composite score and the controls' units, in that order.
    one = EvalResult("label_robust_score", [0.25], {
        "value_unit": "run", "components": {"IOR (set - random subset)": {"mean": 7.1, "std": 0.3, "unit": "points"}},
        "controls": {"random_subset": {"mean": 31.08, "unit": "% accuracy"}, "none": {"mean": None}}})
    assert one.report().splitlines() == ["label_robust_score 0.25 ± 0.00 over 1 run",
                                         "  IOR (set - random subset): 7.10 ± 0.30 points",
                                         "  control random_subset: 31.08 % accuracy"]


def test_beats_chance_on_digits_and_is_reproducible(digits):
    real, test = digits
    synset = _random_set(real, ipc=10)
    cfg = ClassifierConfig(model="convnet", model_kwargs={"depth": 2, "width": 32}, num_models=2,
                           train=TrainRecipe(epochs=40), perf=FAST)
    res = ClassifierEvaluator(cfg, seed=0).evaluate(synset, EvalData(train=real, test=test))
    assert res.metric == "accuracy" and len(res.values) == 2
    assert res.mean > 50.0  # chance is 10 %
    again = ClassifierEvaluator(cfg, seed=0).evaluate(synset, EvalData(train=real, test=test))
    assert again.values == res.values
    assert again.details["controls"]["random_subset"]["values"] == res.details["controls"]["random_subset"]["values"]
    # The default control: a random real subset of the same per-class size, drawn afresh per model, same recipe.
    control = res.details["controls"]["random_subset"]
    assert len(control["values"]) == 2 and control["train_size"] == len(synset) and control["mean"] > 50.0
    assert res.details["gain_over_random_subset"] == pytest.approx(res.mean - control["mean"])
    # The control never changes the set's own numbers (it draws from other seed streams).
    alone = ClassifierEvaluator(dataclasses.replace(cfg, controls=[]), seed=0).evaluate(synset, test)
    assert alone.values == res.values and "controls" not in alone.details


def test_controls_need_the_training_split(digits):
    real, test = digits
    cfg = ClassifierConfig(model="mlp", num_models=1, train=TrainRecipe(epochs=1), perf=FAST)
    with pytest.raises(ValueError, match=r"EvalData.train.*controls: \[\]"):
        ClassifierEvaluator(cfg).evaluate(_random_set(real, ipc=2), test)
    with pytest.raises(ValueError, match="unknown control"):
        ClassifierConfig(controls=["everything"])
    with pytest.raises(ValueError, match="test_every"):
        ClassifierConfig(reported_as=["max_over_epochs"])


def test_random_subset_control_can_lose_and_win(digits):
    # A control that cannot fail is a defect: a set of constant images must lose to the random subset, a set of the
    # real class means must not lose by much.
    real, test = digits
    cfg = ClassifierConfig(model="mlp", num_models=2, train=TrainRecipe(epochs=60, augment="none"), perf=FAST)
    blank = _random_set(real, ipc=5)
    blank.tensors["x"] = torch.zeros_like(blank.x)
    res = ClassifierEvaluator(cfg).evaluate(blank, EvalData(train=real, test=test))
    assert res.mean < 20.0 and res.details["gain_over_random_subset"] < -40.0
    assert any("random real subset" in w for w in res.details["warnings"]) and "warning:" in res.report()
    # And it can be beaten: one image per class, the class's mean image, against one random real image per class.
    means = _random_set(real, ipc=1)
    means.tensors["x"] = torch.stack([real.x[real.y == int(c)].mean(0) for c in means.y])
    res = ClassifierEvaluator(cfg).evaluate(means, EvalData(train=real, test=test))
    gain = res.details["gain_over_random_subset"]
    assert gain > res.details["controls"]["random_subset"]["std"] and gain > 5.0, res.details
    assert not any("random real subset" in w for w in res.details.get("warnings", []))


def test_random_subset_warning_only_when_the_set_does_not_beat_it():
    from evaluators.base import random_subset_warnings

    control = {"random_subset": {"mean": 50.0, "std": 2.0}}
    assert random_subset_warnings("accuracy", 60.0, 1.0, control) == []
    assert "within one std of" in random_subset_warnings("accuracy", 51.0, 1.0, control)[0]
    assert "below" in random_subset_warnings("accuracy", 40.0, 1.0, control)[0]
    assert random_subset_warnings("accuracy", 40.0, 1.0, {}) == []  # no control, nothing to say


def test_lr_search_selects_on_validation_never_on_test(digits):
    real, test = digits
    synset = _random_set(real, ipc=5)
    cfg = ClassifierConfig(model="mlp", num_models=1, controls=[], train=TrainRecipe(epochs=30, augment="none"),
                           lr_search=LRSearchConfig(grid=[1e-5, 0.05], val_size=200), perf=FAST)
    res = ClassifierEvaluator(cfg).evaluate(synset, EvalData(train=real, test=test))
    search = res.details["lr_search"]
    assert search["selected_lr"] == 0.05 and search["val_size"] == 200  # 1e-5 cannot move an MLP in 30 epochs
    assert res.details["lr"] == 0.05
    # Scrambling the test labels changes the test score but not a single validation number.
    scrambled = dataclasses.replace(test, y=test.y[torch.randperm(len(test.y), generator=torch.Generator().manual_seed(1))])
    res2 = ClassifierEvaluator(cfg).evaluate(synset, EvalData(train=real, test=scrambled))
    assert res2.details["lr_search"] == search and res2.mean < res.mean


def test_lr_search_runs_no_test_checkpoints(digits, monkeypatch):
    # The search decides on final validation accuracies, so its trainings test once each; the every-test_every-epochs
    # checkpoints belong to the scored networks only (they were most of a DD-Ranking cell's cost).
    import evaluators.classifier as clf

    real, test = digits
    synset = _random_set(real, ipc=5)
    grid, val_size, epochs, every = [0.01, 0.05], 150, 12, 3
    cfg = ClassifierConfig(model="mlp", num_models=2, controls=[], test_every=every, reported_as=["max_over_epochs"],
                           train=TrainRecipe(epochs=epochs, augment="none"),
                           lr_search=LRSearchConfig(grid=grid, val_size=val_size), perf=FAST)
    calls: list[int] = []
    real_accuracy = clf.accuracy
    monkeypatch.setattr(clf, "accuracy", lambda net, x, *a, **k: calls.append(len(x)) or real_accuracy(net, x, *a, **k))
    res = ClassifierEvaluator(cfg).evaluate(synset, EvalData(train=real, test=test))
    assert calls.count(val_size) == len(grid)  # one final validation test per candidate
    assert calls.count(len(test.y)) == cfg.num_models * (epochs // every + 1)  # the scored networks keep theirs
    assert all(len(c) == epochs // every for c in res.details["test_curves"])
    # Without the search's checkpoints the selection is the same as with them (a test pass changes nothing).
    with_checkpoints = dataclasses.replace(cfg, test_every=1)
    again = ClassifierEvaluator(with_checkpoints).evaluate(synset, EvalData(train=real, test=test))
    assert again.details["lr_search"] == res.details["lr_search"] and again.values == res.values


def test_soft_labels_from_a_teacher_file_and_reported_as(digits, tmp_path):
    real, test = digits
    synset = _random_set(real, ipc=3)
    recipe = TrainRecipe(epochs=40, lr=0.05, augment="none")
    teacher = train_real_classifier(real, "mlp", {}, recipe, seed=0)
    path = save_classifier(tmp_path / "teacher.pt", teacher, model="mlp", model_kwargs={}, real=real, seed=0)
    loaded, header = load_classifier(path, encoding=real.encoding)
    assert header["model"] == "mlp" and torch.equal(loaded(real.x[:5]), teacher(real.x[:5]))
    results = {}
    for mode in ("fixed", "relabel"):
        cfg = ClassifierConfig(model="mlp", num_models=2, controls=["random_subset"],
                               train=TrainRecipe(epochs=150, augment="none"), test_every=50,
                               reported_as=["max_over_epochs", "best_model"],
                               soft_labels=SoftLabelConfig(teacher=str(path), criterion="kl", mode=mode), perf=FAST)
        res = ClassifierEvaluator(cfg).evaluate(synset, EvalData(train=real, test=test))
        assert res.details["soft_labels"]["mode"] == mode and res.mean > 30.0  # chance: 10 %
        rep = res.details["reported_as"]
        assert rep["best_model"]["value"] == max(res.values)
        assert all(b >= f for b, f in zip(rep["max_over_epochs"]["values"], res.values))
        assert [e for e, _ in res.details["test_curves"][0]] == [50, 100, 150]
        assert res.details["controls"]["random_subset"]["soft_labels"]["mode"] == mode
        results[mode] = res.values
    # Without augmentation the teacher sees the same images in both modes: the two code paths must agree exactly.
    assert results["fixed"] == results["relabel"]
    # The teacher is checked against the set's encoding.
    other = _random_set(real, ipc=3)
    other.meta["encoding"] = {**other.meta["encoding"], "mean": [0.5]}
    cfg = ClassifierConfig(model="mlp", num_models=1, controls=[], soft_labels=SoftLabelConfig(teacher=str(path)),
                           train=TrainRecipe(epochs=1), perf=FAST)
    with pytest.raises(Exception, match="encoded"):
        ClassifierEvaluator(cfg).evaluate(other, EvalData(train=real, test=test))



def test_teacher_file_checks_the_zca_tensors_not_only_their_name(tmp_path):
    """A teacher whitened with a ZCA fitted on other images is refused, though its encoding metadata matches."""
    from ddistill.classifier_file import ClassifierFileError
    from ddistill.data import load_real
    from ddistill.data.zca import ZCA

    real, _ = load_real("digits", zca=True)
    net = train_real_classifier(real, "mlp", {}, TrainRecipe(epochs=1, augment="none"), seed=0)
    path = save_classifier(tmp_path / "zca_teacher.pt", net, model="mlp", model_kwargs={}, real=real, seed=0)
    load_classifier(path, encoding=real.encoding)  # its own encoding: accepted
    other = dataclasses.replace(real.encoding, zca=ZCA.fit(real.encoding.decode(real.x[:300]), eps=real.encoding.zca.eps))
    assert other.to_meta() == real.encoding.to_meta()
    with pytest.raises(ClassifierFileError, match="zca_mean, zca_w"):
        load_classifier(path, encoding=other)

def test_learned_lr_and_errors(digits):
    real, test = digits
    synset = _random_set(real, ipc=2)
    cfg = ClassifierConfig(model="mlp", num_models=1, controls=[], train=TrainRecipe(epochs=2, lr="learned", augment="none"),
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


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_and_is_recorded(preset, digits):
    # Generated from the preset table: each published recipe builds, runs (on a tiny budget) and names itself.
    real, test = digits
    synset = _random_set(real, ipc=2)
    synset.tensors["lr"] = torch.tensor(0.02)  # trajectory-matching presets read the learned rate
    full = ClassifierEvaluator.config_from_preset(preset)
    short = {"epochs": 4, "lr_decay_at": 2} if full.train.schedule == "step" else {"epochs": 4}
    overrides = {"model": "mlp", "model_kwargs": {}, "num_models": 1, "train": short, "perf": FAST,
                 "progress": False, "teacher_train": {"epochs": 2}}
    if full.lr_search is not None:
        overrides["lr_search"] = {"grid": [0.01, 0.05], "val_size": 100}
    if full.test_every:
        overrides["test_every"] = 2
    cfg = ClassifierEvaluator.config_from_preset(preset, **overrides)
    assert cfg.preset == preset and cfg.controls == ["random_subset"]
    res = ClassifierEvaluator(cfg).evaluate(synset, EvalData(train=real, test=test))
    assert res.values and "random_subset" in res.details["controls"]
    for mode in cfg.reported_as:
        assert mode in res.details["reported_as"]
    if full.train.lr == "learned":
        assert res.details["lr"] == pytest.approx(0.02)


def test_presets_hold_the_published_recipes():
    # The numbers that make each recipe what its paper ran (the run test above overrides them to stay small).
    cfg = {name: ClassifierEvaluator.config_from_preset(name) for name in PRESETS}
    dam = cfg["datadam_official"]
    assert (dam.model, dam.model_kwargs, dam.num_models) == ("convnet", {"norm": "batchnorm"}, 10)
    assert (dam.train.batch_size, dam.train.epochs, dam.reported_as) == (64, 1801, ["best_model"])
    for name in ("mtt_official", "ast_official"):
        assert cfg[name].train.lr == "learned" and cfg[name].train.epochs == 1001
    assert cfg["dc_official"].num_models == 20 and cfg["dc_bench"].num_models == 5
    assert cfg["dd_ranking"].lr_search.grid == [0.001, 0.005, 0.01, 0.05, 0.1]
    assert cfg["dd_ranking"].train.epochs == 1000
    # Every preset names its network, so a set's own (recorded) network never changes what a preset measures.
    for name, c in cfg.items():
        assert c.model == "convnet" and c.model_kwargs is not None, name
        if name != "datadam_official":
            assert c.model_kwargs == {} and c.train.batch_size == 256, name
    meta = {"eval_model": "mlp", "eval_model_kwargs": {"hidden": 8}}
    assert resolve_model(cfg["common"].model, cfg["common"].model_kwargs, meta) == ("convnet", {})
    assert resolve_model(ClassifierConfig().model, ClassifierConfig().model_kwargs, meta) == ("mlp", {"hidden": 8})


@pytest.mark.parametrize("augment", AUGMENTS.names())
def test_every_augmentation_runs_through_the_evaluator(augment, digits):
    # Generated from the augmentation registry: each choice of train.augment (DD-Ranking's mixup / cutmix included)
    # trains, scores above chance, is recorded, and its control trains with it too.
    real, test = digits
    # CIFAR's 4-pixel pad and flip would leave little of an 8-pixel digit (it scores at chance): 1 pixel, no flip.
    spec = {"name": augment, "padding": 1, "flip": False} if augment == "pad_crop_flip" else augment
    cfg = ClassifierConfig(model="mlp", num_models=1, train=TrainRecipe(epochs=100, augment=spec), perf=FAST,
                           progress=False)
    res = ClassifierEvaluator(cfg, seed=0).evaluate(_random_set(real, ipc=5), EvalData(train=real, test=test))
    # 10 classes: chance is 10 %; measured 57-78 % for the set and 44-79 % for its control at 100 epochs
    assert res.details["augment"] == spec and res.mean > 30.0
    assert res.details["controls"]["random_subset"]["mean"] > 30.0


def test_batched_training_matches_the_sequential_loop(digits):
    real, test = digits
    synset = _random_set(real, ipc=5)
    cfg = ClassifierConfig(model="convnet", model_kwargs={"depth": 2, "width": 16}, num_models=2,
                           train=TrainRecipe(epochs=15, batch_size=32), test_every=5, perf=FAST)
    data = EvalData(train=real, test=test)
    seq = ClassifierEvaluator(cfg, seed=0).evaluate(synset, data)
    bat = ClassifierEvaluator(dataclasses.replace(cfg, batched=True), seed=0).evaluate(synset, data)
    assert bat.details["batched"] is True
    # Same initialisations, batches and augmentations: equal up to floating-point order.
    assert bat.values == pytest.approx(seq.values, abs=0.5)
    assert bat.details["controls"]["random_subset"]["values"] == pytest.approx(
        seq.details["controls"]["random_subset"]["values"], abs=0.5)
    assert [e for e, _ in bat.details["test_curves"][0]] == [5, 10, 15]
    # Batch norm cannot be vmapped in training mode: the sequential loop runs, and says why.
    bn = dataclasses.replace(cfg, batched=True, model_kwargs={"depth": 2, "width": 16, "norm": "batchnorm"},
                             controls=[], test_every=0, train=TrainRecipe(epochs=1))
    assert "batch normalisation" in ClassifierEvaluator(bn).evaluate(synset, test).details["batched"]
