"""What runs around a synthesizer, as small objects that work for every synthesizer: checkpoints and resume, JSONL
logging, periodic evaluation, a step / CPU-time budget and a progress bar.

A callback has three hooks, all optional (the avalanche / Lightning idea with as few hooks as the loop needs):

- ``on_fit_start(synth, real)``: after :meth:`Synthesizer.setup`, before the first step (a checkpoint loads here);
- ``on_step_end(synth, step, logs)``: after every step, ``step`` counted from 1, ``logs`` the loss and the method's
  named terms;
- ``on_fit_end(synth, synset)``: with the finished set.

A plain function ``fn(synth, step, logs)`` is accepted as an ``on_step_end`` callback.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from ddistill.io import JSONLLogger, load_artifact, save_artifact

if TYPE_CHECKING:  # pragma: no cover
    from ddistill.synset import SyntheticSet

    from .base import Synthesizer

__all__ = ["Callback", "CallbackList", "Checkpoint", "CheckpointError", "JSONLLog", "PeriodicEval", "ProgressBar",
           "StopAfter"]


class Callback:
    """Base class: every hook does nothing.

    Under ``torchrun`` every rank runs the callbacks (a checkpoint is loaded by every rank, a periodic evaluation
    shares its models over the ranks) except those with :attr:`main_rank_only`, which only rank 0 runs (logs, bars).
    """

    #: Only rank 0 runs this callback (it writes or prints what one process should).
    main_rank_only: ClassVar[bool] = False

    def on_fit_start(self, synth: "Synthesizer", real: Any) -> None:
        """Called once before the first step."""

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        """Called after every step (``step`` counts from 1)."""

    def on_fit_end(self, synth: "Synthesizer", synset: "SyntheticSet") -> None:
        """Called with the finished set."""


class _StepFunction(Callback):
    def __init__(self, fn: Callable[[Any, int, dict[str, float]], None]) -> None:
        self.fn = fn

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        self.fn(synth, step, logs)


class CallbackList(Callback):
    """Runs several callbacks in order (plain functions become ``on_step_end`` callbacks)."""

    def __init__(self, callbacks: Iterable[Callback | Callable[..., None]]) -> None:
        self.callbacks = [cb if isinstance(cb, Callback) else _StepFunction(cb) for cb in callbacks]

    @staticmethod
    def _runs_here(cb: Callback, synth: "Synthesizer") -> bool:
        return not cb.main_rank_only or getattr(synth, "dist", None) is None or synth.dist.is_main

    def on_fit_start(self, synth: "Synthesizer", real: Any) -> None:
        for cb in self.callbacks:
            if self._runs_here(cb, synth):
                cb.on_fit_start(synth, real)

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        for cb in self.callbacks:
            if self._runs_here(cb, synth):
                cb.on_step_end(synth, step, logs)

    def on_fit_end(self, synth: "Synthesizer", synset: "SyntheticSet") -> None:
        for cb in self.callbacks:
            if self._runs_here(cb, synth):
                cb.on_fit_end(synth, synset)


# ---------------------------------------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint file is unreadable or belongs to another run."""


CHECKPOINT_FORMAT = "ddistill.checkpoint"
CHECKPOINT_VERSION = 1


class Checkpoint(Callback):
    """Atomic checkpoints of :meth:`Synthesizer.state_dict` every ``every`` steps and at the end; with ``resume``, the
    run continues from ``path`` when it exists and ends with the same set an uninterrupted run gives.

    Synthesizers with nothing to resume (``state_dict() is None``, the one-shot methods) are not checkpointed.
    Under ``torchrun`` the state is the same on every rank: rank 0 writes it, every rank reads it on resume (the run
    directory must be visible to every rank), at any world size the method accepts.

    Args:
        path: the checkpoint file.
        every: steps between checkpoints (0 = only at the end).
        resume: load ``path`` first if it exists.
    """

    def __init__(self, path: str | os.PathLike, every: int = 0, *, resume: bool = False) -> None:
        self.path, self.every, self.resume = Path(path), int(every), bool(resume)

    def on_fit_start(self, synth: "Synthesizer", real: Any) -> None:
        if self.resume and self.path.exists() and synth.state_dict() is not None:
            synth.load_state_dict(self.load(self.path))

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        if self.every and step % self.every == 0 and step < synth.total_steps:
            self.save(synth)

    def on_fit_end(self, synth: "Synthesizer", synset: "SyntheticSet") -> None:
        self.save(synth)

    def save(self, synth: "Synthesizer") -> None:
        if not synth.dist.is_main:
            return
        state = synth.state_dict()
        if state is not None:
            save_artifact(state, self.path, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)

    @staticmethod
    def load(path: str | os.PathLike) -> dict[str, Any]:
        return load_artifact(path, format=CHECKPOINT_FORMAT, what="checkpoint", max_version=CHECKPOINT_VERSION,
                             required=("synthesizer", "step", "seed", "params", "optimizers", "generator", "extra"),
                             error=CheckpointError)


