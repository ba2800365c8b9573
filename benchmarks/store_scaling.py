"""Real-data store scaling: peak resident memory and seconds per DataDAM iteration as the memory-mapped training store
(``dataset.store``, :mod:`ddistill.data.store`) grows, beside the in-RAM path at one size.

    python benchmarks/store_scaling.py --data ../shared/data/cifar10-jpg.tar.gz --sizes 50000 250000 1000000 \
        --ram-size 50000 --iterations 5 --ipc 10 --batch-real 256 --out benchmarks/results/store_scaling

Data. The CIFAR-10 JPEG mirror's training split, decoded once into a 64 px store (``build_store``: bilinear upsampling
from 32 px; the centre crop is a no-op on square images) of the first ``ceil(max size / 10)`` images of each class (at
most all 5,000). A store of N rows takes N / 10 rows per class, repeating the class's base images in order when N is
larger than the base (1,000,000 rows = the 50,000 images 20 times, about 12 GB on disk). Stores live under
``--stores`` (git-ignored ``runs/``) and are reused by later runs; ``--remove-stores`` deletes them at the end.

Method. Every (path, size) runs in a fresh subprocess, one after another: it opens the store, builds the training data
(``memmap``: :class:`MemmapRealData`, class batches read from disk; ``ram``: the whole store copied into RAM and
encoded as float32 by ``RealData.from_images``, what the in-RAM path holds after decoding), then runs DataDAM
(``--preset``, ``--ipc``, ``--batch-real`` real images per class, ``--iterations`` iterations, seed ``--seed``, plain
fp32 eager, CPU). Peak memory is the subprocess's own VmHWM (``/proc/self/status``: the peak resident set of its
address space, Python and torch included; ``getrusage(RUSAGE_SELF).ru_maxrss`` is recorded too, but Linux carries
the launching process's peak into it across exec). Store pages left mapped would count, so the store unmaps them
after every read. The resident set at start, after loading and, at the end, its anonymous and file-backed parts
(``/proc/self/status``) are recorded too. Seconds per iteration = the median of
iterations 2.. (the first also pays the set-up: network family, initial images). ``set_sha1`` hashes the final
synthetic images: equal for the two paths at the same size (same pixels, same seed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESOLUTION = 64


def _status_mib() -> dict[str, float]:
    """VmRSS / VmHWM / RssAnon / RssFile of this process in MiB (Linux)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def run_child(spec: dict) -> dict:
    """One measurement (in its own process): load the data by ``spec["mode"]``, run DataDAM, report time and memory."""
    import torch

    from ddistill.data import Encoding, MEAN_STD, MemmapRealData, RealData
    from ddistill.data.store import ImageStore
    from ddistill.utils.perf import PerfConfig
    from synthesizers import SYNTHESIZERS

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    rss_start = _status_mib().get("VmRSS", 0.0)
    t0 = time.perf_counter()
    store = ImageStore.open(spec["store"])
    info = store.info("cifar10_jpeg", *MEAN_STD["cifar10"])  # the CIFAR-10 constants, as the cifar10_jpeg loader
    encoding = Encoding(info.mean, info.std, (info.in_channels, *info.image_size), normalize=True)
    if spec["mode"] == "memmap":
        real = MemmapRealData.from_store(store, info, encoding)
    else:
        real = RealData.from_images(store.to_image_data(info), encoding)
    load_seconds = time.perf_counter() - t0
    rss_loaded = _status_mib().get("VmRSS", 0.0)
    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset(spec["preset"], ipc=spec["ipc"], batch_real=spec["batch_real"],
                                 iterations=spec["iterations"], perf=PerfConfig(False, False, False))
    stamps = [time.perf_counter()]
    synset = cls(cfg, seed=spec["seed"]).fit(real, callbacks=[lambda s, step, logs: stamps.append(time.perf_counter())])
    steps = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    timed = steps[1:] or steps
    status = _status_mib()
    return {"mode": spec["mode"], "rows": len(real), "store": spec["store"], "store_gib": store.nbytes / 2**30,
            "load_seconds": load_seconds, "seconds_per_iteration_median": statistics.median(timed),
            "iteration_seconds": steps, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vm_hwm_mib": status.get("VmHWM"), "rss_at_start_mib": rss_start, "rss_after_load_mib": rss_loaded,
            "rss_anon_end_mib": status.get("RssAnon"), "rss_file_end_mib": status.get("RssFile"),
            "set_sha1": hashlib.sha1(synset.x.numpy().tobytes()).hexdigest(),
            "torch_threads": torch.get_num_threads()}


