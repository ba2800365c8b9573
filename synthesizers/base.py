"""The synthesizer contract and the optimisation loop the iterative methods fill in.

Every synthesizer has one entry point, ``fit(real, *, callbacks=()) -> SyntheticSet``. What happens around the method
(checkpoints and resume, periodic evaluation, JSONL logging, a CPU-time budget, a progress bar) is a
:class:`~synthesizers.callbacks.Callback` and works the same for every synthesizer.

- :class:`Synthesizer` is the contract. A one-shot method (a coreset baseline, Mirage) implements
  :meth:`Synthesizer.synthesize`.
- :class:`GradientSynthesizer` runs the loop of the methods that optimise learnable tensors (template method pattern): a
  method supplies :meth:`~GradientSynthesizer.build` (networks, augmenters, buffers), :meth:`~GradientSynthesizer.init_synthetic`
  (the learnable tensors), :meth:`~GradientSynthesizer.loss` (the method; it may return named terms, which reach the
  log), :meth:`~GradientSynthesizer.optimizers` and :meth:`~GradientSynthesizer.evaluation_model`, plus
  :meth:`~GradientSynthesizer.after_step` and the extra state of :meth:`~GradientSynthesizer.extra_state` when it
  keeps any. The loop owns the rest: the divergence checks, the step counter and the checkpointable state.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ddistill import __version__
from ddistill.config import config_from_preset, to_dict
from ddistill.data import RealData
from ddistill.distributed import Distributed
from ddistill.registry import Registry
from ddistill.synset import SyntheticSet
from ddistill.utils.seed import make_generator

from .callbacks import Callback, CallbackList

SYNTHESIZERS = Registry("synthesizer")

#: Learned images larger than this (in absolute value, in the encoded space where real images are O(1)) mean the
#: optimisation has diverged even while the loss is still finite (e.g. lr 1e12 gives images of 1e25).
DIVERGENCE_LIMIT = 1e6


class Synthesizer(ABC):
    """Turns a real training set into a :class:`SyntheticSet`.

    Args:
        config: an instance of the subclass's ``Config`` dataclass (None = defaults).
        device: where tensors live and models run.
        seed: the only source of randomness (through explicit generators).
        dist: this process's place in a ``torchrun`` run (None = the current process group, if any; a single process
            otherwise). Methods that share work over ranks read it; the others ignore it (each rank then computes
            the whole run, which gives the same set everywhere).
    """

    Config: ClassVar[type]
    #: The registry key (set by the ``@SYNTHESIZERS.register(...)`` decorator).
    name: ClassVar[str] = ""
    #: Named sets of config values (e.g. a paper's setting vs its official code's), see :meth:`config_from_preset`.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", seed: int = 0,
                 dist: Distributed | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self.device = torch.device(device)
        self.seed = int(seed)
        self.dist = dist if dist is not None else Distributed.current()
        #: Set by a callback (e.g. :class:`~synthesizers.callbacks.StopAfter`) to end an iterative run early.
        self.stop_requested = False
        self.callbacks = CallbackList(())

    @classmethod
    def config_from_preset(cls, preset: str | None = None, **overrides: Any) -> Any:
        """``Config`` filled from the named preset, then ``overrides`` (strict: unknown keys raise)."""
        return config_from_preset(cls.Config, cls.presets, preset, overrides, where=f"{cls.name} config")

    # -- the contract -----------------------------------------------------------------------------
    def fit(self, real: Any, *, callbacks: Sequence[Callback | Any] = ()) -> SyntheticSet:
        """Distils ``real`` into a synthetic set.

        Args:
            real: the training data (:class:`RealData` for images; a ``GraphDataset`` for graph methods).
            callbacks: :class:`~synthesizers.callbacks.Callback` objects, or plain ``fn(synthesizer, step, logs)``
                functions called after every step. They run in the order given, so put a checkpoint first: a failing
                callback after it (e.g. a periodic evaluation) then loses no work.
        """
        self.callbacks = CallbackList(callbacks)
        self.stop_requested = False
        self.setup(real)
        self.callbacks.on_fit_start(self, real)
        synset = self.synthesize(real)
        self.callbacks.on_fit_end(self, synset)
        return synset

    def setup(self, real: Any) -> None:
        """Builds what :meth:`synthesize` needs (before the callbacks' ``on_fit_start``, so a checkpoint can be
        loaded into it). Nothing by default."""

    @abstractmethod
    def synthesize(self, real: Any) -> SyntheticSet:
        """The method: returns the set (iterative methods report every step through :meth:`log_step`)."""

    @property
    def total_steps(self) -> int:
        """Steps of a complete run (1 for one-shot methods)."""
        return 1

    @property
    def completed_steps(self) -> int:
        """Steps done so far (what a resumed run starts from)."""
        return 0

    def log_step(self, step: int, logs: dict[str, float]) -> None:
        """Hands ``logs`` of ``step`` (counted from 1) to the callbacks."""
        self.callbacks.on_step_end(self, step, logs)

    def state_dict(self) -> dict[str, Any] | None:
        """Everything needed to continue a run bit for bit; None when there is nothing to resume (one-shot)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""

    def evaluation_model(self) -> tuple[str | None, dict[str, Any]]:
        """The network the set is meant to be evaluated with (recorded as ``meta["eval_model"]``, used by the
        evaluators by default); ``(None, {})`` = no preference (the evaluator's default network)."""
        return None, {}

    # -- shared helpers ----------------------------------------------------------------------------
    def base_meta(self, real: RealData, *, ipc: int | None, **extra: Any) -> dict[str, Any]:
        """Metadata every image set records (see the SyntheticSet format in the README)."""
        model, model_kwargs = self.evaluation_model()
        meta = {
            "synthesizer": self.name or type(self).__name__.lower(),
            "kind": "image",
            "dataset": real.info.name,
            "num_classes": real.num_classes,
            "class_names": list(real.info.class_names),
            "ipc": ipc,
            "encoding": real.encoding.to_meta(),
            "labels": "hard",
            "learned": [],
            # The network the set was distilled with is the default evaluation network: the norm of the
            # evaluation net alone moves scores by several points (DataDAM issue #8).
            "eval_model": model,
            "eval_model_kwargs": dict(model_kwargs or {}),
            "seed": self.seed,
            "config": to_dict(self.config),
            "ddistill_version": __version__,
        }
        if real.spec is not None:
            meta["data"] = to_dict(real.spec)
        meta.update(extra)
        return meta

    def check_ipc(self, real: RealData, ipc: int) -> None:
        if ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {ipc} (synthesizer.ipc)")
        smallest = min(real.class_count(c) for c in range(real.num_classes))
        if ipc > smallest:
            worst = min(range(real.num_classes), key=real.class_count)
            if smallest == 0:
                raise ValueError(f"class {worst} ({real.class_name(worst)}) has no real training images; every class "
                                 f"needs at least ipc={ipc}")
            raise ValueError(f"ipc={ipc} is larger than class {worst} ({real.class_name(worst)}), which has only "
                             f"{smallest} real images; choose ipc <= {smallest}")


