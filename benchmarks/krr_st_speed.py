"""KRR-ST distillation cost on the CPU: seconds per outer iteration (the library's own ``synth.step``), its split
(teacher forward on the real batch, KRR loss forward, backward, one online SGD step of a pool model, each timed by
calling the public pieces on their own) and peak memory, for N synthetic
images and a real batch of B images, with the method's default networks (methods.md 1.1/1.2: ConvNet-3 128-256-512
BN as the pool network, Barlow Twins ResNet-18 with the 3x3 stem, padding 2, D = 512, as the teacher).

Each setting runs in a fresh subprocess with 1 torch thread. Peak memory is the growth of ``ru_maxrss`` over the
process's state after loading the CIFAR-10 JPEG mirror (the 50k encoded training images). Wall time and process CPU
time (user + system, ``getrusage``) are both recorded: on a shared machine the wall time is inflated by other jobs.
The teacher and the pool networks are randomly initialised (the cost of a step does not depend on their weights),
and the pool is not pre-trained (``init_pool([0] * M)``); the time of one online SGD step is
reported, from which the pool initialisation cost follows (M * (T + 1) / 2 such steps on average).

    python benchmarks/krr_st_speed.py --settings 1000:1024 500:256 --iters 3 --warmup 1 \
        --out benchmarks/results/krr_st_speed
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

PARTS = ("teacher_forward", "krr_loss_forward", "backward", "pool_online_step")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(args: argparse.Namespace, num_images: int, batch_real: int) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    from ddistill.data import load_real
    from ddistill.models import create_model
    from synthesizers import SYNTHESIZERS

    real, _ = load_real("cifar10_jpeg", root=args.data)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    class TimedTeacher(nn.Module):
        """The teacher, timing its own forward passes (KRR-ST takes any module as its teacher)."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net, self.seconds = net, 0.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = time.perf_counter()
            out = self.net(x)
            self.seconds += time.perf_counter() - t
            return out

    teacher = TimedTeacher(create_model(args.teacher_model, in_channels=3, num_classes=0, image_size=(32, 32),
                                        **json.loads(args.teacher_kwargs)))
    cls = SYNTHESIZERS.get("krr_st")
    cfg = cls.config_from_preset("cifar100", num_images=num_images, batch_real=batch_real, model=args.model,
                                 iterations=args.warmup + args.iters, checkpoint_every=0)
    synth = cls(cfg, seed=0, teacher=teacher)
    synth.setup(real)
    # An untrained pool: the cost of a step does not depend on the pool's weights (see the module docstring).
    synth.init_pool([0] * cfg.num_models)

    split: dict[str, list[float]] = {k: [] for k in (*PARTS, "total")}
    cpu_total: list[float] = []
    losses = []
    for step in range(args.warmup + args.iters):
        c0 = _cpu()
        t0 = time.perf_counter()
        logs = synth.step(real)  # exactly what fit() runs
        total = time.perf_counter() - t0
        c1 = _cpu()
        losses.append(logs["loss"])
        # The split: the public pieces of one more step, on their own (no AdamW step, so the set is unchanged).
        teacher.seconds = 0.0
        t0 = time.perf_counter()
        loss = synth.loss(real, synth.completed_steps)
        t1 = time.perf_counter()
        loss.backward()
        synth.params["x"].grad = synth.params["y"].grad = None
        t2 = time.perf_counter()
        synth.pool.train_step(0, synth.params["x"].detach(), synth.params["y"].detach())
        t3 = time.perf_counter()
        if step >= args.warmup:
            split["teacher_forward"].append(teacher.seconds)
            split["krr_loss_forward"].append(t1 - t0 - teacher.seconds)
            split["backward"].append(t2 - t1)
            split["pool_online_step"].append(t3 - t2)
            split["total"].append(total)
            cpu_total.append(c1 - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "num_images": num_images, "batch_real": batch_real, "model": cfg.model, "teacher": args.teacher_model,
        "teacher_kwargs": json.loads(args.teacher_kwargs), "num_models": cfg.num_models,
        "online_iteration": cfg.online_iteration, "solve_dtype": cfg.solve_dtype,
        "seconds_per_iteration_median": statistics.median(split["total"]),
        "seconds_per_iteration_all": split["total"],
        "cpu_seconds_per_iteration_median": statistics.median(cpu_total),
        "cpu_seconds_per_iteration_all": cpu_total,
        "split_median_seconds": {k: statistics.median(v) for k, v in split.items() if k != "total"},
        "pool_init_estimate_seconds": cfg.num_models * (cfg.online_iteration + 1) / 2
        * statistics.median(split["pool_online_step"]),
        "peak_rss_above_data_mib": (peak - base_rss) / 1024, "peak_rss_mib": peak / 1024,
        "data_rss_mib": base_rss / 1024, "losses": losses,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--settings", nargs="*", default=["1000:1024"], help="N:B pairs (synthetic images:real batch)")
    p.add_argument("--model", default="convnet_128_256_512_bn")
    p.add_argument("--teacher-model", default="resnet18_ssl")
    p.add_argument("--teacher-kwargs", default='{"stem_padding": 2}')
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default="benchmarks/results/krr_st_speed")
    p.add_argument("--from-json", default=None, help="re-render the .md (and derived JSON fields) from a results JSON")
    args = p.parse_args()
    if args.from_json:
        finish(json.loads(Path(args.from_json).read_text()), Path(args.from_json).with_suffix(""))
        return
    if args.one:
        n, b = (int(v) for v in args.one.split(":"))
        print(json.dumps(run_one(args, n, b)))
        return
    from ddistill.io import machine_info

    command = ("python benchmarks/krr_st_speed.py --settings " + " ".join(args.settings)
               + f" --iters {args.iters} --warmup {args.warmup} --threads {args.threads}"
               + (f" --model {args.model}" if args.model != "convnet_128_256_512_bn" else ""))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rows = []
    for setting in args.settings:
        cmd = [sys.executable, __file__, "--one", setting, "--data", args.data, "--model", args.model,
               "--teacher-model", args.teacher_model, "--teacher-kwargs", args.teacher_kwargs,
               "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    machine = machine_info()
    machine["torch_threads"] = args.threads
    result = {
        "benchmark": "krr_st_speed", "command": command, "machine": machine,
        "shared_cpu": True, "loadavg_before": load_before, "loadavg_after": load_after,
        "data": f"CIFAR-10 JPEG mirror ({args.data})", "iterations_timed": args.iters, "warmup": args.warmup,
        "threads": args.threads,
        "memory_method": "ru_maxrss growth over the process after loading the data, fresh subprocess per setting",
        "pool": "untrained (initialize with 0 steps); random-init teacher -- the step cost does not depend on weights",
        "rows": rows,
    }
    finish(result, Path(args.out))


def finish(result: dict, out: Path) -> None:
    """Adds the CPU-time view of each row (the wall-clock split scaled by the row's CPU/wall ratio, i.e. what the
    parts cost on an unshared core) and writes the JSON and the .md table."""
    from ddistill.io import write_json

    rows = result["rows"]
    for r in rows:
        share = r["cpu_seconds_per_iteration_median"] / r["seconds_per_iteration_median"]
        r["cpu_share"] = share
        r["split_median_cpu_equivalent_seconds"] = {k: v * share for k, v in r["split_median_seconds"].items()}
        r["pool_init_estimate_cpu_seconds"] = r["pool_init_estimate_seconds"] * share
    write_json(out.with_suffix(".json"), result)
    lb, la = result["loadavg_before"], result["loadavg_after"]
    lines = [
        "# KRR-ST seconds per outer iteration on CPU (CIFAR-10 32x32, default networks)\n",
        (f"Pool network `{rows[0]['model']}`, teacher `{rows[0]['teacher']}` {rows[0]['teacher_kwargs']} (D = 512), "
         f"float32 solve, {result['machine']['torch_threads']} torch thread(s). Median of {result['iterations_timed']} iterations after "
         f"{result['warmup']} warm-up, each setting in a fresh subprocess. The {result['machine']['cores']}-core "
         f"machine was shared with other jobs (load average {' / '.join(lb)} before, {' / '.join(la)} after), so wall "
         f"time is inflated; the process CPU time (user + system) is the better measure of cost. The split columns "
         f"are wall-clock medians scaled by the row's CPU/wall ratio (CPU-equivalent seconds). Peak memory = growth "
         f"of ru_maxrss over the process after loading the 50k training images "
         f"({rows[0]['data_rss_mib']:.0f} MiB). Command: `{result['command']}`.\n"),
        ("| N | real batch | CPU s/iteration | wall s/iteration (shared) | teacher fwd | KRR loss fwd | backward | "
         "online pool step | est. pool init (CPU h) | peak RSS above data (MiB) |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["split_median_cpu_equivalent_seconds"]
        lines.append(f"| {r['num_images']} | {r['batch_real']} | {r['cpu_seconds_per_iteration_median']:.1f} | "
                     f"{r['seconds_per_iteration_median']:.1f} | {s['teacher_forward']:.1f} | "
                     f"{s['krr_loss_forward']:.1f} | {s['backward']:.1f} | {s['pool_online_step']:.1f} | "
                     f"{r['pool_init_estimate_cpu_seconds'] / 3600:.1f} | {r['peak_rss_above_data_mib']:.0f} |")
    lines.append(f"\nPool init estimate = M x (T + 1) / 2 x (online step) with M = {rows[0]['num_models']}, "
                 f"T = {rows[0]['online_iteration']} (the pool is spread over t_i ~ U{{1..T}} steps before the first "
                 f"outer step). At the paper's 160k outer steps the first row is "
                 f"{rows[0]['cpu_seconds_per_iteration_median'] * 160000 / 86400:.0f} CPU-days on one thread.")
    result["paper_run_cpu_days_row0"] = rows[0]["cpu_seconds_per_iteration_median"] * 160000 / 86400
    write_json(out.with_suffix(".json"), result)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
