"""DataDAM: ddistill vs the official ``main_DataDAM.py``, side by side in one run, at the official code's
settings (CIFAR-10 JPEG mirror, IPC 10, batch-norm ConvNet-3, attention exponent 1, DSA, lr_img 1,
momentum 0.5 = ddistill preset ``official``).

1. Speed: for each real batch per class, ``--rounds`` rounds alternate the official code (through
   ``benchmarks/official/datadam_runner.py``) and ddistill's default CPU setting (through
   ``benchmarks/datadam_speed.py --one default_cpu``), each in a fresh subprocess, so both see the same machine
   state; seconds per iteration are medians after ``--warmup`` iterations, and the ratio is taken per round.
2. Accuracy: both codes distil for ``--accuracy-iterations`` steps with 64 real images per class; both final
   sets are scored by the same evaluator (``--models`` fresh batch-norm ConvNet-3, ``--epochs`` epochs, DSA,
   seed 0), so "no loss of accuracy" is checked at equal budget.

The official code is not part of this repository: clone DataDistillation/DataDAM yourself and pass its folder.

    python benchmarks/datadam_vs_official.py --official-dir /path/to/DataDAM --batch-real 256 64 --rounds 2 \
        --accuracy-iterations 300 --models 5 --epochs 300 --out benchmarks/results/datadam_vs_official
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _last_json(stdout: str, tag: str | None = None) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if tag is None and line.startswith("{"):
            return json.loads(line)
        if tag is not None and line.startswith(tag):
            return json.loads(line[len(tag):])
    raise RuntimeError(f"no result line in the output:\n{stdout[-2000:]}")


def run_official(args: argparse.Namespace, batch_real: int, iterations: int, save: str | None = None) -> dict:
    cmd = [sys.executable, str(HERE / "official" / "datadam_runner.py"), "--official-dir", args.official_dir,
           "--data", args.data, "--iterations", str(iterations), "--batch-real", str(batch_real)]
    if save:
        cmd += ["--save-images", save]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"official run failed:\n{out.stderr[-3000:]}")
    return _last_json(out.stdout, "OFFICIAL_RESULT ")


def run_ours(args: argparse.Namespace, batch_real: int) -> dict:
    cmd = [sys.executable, str(HERE / "datadam_speed.py"), "--one", "default_cpu", "--preset", "official",
           "--data", args.data, "--ipc", "10", "--batch-real", str(batch_real), "--iters", str(args.iters),
           "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"ddistill run failed:\n{out.stderr[-3000:]}")
    return _last_json(out.stdout)


def speed(args: argparse.Namespace) -> list[dict]:
    rows = []
    for rnd in range(args.rounds):
        for b in args.batch_real:
            off = run_official(args, b, args.warmup + args.iters + 1)
            per_it = off["seconds_per_iteration"][args.warmup:]
            off_med = statistics.median(per_it)
            ours = run_ours(args, b)
            row = {"round": rnd, "batch_real": b, "official_s_per_it": off_med, "official_all": per_it,
                   "official_peak_rss_mib": off["peak_rss_mib"],
                   "ours_s_per_it": ours["seconds_per_iteration_median"], "ours_split": ours["split_median_seconds"],
                   "ours_peak_rss_mib": ours["peak_rss_mib"], "ours_perf": ours["perf"],
                   "speedup": off_med / ours["seconds_per_iteration_median"]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("official_all",)}), flush=True)
    return rows


def accuracy(args: argparse.Namespace) -> dict:
    import torch

    from ddistill.data import EvalData, load_real
    from ddistill.synset import SyntheticSet
    from ddistill.utils.train import TrainRecipe
    from evaluators import ClassifierConfig, ClassifierEvaluator
    from synthesizers import SYNTHESIZERS

    real, test = load_real("cifar10_jpeg", root=args.data)
    n = args.accuracy_iterations
    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset("official", ipc=10, iterations=n, batch_real=64, checkpoint_every=0)
    t0 = time.perf_counter()
    ours = cls(cfg, seed=args.seed).fit(real)
    ours_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        off = run_official(args, 64, n, save=f"{tmp}/official.pt")
        off_seconds = time.perf_counter() - t0
        saved = torch.load(f"{tmp}/official.pt", weights_only=True)
    if saved["images"].shape != ours.x.shape or not torch.equal(saved["labels"], ours.y):
        raise RuntimeError(f"official set {tuple(saved['images'].shape)} does not line up with ours {tuple(ours.x.shape)}")
    # Same encoding (CIFAR mean/std normalisation), class-block layout and evaluation network as our set.
    official = SyntheticSet(tensors={"x": saved["images"].float(), "y": saved["labels"]},
                            meta={**ours.meta, "synthesizer": "official main_DataDAM.py", "config": {}})
    evaluator = ClassifierEvaluator(ClassifierConfig(num_models=args.models, train=TrainRecipe(epochs=args.epochs),
                                                     progress=False),
                                    seed=args.seed)
    # With the real training split, so each score carries the evaluator's random-subset control (same IPC, networks,
    # seeds and epochs; both sets have the same per-class counts, hence the same control).
    data = EvalData(train=real, test=test)
    res_ours, res_off = evaluator.evaluate(ours, data), evaluator.evaluate(official, data)
    print(f"accuracy: ddistill {res_ours.report()}\nofficial {res_off.report()}", flush=True)
    return {"iterations": n, "batch_real": 64,
            "ddistill": {**res_ours.to_dict(), "distill_seconds": ours_seconds},
            "official": {**res_off.to_dict(), "distill_seconds_incl_startup": off_seconds,
                         "image_updates": off["image_updates"],
                         "s_per_it_median": off["seconds_per_iteration_median"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-dir", required=True, help="a checkout of DataDistillation/DataDAM")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--batch-real", type=int, nargs="*", default=[256, 64])
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--accuracy-iterations", type=int, default=300, help="0 skips the accuracy comparison")
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--out", default="benchmarks/results/datadam_vs_official")
    args = p.parse_args()
    from ddistill.io import machine_info, write_json

    commit = subprocess.run(["git", "-C", args.official_dir, "rev-parse", "--short", "HEAD"], check=False,
                            capture_output=True,
                            text=True).stdout.strip() or "unknown (not a git checkout)"
    result = {"benchmark": "datadam_vs_official", "machine": machine_info(), "data": f"CIFAR-10 JPEG mirror ({args.data})",
              "official_code": f"DataDistillation/DataDAM main_DataDAM.py, commit {commit}, run unchanged by "
                               "benchmarks/official/datadam_runner.py (never committed here)",
              "settings": "IPC 10, batch-norm ConvNet-3, attention exponent 1, DSA, lr_img 1, momentum 0.5 "
                          "(ddistill preset `official`)",
              "budget": {"iters": args.iters, "warmup": args.warmup, "rounds": args.rounds,
                         "accuracy_iterations": args.accuracy_iterations, "eval_models": args.models,
                         "eval_epochs": args.epochs},
              "seed": args.seed, "command": " ".join(["python", "benchmarks/datadam_vs_official.py", *sys.argv[1:]])}
    if not args.skip_speed:
        result["speed"] = speed(args)
    if args.accuracy_iterations:
        result["accuracy"] = accuracy(args)
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_markdown(result, out.with_suffix(".md"))


def write_markdown(result: dict, path: Path) -> None:
    lines = ["# DataDAM: ddistill vs the official code, one run\n", (f"Command: `{result['command']}`. "
             f"Settings: {result['settings']}. Official code: {result['official_code']}.\n")]
    if "speed" in result:
        lines += ["## Seconds per distillation iteration (medians; rounds alternate the two codes)\n",
                  "| real / class | round | official | ddistill default | speed-up | peak RSS official / ddistill (MiB) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in result["speed"]:
            lines.append(f"| {r['batch_real']} | {r['round']} | {r['official_s_per_it']:.2f} | {r['ours_s_per_it']:.2f} "
                         f"| {r['speedup']:.1f}x | {r['official_peak_rss_mib']:.0f} / {r['ours_peak_rss_mib']:.0f} |")
        lines.append("")
    if "accuracy" in result:
        a = result["accuracy"]
        lines += [f"## Accuracy at equal budget ({a['iterations']} iterations, {a['batch_real']} real/class)\n",
                  (f"Both sets scored by ddistill's evaluator: {a['ddistill']['model']} {a['ddistill']['model_kwargs']}, "
                  f"{len(a['ddistill']['values'])} models x {a['ddistill']['epochs']} epochs, DSA.\n"),
                  "| code | accuracy % | distillation wall time (s) |", "|---|---|---:|",
                  (f"| ddistill (preset official) | {a['ddistill']['mean']:.2f} ± {a['ddistill']['std']:.2f} | "
                  f"{a['ddistill']['distill_seconds']:.0f} |"),
                  (f"| official main_DataDAM.py | {a['official']['mean']:.2f} ± {a['official']['std']:.2f} | "
                  f"{a['official']['distill_seconds_incl_startup']:.0f} (incl. its data loading) |")]
        control = a["ddistill"].get("controls", {}).get("random_subset")
        if control:  # results written before the evaluator computed controls have none
            lines.append(f"| random real subset of the same size (the evaluator's control) | "
                         f"{control['mean']:.2f} ± {control['std']:.2f} | |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
