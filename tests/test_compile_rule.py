"""The measured compile rule: its table is the committed measurement, and it decides as documented."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ddistill.utils import compile_rule
from ddistill.utils.compile_rule import BREAK_EVEN_STEPS, Workload, compile_pays, compiled_graphs, training_steps
from ddistill.utils.perf import PerfConfig

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "compile_break_even.json"


def test_table_is_the_committed_measurement():
    rows = json.loads(RESULTS.read_text())["rows"]
    measured: dict[str, dict[int, dict[int, int | None]]] = {}
    for r in rows:
        be = r["break_even_steps"]
        side = r.get("image_size", 32)
        measured.setdefault(r["arch"], {}).setdefault(side, {})[r["batch"]] = None if be is None else math.ceil(be)
    assert BREAK_EVEN_STEPS == measured


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(compile_rule, "BREAK_EVEN_STEPS", {"convnet": {32: {10: 500, 256: 40}, 8: {256: 900}},
                                                          "vgg11": {32: {256: None}}})
    monkeypatch.setattr(compile_rule, "has_cxx_compiler", lambda: True)
    monkeypatch.setattr("ddistill.utils.perf.has_cxx_compiler", lambda: True)


def test_rule_weighs_steps_against_the_nearest_measured_batch(table):
    assert compile_pays(Workload("convnet", 256, 40))[0]
    assert not compile_pays(Workload("convnet", 256, 39))[0]
    # batch 20 is nearer 10 than 256 in log scale: the batch-10 break-even applies.
    pays, why = compile_pays(Workload("convnet", 20, 499))
    assert not pays and "499 training steps < break-even 500" in why and "batch 10" in why
    assert compile_pays(Workload("convnet", 100, 40))[0]  # nearer 256 than 10


def test_rule_runs_eager_where_nothing_was_measured_or_nothing_pays(table):
    pays, why = compile_pays(Workload("resnet18", 256, 10**6))
    assert not pays and "no break-even measured for 'resnet18'" in why
    pays, why = compile_pays(Workload("vgg11", 256, 10**6))
    assert not pays and "never made" in why
    pays, why = compile_pays(Workload("convnet", 256, 10**6), "cuda")
    assert not pays and "CPU only" in why


def test_perf_config_uses_the_rule_only_when_compile_is_unset(table):
    big, small = Workload("convnet", 256, 1000), Workload("convnet", 256, 1)
    assert PerfConfig().resolve("cpu", big).compile and not PerfConfig().resolve("cpu", small).compile
    assert PerfConfig(compile=True).resolve("cpu", small).compile
    assert not PerfConfig(compile=False).resolve("cpu", big).compile
    assert "set in the config" in PerfConfig(compile=False).compile_rule("cpu", big)
    # Without a workload (the distillation loops): compile wherever inductor can.
    assert PerfConfig().resolve("cpu").compile


def test_training_steps():
    assert training_steps(100, 300, 256) == 300
    assert training_steps(500, 10, 256) == 20
    assert training_steps(500, 10, 256, iterations=7) == 7


def test_classifier_records_the_rule(table):
    from ddistill.data import EvalData, load_real
    from ddistill.utils.train import TrainRecipe
    from evaluators import ClassifierConfig, ClassifierEvaluator
    from synthesizers import SYNTHESIZERS

    real, test = load_real("digits")
    rnd = SYNTHESIZERS.get("random")
    synset = rnd(rnd.Config(ipc=2), seed=0).fit(real)
    cfg = ClassifierConfig(model="mlp", model_kwargs={}, num_models=1, controls=[], progress=False,
                           perf=PerfConfig(channels_last=False, bf16=False), train=TrainRecipe(epochs=2, augment="none"))
    res = ClassifierEvaluator(cfg, seed=0).evaluate(synset, EvalData(train=real, test=test))
    assert res.details["perf"]["compile"] is False
    assert "no break-even measured for 'mlp'" in res.details["perf"]["compile_rule"]


def test_the_nearest_measured_image_size_applies(table):
    assert not compile_pays(Workload("convnet", 256, 899, (8, 8)))[0]
    pays, why = compile_pays(Workload("convnet", 256, 900, (10, 10)))  # 10x10 is nearer 8x8 than 32x32
    assert pays and "8x8" in why and "inputs 10x10" in why
    assert compile_pays(Workload("convnet", 256, 40, (64, 64)))[0]  # nearest measured: 32x32


def test_more_compiled_shapes_raise_the_break_even(table):
    # 40 steps measured for 2 graphs (train step + test forward); 4 shapes cost twice the compile.
    assert not compile_pays(Workload("convnet", 256, 79, graphs=4))[0]
    assert compile_pays(Workload("convnet", 256, 80, graphs=4))[0]
    assert compiled_graphs(100, 256, 10000, 1024) == 3  # one train shape; test 1024 + a short last batch
    assert compiled_graphs(500, 256, 2048, 1024) == 3  # train 256 + 244; test batches all full
    assert compiled_graphs(512, 256) == 3  # test size unknown: assume a short last test batch