@dataclass
class LoopConfig:
    """Fields the optimisation loop reads (every iterative method's config extends this).

    Args:
        iterations: optimisation steps.
        checkpoint_every: steps between checkpoints when the run is checkpointed (0 = only at the end).
    """

    iterations: int = 1000
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0 = only at the end), got {self.checkpoint_every}")


@dataclass
class GradientConfig(LoopConfig):
    """Fields of the image methods that learn ``ipc`` images per class (subclass configs extend this).

    Args:
        ipc: synthetic images per class.
        init: "real" (random real images of the class) or "noise" (standard normal in the encoded space).
    """

    ipc: int = 10
    init: str = "real"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")


class GradientSynthesizer(Synthesizer):
    """Optimises learnable synthetic tensors; subclasses define what is learned and the loss."""

    #: checkpoint file format (see :meth:`state_dict`)
    CHECKPOINT_FORMAT: ClassVar[str] = "ddistill.checkpoint"
    #: Whether :meth:`loss` computes only this rank's share of the loss (see :mod:`ddistill.distributed`): the loop
    #: then sums the losses, the named terms (except :attr:`replicated_terms`) and the gradients over the ranks.
    #: Methods that do not share work run the whole loss on every rank.
    shares_work: ClassVar[bool] = False
    #: Named terms that are the same on every rank (e.g. a learned rate): logged as they are, never summed.
    replicated_terms: ClassVar[tuple[str, ...]] = ()

    @property
    def backward_in_loss(self) -> bool:
        """True when :meth:`loss` back-propagates its own parts as it computes them (freeing each part's graph) and
        returns a detached total: the loop then skips ``loss.backward()``. False by default."""
        return False

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", seed: int = 0,
                 dist: Distributed | None = None) -> None:
        super().__init__(config, device=device, seed=seed, dist=dist)
        # All sampling (real batches, augmentation parameters) draws from this one CPU generator, whose
        # state is checkpointed: a resumed run continues the exact same random stream.
        self.generator = make_generator(self.seed)
        self.params = nn.ParameterDict()
        self.opts: list[torch.optim.Optimizer] = []
        self.labels: Tensor | None = None
        self.iteration = 0

    # -- what a method implements --------------------------------------------------------------
    def build(self, real: RealData) -> None:
        """Creates the method's machinery (network families, augmentation, expert buffers, teachers); called once per
        run before :meth:`init_synthetic`. Nothing by default."""

    @abstractmethod
    def init_synthetic(self, real: RealData) -> dict[str, nn.Parameter]:
        """The learnable tensors at step 0, e.g. ``{"x": (K*ipc, C, H, W)}`` (labels come from :meth:`make_labels`)."""

    @abstractmethod
    def loss(self, real: RealData, step: int) -> Tensor | tuple[Tensor, dict[str, float]]:
        """The method's objective at ``step``: a 0-d tensor with a graph to ``self.params``, optionally with named
        terms (floats) that are logged next to the loss."""

    @abstractmethod
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers of the learnable tensors."""

    @abstractmethod
    def evaluation_model(self) -> tuple[str | None, dict[str, Any]]:
        """The network the set was distilled with (the default evaluation network)."""

    def after_step(self, step: int) -> None:
        """Hook after each optimiser step (e.g. a model-pool update)."""

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state to checkpoint (tensors and plain values only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`extra_state`."""

    def make_labels(self, real: RealData) -> Tensor | None:
        """Class labels of the synthetic images (class-major, ``ipc`` each); None for label-free methods."""
        return torch.arange(real.num_classes, device=self.device).repeat_interleave(self.config.ipc)

    def synthetic_set(self, real: RealData) -> SyntheticSet:
        """Detached CPU copy of the learned tensors with full metadata."""
        tensors = {"x": self.params["x"].detach().cpu().clone(), "y": self.labels.detach().cpu().clone()}
        tensors.update(real.encoding.tensors())
        return SyntheticSet(tensors, self.base_meta(real, ipc=self.config.ipc, learned=sorted(self.params.keys()),
                                                    step=self.iteration))

    # -- the loop -----------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return int(self.config.iterations)

    @property
    def completed_steps(self) -> int:
        return self.iteration

    def setup(self, real: RealData) -> None:
        """Creates the learnable tensors and optimisers (idempotent for a given seed)."""
        self.labels = self.make_labels(real)
        self.build(real)
        self.params = nn.ParameterDict(self.init_synthetic(real))
        self.opts = self.optimizers()
        self.iteration = 0

    def synthesize(self, real: RealData) -> SyntheticSet:
        """Runs steps until ``config.iterations`` (continuing from a loaded state) or a stop request."""
        while self.iteration < self.total_steps and not self.stop_requested:
            logs = self.step(real)
            self.log_step(self.iteration, logs)
        return self.synthetic_set(real)

    def step(self, real: RealData) -> dict[str, float]:
        """One optimisation step: loss, divergence check, backward, optimiser steps, :meth:`after_step`.

        Returns the logs of the step (``loss`` and the method's named terms).
        """
        step = self.iteration
        # Cleared before the loss: a method with backward_in_loss accumulates its gradients while computing it.
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        out = self.loss(real, step)
        loss, terms = out if isinstance(out, tuple) else (out, {})
        value = float(loss.detach())
        shared = self.shares_work and self.dist.enabled
        if shared:  # every rank sees the whole loss (a NaN on one rank stops all of them at the same step)
            summed = self.dist.sum_floats({"loss": value, **{k: float(v) for k, v in terms.items()
                                                               if k not in self.replicated_terms}})
            value = summed.pop("loss")
            terms = {**terms, **summed}
        if not math.isfinite(value):
            raise FloatingPointError(f"{self.name} loss is {value} at step {step}: the optimisation diverged. "
                                     f"{self._lr_hint()}, or check the real data for NaN")
        if not self.backward_in_loss:
            loss.backward()
        if shared:
            self.dist.sum_gradients_(self.params.values())
        for opt in self.opts:
            opt.step()
        self._check_params(step)
        self.after_step(step)
        self.iteration = step + 1
        return {"loss": value, **{k: float(v) for k, v in terms.items()}}

    def learning_rates(self) -> dict[str, float]:
        """The effective learning rate of every learned tensor (from the optimisers' parameter groups)."""
        names = {id(p): k for k, p in self.params.items()}
        out = {}
        for opt in self.opts:
            for group in opt.param_groups:
                for p in group["params"]:
                    out[names.get(id(p), "?")] = float(group["lr"])
        return out

    def _lr_hint(self) -> str:
        rates = ", ".join(f"{k}: {v:g}" for k, v in self.learning_rates().items())
        return f"Effective learning rates ({rates}); lower the learning rate in the synthesizer config"

    def _check_params(self, step: int) -> None:
        with torch.no_grad():
            for k, p in self.params.items():
                if not torch.isfinite(p).all():
                    raise FloatingPointError(f"{self.name}: the learned '{k}' became NaN/Inf at step {step}. "
                                             f"{self._lr_hint()}")
                if k == "x" and float(p.abs().max()) > DIVERGENCE_LIMIT:
                    raise FloatingPointError(
                        f"{self.name}: the synthetic images diverged at step {step} (max |x| = "
                        f"{float(p.abs().max()):.3g}, real images are O(1) in the encoded space). {self._lr_hint()}")

    # -- checkpointable state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit: tensors, optimiser states, the generator state, the step and
        the method's extra state."""
        return {
            "synthesizer": self.name,
            "step": self.iteration,
            "seed": self.seed,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": [opt.state_dict() for opt in self.opts],
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["synthesizer"] != self.name or state["seed"] != self.seed:
            raise ValueError(f"the checkpoint belongs to synthesizer {state['synthesizer']!r} seed {state['seed']}, "
                             f"not {self.name!r} seed {self.seed}; use a fresh run directory")
        with torch.no_grad():
            for k, v in state["params"].items():
                if k not in self.params or self.params[k].shape != v.shape:
                    raise ValueError(f"checkpoint tensor {k} {tuple(v.shape)} does not fit this run's config")
                self.params[k].copy_(v.to(self.device))
        for opt, opt_state in zip(self.opts, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self.generator.set_state(state["generator"])
        self.iteration = int(state["step"])
        self.load_extra_state(state["extra"])

    # -- helpers for image methods ------------------------------------------------------------
    def init_images(self, real: RealData, ipc: int, init: str) -> Tensor:
        """(K*ipc, C, H, W) initial images, class-major: random real images of each class, or noise."""
        self.check_ipc(real, ipc)
        if init == "real":
            idx = torch.cat([real.sample_indices(c, ipc, self.generator, strict=True)
                             for c in range(real.num_classes)])
            return real.x[idx].detach().clone().to(self.device)
        if init == "noise":
            shape = (real.num_classes * ipc, *real.x.shape[1:])
            return torch.randn(shape, generator=self.generator).to(self.device)
        raise ValueError(f"unknown init '{init}'; choose from ['noise', 'real']")