def base_store(args: argparse.Namespace, per_class: int) -> Path:
    """The 64 px store of the first ``per_class`` training images of each class (built once, reused)."""
    from ddistill.data.folder import _resolve_folder_root
    from ddistill.data.store import ImageStore, build_store

    out = Path(args.stores) / f"base_{per_class}pc_{RESOLUTION}px"
    if (out / "meta.json").exists():
        ImageStore.open(out)  # a damaged one is an error here, not a wrong measurement later
        return out
    base = _resolve_folder_root(args.data, "cifar10_jpeg")
    print(f"building {out} from {base / 'train'} ...", flush=True)
    return build_store(base / "train", out, RESOLUTION, max_per_class=per_class, workers=args.workers)


def sized_store(args: argparse.Namespace, base_path: Path, rows: int) -> Path:
    """A store of ``rows`` rows: ``rows / K`` per class (the remainder to the first classes), each class's base images
    repeated in order. The base itself when it already has that size."""
    import numpy as np

    from ddistill.data.store import ImageStore, StoreWriter

    base = ImageStore.open(base_path)
    if rows == len(base):
        return base_path
    out = Path(args.stores) / f"rows_{rows}_{RESOLUTION}px"
    if (out / "meta.json").exists() and len(ImageStore.open(out)) == rows:
        return out
    k = base.num_classes
    counts = [rows // k + (1 if c < rows % k else 0) for c in range(k)]
    print(f"writing {out} ({rows} rows, {rows * base.nbytes / len(base) / 2**30:.2f} GiB) ...", flush=True)
    with StoreWriter(out, class_names=base.meta.class_names, counts=counts, channels=base.meta.shape[1],
                     resolution=base.meta.resolution, resize=base.meta.resize, overwrite=True,
                     source=f"{base_path} repeated to {rows} rows") as writer:
        for c, target in enumerate(counts):
            start, n = base.meta.offsets[c], base.meta.counts[c]
            for i in range(0, target, 8192):
                writer.append(base.read(start + np.arange(i, min(target, i + 8192)) % n))
        return writer.commit()


def write_outputs(args: argparse.Namespace, rows: list[dict], out: Path) -> None:
    from ddistill.io import machine_info, write_json

    command = " ".join(["python benchmarks/store_scaling.py", *sys.argv[1:]])
    result = {"benchmark": "store_scaling", "command": command, "machine": machine_info(),
              "data": {"source": args.data, "what": "CIFAR-10 JPEG mirror, train split, 64 px store (bilinear "
                       "upsampling, centre crop), N/10 rows per class repeating the class's images in order",
                       "resolution": RESOLUTION},
              "budget": {"synthesizer": "datadam", "preset": args.preset, "ipc": args.ipc,
                         "batch_real_per_class": args.batch_real, "iterations": args.iterations,
                         "perf": "fp32 eager (channels_last, bf16, compile off)", "device": "cpu",
                         "threads": args.threads or "torch default"},
              "seeds": {"distillation": args.seed}, "rows": rows}
    write_json(out.with_suffix(".json"), result)
    write_report(result, out)


def write_report(result: dict, out: Path) -> None:
    """The markdown table (and the facts read off it) of a results JSON."""
    b, rows = result["budget"], result["rows"]
    m = result["machine"]
    lines = [f"# Real-data store scaling: DataDAM on CPU (CIFAR-10 JPEG at {RESOLUTION} px, IPC {b['ipc']}, "
             f"{b['batch_real_per_class']} real/class, preset {b['preset']}, {b['iterations']} iterations, seed "
             f"{result['seeds']['distillation']})\n",
             f"Command: `{result['command']}`. Each row is a fresh subprocess. Peak RSS = the subprocess's VmHWM (the "
             f"peak resident set of its own address space: Python + torch + the data it holds + DataDAM's "
             f"activations; the store unmaps its pages after every read). `ru_maxrss` is shown too but is not this "
             f"process's peak: Linux carries the launching process's peak across exec, and the driver had just "
             f"written the 1M-row store through a memory map. s/iteration = median of iterations 2..{b['iterations']}. "
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}.\n",
             "| path | rows | store (GiB) | load (s) | s/iteration | peak RSS (VmHWM, MiB) | ru_maxrss (MiB) | "
             "RSS at start (MiB) | RSS after load (MiB) | RSS file-backed at end (MiB) | set sha1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['rows']} | {r['store_gib']:.2f} | {r['load_seconds']:.1f} | "
                     f"{r['seconds_per_iteration_median']:.2f} | {r['vm_hwm_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['rss_at_start_mib']:.0f} | {r['rss_after_load_mib']:.0f} | "
                     f"{r['rss_file_end_mib'] or 0:.0f} | {r['set_sha1'][:12]} |")
    mm = [r for r in rows if r["mode"] == "memmap"]
    ram = [r for r in rows if r["mode"] == "ram"]
    if len(mm) > 1:
        lo, hi = mm[0], mm[-1]
        lines += ["", f"- Memory-mapped path: the store grows {hi['rows'] / lo['rows']:.0f}x ({lo['store_gib']:.2f} to "
                      f"{hi['store_gib']:.2f} GiB) and the peak resident set goes from {lo['vm_hwm_mib']:.0f} to "
                      f"{hi['vm_hwm_mib']:.0f} MiB ({100 * (hi['vm_hwm_mib'] / lo['vm_hwm_mib'] - 1):+.1f} %); "
                      f"s/iteration {lo['seconds_per_iteration_median']:.2f} to "
                      f"{hi['seconds_per_iteration_median']:.2f}."]
    for r in ram:
        same = [x for x in mm if x["rows"] == r["rows"]]
        if same:
            x = same[0]
            lines.append(f"- In-RAM path at {r['rows']} rows: peak {r['vm_hwm_mib']:.0f} MiB against "
                         f"{x['vm_hwm_mib']:.0f} MiB memory-mapped (the encoded float32 copy of the split, "
                         f"{r['rss_after_load_mib'] - r['rss_at_start_mib']:.0f} MiB after loading); the final sets are "
                         f"{'bit-identical' if r['set_sha1'] == x['set_sha1'] else 'DIFFERENT'} (sha1).")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz", help="the CIFAR-10 JPEG mirror (.tar.gz)")
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000, 250_000, 1_000_000],
                   help="store rows to measure with the memory-mapped path")
    p.add_argument("--ram-size", type=int, default=50_000, help="rows for the in-RAM comparison (0 = none)")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256, help="real images per class per iteration")
    p.add_argument("--preset", default="paper", help="DataDAM preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads in each measurement (0 = torch default)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes for the base store")
    p.add_argument("--stores", default="runs/store_scaling", help="where the stores are written (and reused)")
    p.add_argument("--remove-stores", action="store_true", help="delete the stores written here at the end")
    p.add_argument("--out", default="benchmarks/results/store_scaling", help="results path without suffix")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true", help="re-write the .md from the --out JSON")
    args = p.parse_args()
    if args.report_only:
        write_report(json.loads(Path(args.out).with_suffix(".json").read_text()), Path(args.out))
        return
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return
    sizes = sorted(set(args.sizes))
    if min(sizes) < 10 or (args.ram_size and args.ram_size < 10):
        p.error("sizes must be at least 10 rows (one per class)")
    largest = max(sizes + ([args.ram_size] if args.ram_size else []))
    base = base_store(args, min(5000, math.ceil(largest / 10)))
    runs = [("memmap", n) for n in sizes] + ([("ram", args.ram_size)] if args.ram_size else [])
    made: set[Path] = set()
    rows = []
    for mode, n in runs:
        path = sized_store(args, base, n)
        made.add(path)
        spec = {"mode": mode, "store": str(path), "preset": args.preset, "ipc": args.ipc,
                "batch_real": args.batch_real, "iterations": args.iterations, "seed": args.seed,
                "threads": args.threads}
        print(f"measuring {mode} at {n} rows ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the {mode} measurement at {n} rows failed:\n{proc.stderr[-4000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "iteration_seconds"}), flush=True)
    write_outputs(args, rows, Path(args.out))
    if args.remove_stores:
        for path in made | {base}:
            shutil.rmtree(path, ignore_errors=True)
            print(f"removed {path}")


if __name__ == "__main__":
    main()
