"""When an evaluation compiles its networks: a rule from a measurement, not a guess.

``torch.compile`` makes a CPU train step faster but costs a one-off compile per architecture, batch shape and graph
(train step, test forward) in each process. At a small budget the compile dominates (issue #16 reported VGG11
taking 107 s compiled against 36 s eager). ``benchmarks/compile_break_even.py`` measures, per architecture, image
size and batch, the compile cost C and the per-step saving s = eager step - compiled step, in fresh processes on
this project's CPU; break-even = C / s training steps (``benchmarks/results/compile_break_even.{md,json}``; a test
checks this table against that file).

The rule (``perf.compile`` unset): an evaluation compiles when the steps it trains with one architecture (all its
models x steps per model) reach that architecture's break-even at the measured image size nearest to its own, then
the measured batch nearest to its own (both nearest in log scale). The image size matters and does not scale
simply: small images are dominated by per-step overhead, which compiling also removes (ConvNet-3 at batch 100: 386
steps at 32 x 32, 2858 at 8 x 8). The break-even is scaled by the number of graphs the evaluation compiles (one per
input shape) over the measurement's two. The whole evaluation is weighed, not one rank's share, so every rank and
every world size decide alike and scores stay those of one process (each rank does pay its own compile).

It runs eager when the architecture was not measured, when compiling never made its step faster, off the CPU (not
measured there) or without a C++ compiler (inductor needs one). ``perf.compile: true/false`` overrides the rule.
Variants of an architecture (``model_kwargs``) use the base name's measurement.
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
        graphs: distinct input shapes it compiles (``dynamic=False``: one graph each): the full and the short last
            training batch, the full and the short last test batch. The measurement compiled 2 (one train step, one
            test forward), so the break-even is scaled by ``graphs / 2``.
    """

    model: str
    batch: int
    steps: int
    image_size: tuple[int, int] = (32, 32)
    graphs: int = 2


def compiled_graphs(n: int, batch_size: int, test_n: int | None = None, test_batch: int = 1024) -> int:
    """Graphs an evaluation compiles: train batches of ``min(n, batch_size)`` plus a short last one when ``n`` is not
    a multiple, and test batches likewise (unknown test size: assume a short last one)."""
    train = 1 + (1 if n > batch_size and n % batch_size else 0)
    test = 2 if test_n is None else 1 + (1 if test_n > test_batch and test_n % test_batch else 0)
    return train + test


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
    measured = table[side][batch]
    if measured is None:
        return False, f"compiling never made a {work.model} step faster at batch {batch}, {side}x{side}; eager"
    need = math.ceil(measured * work.graphs / 2)
    pays = work.steps >= need
    return pays, (f"{work.steps} training steps {'>=' if pays else '<'} break-even {need} ({work.model} measured at "
                  f"batch {batch}, {side}x{side}, x {work.graphs}/2 graphs; inputs {h}x{w}): "
                  f"{'compiled' if pays else 'eager'}")
