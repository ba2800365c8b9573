"""Evaluator throughput on the CPU: ConvNet-3 train step (CIFAR-10 shape, batch 256), PyTorch defaults vs
each speed setting, measured side by side in one process (settings interleaved round by round, median
reported), plus the accuracy effect of the settings that change numerics.

    python benchmarks/eval_throughput.py --data ../shared/data/cifar10-jpg.tar.gz \
        --out benchmarks/results/eval_throughput

Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddistill.augment import DSA
from ddistill.data import load_real
from ddistill.models import create_model
from ddistill.io import machine_info, write_json
from ddistill.utils.perf import PerfConfig



@dataclass
class Setting:
    name: str
    perf: PerfConfig
    native_groupnorm: bool = False  # True: plain nn.GroupNorm(C, C) as in the DC code (PyTorch's kernel)
    threads: int | None = None


SETTINGS = [
    Setting("pytorch_default", PerfConfig(False, False, False), native_groupnorm=True),
    Setting("instnorm_kernel", PerfConfig(False, False, False)),
    Setting("channels_last", PerfConfig(True, False, False)),
    Setting("bf16_autocast", PerfConfig(False, True, False)),
    Setting("channels_last+bf16", PerfConfig(True, True, False)),
    Setting("compile+bf16", PerfConfig(False, True, True)),
    Setting("channels_last+bf16+compile", PerfConfig(True, True, True)),
    Setting("channels_last+bf16+compile,1thread", PerfConfig(True, True, True), threads=1),
]


def build(setting: Setting) -> nn.Module:
    norm = "instancenorm_native" if setting.native_groupnorm else "instancenorm"
    return setting.perf.prepare_model(create_model("convnet", in_channels=3, num_classes=10, image_size=32, norm=norm))


def make_step(setting: Setting, x: torch.Tensor, y: torch.Tensor, augment: nn.Module | None, gen: torch.Generator):
    net = build(setting)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    perf = setting.perf

    def step() -> None:
        xb = augment(x, generator=gen) if augment is not None else x
        xb = perf.prepare_input(xb)
        with perf.autocast("cpu"):
            out = net(xb)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def throughput(args, real) -> dict:
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(real), generator=gen)[: args.batch]
    x, y = real.x[idx].contiguous(), real.y[idx]
    dsa = DSA()
    results = {}
    for with_dsa in (False, True):
        steps = {}
        for s in SETTINGS:
            torch.set_num_threads(s.threads or args.threads)
            t0 = time.perf_counter()
            steps[s.name] = make_step(s, x, y, dsa if with_dsa else None, gen)
            for _ in range(args.warmup):
                steps[s.name]()
            print(f"  warm-up {s.name}: {time.perf_counter() - t0:.1f} s", flush=True)
        times = {s.name: [] for s in SETTINGS}
        for r in range(args.rounds):  # interleaved: every setting sees the same machine state
            for s in SETTINGS:
                torch.set_num_threads(s.threads or args.threads)
                t = time.perf_counter()
                for _ in range(args.steps):
                    steps[s.name]()
                times[s.name].append(args.batch * args.steps / (time.perf_counter() - t))
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
        torch.set_num_threads(args.threads)
        key = "train_step_with_dsa" if with_dsa else "train_step"
        base = statistics.median(times["pytorch_default"])
        results[key] = {name: {"images_per_s_median": statistics.median(v), "images_per_s_all": v,
                               "speedup_vs_default": statistics.median(v) / base} for name, v in times.items()}
    return results


def accuracy_effect(args, real, test) -> dict:
    """Same random IPC-10 set, same model seeds and DSA draws: only the numerics of the setting differ."""
    from ddistill.utils.train import TrainRecipe
    from evaluators import ClassifierConfig, ClassifierEvaluator
    from synthesizers import SYNTHESIZERS

    cls = SYNTHESIZERS.get("random")
    synset = cls(cls.Config(ipc=args.acc_ipc), seed=0).fit(real)
    out = {}
    for name in args.acc_settings:
        s = next(s for s in SETTINGS if s.name == name)
        cfg = ClassifierConfig(model="convnet", num_models=args.acc_models, train=TrainRecipe(epochs=args.acc_epochs),
                               perf=s.perf,
                               model_kwargs={"norm": "instancenorm_native" if s.native_groupnorm else "instancenorm"},
                               # controls=[]: the set scored is itself a random real subset (the random row); a
                               # random-subset control would repeat it and double the time.
                               progress=False, controls=[])
        res = ClassifierEvaluator(cfg, seed=0).evaluate(synset, test)
        out[name] = res.to_dict()
        print(f"  accuracy {name}: {res} ({sum(res.details['train_seconds']):.0f} s)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--out", default="benchmarks/results/eval_throughput")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--acc-ipc", type=int, default=10)
    p.add_argument("--acc-epochs", type=int, default=300)
    p.add_argument("--acc-models", type=int, default=3)
    p.add_argument("--acc-settings", nargs="*",
                   default=["pytorch_default", "bf16_autocast", "channels_last+bf16+compile"])
    args = p.parse_args()
    real, test = load_real("cifar10_jpeg", root=args.data)
    print("throughput (images/s, higher is better)", flush=True)
    thr = throughput(args, real)
    print("accuracy effect", flush=True)
    acc = accuracy_effect(args, real, test) if args.acc_models > 0 else {}
    result = {"benchmark": "eval_throughput", "machine": machine_info(), "data": f"CIFAR-10 JPEG mirror ({args.data})",
              "model": "ConvNet-3 (width 128, instance norm, avg pool)", "batch": args.batch,
              "timing": {"steps_per_round": args.steps, "rounds": args.rounds, "warmup_steps": args.warmup,
                         "statistic": "median over rounds, settings interleaved"},
              "throughput": thr,
              "accuracy": {"protocol": f"random IPC {args.acc_ipc} set (seed 0), {args.acc_models} ConvNet-3 models "
                                       f"(seeds 0..), {args.acc_epochs} epochs, DSA, lr 0.01 -> x0.1 at half",
                           "results": acc}}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    lines = ["# Evaluator throughput: ConvNet-3 train step on CPU\n",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch {result['machine']['torch']}. "
             f"Data: {result['data']}. Batch {args.batch}; median of {args.rounds} interleaved rounds of "
             f"{args.steps} steps. Command: `python benchmarks/eval_throughput.py`.\n"]
    for key, title in (("train_step", "model step only"), ("train_step_with_dsa", "step including DSA")):
        lines += [f"\n## {title}\n", "| setting | images/s | x default |", "|---|---:|---:|"]
        for name, r in thr[key].items():
            lines.append(f"| {name} | {r['images_per_s_median']:.0f} | {r['speedup_vs_default']:.2f} |")
    if acc:
        lines += [f"\n## accuracy effect ({result['accuracy']['protocol']})\n", "| setting | test accuracy % |",
                  "|---|---|"]
        for name, r in acc.items():
            lines.append(f"| {name} | {r['mean']:.2f} ± {r['std']:.2f} ({', '.join(f'{v:.2f}' for v in r['values'])}) |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
