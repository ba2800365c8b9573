"""Runs on several processes with ``torch.distributed`` (launched by ``torchrun``): who this process is, which share
of the work it owns, and the few collectives the library needs.

The rule every distributed piece of ddistill follows is *draw everything, compute your share*: every rank holds the
same replicated state (synthetic tensors, optimiser states, the run's generator), makes every random draw of an
iteration in the same order as a single process would, and computes only the part it owns (its classes, its
trajectory segments, its evaluation models). The gradients of the replicated tensors are then summed over the ranks,
so every rank takes the same optimiser step and the generator streams never diverge. A checkpoint is therefore the
same on every rank and is written by rank 0 only; it resumes at any world size that divides the work.

Without ``torchrun`` (or with one process) :meth:`Distributed.current` is the single-process context, every method is
a no-op and nothing in a run changes.

NCCL is used on GPUs, gloo on CPUs (:func:`init_distributed`). Results are gathered as JSON bytes, never pickles, so a
rank never executes what another rank sent.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NoReturn, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")

#: How long a rank waits at a collective for the others (a periodic evaluation on every rank can take an hour).
DEFAULT_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torch.distributed`` run.

    Args:
        rank: this process's rank (0 writes files and logs).
        world_size: number of processes.
        device: where collective buffers live (the rank's GPU under NCCL, the CPU under gloo).
    """

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @classmethod
    def current(cls) -> "Distributed":
        """The context of the initialised default process group, or the single-process context."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        device = "cpu"
        if dist.get_backend() == "nccl":
            device = f"cuda:{torch.cuda.current_device()}"
        return cls(dist.get_rank(), dist.get_world_size(), device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- work sharing ----------------------------------------------------------------------------
    def owned(self, n: int) -> list[int]:
        """The items of ``range(n)`` this rank computes: contiguous blocks, the first ``n % world_size`` ranks one
        item more (``numpy.array_split``); a rank may own none when ``n < world_size``."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return list(range(start, start + base + (1 if self.rank < extra else 0)))

    def map(self, items: Sequence[T], fn: Callable[[int, T], Any]) -> list[Any]:
        """``[fn(i, item) for i, item in enumerate(items)]`` with each rank computing its :meth:`owned` share; every
        rank gets the whole list. ``fn`` must return JSON values (floats round-trip exactly)."""
        mine = {i: fn(i, items[i]) for i in self.owned(len(items))}
        if not self.enabled:
            return [mine[i] for i in range(len(items))]
        gathered: dict[int, Any] = {}
        for part in self.all_gather_json({str(i): v for i, v in mine.items()}):
            gathered.update({int(i): v for i, v in part.items()})
        return [gathered[i] for i in range(len(items))]

    # -- collectives -----------------------------------------------------------------------------
    def all_reduce_(self, tensors: Iterable[Tensor]) -> None:
        """Sums each tensor over the ranks, in place (each moved to the collective device and back)."""
        if not self.enabled:
            return
        for t in tensors:
            buf = t if t.device == torch.device(self.device) else t.to(self.device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            if buf is not t:
                t.copy_(buf)

    def sum_gradients_(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sums the gradients of replicated parameters over the ranks (a missing gradient counts as zero), so every
        rank holds the gradient of the sum of all ranks' losses."""
        if not self.enabled:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        self.all_reduce_(grads)

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the ranks (float64), same keys and order on every rank required."""
        if not self.enabled or not values:
            return dict(values)
        buf = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return dict(zip(values, buf.cpu().tolist()))

    def agree(self, ok: bool) -> bool:
        """True on every rank when ``ok`` is true on every rank (a rank that failed tells the others to stop rather
        than leave them waiting at the next collective)."""
        if not self.enabled:
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def all_gather_json(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order, sent as UTF-8 JSON bytes (no pickle)."""
        data = json.dumps(value).encode()
        if not self.enabled:
            return [json.loads(data)]
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        buf = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        bufs = [torch.zeros_like(buf) for _ in range(self.world_size)]
        dist.all_gather(bufs, buf)
        return [json.loads(bytes(b[: int(s.item())].cpu().tolist())) for b, s in zip(bufs, sizes)]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "cpu", *, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> tuple[Distributed, str]:
    """Joins the ``torchrun`` process group when there is one (NCCL for CUDA devices, gloo otherwise) and returns
    the context and this rank's device (``cuda`` becomes ``cuda:$LOCAL_RANK``). Without ``torchrun``: the
    single-process context and ``device`` unchanged. Safe to call twice."""
    if not launched_by_torchrun():
        return Distributed.current(), device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return Distributed.current(), device


def shutdown_distributed() -> None:
    """Leaves the process group that :func:`init_distributed` joined, once the run has finished on every rank.

    A barrier first, so no rank closes its connections while another still exchanges data with it; then
    ``destroy_process_group``, which joins gloo's (or NCCL's) worker threads while the interpreter is still whole. A
    process that exits with the group still alive leaves those threads to interpreter finalisation, where torch can
    abort with "terminate called without an active exception" (exit -6) after all the work was done
    (pytorch/pytorch#190489). Call it on the success path only: after a failure on one rank, the others would wait at
    the barrier. A no-op without a process group.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """Ends a command-line process with ``code``; a rank of a several-process run skips interpreter finalisation.

    Leaving the process group (:func:`shutdown_distributed`) was not enough: the test suite saw a rank that had
    written its result and called it abort with "terminate called without an active exception" (whether inside
    ``destroy_process_group`` or after it, that log did not say). torch's C++ threads (autograd's, gloo's) can call
    into Python while the interpreter finalises and tears the GIL down (pytorch/pytorch#190489), and torchrun would
    report the finished run as failed. A rank of a ``torchrun`` job (``WORLD_SIZE`` > 1) therefore flushes its
    streams and logging and ends with ``os._exit``: every file the library writes is closed by the time a command
    returns, and the library registers no exit handlers, so finalisation had nothing left to do for it. One process
    exits as usual (``SystemExit``).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or vanished reader: nothing more can reach it
                pass
        os._exit(code)
    raise SystemExit(code)


class GlobalBatchNorm(torch.nn.Module):
    """A batch-norm layer in training mode whose statistics are those of the union of every rank's batch, so a
    batch split over ranks is normalised exactly as one process normalises the whole batch (up to float rounding).

    The per-channel sums of x and x^2 and the count are summed with a differentiable all-reduce, so the gradient of
    every rank's loss reaches every rank's inputs through the shared statistics (as in one process). In eval mode
    (running statistics) the wrapped layer runs unchanged. Running statistics are not updated: the networks of
    fresh-network matching are frozen and never evaluated.

    Shape: (B, C, *) -> (B, C, *).
    """

    def __init__(self, bn: torch.nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        if not self.bn.training:
            return self.bn(x)
        from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # Sums in float64: E[x^2] - E[x]^2 cancels digits that float32 would lose (the kernel of one process uses
        # a two-pass variance instead).
        xd = x.double()
        count = xd.new_tensor([float(x.numel() // c)])
        with warnings.catch_warnings():
            # torch 2.14 marks this autograd all-reduce deprecated in favour of _functional_collectives.all_reduce,
            # which has no backward; the gradient through the shared statistics needs this one.
            warnings.simplefilter("ignore", FutureWarning)
            stats = differentiable_all_reduce(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)  # biased, as batch norm normalises
        shape = [1, c] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.bn.eps).float().view(shape)
        y = (x.float() - mean.float().view(shape)) * scale
        if self.bn.affine:
            y = y * self.bn.weight.view(shape) + self.bn.bias.view(shape)
        return y.to(x.dtype)


def synchronise_batch_norm(net: torch.nn.Module, context: Distributed) -> torch.nn.Module:
    """``net`` with every batch-norm layer wrapped in :class:`GlobalBatchNorm` when ``context`` spans several ranks
    (in place; unchanged in a single process)."""
    if not context.enabled:
        return net
    for name, child in list(net.named_children()):
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(net, name, GlobalBatchNorm(child))
        else:
            synchronise_batch_norm(child, context)
    return net
