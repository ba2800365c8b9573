"""The GPU path, timed next to the CPU (issue #16, item 5); driven by ``scripts/gpu_check.sh``.

Parts (each writes its JSON under ``--out``; every part records what ran and why anything was skipped):

- ``timings`` (no ``torch.compile``): per device in ``--devices`` (``cuda`` is skipped with the reason where CUDA is absent), the median
  seconds of a DataDAM iteration (``synth.step``, IPC 10, the paper preset, 256 real images per class), of a
  trajectory-matching iteration (``synth.step``, the ``cifar10_ipc10`` preset with ``--mtt-syn-steps`` student
  steps on batches of ``--mtt-batch-syn`` images, one synthetic expert trajectory) and
  of one evaluator epoch (ConvNet-3, 100 images, ``--eval-models`` networks, sequential and batched). Data: random
  CIFAR-10-shaped uint8 images (time does not depend on pixel values), so no dataset is needed.
- ``full``: where CUDA is present and ``--data`` points to the CIFAR-10 mirror, a DataDAM IPC 10 run with the
  paper's 8000 iterations, stopped after ``--full-seconds`` of wall time (the iterations reached are recorded), then
  the ``datadam_official`` evaluation with ``--full-eval-models`` networks and its controls.

    python benchmarks/gpu_check.py --out runs/gpu_check --devices cpu cuda --data ../shared/data/cifar10-jpg.tar.gz
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mtt_memory's synthetic data and expert


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--parts", nargs="+", default=["timings", "full"], choices=["timings", "full"])
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    p.add_argument("--iters", type=int, default=5, help="timed iterations per method and device")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--per-class", type=int, default=300, help="random real images per class for the timings")
    p.add_argument("--mtt-syn-steps", type=int, default=10, help="unrolled student steps (the preset's 30 cost "
                   "minutes per iteration on a small CPU)")
    p.add_argument("--mtt-batch-syn", type=int, default=20)
    p.add_argument("--eval-epochs", type=int, default=20)
    p.add_argument("--eval-models", type=int, default=5)
    p.add_argument("--data", default=None, help="CIFAR-10 mirror for the full run (none: the full run is skipped)")
    p.add_argument("--full-iterations", type=int, default=8000)
    p.add_argument("--full-seconds", type=float, default=240.0, help="wall-time cap of the full run's distillation")
    p.add_argument("--full-eval-models", type=int, default=3)
    p.add_argument("--full-eval-epochs", type=int, default=1801)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _perf(args: argparse.Namespace):
    """No torch.compile in the timings: its one-off compile (minutes on a small CPU) would swamp a few iterations,
    and the batched evaluator does not compile; channels-last / bf16 stay on auto per device."""
    from ddistill.utils.perf import PerfConfig

    return PerfConfig(compile=False, threads=args.threads)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_step(synth, real, device: str, warmup: int, iters: int) -> dict:
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        synth.step(real)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"seconds_per_iteration_median": statistics.median(times), "seconds": times}


def time_datadam(real, device: str, args: argparse.Namespace) -> dict:
    from synthesizers import SYNTHESIZERS

    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset("paper", ipc=10, batch_real=256, iterations=args.warmup + args.iters,
                                 perf=_perf(args))
    synth = cls(cfg, seed=args.seed, device=device)
    synth.setup(real)
    return {"method": "datadam", "preset": "paper", "ipc": 10, "batch_real": 256,
            **_median_step(synth, real, device, args.warmup, args.iters)}


def time_mtt(real, device: str, args: argparse.Namespace) -> dict:
    from mtt_memory import _fake_experts
    from synthesizers import SYNTHESIZERS

    with tempfile.TemporaryDirectory() as tmp:
        path = _fake_experts(real, Path(tmp), 4, args.seed)
        cls = SYNTHESIZERS.get("mtt")
        cfg = cls.config_from_preset("cifar10_ipc10", ipc=10, experts=str(path), max_start_epoch=3,
                                     iterations=args.warmup + args.iters, checkpoint_every=0,
                                     syn_steps=args.mtt_syn_steps, batch_syn=args.mtt_batch_syn)
        synth = cls(cfg, seed=args.seed, device=device)
        synth.setup(real)
        return {"method": "mtt", "preset": "cifar10_ipc10", "ipc": 10, "syn_steps": cfg.syn_steps,
                "batch_syn": cfg.batch_syn,
                **_median_step(synth, real, device, args.warmup, args.iters)}


def time_evaluator(real, device: str, args: argparse.Namespace) -> dict:
    import dataclasses

    from evaluators.classifier import ClassifierEvaluator
    from synthesizers import SYNTHESIZERS

    cls = SYNTHESIZERS.get("random")
    synset = cls(cls.Config(ipc=10), seed=0).fit(real)
    import torch

    from ddistill.data.info import ImageData

    # Timing only (the accuracy is of random pixels): a uint8 test split of random CIFAR-shaped images.
    g = torch.Generator().manual_seed(args.seed + 1)
    test = ImageData(torch.randint(0, 256, (1000, 3, 32, 32), generator=g, dtype=torch.uint8),
                     torch.arange(10).repeat_interleave(100), real.info)
    base = ClassifierEvaluator.config_from_preset("common", model="convnet", model_kwargs={}, controls=[],
                                                  num_models=args.eval_models, progress=False, perf=_perf(args),
                                                  train={"epochs": args.eval_epochs})
    out = {"method": "evaluator", "preset": "common", "ipc": 10, "epochs": args.eval_epochs,
           "models": args.eval_models}
    for batched in (False, True):
        ev = ClassifierEvaluator(dataclasses.replace(base, batched=batched), seed=args.seed, device=device)
        _sync(device)
        t0 = time.perf_counter()
        res = ev.evaluate(synset, test)
        _sync(device)
        key = "batched" if batched else "sequential"
        out[key] = {"wall_seconds": time.perf_counter() - t0, "seconds_per_epoch_per_model":
                    sum(res.details["train_seconds"]) / (args.eval_epochs * args.eval_models),
                    "accuracy_mean": res.mean, "mode": res.details.get("batched", "sequential")}
    return out


def timings(args: argparse.Namespace, devices: list[str]) -> dict:
    from mtt_memory import _fake_cifar

    real = _fake_cifar(args.per_class, args.seed)
    rows = []
    for device in devices:
        for fn in (time_datadam, time_mtt, time_evaluator):
            t0 = time.perf_counter()
            try:
                row = fn(real, device, args)
            except Exception as e:  # one failing part must not hide the others' numbers
                row = {"method": fn.__name__.removeprefix("time_"), "error": f"{type(e).__name__}: {e}"}
            row.update(device=device, part_wall_seconds=time.perf_counter() - t0)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "seconds"}), flush=True)
    return {"data": f"random uint8 CIFAR-10-shaped images, {args.per_class} per class", "rows": rows}


def full_run(args: argparse.Namespace, device: str) -> dict:
    from ddistill.data import DataSpec, EvalData, load_data
    from evaluators.classifier import ClassifierEvaluator
    from synthesizers import SYNTHESIZERS
    from synthesizers.callbacks import StopAfter

    real, test = load_data(DataSpec(name="cifar10_jpeg", root=args.data))
    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset("paper", ipc=10, iterations=args.full_iterations)
    stop = StopAfter(wall_seconds=args.full_seconds)
    t0 = time.perf_counter()
    synset = cls(cfg, seed=args.seed, device=device).fit(real, callbacks=[stop])
    distill_seconds = time.perf_counter() - t0
    ev_cfg = ClassifierEvaluator.config_from_preset("datadam_official", num_models=args.full_eval_models,
                                                    progress=False, train={"epochs": args.full_eval_epochs})
    t0 = time.perf_counter()
    res = ClassifierEvaluator(ev_cfg, seed=args.seed, device=device).evaluate(synset, EvalData(train=real, test=test))
    return {"method": "datadam", "preset": "paper", "ipc": 10, "iterations_planned": args.full_iterations,
            "iterations_done": stop.taken, "distill_seconds": distill_seconds,
            "evaluation": {**res.to_dict(), "seconds": time.perf_counter() - t0,
                           "preset": "datadam_official", "models": args.full_eval_models,
                           "epochs": args.full_eval_epochs}}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    from ddistill.io import machine_info, write_json

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    devices = [d for d in args.devices if cuda or not d.startswith("cuda")]
    skipped = {d: "CUDA is not available (torch.cuda.is_available() is False)" for d in args.devices
               if d not in devices}
    info = machine_info()
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
    # scripts/gpu_check.sh runs the parts as separate calls into one folder: the summary accumulates.
    old = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    summary = {"machine": info, "devices_run": devices, "devices_skipped": skipped, "parts": old.get("parts", {})}
    if "timings" in args.parts:
        result = timings(args, devices)
        write_json(out / "timings.json", {**result, "machine": info, "skipped": skipped})
        summary["parts"]["timings"] = "timings.json"
    if "full" in args.parts:
        if not cuda:
            summary["parts"]["full"] = "skipped: CUDA is not available"
        elif not args.data:
            summary["parts"]["full"] = "skipped: no --data (the CIFAR-10 mirror)"
        else:
            write_json(out / "full_datadam_ipc10.json", {**full_run(args, "cuda"), "machine": info})
            summary["parts"]["full"] = "full_datadam_ipc10.json"
    write_json(out / "summary.json", summary)
    print(json.dumps(summary["parts"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
