"""MTT distillation memory and time per iteration on the CPU: plain unroll vs ``memory_saving`` (per-step
recomputation in the backward pass), for several ``syn_steps`` at CIFAR-10 shape (IPC 10, ConvNet-3, DSA,
batch_syn = all 100 images by default), measured side by side.

    python benchmarks/mtt_memory.py --syn-steps 10 20 40 --batch-syn 20 --rounds 2 --memory-rounds 1 --iters 1 \
        --warmup 1 --out benchmarks/results/mtt_memory
    # then the notes: --rewrite benchmarks/results/mtt_memory.json --note "..." (rows unchanged)

Method. Every (syn_steps, mode, round, measure) runs in a fresh subprocess, and the subprocesses are interleaved
(round r runs every syn_steps with both modes, the mode order alternating between rounds) so that both modes see
the same machine state; memory (``--memory-rounds``) and time (``--rounds``) are measured in separate
subprocesses because they need different allocator settings (below). In the subprocess the data, the expert file and the synthesizer are set up, ``warmup``
full distillation iterations run (``synth.step``: loss, backward, optimiser steps, exactly what ``fit`` runs),
which also pays one-time costs (lazy imports of torch.func, kernel and thread-pool initialisation); then the
resident set size is read (``/proc/self/status`` VmRSS), the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs`` = 5) and ``iters`` timed iterations run. Peak memory = VmHWM after them minus the
RSS before them: what one iteration adds at its peak. Memory subprocesses run with a fixed glibc mmap threshold
(``MALLOC_MMAP_THRESHOLD_``) so that every large tensor is its own mapping, returned when freed, and RSS follows
the live tensors; time subprocesses use the default allocator. The growth during the warm-up iteration over the set-up state is recorded too
(``first_iteration_growth_mib``). Time = median per-iteration CPU time (process user + system) and wall-clock
time over the timed iterations of all rounds; with one thread CPU time is the robust measure on a shared
machine. Everything runs with ``--threads`` torch threads (1 by default).

Data and experts. Memory and time do not depend on pixel or parameter values, so no real data or real experts
are used: a random uint8 "CIFAR-10" of 10 classes x ``--per-class`` 3x32x32 images (mean/std encoding, dataset
name ``cifar10`` for the DSA strategy) and one synthetic expert trajectory of ConvNet-3 (width 128, depth 3,
instance norm) with ``--epochs`` snapshots: its initialisation plus small random steps. The MTT config is the
``cifar10_ipc10`` preset with ``syn_steps`` overridden.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("plain", "memory_saving")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fake_cifar(per_class: int, seed: int):
    import torch

    from ddistill.data import make_encoding
    from ddistill.data.info import DatasetInfo, ImageData
    from ddistill.data.real import RealData

    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo("cifar10", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                       tuple(f"class{c}" for c in range(10)))
    x = torch.randint(0, 256, (10 * per_class, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(10).repeat_interleave(per_class)
    data = ImageData(x, y, info)
    return RealData.from_images(data, make_encoding(data))


def _fake_experts(real, folder: Path, epochs: int, seed: int) -> Path:
    import torch

    from synthesizers.mtt import ParamLayout, expert_config_from_preset, expert_family, new_expert_file

    cfg = expert_config_from_preset("mtt", model="convnet", train={"epochs": epochs})
    model = expert_family(real, cfg, seed).build(0, "cpu")
    layout = ParamLayout.from_module(model)
    g = torch.Generator().manual_seed(seed)
    snaps = [layout.flatten(model)]
    for _ in range(epochs):
        snaps.append(snaps[-1] + 1e-3 * torch.randn(layout.numel, generator=g))
    f = new_expert_file(real, cfg, seed)
    f.add(0, snaps)
    path = folder / "experts_00000-00000.pt"
    f.save(path)
    return path


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_one(args: argparse.Namespace, syn_steps: int, mode: str) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from synthesizers import SYNTHESIZERS

    real = _fake_cifar(args.per_class, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = _fake_experts(real, Path(tmp), args.epochs, args.seed)
        cls = SYNTHESIZERS.get("mtt")
        cfg = cls.config_from_preset("cifar10_ipc10", ipc=args.ipc, experts=str(path), syn_steps=syn_steps,
                                     max_start_epoch=args.epochs - 1, iterations=args.warmup + args.iters,
                                     checkpoint_every=0, memory_saving=(mode == "memory_saving"),
                                     batch_syn=args.batch_syn)
        synth = cls(cfg, seed=args.seed)
        synth.setup(real)

        def iteration(step: int) -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            synth.step(real)
            return time.perf_counter() - t0, time.process_time() - c0

        gc.collect()
        setup_rss = _status_mib("VmRSS")
        _reset_peak()
        for step in range(args.warmup):
            iteration(step)
        warmup_peak = _status_mib("VmHWM")
        gc.collect()
        steady_rss = _status_mib("VmRSS")
        _reset_peak()
        times, cpu = [], []
        for step in range(args.warmup, args.warmup + args.iters):
            t, c = iteration(step)
            times.append(t)
            cpu.append(c)
        peak = _status_mib("VmHWM")
    return {"syn_steps": syn_steps, "mode": mode, "seconds_per_iteration_median": statistics.median(times),
            "seconds_per_iteration": times, "cpu_seconds_per_iteration": cpu,
            "setup_rss_mib": setup_rss, "warmup_peak_mib": warmup_peak, "steady_rss_mib": steady_rss,
            "peak_mib": peak, "peak_growth_mib": peak - steady_rss,
            "first_iteration_growth_mib": warmup_peak - setup_rss,
            "batch_syn": synth.params["x"].shape[0] if cfg.batch_syn is None else cfg.batch_syn,
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--syn-steps", type=int, nargs="*", default=[10, 20, 40])
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-syn", type=int, default=None, help="synthetic images per student step (None = all)")
    p.add_argument("--per-class", type=int, default=20, help="fake real images per class (init only)")
    p.add_argument("--epochs", type=int, default=4, help="snapshots - 1 of the synthetic expert")
    p.add_argument("--rounds", type=int, default=2, help="rounds of time measurements")
    p.add_argument("--memory-rounds", type=int, default=1, help="rounds of memory measurements")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mmap-threshold", type=int, default=65536, help="MALLOC_MMAP_THRESHOLD_ of the subprocesses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", action="append", default=[], help="remark written into the JSON and the table")
    p.add_argument("--rewrite", default=None, help="re-write the JSON/table from a results JSON (adds --note)")
    p.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default="benchmarks/results/mtt_memory")
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args, int(args.one[0]), args.one[1])))
        return
    from ddistill.io import machine_info, write_json

    rows = []
    common = ["--ipc", str(args.ipc), "--per-class", str(args.per_class), "--epochs", str(args.epochs),
              "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads),
              "--seed", str(args.seed), *(["--batch-syn", str(args.batch_syn)] if args.batch_syn else [])]
    # Memory runs: fixed mmap threshold, so every large tensor is its own mapping, returned to the OS when freed,
    # and RSS follows the live tensors instead of glibc's retained heap. Time runs: the default allocator (the
    # fixed threshold adds page faults that a normal run does not have).
    envs = {"memory": {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)}, "time": dict(os.environ)}
    if args.rewrite:  # same rows, new notes/tables
        saved = json.loads(Path(args.rewrite).read_text())
        rows = saved["rows"]
        b = saved["budget"]
        args.ipc, args.batch_syn, args.rounds, args.memory_rounds = b["ipc"], b["batch_syn"], b["rounds"], b["memory_rounds"]
        args.mmap_threshold, args.iters, args.warmup, args.threads = b["mmap_threshold"], b["iters"], b["warmup"], b["threads"]
        args.syn_steps = sorted({r["syn_steps"] for r in rows})
        args.batch_syn = None if args.batch_syn == "all" else args.batch_syn
    else:
        print(f"load: {os.getloadavg()}", flush=True)
        for r in range(max(args.rounds, args.memory_rounds)):
            for s in args.syn_steps:
                for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                    for measure in ("time", "memory"):
                        if (measure == "time" and r >= args.rounds) or (measure == "memory" and r >= args.memory_rounds):
                            continue
                        cmd = [sys.executable, __file__, "--one", str(s), mode, *common]
                        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=envs[measure])
                        if out.returncode != 0:
                            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
                        row = {**json.loads(out.stdout.strip().splitlines()[-1]), "measure": measure, "round": r,
                               "load_average_after": os.getloadavg()[0]}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    summary = []
    for s in args.syn_steps:
        got = {m: [r for r in rows if r["syn_steps"] == s and r["mode"] == m and r["measure"] == "memory"]
               for m in MODES}
        mem = {m: max(r["peak_growth_mib"] for r in got[m]) for m in MODES}
        first = {m: max(r["first_iteration_growth_mib"] for r in got[m]) for m in MODES}
        got = {m: [r for r in rows if r["syn_steps"] == s and r["mode"] == m and r["measure"] == "time"]
               for m in MODES}
        sec = {m: statistics.median([t for r in got[m] for t in r["seconds_per_iteration"]]) for m in MODES}
        cpu = {m: statistics.median([t for r in got[m] for t in r["cpu_seconds_per_iteration"]]) for m in MODES}
        summary.append({"syn_steps": s, "peak_growth_mib": mem, "first_iteration_growth_mib": first,
                        "seconds_per_iteration": sec,
                        "cpu_seconds_per_iteration": cpu,
                        "memory_ratio_plain_over_saving": mem["plain"] / mem["memory_saving"],
                        "time_ratio_saving_over_plain": sec["memory_saving"] / sec["plain"],
                        "cpu_time_ratio_saving_over_plain": cpu["memory_saving"] / cpu["plain"]})
    last = summary[-1]
    target = {"syn_steps": last["syn_steps"], "memory_ratio_min": 4.0, "time_ratio_max": 1.5,
              "memory_met": last["memory_ratio_plain_over_saving"] >= 4.0,
              "wall_time_met": last["time_ratio_saving_over_plain"] <= 1.5,
              "cpu_time_met": last["cpu_time_ratio_saving_over_plain"] <= 1.5}
    result = {"benchmark": "mtt_memory", "machine": saved["machine"] if args.rewrite else machine_info(),
              "data": f"random uint8 CIFAR-10-shaped images (10 x {args.per_class}), one synthetic ConvNet-3 expert "
                      f"trajectory ({args.epochs + 1} snapshots); no real data or experts needed for memory/time",
              "method": __doc__.split("\n\n")[2].replace("\n", " "),
              "budget": {"ipc": args.ipc, "batch_syn": args.batch_syn or "all", "rounds": args.rounds,
                         "memory_rounds": args.memory_rounds, "mmap_threshold": args.mmap_threshold,
                         "iters": args.iters, "warmup": args.warmup,
                         "threads": args.threads, "preset": "cifar10_ipc10 (syn_steps overridden)"},
              "seed": args.seed, "target": target, "summary": summary, "notes": args.note, "rows": rows}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    lines = [(f"# MTT memory and time per iteration on CPU (CIFAR-10 shape, IPC {args.ipc}, ConvNet-3, DSA, "
             f"batch_syn = {args.batch_syn or 'all'})\n"),
             (f"Command: `python benchmarks/mtt_memory.py --syn-steps {' '.join(map(str, args.syn_steps))} "
             f"{f'--batch-syn {args.batch_syn} ' if args.batch_syn else ''}--rounds "
             f"{args.rounds} --memory-rounds {args.memory_rounds} --iters {args.iters} --warmup {args.warmup} --threads {args.threads}`. "
             f"{args.rounds} time rounds and {args.memory_rounds} memory rounds x {args.iters} measured iterations "
             f"(after {args.warmup} warm-up) per setting, each in a fresh subprocess, modes interleaved. Peak memory: peak RSS (VmHWM, reset after warm-up) "
             "minus RSS before the timed iterations, max over rounds; the first column pair is the growth of the "
             "warm-up iteration over the set-up state (includes one-time lazy initialisation). Time: median "
             "s/iteration. Random data and a synthetic expert trajectory (values do not affect memory or time); "
             "method in the JSON.\n"),
             ("| syn_steps | plain peak (MiB) | memory_saving peak (MiB) | memory ratio | first it. plain / saving "
             "(MiB) | plain s/it (CPU) | "
             "memory_saving s/it (CPU) | CPU-time ratio | plain s/it (wall) | memory_saving s/it (wall) | "
             "wall-time ratio |"), "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        m, t, c = s["peak_growth_mib"], s["seconds_per_iteration"], s["cpu_seconds_per_iteration"]
        lines.append(f"| {s['syn_steps']} | {m['plain']:.0f} | {m['memory_saving']:.0f} | "
                     f"{s['memory_ratio_plain_over_saving']:.2f}x | {s['first_iteration_growth_mib']['plain']:.0f} / "
                     f"{s['first_iteration_growth_mib']['memory_saving']:.0f} | {c['plain']:.2f} | {c['memory_saving']:.2f} | "
                     f"{s['cpu_time_ratio_saving_over_plain']:.2f}x | {t['plain']:.2f} | {t['memory_saving']:.2f} | "
                     f"{s['time_ratio_saving_over_plain']:.2f}x |")
    yes = {True: "met", False: "not met"}
    lines.append(f"\nTarget at syn_steps {target['syn_steps']}: memory ratio >= {target['memory_ratio_min']}x: "
                 f"{yes[target['memory_met']]}; time ratio <= {target['time_ratio_max']}x: "
                 f"{yes[target['cpu_time_met']]} in CPU time, {yes[target['wall_time_met']]} in wall-clock time. "
                 "CPU time (process user + system) is the robust measure here: other jobs shared the 2 cores "
                 "(load average recorded per row in the JSON), which inflates and scatters wall-clock times.")
    lines += [f"\n{note}" for note in args.note]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
