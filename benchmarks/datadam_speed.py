"""DataDAM distillation cost on the CPU: seconds per iteration, peak memory and the split between
augmentation, the real forward pass and the synthetic forward/backward, for several speed settings.

Each setting runs in its own subprocess so that peak memory (ru_maxrss above the process's state after
loading the data) belongs to that setting alone.

    python benchmarks/datadam_speed.py --data ../shared/data/cifar10-jpg.tar.gz --ipc 10 --batch-real 256 \
        --out benchmarks/results/datadam_speed_cifar10_ipc10
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "plain_fp32": {"channels_last": False, "bf16": False, "compile": False},
    "default_cpu": {"channels_last": None, "bf16": None, "compile": None},
    "channels_last+bf16": {"channels_last": True, "bf16": True, "compile": False},
}


def run_one(args: argparse.Namespace, setting: str) -> dict:
    """Seconds per iteration of the library's own step (``synth.step``), and a split of one iteration's parts measured
    by calling the public pieces on their own (no optimiser step: the set is not changed by the split pass)."""
    from ddistill.data import load_real
    from ddistill.utils.perf import PerfConfig
    from synthesizers import SYNTHESIZERS

    real, _ = load_real("cifar10_jpeg", root=args.data)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset(args.preset, ipc=args.ipc, batch_real=args.batch_real,
                                 iterations=args.warmup + args.iters, perf=PerfConfig(**SETTINGS[setting]))
    synth = cls(cfg, seed=0)
    synth.setup(real)
    perf = synth.perf
    split: dict[str, list[float]] = {"augment": [], "real_forward": [], "syn_forward_backward": [], "total": []}
    sizes = synth.real_batch_sizes(real)
    for step in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        synth.step(real)  # exactly what fit() runs
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        net = synth.sample_network(step)
        x_real, x_syn = synth.siamese_class_batches(real)
        t1 = time.perf_counter()
        stats = synth.real_statistics(net, x_real)  # real forward + attention maps, no graph
        t2 = time.perf_counter()
        loss, _ = synth.synthetic_loss(net, x_syn, stats, sizes, cfg.ipc)
        loss.backward()
        synth.params["x"].grad = None
        t3 = time.perf_counter()
        if step >= args.warmup:
            split["augment"].append(t1 - t0)
            split["real_forward"].append(t2 - t1)
            split["syn_forward_backward"].append(t3 - t2)
            split["total"].append(total)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"setting": setting, "perf": {k: getattr(perf, k) for k in ("channels_last", "bf16", "compile")},
            "seconds_per_iteration_median": statistics.median(split["total"]),
            "split_median_seconds": {k: statistics.median(v) for k, v in split.items() if k != "total"},
            "peak_rss_above_data_mib": (peak - base_rss) / 1024, "peak_rss_mib": peak / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--preset", default="paper")
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settings", nargs="*", default=list(SETTINGS))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default="benchmarks/results/datadam_speed_cifar10_ipc10")
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return
    from ddistill.io import machine_info, write_json

    rows = []
    for setting in args.settings:
        cmd = [sys.executable, __file__, "--one", setting, "--data", args.data, "--ipc", str(args.ipc),
               "--batch-real", str(args.batch_real), "--preset", args.preset, "--iters", str(args.iters),
               "--warmup", str(args.warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "datadam_speed", "machine": machine_info(), "data": "CIFAR-10 JPEG mirror",
              "ipc": args.ipc, "batch_real_per_class": args.batch_real, "preset": args.preset,
              "iterations_timed": args.iters, "warmup": args.warmup, "rows": rows}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    lines = [f"# DataDAM seconds per iteration on CPU (CIFAR-10, IPC {args.ipc}, {args.batch_real} real/class, "
             f"preset {args.preset})\n", f"Median of {args.iters} iterations after {args.warmup} warm-up. "
             f"Command: `python benchmarks/datadam_speed.py --preset {args.preset} --ipc {args.ipc} "
             f"--batch-real {args.batch_real} --iters {args.iters} --warmup {args.warmup}`.\n",
             "| setting | s/iteration (synth.step) | split: sample net + augment | real fwd + attention | syn fwd+bwd | "
             "peak RSS above data (MiB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["split_median_seconds"]
        lines.append(f"| {r['setting']} | {r['seconds_per_iteration_median']:.3f} | {s['augment']:.3f} | "
                     f"{s['real_forward']:.3f} | {s['syn_forward_backward']:.3f} | {r['peak_rss_above_data_mib']:.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
