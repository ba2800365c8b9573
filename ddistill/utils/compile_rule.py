"""When an evaluation compiles its networks: a rule from a measurement, not a guess.

``torch.compile`` makes a CPU train step faster but costs a one-off compile per architecture, batch shape and graph
(train step, test forward) in each process. At a small budget the compile dominates: VGG11 evaluated an IPC-10 set
in 107 s compiled against 36 s eager. ``benchmarks/compile_break_even.py`` measures, per architecture and batch, the
compile cost C and the per-step saving s = eager step - compiled step, in fresh processes on this project's CPU;
break-even = C / s training steps (``benchmarks/results/compile_break_even.{md,json}``; a test checks this table
against that file).

The rule (``perf.compile`` unset): an evaluation compiles when the steps it will train in this process with one
architecture (models x steps per model) reach that architecture's break-even at the measured batch nearest to its
own, at the measured image size nearest to its own (both nearest in log scale). The image size matters and does not
scale simply: small images are dominated by per-step overhead, which compiling also removes (ConvNet-3 at batch 100:
386 steps at 32 x 32, 2858 at 8 x 8). It runs eager when the architecture was not measured, when compiling never made its
step faster, off the CPU (not measured there) or without a C++ compiler (inductor needs one). ``perf.compile:
true/false`` overrides the rule. Variants of an architecture (``model_kwargs``) use the base name's measurement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

#: Break-even training steps by architecture, image side (H = W) and batch size (None: compiling never made a step
#: faster). Written from
#: ``benchmarks/results/compile_break_even.json`` (rounded up); regenerate with that benchmark on new hardware.
BREAK_EVEN_STEPS: dict[str, dict[int, dict[int, int | None]]] = {
    "convnet": {32: {10: 3497, 100: 386, 256: 95}, 8: {10: 46431, 100: 2858, 256: 1317}},
    "convnet_bn": {32: {10: 13532, 100: None, 256: 253}},
    "resnet18": {32: {10: 1383, 100: 186, 256: 59}},
    "vgg11": {32: {10: 2141, 100: 474, 256: 265}},
}


@dataclass(frozen=True)
class Workload:
    """What one process is about to train with one architecture.

    Args:
        model: registry name of the architecture.
        batch: training batch size (``min(set size, recipe batch)``).
        steps: training steps this process will run with it, summed over its models.
        image_size: (H, W) of its inputs.
    """

    model: str
    batch: int
    steps: int
    image_size: tuple[int, int] = (32, 32)


def training_steps(n: int, epochs: int, batch_size: int, iterations: int | None = None) -> int:
    """SGD steps of one model trained on ``n`` samples: ``iterations``, else ``epochs * ceil(n / batch_size)``."""
    if iterations is not None:
        return int(iterations)
    return int(epochs) * max(1, math.ceil(int(n) / int(batch_size)))


@lru_cache(maxsize=1)
def has_cxx_compiler() -> bool:
    """Whether a C++ compiler is on PATH (torch.compile's CPU backend, inductor, needs one)."""
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def compile_pays(work: Workload, device: torch.device | str = "cpu") -> tuple[bool, str]:
    """``(compile?, why)`` for ``work`` on ``device`` by the measured break-even (module docstring)."""
    dev = torch.device(device)
    if dev.type != "cpu":
        return False, f"break-even measured on the CPU only; set perf.compile: true to compile on {dev.type}"
    if not has_cxx_compiler():
        return False, "no C++ compiler on PATH (inductor needs one)"
    table = BREAK_EVEN_STEPS.get(work.model)
    if not table:
        return False, (f"no break-even measured for '{work.model}' (benchmarks/compile_break_even.py --archs "
                       f"{work.model}); eager")
    h, w = work.image_size
    side = min(table, key=lambda m: (abs(math.log(m * m) - math.log(max(1, int(h) * int(w)))), m))
    batch = min(table[side], key=lambda b: (abs(math.log(b) - math.log(max(1, work.batch))), b))
    need = table[side][batch]
    if need is None:
        return False, f"compiling never made a {work.model} step faster at batch {batch}, {side}x{side}; eager"
    pays = work.steps >= need
    return pays, (f"{work.steps} training steps {'>=' if pays else '<'} break-even {need} ({work.model} measured at "
                  f"batch {batch}, {side}x{side}; inputs {h}x{w}): {'compiled' if pays else 'eager'}")
