"""The synthesizer contract, generated from the registry (as timm and torchvision test every registered model): every
registered synthesizer fits on tiny data through ``fit(real, *, callbacks=())``, makes a valid set that round-trips
through the file format, is a function of its seed, records the required metadata, reports to callbacks, and, when it
is iterative, resumes after an interruption to the very same tensors."""
from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch

from ddistill.synset import SyntheticSet
from synthesizers import SYNTHESIZERS, Callback, Checkpoint, GradientSynthesizer, StopAfter, Synthesizer

from ._cases import SYNTH_CASES, synth_config

NAMES = SYNTHESIZERS.names()
REQUIRED_META = ("synthesizer", "kind", "dataset", "num_classes", "labels", "seed", "config", "ddistill_version")
IMAGE_META = ("encoding", "ipc", "class_names", "learned", "eval_model", "eval_model_kwargs")


def _build(name: str, seed: int = 0) -> tuple[Synthesizer, object]:
    case = SYNTH_CASES[name]
    for module in case.requires:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name} needs {module}")
    cls = SYNTHESIZERS.get(name)
    return cls(cls.config_from_preset(None, **synth_config(name)), seed=seed, **case.kwargs()), case.data()


def _equal(a: SyntheticSet, b: SyntheticSet) -> bool:
    return a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_every_registered_synthesizer_has_a_case():
    assert sorted(SYNTH_CASES) == NAMES, "add a case (or an opt-out) to tests/contracts/_cases.py"


@pytest.mark.parametrize("name", NAMES)
def test_fit_has_the_one_signature(name):
    params = inspect.signature(SYNTHESIZERS.get(name).fit).parameters
    assert list(params) == ["self", "real", "callbacks"] and params["callbacks"].kind == inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("name", NAMES)
def test_fit_makes_a_valid_set_that_round_trips(name, tmp_path):
    synth, data = _build(name)
    synset = synth.fit(data)
    synset.validate()
    assert synset.meta["synthesizer"] == name == synth.name
    missing = [k for k in REQUIRED_META if k not in synset.meta]
    assert not missing, f"{name} set lacks {missing}"
    if synset.meta["kind"] == "image":
        assert not [k for k in IMAGE_META if k not in synset.meta]
        assert synset.meta.get("data", {}).get("name") == "digits"  # where to reload the data, from any entry point
    back = SyntheticSet.load(synset.save(tmp_path / "synset.pt"))
    assert _equal(back, synset) and back.meta == synset.meta


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_tensors(name):
    a, data = _build(name, seed=3)
    b, _ = _build(name, seed=3)
    assert _equal(a.fit(data), b.fit(data))


class _Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.logs: list[dict[str, float]] = []

    def on_fit_start(self, synth, real) -> None:
        self.events.append("start")

    def on_step_end(self, synth, step, logs) -> None:
        self.events.append(f"step{step}")
        self.logs.append(logs)

    def on_fit_end(self, synth, synset) -> None:
        self.events.append("end")


@pytest.mark.parametrize("name", NAMES)
def test_callbacks_see_start_every_step_and_end(name):
    synth, data = _build(name)
    rec = _Recorder()
    synth.fit(data, callbacks=[rec])
    assert rec.events[0] == "start" and rec.events[-1] == "end"
    steps = [e for e in rec.events if e.startswith("step")]
    if isinstance(synth, GradientSynthesizer):
        assert steps == [f"step{i}" for i in range(1, synth.total_steps + 1)]
        assert all("loss" in logs for logs in rec.logs)


@pytest.mark.parametrize("name", NAMES)
def test_interrupt_and_resume_gives_the_same_tensors(name, tmp_path):
    if SYNTH_CASES[name].resumable is not True:
        pytest.skip(SYNTH_CASES[name].resumable)
    synth, data = _build(name)
    full = synth.fit(data)
    total = synth.total_steps
    assert total >= 3

    class Interrupt(Exception):
        pass

    def stop(s, step, logs):
        if step == total - 1:
            raise Interrupt

    ckpt = tmp_path / "checkpoint.pt"
    first, _ = _build(name)
    with pytest.raises(Interrupt):
        first.fit(data, callbacks=[Checkpoint(ckpt, every=1), stop])
    resumed, _ = _build(name)
    out = resumed.fit(data, callbacks=[Checkpoint(ckpt, resume=True)])
    assert out.meta["step"] == total and _equal(out, full)


@pytest.mark.parametrize("name", NAMES)
def test_a_step_budget_stops_iterative_runs(name):
    synth, data = _build(name)
    synset = synth.fit(data, callbacks=[StopAfter(steps=2)])
    if isinstance(synth, GradientSynthesizer):
        assert synset.meta["step"] == 2 and synth.completed_steps == 2
