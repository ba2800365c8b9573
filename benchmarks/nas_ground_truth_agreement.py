"""How far two NAS ground truths of other lengths agree: the Spearman between the real-data rankings of two
``reuse_cifar10.py`` results over the same architectures (e.g. 1-epoch and 3-epoch real training), beside the
agreement of each ground truth with its own repeat (the ``real_repeat`` control: other seeds, same length).

A ground truth that agrees with its repeat but not with a longer one is stable and wrong: the NAS ceiling cannot
catch that, this comparison can. Nothing is trained; the numbers come from the two JSON files::

    python benchmarks/nas_ground_truth_agreement.py benchmarks/results/reuse_cifar10_nas.json \
        benchmarks/results/reuse_cifar10_nas_real3.json --out benchmarks/results/reuse_cifar10_nas_agreement
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ddistill.io import write_json
from evaluators.nas import spearman


def rankings(path: Path, proxy: str) -> dict[str, Any]:
    """The real-data validation accuracies of one result: the ground truth and its repeat, per architecture."""
    res = json.loads(path.read_text())["nas"]
    if proxy not in res:
        raise KeyError(f"{path}: no NAS proxy '{proxy}'; choose from {sorted(k for k in res if k != 'protocol')}")
    r = res[proxy]
    repeat = (r.get("controls") or {}).get("real_repeat")
    if repeat is None:
        raise KeyError(f"{path}: the '{proxy}' result has no real_repeat control (its second real ranking)")
    return {"file": str(path), "real_epochs": r["real_epochs"], "architectures": r["architectures"],
            "truth": r["real_val_accuracy"], "repeat": repeat["real_val_accuracy"], "ceiling": repeat["mean"],
            "seed": r["seed"], "real_train_size": r["real_train_size"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("short", help="reuse_cifar10 result JSON of the shorter real training")
    p.add_argument("long", help="reuse_cifar10 result JSON of the longer real training (same architectures)")
    p.add_argument("--proxy", default="DataDAM", help="which proxy's record holds the rankings (default DataDAM)")
    p.add_argument("--out", required=True, help="output prefix (.md and .json)")
    args = p.parse_args(argv)
    a, b = rankings(Path(args.short), args.proxy), rankings(Path(args.long), args.proxy)
    if a["architectures"] != b["architectures"]:
        raise ValueError(f"{args.short} and {args.long} ranked other architectures: nothing to compare")
    rows = {
        f"{a['real_epochs']}-epoch vs its repeat (the ceiling, as stored)": a["ceiling"],
        f"{b['real_epochs']}-epoch vs its repeat (the ceiling, as stored)": b["ceiling"],
        f"{a['real_epochs']}-epoch vs {b['real_epochs']}-epoch (first seeds)": spearman(a["truth"], b["truth"]),
        f"{a['real_epochs']}-epoch vs {b['real_epochs']}-epoch (repeat seeds)": spearman(a["repeat"], b["repeat"]),
    }
    out = Path(args.out)
    command = "python benchmarks/nas_ground_truth_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(out.with_suffix(".json"), {"benchmark": "nas_ground_truth_agreement", "command": command,
                                          "short": a, "long": b, "spearman": rows})
    lines = [f"# Agreement of NAS ground truths: {a['real_epochs']}-epoch vs {b['real_epochs']}-epoch real training",
             "", f"Command: `{command}`. No training: the rankings are read from `{a['file']}` and `{b['file']}` "
             f"({len(a['architectures'])} architectures, real training on {a['real_train_size']} images, seed "
             f"{a['seed']}; the repeat is each file's `real_repeat` control, other seeds).", "",
             "| rankings compared | Spearman |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in rows.items()]
    lines += ["", "Real validation accuracy (%) per architecture:", "",
              f"| architecture | {a['real_epochs']} ep | {a['real_epochs']} ep repeat | {b['real_epochs']} ep | "
              f"{b['real_epochs']} ep repeat |", "|---|---:|---:|---:|---:|"]
    for i, arch in enumerate(a["architectures"]):
        name = ", ".join(f"{k}={v}" for k, v in arch.items())
        lines.append(f"| {name} | {a['truth'][i]:.1f} | {a['repeat'][i]:.1f} | {b['truth'][i]:.1f} | "
                     f"{b['repeat'][i]:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (KeyError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
