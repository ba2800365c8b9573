"""The command line end to end on digits, into a temporary folder."""
import json

import pytest
import torch
import yaml

from ddistill.cli import main
from ddistill.synset import SyntheticSet

FAST_OVERRIDES = [
    "synthesizer.iterations=4", "synthesizer.ipc=2", "synthesizer.batch_real=8", "synthesizer.checkpoint_every=2",
    "synthesizer.model_kwargs={depth: 2, width: 16}", "synthesizer.perf.compile=false",
    "evaluator.num_models=1", "evaluator.train.epochs=3", "evaluator.model_kwargs={depth: 2, width: 16}",
    "evaluator.perf.compile=false", "evaluator.progress=false",
]


def _config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cli", "out_dir": str(tmp_path / "runs"), "dataset": {"name": "digits"},
        "synthesizer": {"name": "dm"}, "evaluator": {"name": "classifier", "model": "convnet"},
    }))
    return path


def test_distill_show_evaluate(tmp_path, capsys):
    assert main(["distill", str(_config(tmp_path)), *FAST_OVERRIDES]) == 0
    run = tmp_path / "runs" / "cli"
    for name in ["config.yaml", "synset.pt", "log.jsonl", "results.json", "grid.png", "checkpoint.pt"]:
        assert (run / name).exists(), name
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["synthesizer"]["lr_images"] == 1.0 and resolved["synthesizer"]["iterations"] == 4
    results = json.loads((run / "results.json").read_text())
    assert results["evaluation"]["metric"] == "accuracy" and len(results["evaluation"]["values"]) == 1
    synset = SyntheticSet.load(run / "synset.pt")
    assert synset.meta["data"]["name"] == "digits" and synset.meta["step"] == 4 and len(synset) == 20
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(r.get("final") for r in log)

    assert main(["show", str(run / "synset.pt"), "--grid", str(tmp_path / "g.png")]) == 0
    assert "synthesizer: dm" in capsys.readouterr().out and (tmp_path / "g.png").exists()

    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run / "synset.pt"), "evaluator.num_models=1", "evaluator.train.epochs=2",
                 "evaluator.model=mlp", "evaluator.perf.compile=false", "evaluator.progress=false",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["evaluation"]["model"] == "mlp"


def test_rerun_needs_resume_and_resume_finishes(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["distill", str(cfg), *FAST_OVERRIDES]) == 0
    first = SyntheticSet.load(tmp_path / "runs" / "cli" / "synset.pt")
    assert main(["distill", str(cfg), *FAST_OVERRIDES]) == 2
    assert "--resume" in capsys.readouterr().err
    # Resuming a finished run continues from its last checkpoint: nothing left to do, same set.
    assert main(["distill", str(cfg), *FAST_OVERRIDES, "--resume"]) == 0
    assert torch.equal(SyntheticSet.load(tmp_path / "runs" / "cli" / "synset.pt").x, first.x)


@pytest.mark.parametrize("override, message", [
    ("synthesizer.name=magic", "unknown synthesizer 'magic'; choose from"),
    ("dataset.name=imagenet9", "unknown dataset 'imagenet9'; choose from"),
    ("synthesizer.lr_imagez=3", "unknown key(s) ['lr_imagez'] in synthesizer"),
    ("synthesizer.ipc=5000", "ipc=5000 is larger than class"),
    ("synthesizer.model=resnet99", "unknown model 'resnet99'"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, override, message):
    assert main(["distill", str(_config(tmp_path)), *FAST_OVERRIDES, override]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_rejects_foreign_file(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    torch.save([1, 2, 3], bad)
    assert main(["evaluate", str(bad)]) == 2
    assert "not a ddistill synthetic set" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list", "synthesizers"]) == 0
    assert "dm" in capsys.readouterr().out.split()
