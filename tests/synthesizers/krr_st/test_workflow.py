"""The documented workflow end to end on digits: train a teacher with the script, distill with the CLI, evaluate by
transfer with the CLI."""
from __future__ import annotations

import json

import yaml

from ddistill.cli import main as cli
from ddistill.synset import SyntheticSet

from .test_ssl import _script

TEACHER = {"model": "convnet_bn", "model_kwargs": {"width": 4, "depth": 1}, "projector_dims": [16, 16], "epochs": 1,
           "batch_size": 128, "max_images": 256, "warmup_epochs": 0, "perf": {"compile": False, "bf16": False},
           "probe": {"iterations": 50}}
NET = {"model": "convnet_bn", "model_kwargs": {"width": 8, "depth": 2}}
FAST = {"compile": False, "bf16": False, "channels_last": False}


def test_teacher_distill_evaluate(tmp_path):
    teacher = tmp_path / "teacher.pt"
    config = tmp_path / "krr.yaml"
    config.write_text(yaml.safe_dump({
        "name": "krr", "out_dir": str(tmp_path / "runs"), "dataset": {"name": "digits"},
        "synthesizer": {"name": "krr_st", "teacher": str(teacher), "teacher_training": TEACHER, "num_images": 20,
                        "num_models": 2, "online_iteration": 3, "iterations": 4, "batch_real": 64, "lr": 1.0e-2,
                        "checkpoint_every": 2, "perf": FAST, **NET},
        "evaluator": {"name": "transfer", "num_runs": 1, "pretrain_recipe": {"epochs": 2},
                      "finetune": {"iterations": 10, "batch_size": 64,
                                   "augment": {"name": "pad_crop_flip", "padding": 1, "flip": False}},
                      "perf": FAST, "progress": False},
    }))
    assert _script().main([str(config)]) == 0
    assert cli(["distill", str(config)]) == 0
    run = tmp_path / "runs" / "krr"
    synset = SyntheticSet.load(run / "synset.pt")
    assert synset.meta["teacher"]["path"] == str(teacher) and synset.meta["labels"] == "regression"
    assert synset.y.shape[0] == 20 and synset.meta["step"] == 4
    results = json.loads((run / "results.json").read_text())
    assert results["evaluation"]["pretrain"] == "regression" and results["evaluation"]["downstream"] == "digits"
    # --resume on a finished run continues from its final checkpoint without redoing work.
    assert cli(["distill", str(config), "--resume"]) == 0
    assert cli(["evaluate", str(run / "synset.pt"), "--evaluator", "transfer", "evaluator.num_runs=1",
                "evaluator.pretrain=none", "evaluator.finetune.iterations=5", "evaluator.progress=false",
                "evaluator.model=convnet_bn", "evaluator.perf.compile=false"]) == 0
    # Two records: the distillation's final evaluation and this one (another config).
    records = [json.loads(p.read_text()) for p in (run / "evaluations").glob("transfer-*.json")]
    assert len(records) == 2
    (out,) = [r for r in records if "by" not in r]
    assert out["evaluation"]["pretrain"] == "none" and "transfer" in (run / "evaluations.md").read_text()
