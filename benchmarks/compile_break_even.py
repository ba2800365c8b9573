"""When does ``torch.compile`` pay for itself in an evaluation? Measures, per architecture and batch size, the
one-off compile cost and the per-step saving of the evaluators' train step, and from them the break-even number of
training steps: below it a compiled evaluation is slower than an eager one (VGG11 at a small budget took 107 s
compiled against 36 s eager), above it faster.

    python benchmarks/compile_break_even.py --out benchmarks/results/compile_break_even

Each (architecture, batch, mode) runs in a fresh process with an empty inductor cache, so the compile cost is the
one a first evaluation in a new process pays (later processes of the same user reuse inductor's on-disk cache and
pay less: the rule is conservative). A train step is what the classifier evaluator does: forward under the
resolved speed settings (channels-last; bf16 autocast where the CPU has it), cross-entropy, backward, SGD with
momentum. The compile cost counts both graphs an evaluation compiles: the train step and the test-time forward
(batch ``--test-batch``). The batch of an evaluation is ``min(set size, 256)``, so ``--batches 10 100 256`` covers
IPC 1 / 10 / >= 26 sets of ten classes.

break-even steps = (compile cost of both graphs) / (eager step - compiled step), infinite when compiling does not make
a step faster. ``ddistill/utils/compile_rule.py`` holds the table this writes (a test checks they agree).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(arch: str, batch: int, mode: str, steps: int, test_batch: int, threads: int | None, size: int) -> dict:
    """One fresh-process measurement (run by the parent through ``--child``)."""
    import torch
    import torch.nn.functional as F

    from ddistill.models import ModelFamily
    from ddistill.utils.perf import PerfConfig

    if threads:
        torch.set_num_threads(threads)
    perf = PerfConfig(compile=mode == "compiled").resolve("cpu")
    gen = torch.Generator().manual_seed(0)
    net = perf.prepare_model(ModelFamily(arch, in_channels=3, num_classes=10, image_size=(size, size), seed=0).build(0))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = perf.prepare_input(torch.randn(batch, 3, size, size, generator=gen))
    y = torch.randint(0, 10, (batch,), generator=gen)
    x_test = perf.prepare_input(torch.randn(test_batch, 3, size, size, generator=gen))

    def step() -> float:
        start = time.perf_counter()
        net.train()
        with perf.autocast("cpu"):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    def forward() -> float:
        start = time.perf_counter()
        net.eval()
        with torch.no_grad(), perf.autocast("cpu"):
            net(x_test)
        return time.perf_counter() - start

    first = step()
    times = [step() for _ in range(steps)]
    first_forward = forward()
    second_forward = forward()
    return {"first_step": first, "step": statistics.median(times), "steps": times,
            "first_forward": first_forward, "forward": second_forward,
            "perf": {"channels_last": perf.channels_last, "bf16": perf.bf16, "compile": perf.compile}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/compile_break_even")
    p.add_argument("--archs", nargs="*", default=["convnet", "convnet_bn", "vgg11", "resnet18"])
    p.add_argument("--batches", type=int, nargs="*", default=[10, 100, 256])
    p.add_argument("--sizes", type=int, nargs="*", default=[32], help="image sides (3 channels, square)")
    p.add_argument("--append", action="store_true",
                   help="keep the rows of --out's JSON for other (arch, size) cells and add these; both commands are "
                        "recorded")
    p.add_argument("--steps", type=int, default=6, help="timed steps after the first (median reported)")
    p.add_argument("--test-batch", type=int, default=1024, help="the evaluators' test batch (ClassifierConfig)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", nargs=4, metavar=("ARCH", "BATCH", "MODE", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        arch, batch, mode, size = args.child
        print(json.dumps(measure(arch, int(batch), mode, args.steps, args.test_batch, args.threads, int(size))))
        return

    from ddistill.io import machine_info, write_json

    out = Path(args.out)
    command = " ".join(["python", "benchmarks/compile_break_even.py", *sys.argv[1:]])
    rows, commands = [], [command]
    if args.append and out.with_suffix(".json").exists():
        saved = json.loads(out.with_suffix(".json").read_text())
        cells = {(a, s) for a in args.archs for s in args.sizes}
        rows = [r for r in saved["rows"] if (r["arch"], r.get("image_size", 32)) not in cells]
        commands = [*saved.get("commands", [saved["command"]]), command]
    for arch, size, batch in [(a, s, b) for a in args.archs for s in args.sizes for b in args.batches]:
        got = {}
        for mode in ("eager", "compiled"):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
                cmd = [sys.executable, str(Path(__file__).resolve()), "--steps", str(args.steps), "--test-batch",
                       str(args.test_batch), "--child", arch, str(batch), mode, str(size)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    raise SystemExit(f"{arch} {size}px batch {batch} {mode} failed:\n{done.stderr[-2000:]}")
                got[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        e, c = got["eager"], got["compiled"]
        compile_s = (c["first_step"] - c["step"]) + (c["first_forward"] - c["forward"])
        saving = e["step"] - c["step"]
        row = {"arch": arch, "image_size": size, "batch": batch, "eager_step_s": e["step"],
               "compiled_step_s": c["step"],
               "speedup": e["step"] / c["step"], "compile_s": compile_s, "saving_per_step_s": saving,
               "break_even_steps": compile_s / saving if saving > 0 else None, "eager": e, "compiled": c}
        rows.append(row)
        be = f"{math.ceil(row['break_even_steps'])}" if row["break_even_steps"] is not None else "never"
        print(f"{arch} {size}px batch {batch}: eager {e['step']:.3f} s, compiled {c['step']:.3f} s, compile "
              f"{compile_s:.1f} s -> break-even {be} steps", flush=True)

    rows.sort(key=lambda r: (r["arch"], -r.get("image_size", 32), r["batch"]))
    result = {"benchmark": "compile_break_even", "machine": machine_info(), "command": " then ".join(commands),
              "commands": commands,
              "data": "random tensors of 3 x size x size, 10 classes (CIFAR-10's shape at 32): speed does not "
                      "depend on the "
                      "pixel values",
              "budget": {"timed_steps": args.steps, "test_batch": args.test_batch, "threads": args.threads},
              "rows": rows}
    write_json(out.with_suffix(".json"), result)
    lines = ["# When torch.compile pays in an evaluation (CPU)\n",
             f"Commands: {'; then '.join(f'`{c}`' for c in commands)}. Each cell: a fresh process with an empty "
             f"inductor cache; train step = forward under the resolved speed settings ({rows[0]['eager']['perf'] if rows else {}} besides compile), "
             f"cross-entropy, backward, SGD; median of {args.steps} steps after the first. Compile cost = first "
             f"train step + first test forward (batch {args.test_batch}) minus their steady times.\n",
             "| arch | image | batch | eager s/step | compiled s/step | speed-up | compile s | break-even steps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        be = f"{math.ceil(r['break_even_steps'])}" if r["break_even_steps"] is not None else "never"
        lines.append(f"| {r['arch']} | {r.get('image_size', 32)} px | {r['batch']} | {r['eager_step_s']:.3f} | "
                     f"{r['compiled_step_s']:.3f} | {r['speedup']:.2f} | {r['compile_s']:.1f} | {be} |")
    lines.append("\nThe rule (`ddistill/utils/compile_rule.py`, break-even rounded up): with `perf.compile` unset, "
                 "an evaluation compiles when the steps it trains with one architecture (all its models x steps per "
                 "model, whatever the world size) reach the break-even of its architecture at the nearest measured "
                 "image size, then the nearest measured batch, scaled by the number of input shapes it compiles over "
                 "the two "
                 "measured here; an architecture not measured here runs eager.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
