"""Cross-architecture accuracy of distilled sets: each set is scored by fresh networks of several architectures
(the DC-style small-image ConvNet-3, AlexNet, VGG11, ResNet18 by default = ``EVAL_POOLS["cross"]``), next to a
``random`` real subset of the same IPC scored by the same networks.

    python benchmarks/cross_arch.py --sets benchmarks/results/sets/datadam_paper_cifar10_ipc10.pt \
        --models 3 --epochs 300 --out benchmarks/results/cross_arch_cifar10_ipc10

ConvNet-3 is scored with the network the set records (its distillation net); the other architectures use
their defaults (batch norm where the architecture has it). Evaluation: SGD 0.01, momentum 0.9, wd 5e-4,
x0.1 at half, DSA, ``--epochs`` epochs (papers: 1000).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ddistill.data import load_real
from ddistill.models import EVAL_POOLS
from ddistill.synset import SyntheticSet
from ddistill.io import machine_info, write_json
from ddistill.utils.perf import PerfConfig
from ddistill.utils.train import TrainRecipe
from evaluators import ClassifierConfig, ClassifierEvaluator
from synthesizers import SYNTHESIZERS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--sets", nargs="+", help="synset.pt files distilled from --data")
    p.add_argument("--archs", nargs="*", default=EVAL_POOLS["cross"])
    p.add_argument("--models", type=int, default=3, help="fresh networks per (set, architecture)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--no-random", action="store_true", help="skip the random-subset reference row")
    p.add_argument("--random-only", action="store_true",
                   help="score only the random-subset row (its IPC is that of --sets): adds the control to an earlier "
                        "run, merged with --report")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/cross_arch_cifar10")
    p.add_argument("--report", nargs="*", default=None,
                   help="only write a combined table (--out .md) from earlier results JSONs of this script")
    args = p.parse_args()
    if args.no_random and args.random_only:
        raise SystemExit("--no-random and --random-only exclude each other")
    if args.report is not None:
        report([json.loads(Path(f).read_text()) for f in args.report], Path(args.out))
        return
    if not args.sets:
        raise SystemExit("--sets: name at least one synset.pt file (or --report to merge earlier results)")
    real, test = load_real("cifar10_jpeg", root=args.data)
    sets = {Path(s).stem: SyntheticSet.load(s) for s in args.sets}
    ipcs = {s.meta.get("ipc") for s in sets.values()}
    if not args.no_random:
        if len(ipcs) != 1 or None in ipcs:
            raise SystemExit(f"a random reference row needs sets of one IPC; got {sorted(map(str, ipcs))}")
        rnd = SYNTHESIZERS.get("random")
        ipc = ipcs.pop()
        random_set = rnd(rnd.Config(ipc=ipc), seed=args.seed).fit(real)
        if args.random_only:
            sets = {}
        sets[f"random_ipc{ipc}"] = random_set
    table: dict[str, dict[str, dict]] = {}
    out = Path(args.out)
    result = {"benchmark": "cross_arch", "machine": machine_info(), "data": f"CIFAR-10 JPEG mirror ({args.data})",
              "sets": args.sets, "budget": {"eval_models": args.models, "eval_epochs": args.epochs},
              "seed": args.seed, "command": " ".join(["python", "benchmarks/cross_arch.py", *sys.argv[1:]]),
              "results": table}
    for name, synset in sets.items():
        table[name] = {}
        for arch in args.archs:
            recorded = synset.meta.get("eval_model") or "convnet"
            # The recorded net keeps its recorded kwargs (e.g. batch norm for the `official` preset).
            # controls=[]: the random_ipc* row (same IPC, networks, seed and epochs per architecture) is the control.
            cfg = ClassifierConfig(model=arch, model_kwargs=None if arch == recorded else {},
                                   num_models=args.models, train=TrainRecipe(epochs=args.epochs), progress=False,
                                   controls=[], perf=PerfConfig(threads=args.threads))
            t0 = time.perf_counter()
            res = ClassifierEvaluator(cfg, seed=args.seed).evaluate(synset, test)
            table[name][arch] = {**res.to_dict(), "wall_seconds": time.perf_counter() - t0}
            print(f"{name} / {arch}: {res}", flush=True)
            write_json(out.with_suffix(".json"), result)  # after every cell: a long run keeps what it measured
    report([result], out)


def report(results: list[dict], out: Path) -> None:
    """Markdown table (set x architecture, mean ± std over the fresh networks) of one or more runs' JSON, and each
    set's gain over the random real subset of its IPC (the control) on every architecture both were scored on."""
    archs = list(dict.fromkeys(a for r in results for row in r["results"].values() for a in row))
    cells: dict[str, dict[str, str]] = {}
    means: dict[str, dict[str, float]] = {}
    for r in results:
        for name, row in r["results"].items():
            for a, v in row.items():
                n = f"{len(v['values'])} x {v['epochs']} ep"
                cells.setdefault(name, {})[a] = f"{v['mean']:.2f} ± {v['std']:.2f} ({n})"
                means.setdefault(name, {})[a] = v["mean"]
    lines = ["# Cross-architecture accuracy (CIFAR-10 JPEG mirror)\n",
             "Commands: " + "; ".join(f"`{r['command']}`" for r in results) + ". Each cell: mean ± std over fresh "
             "networks (count x epochs in brackets; papers: 1000 epochs), DSA, seed " + f"{results[0]['seed']}. "
             "`random_ipcN` (the control) is a random real subset with N images per class, drawn with the same seed "
             "and scored by the same networks, epochs and seeds.\n",
             "| set | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
    for name, row in cells.items():
        lines.append(f"| {name} | " + " | ".join(row.get(a, "not run") for a in archs) + " |")
    gains = []
    for name, row in means.items():
        control = f"random_ipc{_ipc_of(name)}"
        if name.startswith("random_ipc") or control not in means:
            continue
        gain = {a: row[a] - means[control][a] for a in archs if a in row and a in means[control]}
        gains.append(f"| {name} − {control} | " + " | ".join(f"{gain[a]:+.2f}" if a in gain else "not run"
                                                            for a in archs) + " |")
    if gains:
        lines += ["", "Gain over the random subset (points; negative = the set loses to real images picked at "
                      "random):", "", "| set | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs), *gains]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _ipc_of(name: str) -> str | None:
    """The IPC in a set's file name (``..._ipc10`` -> "10"), or None."""
    tail = name.rsplit("ipc", 1)
    return tail[1] if len(tail) == 2 and tail[1].isdigit() else None


if __name__ == "__main__":
    main()