class JSONLLog(Callback):
    """Appends the step logs to a JSONL file every ``every`` steps and at the last step.

    Args:
        log: the file, or a :class:`~ddistill.io.JSONLLogger` shared with other writers.
        every: steps between records.
    """

    main_rank_only = True

    def __init__(self, log: str | os.PathLike | JSONLLogger, every: int = 10) -> None:
        self.logger = log if isinstance(log, JSONLLogger) else JSONLLogger(log)
        self.every = max(1, int(every))

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        if step % self.every == 0 or step == synth.total_steps:
            self.logger.log(step=step, **logs)


class PeriodicEval(Callback):
    """Scores the current set every ``every`` steps (before the last one: the final set is scored by the caller).

    Args:
        evaluator: an :class:`~evaluators.base.Evaluator`.
        data: the :class:`~ddistill.data.EvalData` it reads.
        every: steps between evaluations.
        log: optional JSONL logger receiving ``{"step", "eval"}`` records.
        echo: print each result.
    """

    def __init__(self, evaluator: Any, data: Any, every: int, *, log: JSONLLogger | None = None,
                 echo: bool = False) -> None:
        self.evaluator, self.data, self.every, self.log, self.echo = evaluator, data, int(every), log, echo
        self.curve: list[dict[str, Any]] = []
        self._real: Any = None

    def on_fit_start(self, synth: "Synthesizer", real: Any) -> None:
        self._real = real

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        if not self.every or step % self.every or step >= synth.total_steps:
            return
        res = self.evaluator.evaluate(synth.synthetic_set(self._real), self.data)
        self.curve.append({"step": step, "mean": res.mean, "std": res.std})
        if not synth.dist.is_main:  # every rank trained its share of the models; rank 0 reports
            return
        if self.log is not None:
            self.log.log(step=step, eval=res.to_dict())
        if self.echo:
            print(f"step {step}: {res}", flush=True)


class StopAfter(Callback):
    """Ends an iterative run early once a budget is spent (the set of the last completed step is returned).

    Args:
        steps: stop after this many steps in this call (None: no step budget).
        cpu_seconds: stop once this process has used this much CPU time since ``on_fit_start`` (user + system, all
            threads; None: no CPU budget).
        wall_seconds: stop after this much wall-clock time (None: no time budget).
    """

    def __init__(self, *, steps: int | None = None, cpu_seconds: float | None = None,
                 wall_seconds: float | None = None) -> None:
        self.steps, self.cpu_seconds, self.wall_seconds = steps, cpu_seconds, wall_seconds
        self.taken = 0
        self._cpu0 = self._wall0 = 0.0

    def on_fit_start(self, synth: "Synthesizer", real: Any) -> None:
        self._cpu0, self._wall0, self.taken = time.process_time(), time.perf_counter(), 0

    @property
    def cpu_used(self) -> float:
        return time.process_time() - self._cpu0

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        self.taken += 1
        if ((self.steps is not None and self.taken >= self.steps)
                or (self.cpu_seconds is not None and self.cpu_used >= self.cpu_seconds)
                or (self.wall_seconds is not None and time.perf_counter() - self._wall0 >= self.wall_seconds)):
            synth.stop_requested = True


class ProgressBar(Callback):
    """A tqdm bar over the run's steps, showing the loss. Off when stderr is not a terminal (no control codes in log
    files) unless ``force``.

    Args:
        desc: the bar's label (default: ``distill <name>``).
        force: draw the bar even when stderr is not a terminal.
    """

    main_rank_only = True

    def __init__(self, desc: str | None = None, *, force: bool = False) -> None:
        self.desc, self.force = desc, force
        self.bar: Any = None

    def on_fit_start(self, synth: "Synthesizer", real: Any) -> None:
        from tqdm.auto import tqdm

        enabled = self.force or sys.stderr.isatty()
        self.bar = tqdm(total=synth.total_steps, initial=synth.completed_steps, desc=self.desc or f"distill {synth.name}",
                        disable=not enabled, mininterval=1.0)

    def on_step_end(self, synth: "Synthesizer", step: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    def on_fit_end(self, synth: "Synthesizer", synset: "SyntheticSet") -> None:
        if self.bar is not None:
            self.bar.close()
