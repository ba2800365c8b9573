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


def test_every_evaluation_is_kept_with_its_controls(tmp_path, capsys):
    assert main(["distill", str(_config(tmp_path)), *FAST_OVERRIDES]) == 0
    synset = tmp_path / "runs" / "cli" / "synset.pt"
    final = list((synset.parent / "evaluations").glob("classifier-*.json"))  # the distillation's final evaluation
    assert len(final) == 1 and json.loads(final[0].read_text())["by"].startswith("ddistill distill")
    base = ["evaluate", str(synset), "evaluator.num_models=1", "evaluator.model=mlp", "evaluator.progress=false",
            "evaluator.perf.compile=false"]
    assert main([*base, "evaluator.train.epochs=2"]) == 0
    printed = capsys.readouterr().out
    assert "control random_subset:" in printed  # a score is never printed without its control
    assert main([*base, "evaluator.train.epochs=3"]) == 0
    assert main([*base, "evaluator.train.epochs=3", "seed=1"]) == 0
    assert main([*base, "evaluator.train.epochs=2"]) == 0  # the same evaluation again replaces its own record
    # The same data named again, or found elsewhere (root), is the same evaluation (other data: data_overrides).
    assert main([*base, "evaluator.train.epochs=2", f"dataset.root={tmp_path}"]) == 0
    assert main([*base, "evaluator.train.epochs=2", "dataset.name=digits"]) == 0
    records = sorted(set((synset.parent / "evaluations").glob("classifier-*.json")) - set(final))
    assert len(records) == 3
    epochs = sorted((json.loads(p.read_text())["config"]["train"]["epochs"], json.loads(p.read_text())["seed"])
                    for p in records)
    assert epochs == [(2, 0), (3, 0), (3, 1)]
    assert not any("data_overrides" in json.loads(p.read_text()) for p in records)
    csv_rows = (synset.parent / "evaluations.csv").read_text().splitlines()
    assert len(csv_rows) == 5 and csv_rows[0].startswith("evaluator,config_hash,seed,metric,mean,std")
    assert all("random_subset=" in row for row in csv_rows[1:])
    md = (synset.parent / "evaluations.md").read_text()
    assert md.count("| classifier |") == 4
    # Each row says how it differs from the evaluator's defaults (speed and display settings aside).
    assert md.count("| model=mlp; num_models=1; train.epochs=3 |") == 2 and "perf." not in md


def test_the_sets_own_network_named_or_not_is_one_record(tmp_path):
    from evaluators.base import record_config

    meta = {"eval_model": "convnet", "eval_model_kwargs": {"depth": 2}}
    own = {"model": "convnet", "model_kwargs": {"depth": 2}, "num_models": 1}
    assert record_config(own, meta) == {"model": None, "model_kwargs": None, "num_models": 1}
    assert record_config({**own, "model_kwargs": None}, meta)["model"] is None  # the recorded kwargs apply
    assert record_config({**own, "model_kwargs": {"depth": 3}}, meta)["model_kwargs"] == {"depth": 3}
    assert record_config({"classifier": {**own, "model": "mlp"}}, meta)["classifier"]["model"] == "mlp"
    assert record_config({"classifier": own}, {})["classifier"]["model"] == "convnet"  # the default is convnet {}
    # Through the CLI: the distill's final evaluation names the network; an evaluate that leaves it to the set
    # (otherwise the same evaluation) replaces that record instead of adding a second one.
    assert main(["distill", str(_config(tmp_path)), *FAST_OVERRIDES]) == 0
    synset = tmp_path / "runs" / "cli" / "synset.pt"
    final = list((synset.parent / "evaluations").glob("classifier-*.json"))
    assert main(["evaluate", str(synset), "evaluator.num_models=1", "evaluator.train.epochs=3",
                 "evaluator.perf.compile=false", "evaluator.progress=false"]) == 0
    after = list((synset.parent / "evaluations").glob("classifier-*.json"))
    assert after == final and "by" not in json.loads(after[0].read_text())  # replaced by the evaluate


def test_evaluations_on_other_data_are_other_records(tmp_path):
    from ddistill.eval_records import data_overrides, record_key, summarise, write_record

    own = {"name": "cifar10_jpeg", "root": "a.tar.gz", "zca": False, "classes": None, "store": None}
    assert data_overrides(own, {**own, "root": "/elsewhere/a.tar.gz", "store": "s"}) == {}
    assert data_overrides(own, {**own, "zca": True, "classes": [5, 6]}) == {"zca": True, "classes": [5, 6]}
    config = {"num_models": 1}
    assert record_key("classifier", config, 0) == record_key("classifier", config, 0, {})  # as before this field
    assert record_key("classifier", config, 0, {"zca": True}) != record_key("classifier", config, 0)
    # Display-only fields do not make another evaluation (keys made with the default stand); another device does,
    # the CPU's keys stay as they were.
    shown = {**config, "progress": True}
    assert record_key("classifier", {**config, "progress": False}, 0) == record_key("classifier", shown, 0)
    assert record_key("classifier", shown, 0) != record_key("classifier", config, 0)  # (a field it has, hashed)
    assert record_key("classifier", config, 0, device="cpu") == record_key("classifier", config, 0)
    assert record_key("classifier", config, 0, device="cuda:1") == record_key("classifier", config, 0, device="cuda")
    assert record_key("classifier", config, 0, device="cuda") != record_key("classifier", config, 0)
    (tmp_path / "synset.pt").write_bytes(b"")
    base = {"evaluator": "classifier", "config": config, "seed": 0,
            "evaluation": {"metric": "accuracy", "mean": 50.0, "std": 1.0, "values": [50.0]}}
    write_record(tmp_path / "synset.pt", base)
    write_record(tmp_path / "synset.pt", {**base, "data_overrides": {"classes": [5, 6]}})
    assert len(list((tmp_path / "evaluations").glob("*.json"))) == 2
    csv_rows = summarise(tmp_path)[0].read_text().splitlines()
    assert sum("dataset.classes=[5, 6]" in row for row in csv_rows) == 1


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


