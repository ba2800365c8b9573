"""Peak memory of a DataDAM iteration with every class in one backward (``class_chunk: 0``) against chunks of
classes (``class_chunk: k``), and whether the sets agree.

    python benchmarks/datadam_chunk_memory.py --ipc 50 --iterations 3 --chunks 0 1 \
        --out benchmarks/results/datadam_chunk_memory

Each chunk size runs in a fresh process (peak resident memory, VmHWM, is a per-process high-water mark); the sets
are compared afterwards. The paper preset (instance-norm ConvNet-3, 256 real images per class) with ``batched:
false``, which class chunks require. On CIFAR-10's 10 classes the unchunked peak holds 10 classes' synthetic graphs;
ImageNet-1K's configs chunk for the same reason at 1000 classes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vm_hwm_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB (``ru_maxrss`` would carry the launcher's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace, chunk: int, out: Path) -> dict:
    import torch

    from ddistill.data import load_real
    from synthesizers import SYNTHESIZERS

    if args.threads:
        torch.set_num_threads(args.threads)
    real, _ = load_real("cifar10_jpeg", root=args.data)
    # Reset the high-water mark to the current resident set: decoding the JPEGs may have peaked above what stays
    # resident, and that transient must not be subtracted from (or counted in) the distillation's own peak.
    Path("/proc/self/clear_refs").write_text("5")
    loaded = vm_hwm_mib()
    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset("paper", ipc=args.ipc, iterations=args.iterations, batched=False, class_chunk=chunk,
                                 checkpoint_every=0)
    start = time.perf_counter()
    synset = cls(cfg, seed=args.seed).fit(real)
    seconds = time.perf_counter() - start
    synset.save(out)
    return {"class_chunk": chunk, "peak_mib": vm_hwm_mib(), "resident_after_loading_data_mib": loaded,
            "seconds_per_iteration": seconds / args.iterations}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--out", default="benchmarks/results/datadam_chunk_memory")
    p.add_argument("--ipc", type=int, default=50)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--chunks", type=int, nargs="*", default=[0, 1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args, args.child, Path(args.child_out))))
        return

    import torch

    from ddistill.io import machine_info, write_json
    from ddistill.synset import SyntheticSet

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in args.chunks:
            set_path = Path(tmp) / f"chunk{chunk}.pt"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--data", args.data, "--ipc", str(args.ipc),
                   "--iterations", str(args.iterations), "--seed", str(args.seed), "--child", str(chunk),
                   "--child-out", str(set_path)] + (["--threads", str(args.threads)] if args.threads else [])
            done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"class_chunk {chunk} failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["x"] = SyntheticSet.load(set_path).x
            rows.append(row)
            print(f"class_chunk {chunk}: peak {row['peak_mib']:.0f} MiB (after loading the data "
                  f"{row['resident_after_loading_data_mib']:.0f}), {row['seconds_per_iteration']:.1f} s/iteration",
                  flush=True)
    ref = rows[0]["x"]
    for row in rows:
        x = row.pop("x")
        row["max_abs_diff_vs_first"] = float((x - ref).abs().max())
    command = " ".join(["python", "benchmarks/datadam_chunk_memory.py", *sys.argv[1:]])
    out = Path(args.out)
    result = {"benchmark": "datadam_chunk_memory", "machine": machine_info(), "command": command,
              "data": f"CIFAR-10 JPEG mirror ({args.data})", "seed": args.seed,
              "budget": {"ipc": args.ipc, "iterations": args.iterations, "preset": "paper", "batched": False},
              "torch_threads": torch.get_num_threads() if not args.threads else args.threads, "rows": rows}
    write_json(out.with_suffix(".json"), result)
    lines = ["# DataDAM peak memory: all classes in one backward vs class chunks\n",
             f"Command: `{command}`. DataDAM preset `paper` (instance-norm ConvNet-3, 256 real images per class), "
             f"`batched: false`, IPC {args.ipc}, {args.iterations} iterations, seed {args.seed}, CIFAR-10 (10 classes). "
             "Each row: a fresh process; the high-water mark is reset after decoding the training split "
             "(/proc/self/clear_refs), so peak = VmHWM of the distillation, which includes the resident split (the "
             "'after loading' column).\n",
             "| class_chunk | peak MiB | resident after loading the data MiB | distillation's own peak MiB | "
             "s/iteration | "
             "max abs diff of the set vs the first row |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['class_chunk']} | {r['peak_mib']:.0f} | {r['resident_after_loading_data_mib']:.0f} | "
                     f"{r['peak_mib'] - r['resident_after_loading_data_mib']:.0f} | {r['seconds_per_iteration']:.1f} | "
                     f"{r['max_abs_diff_vs_first']:.2e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
