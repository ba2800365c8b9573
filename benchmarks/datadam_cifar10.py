"""DataDAM on the CIFAR-10 JPEG mirror at a CPU budget: both presets at IPC 1 and 10, evaluated with
ConvNet-3 (the distillation network recorded in each set) next to the ``random`` baseline, with a learning
curve (accuracy vs iterations) and the final sets saved for reuse (continual learning, NAS).

    python benchmarks/datadam_cifar10.py --iterations 1000 --eval-every 250 --epochs 300 --models 5 \
        --out benchmarks/results/datadam_cifar10

The budget (iterations, real batch, evaluation epochs/models) is an argument and written into the results;
the paper budget is in scripts/configs/datadam/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ddistill.config import to_dict
from ddistill.data import load_real
from ddistill.synset import SyntheticSet
from ddistill.io import machine_info, write_json
from ddistill.utils.train import TrainRecipe
from evaluators import ClassifierConfig, ClassifierEvaluator
from synthesizers import SYNTHESIZERS
PUBLISHED = {1: "32.0 ± 1.2", 10: "54.2 ± 0.8"}  # DataDAM Table 1 (ConvNet-3, paper budget)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--out", default="benchmarks/results/datadam_cifar10")
    p.add_argument("--ipc", type=int, nargs="*", default=[1, 10])
    p.add_argument("--presets", nargs="*", default=["paper", "official"])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch-real", type=int, default=None, help="real images per class (default: the preset's)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--curve-models", type=int, default=2)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    p.add_argument("--sets-dir", default=None,
                   help="where the distilled sets are saved (default: sets/ beside --out); an existing set file is "
                        "never replaced without --overwrite-sets")
    p.add_argument("--overwrite-sets", action="store_true", help="replace set files already in --sets-dir")
    p.add_argument("--plot-only", default=None, help="re-draw the learning-curve PNG from a results JSON and exit")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in --out's JSON that were run with this budget and seed")
    p.add_argument("--reuse-distilled", nargs="*", default=[],
                   help="earlier results JSONs: a DataDAM row there with the same synthesizer config and seed has its "
                        "set (read from --sets-dir) re-evaluated at this budget instead of distilled again; its distillation "
                        "time and curve are carried over and the row names the JSON it came from")
    args = p.parse_args()
    if args.plot_only:
        import json

        saved = json.loads(Path(args.plot_only).read_text())
        args.iterations, args.epochs = saved["budget"]["iterations"], saved["budget"]["eval_epochs"]
        plot(saved["rows"], args, Path(args.plot_only).with_suffix(".png"))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    real, test = load_real("cifar10_jpeg", root=args.data)
    out = Path(args.out)
    sets_dir = Path(args.sets_dir) if args.sets_dir else out.parent / "sets"
    rows: dict[str, dict] = {}
    result = {"benchmark": "datadam_cifar10", "machine": machine_info(), "data": f"CIFAR-10 JPEG mirror ({args.data})",
              "budget": {"iterations": args.iterations, "batch_real": args.batch_real or "preset default",
                         "eval_epochs": args.epochs, "eval_models": args.models, "curve_every": args.eval_every,
                         "curve_models": args.curve_models},
              "seed": args.seed, "command": " ".join(["python", "benchmarks/datadam_cifar10.py", *sys.argv[1:]]),
              "published_source": "DataDAM (Sajedi et al. 2023) Table 1", "rows": rows}

    done, earlier = previous_rows(args, out, result["budget"])
    if done:
        print(f"resuming: {sorted(done)} already in {out.with_suffix('.json')}", flush=True)

    def evaluator(models: int) -> ClassifierEvaluator:
        # controls=[]: the random subset of the same size is its own row (random_ipc*), evaluated once.
        return ClassifierEvaluator(ClassifierConfig(num_models=models, train=TrainRecipe(epochs=args.epochs),
                                                    progress=False, controls=[]),
                                   seed=args.seed)

    # Before any work: a set this run would distil must not replace one another run made (checked here, not when the
    # set is saved, so a long run never ends unable to keep its result).
    for ipc in args.ipc:
        for preset in args.presets:
            key, path = f"datadam_{preset}_ipc{ipc}", sets_dir / f"datadam_{preset}_cifar10_ipc{ipc}.pt"
            reusable = key in earlier and path.exists()
            if key not in done and not reusable and path.exists() and not args.overwrite_sets:
                raise SystemExit(f"error: {path} exists (a set another run made); choose --sets-dir or pass "
                                 "--overwrite-sets")

    for ipc in args.ipc:
        rnd = SYNTHESIZERS.get("random")
        if f"random_ipc{ipc}" in done:
            rows[f"random_ipc{ipc}"] = done[f"random_ipc{ipc}"]
        else:
            res = evaluator(args.models).evaluate(rnd(rnd.Config(ipc=ipc), seed=args.seed).fit(real), test)
            rows[f"random_ipc{ipc}"] = {**res.to_dict(), "ipc": ipc}
            print(f"random IPC {ipc}: {res}", flush=True)
            write_json(out.with_suffix(".json"), result)
        for preset in args.presets:
            cls = SYNTHESIZERS.get("datadam")
            overrides = {"ipc": ipc, "iterations": args.iterations, "checkpoint_every": 0}
            if args.batch_real:
                overrides["batch_real"] = args.batch_real
            cfg = cls.config_from_preset(preset, **overrides)
            key = f"datadam_{preset}_ipc{ipc}"
            if key in done:
                rows[key] = done[key]
                continue
            set_path = sets_dir / f"datadam_{preset}_cifar10_ipc{ipc}.pt"
            old = earlier.get(key)
            if old and same_config(old["config"], cfg) and set_path.exists():
                synset = SyntheticSet.load(set_path)
                if synset.meta.get("config") == old["config"] and synset.meta.get("seed") == args.seed:
                    res = evaluator(args.models).evaluate(synset, test)
                    rows[key] = {**res.to_dict(), "ipc": ipc, "preset": preset, "config": old["config"],
                                 "published": PUBLISHED.get(ipc), "distill_seconds": old["distill_seconds"],
                                 "curve": old["curve"], "distilled_by": old["source"]}
                    print(f"DataDAM {preset} IPC {ipc} (set from {old['source']}): {res}", flush=True)
                    write_json(out.with_suffix(".json"), result)
                    continue
            synth = cls(cfg, seed=args.seed)
            curve = []

            def on_step(s, step, logs, curve=curve):
                if args.eval_every and step % args.eval_every == 0 and step < args.iterations:
                    r = evaluator(args.curve_models).evaluate(s.synthetic_set(real), test)
                    curve.append({"iteration": step, "mean": r.mean, "std": r.std})
                    print(f"  {preset} IPC {ipc} it {step}: {r}", flush=True)

            start = time.perf_counter()
            synset = synth.fit(real, callbacks=[on_step])
            seconds = time.perf_counter() - start
            synset.save(set_path)
            synset.save_grid(set_path.with_suffix(".png"))
            res = evaluator(args.models).evaluate(synset, test)
            rows[f"datadam_{preset}_ipc{ipc}"] = {**res.to_dict(), "ipc": ipc, "preset": preset,
                                                  "config": synset.meta["config"], "published": PUBLISHED.get(ipc),
                                                  "distill_seconds": seconds, "curve": curve}
            print(f"DataDAM {preset} IPC {ipc} ({args.iterations} it, {seconds / 60:.1f} min): {res}", flush=True)
            write_json(out.with_suffix(".json"), result)
    write_json(out.with_suffix(".json"), result)
    plot(rows, args, out.with_suffix(".png"))
    command = " ".join(["python", "benchmarks/datadam_cifar10.py", *sys.argv[1:]])
    lines = ["# DataDAM on CIFAR-10 (JPEG mirror), CPU budget\n",
             f"Command: `{command}`. " f"Distillation: {args.iterations} iterations (paper 8000 / official 20000), "
             f"real batch per class {args.batch_real or 'of the preset (paper 256, official 64)'}. Evaluation: "
             f"{args.models} fresh ConvNet-3 (the set's distillation net: instance norm for `paper`, batch norm for "
             f"`official`), {args.epochs} epochs (paper 1000), DSA. Seed {args.seed}.\n",
             "| row | accuracy % | published (paper budget) | distill time |", "|---|---|---|---:|"]
    for name, r in rows.items():
        t = f"{r['distill_seconds'] / 60:.1f} min" if "distill_seconds" in r else ""
        if "distilled_by" in r:
            t += f" (set distilled by the run in `{Path(r['distilled_by']).name}`, same config and seed)"
        lines.append(f"| {name} | {r['mean']:.2f} ± {r['std']:.2f} | {r.get('published') or ''} | {t} |")
    lines.append(f"\nLearning curves: `{out.with_suffix('.png').name}`.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def same_config(saved: dict, cfg: object) -> bool:
    """Whether a recorded synthesizer config is ``cfg``: equal on every recorded field, and every field added to the
    config class since (absent from the record) at its default, which reproduces the behaviour before it existed."""
    now, default = to_dict(cfg), to_dict(type(cfg)())
    return all(now.get(k) == v for k, v in saved.items()) and all(now[k] == default[k] for k in now if k not in saved)


def previous_rows(args: argparse.Namespace, out: Path, budget: dict) -> tuple[dict, dict]:
    """(rows of ``out``'s JSON to keep under ``--resume``, DataDAM rows of ``--reuse-distilled`` JSONs by key).

    A row is kept only if it was produced with the same budget and seed; a reused DataDAM row must also carry
    the synthesizer config, which the caller compares with the requested one and with the set file's metadata.
    """
    import json

    done: dict[str, dict] = {}
    path = out.with_suffix(".json")
    if args.resume and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("budget") == budget and saved.get("seed") == args.seed:
            done = saved["rows"]
        else:
            print(f"not resuming: {path} was run with budget {saved.get('budget')}, seed {saved.get('seed')}")
    earlier: dict[str, dict] = {}
    for src in args.reuse_distilled:
        saved = json.loads(Path(src).read_text())
        if saved.get("seed") != args.seed:
            continue
        for key, row in saved["rows"].items():
            if key.startswith("datadam_") and "config" in row and "distilled_by" not in row:
                earlier[key] = {**row, "source": src}
    return done, earlier


def plot(rows: dict, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, r in rows.items():
        if not r.get("curve"):
            continue
        its = [c["iteration"] for c in r["curve"]] + [args.iterations]
        means = [c["mean"] for c in r["curve"]] + [r["mean"]]
        ax.plot(its, means, marker="o", label=name)
    for name, r in rows.items():
        if name.startswith("random"):
            ax.axhline(r["mean"], linestyle="--", linewidth=1, color="gray", label=f"{name} (reference)")
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel("ConvNet-3 test accuracy (%)")
    ax.set_title(f"DataDAM, CIFAR-10 JPEG ({args.epochs}-epoch evaluation)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
