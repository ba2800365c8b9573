"""Speed settings for training and inference: memory format, bf16 autocast, torch.compile, threads.

``benchmarks/eval_throughput.py`` measures each setting side by side on the ConvNet-3 train step and
its effect on accuracy; the defaults below ("auto") are the fastest setting that left accuracy
unchanged within noise there (see ``benchmarks/results/eval_throughput.md``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import torch
from torch import nn

from ddistill.utils.compile_rule import Workload, compile_pays, has_cxx_compiler


_CUDA_HOME_NOTICE = "No CUDA runtime is found"


class _NoCudaHomeNotice(logging.Filter):
    """Drops only torch.utils.cpp_extension's "No CUDA runtime is found, using CUDA_HOME=..." record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CUDA_HOME_NOTICE)


def _import_cpp_extension_without_notice() -> None:
    """Imports ``torch.utils.cpp_extension`` (which inductor loads to compile on the CPU) with its CUDA_HOME notice
    dropped. torch 2.5 and 2.6 print that notice to stderr when the module is imported (torch 2.14 logs it, and the
    logger filter drops it), so the import's stderr is captured and everything but that line is written back."""
    if "torch.utils.cpp_extension" in sys.modules:
        return
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        import torch.utils.cpp_extension  # noqa: F401
    sys.stderr.write("".join(line for line in captured.getvalue().splitlines(keepends=True)
                             if not line.startswith(_CUDA_HOME_NOTICE)))


def compiled(fn):
    """``torch.compile(fn, dynamic=False)``, without the CUDA_HOME notice of a CPU-only machine.

    Compiling on the CPU loads ``torch.utils.cpp_extension``, which logs "No CUDA runtime is found, using
    CUDA_HOME=..." on a machine without CUDA: a warning about a GPU nobody asked for, in every log of a CPU run. A
    filter drops that one record; the logger's other messages (compiler or ABI problems) still show."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaHomeNotice) for f in log.filters):
        log.addFilter(_NoCudaHomeNotice())
    _import_cpp_extension_without_notice()
    return torch.compile(fn, dynamic=False)


@dataclass
class PerfConfig:
    """How to run models fast.

    Args:
        channels_last: NHWC memory format for 4-D tensors (oneDNN's fast path on CPU). None = auto (on CPU).
        bf16: run forward passes under bfloat16 autocast (weights and optimiser stay float32). None = auto:
            on a CPU with native bf16 (AVX512-BF16 / AMX) only.
        compile: wrap models with ``torch.compile``. None = auto. With a workload (what an evaluation is about to
            train, see :meth:`resolve`): compile when it reaches the measured break-even
            (:mod:`ddistill.utils.compile_rule`). Without one (the distillation loops, thousands of steps): on for
            CPU when a C++ compiler is on PATH (inductor needs one). The first model of an architecture pays a
            one-off compile; later models of the same architecture in the process reuse it.
        threads: ``torch.set_num_threads`` value for the run; None leaves PyTorch's default.
    """

    channels_last: bool | None = None
    bf16: bool | None = None
    compile: bool | None = None
    threads: int | None = None

    def resolve(self, device: torch.device | str, workload: "Workload | None" = None) -> "PerfConfig":
        """Replaces the ``None`` (auto) fields by concrete choices for ``device`` (and, for ``compile``, for
        ``workload``: the architecture, batch and training steps an evaluation is about to run)."""
        dev = torch.device(device)
        cl = self.channels_last if self.channels_last is not None else dev.type == "cpu"
        bf16 = self.bf16 if self.bf16 is not None else (dev.type == "cpu" and cpu_has_native_bf16())
        comp = self.compile
        if comp is None:
            comp = compile_pays(workload, dev)[0] if workload is not None else (
                dev.type == "cpu" and has_cxx_compiler())
        return PerfConfig(cl, bf16, comp, self.threads)

    def compile_rule(self, device: torch.device | str, workload: "Workload") -> str:
        """Why :meth:`resolve` compiles or not for ``workload`` (for the results)."""
        if self.compile is not None:
            return f"perf.compile: {str(self.compile).lower()} (set in the config)"
        return compile_pays(workload, device)[1]

    @contextlib.contextmanager
    def autocast(self, device: torch.device | str) -> Iterator[None]:
        dev = torch.device(device)
        if self.bf16:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            # Static shapes: evaluation sees at most two batch sizes (full and last), each compiled once.
            model = compiled(model)  # type: ignore[assignment]
        return model

    def prepare_feature_extractor(self, model: nn.Module) -> nn.Module:
        """Like :meth:`prepare_model` for code that calls ``forward_features``/``embed`` (distribution and
        attention matching): compiles ``forward_features`` on the instance. Fresh networks of the same
        architecture reuse the compiled graph (one compile per process and input shape)."""
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile and hasattr(model, "forward_features"):
            model.forward_features = compiled(model.forward_features)  # type: ignore[method-assign]
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def apply_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 matmuls natively (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))
