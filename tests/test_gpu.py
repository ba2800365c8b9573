"""The CUDA path (marked ``gpu``: skipped where CUDA is absent; run by ``scripts/gpu_check.sh``).

Each test runs the same small job on the CPU and on CUDA and checks that CUDA gives a result of the same kind: the
set and the networks live on the device, nothing is NaN, and accuracies agree within what floating-point order can
move on 450 test digits."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ddistill.data import EvalData
from ddistill.synset import SyntheticSet
from ddistill.utils.train import TrainRecipe
from evaluators import ClassifierConfig, ClassifierEvaluator
from synthesizers import SYNTHESIZERS
from tests._helpers import FAST

pytestmark = pytest.mark.gpu


def _random_set(real, ipc=10):
    cls = SYNTHESIZERS.get("random")
    return cls(cls.Config(ipc=ipc), seed=0).fit(real)


@pytest.mark.parametrize("method", ["dm", "datadam"])
def test_distillation_steps_run_on_cuda(method, digits):
    real, _ = digits
    cls = SYNTHESIZERS.get(method)
    cfg = dataclasses.replace(cls.Config(), ipc=2, iterations=3) if dataclasses.is_dataclass(cls.Config) else None
    synth = cls(cfg, seed=0, device="cuda")
    synset = synth.fit(real)
    assert synth.params["x"].device.type == "cuda"
    assert torch.isfinite(synset.x).all() and synset.x.shape[0] == 2 * real.num_classes
    SyntheticSet.load(_saved(synset))  # a set distilled on CUDA saves and loads on the CPU


def _saved(synset):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "set.pt"
    synset.save(path)
    return path


@pytest.mark.parametrize("batched", [False, True])
def test_classifier_evaluator_on_cuda_matches_cpu(batched, digits):
    real, test = digits
    synset = _random_set(real)
    cfg = ClassifierConfig(model="convnet", model_kwargs={"depth": 2, "width": 16}, num_models=2, controls=[],
                           train=TrainRecipe(epochs=20, batch_size=32), batched=batched, perf=FAST)
    data = EvalData(train=real, test=test)
    cpu = ClassifierEvaluator(cfg, seed=0).evaluate(synset, data)
    gpu = ClassifierEvaluator(cfg, seed=0, device="cuda").evaluate(synset, data)
    assert gpu.values == pytest.approx(cpu.values, abs=3.0)
    if batched:
        assert gpu.details["batched"] is True