def test_output_to_a_file_holds_no_control_codes_or_cuda_warning(tmp_path):
    # Run as a user would with output redirected: no progress-bar control codes, and no "CUDA_HOME" warning from
    # torch.compile's C++ toolchain on a machine without CUDA.
    import subprocess
    import sys

    import os

    import torch

    # torch prints the notice when it finds a CUDA toolkit (CUDA_HOME or nvcc) but no CUDA runtime: point CUDA_HOME at
    # a folder so the notice is due on every machine, and check that torch alone does print it here, so this test
    # can fail.
    (tmp_path / "cuda").mkdir()
    env = {**os.environ, "CUDA_HOME": str(tmp_path / "cuda")}
    if torch.version.cuda is not None and not torch.cuda.is_available():  # (a CPU-only torch never prints it)
        bare = subprocess.run([sys.executable, "-c", "import torch.utils.cpp_extension"], capture_output=True,
                              text=True, timeout=300, env=env)
        assert "CUDA_HOME" in bare.stdout + bare.stderr, "torch no longer prints the notice: test what it prints now"
    overrides = [o for o in FAST_OVERRIDES if "compile" not in o and "progress" not in o]
    proc = subprocess.run([sys.executable, "-m", "ddistill.cli", "distill", str(_config(tmp_path)), *overrides,
                           "evaluator.perf.compile=true", "evaluator.train.epochs=1", "evaluator.controls=[]"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    both = proc.stdout + proc.stderr
    assert "\r" not in both and "\x1b[" not in both and "CUDA_HOME" not in both, both
    assert "final: accuracy" in proc.stdout


def test_max_over_distillation_is_labelled_beside_the_final_score(tmp_path, capsys):
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("synthesizer.iterations")]
    assert main(["distill", str(_config(tmp_path)), *overrides, "synthesizer.iterations=4", "eval_every=2",
                 "evaluator.controls=[]"]) == 0
    results = json.loads((tmp_path / "runs" / "cli" / "results.json").read_text())
    best = results["reported_as"]["max_over_distillation"]
    means = [p["mean"] for p in results["curve"]] + [results["evaluation"]["mean"]]
    assert best["mean"] == max(means) and "test split" in best["what"]
    assert "reported as max_over_distillation (not the honest score)" in capsys.readouterr().out


def test_sets_sharing_a_folder_keep_their_own_records_and_a_replaced_set_is_marked(tmp_path):
    from ddistill.eval_records import summarise, write_record

    base = {"evaluator": "classifier", "config": {"num_models": 1}, "seed": 0,
            "evaluation": {"metric": "accuracy", "mean": 50.0, "std": 1.0, "values": [50.0]}}
    (tmp_path / "a.pt").write_bytes(b"set a")
    (tmp_path / "b.pt").write_bytes(b"set b")
    write_record(tmp_path / "a.pt", base)
    write_record(tmp_path / "b.pt", base)  # the same evaluation of another set: its own record
    assert len(list((tmp_path / "evaluations").glob("*.json"))) == 2
    (tmp_path / "a.pt").write_bytes(b"another set a")  # e.g. distilled again with --overwrite
    rows = summarise(tmp_path)[0].read_text().splitlines()[1:]
    assert sum("a.pt (replaced since)" in r for r in rows) == 1 and sum(",b.pt," in r for r in rows) == 1


def test_record_keys_ignore_display_fields_at_any_depth_and_an_unused_new_field():
    # dd_ranking keeps progress under classifier; the continual evaluator's whole_set recipe (added after records
    # existed) is hashed only when that control runs, so older continual records keep their keys.
    from ddistill import config as cfgmod
    from ddistill.eval_records import record_key
    from evaluators.continual import ContinualConfig, ContinualEvaluator

    shown = {"classifier": {"num_models": 1, "progress": True}}
    quiet = {"classifier": {"num_models": 1, "progress": False}}
    assert record_key("dd_ranking", quiet, 0) == record_key("dd_ranking", shown, 0)
    default = cfgmod.to_dict(ContinualConfig())
    keyed = ContinualEvaluator.key_config(default, {})
    assert "whole_set" not in keyed and keyed["controls"] == ["random_subset"]
    assert "whole_set" in ContinualEvaluator.key_config({**default, "controls": ["whole_set"]}, {})
