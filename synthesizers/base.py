"""Synthesizer interface and the gradient-based optimisation loop the method classes fill in.

``Synthesizer.fit(real) -> SyntheticSet`` is the whole contract. ``GradientSynthesizer`` owns the loop
(optimisers, NaN check, callbacks, atomic checkpoints, resume); a method supplies ``init_synthetic`` and
``loss`` (template method pattern), plus ``optimizers``/``after_step`` when it needs them.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import ddistill
from ddistill.config import to_dict
from ddistill.data import RealData
from ddistill.registry import Registry
from ddistill.synset import SyntheticSet, atomic_torch_save
from ddistill.utils.seed import make_generator

SYNTHESIZERS = Registry("synthesizer")

#: ``callback(synthesizer, step, logs)`` called after every optimisation step (step counts from 1).
Callback = Callable[["Synthesizer", int, dict[str, float]], None]

CHECKPOINT_FORMAT = "ddistill.checkpoint"


class Synthesizer(ABC):
    """Turns a real training set into a :class:`SyntheticSet`.

    Args:
        config: an instance of the subclass's ``Config`` dataclass (None = defaults).
        device: where tensors live and models run.
        seed: the only source of randomness (through explicit generators).
    """

    Config: ClassVar[type]
    name: ClassVar[str] = ""
    #: Named sets of config values (e.g. a paper's setting vs its official code's), see :meth:`config_from_preset`.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def config_from_preset(cls, preset: str | None = None, **overrides: Any) -> Any:
        """``Config`` filled from the named preset, then ``overrides`` (strict: unknown keys raise)."""
        from ddistill.config import from_dict

        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise KeyError(f"unknown preset '{preset}' for {cls.name}; choose from {sorted(cls.presets)}")
            values.update(cls.presets[preset])
        values.update(overrides)
        return from_dict(cls.Config, values, where=f"{cls.name} config")

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.device = torch.device(device)
        self.seed = int(seed)

    @abstractmethod
    def fit(self, real: RealData, *, callbacks: Sequence[Callback] = ()) -> SyntheticSet:
        """Distils ``real`` into a synthetic set."""

    # -- shared helpers ----------------------------------------------------------------------
    def base_meta(self, real: RealData, **extra: Any) -> dict[str, Any]:
        """Metadata every image set records (see the SyntheticSet format in the README)."""
        meta = {
            "synthesizer": self.name or type(self).__name__.lower(),
            "dataset": real.info.name,
            "num_classes": real.num_classes,
            "class_names": list(real.info.class_names),
            "ipc": getattr(self.config, "ipc", None),
            "encoding": real.encoding.to_meta(),
            "labels": "hard",
            "learned": [],
            # The network the set was distilled with is the default evaluation network: the norm of the
            # evaluation net alone moves scores by several points (DataDAM issue #8).
            "eval_model": getattr(self.config, "model", None),
            "eval_model_kwargs": dict(getattr(self.config, "model_kwargs", None) or {}),
            "seed": self.seed,
            "config": to_dict(self.config),
            "ddistill_version": ddistill.__version__,
        }
        meta.update(extra)
        return meta

    def check_ipc(self, real: RealData, ipc: int) -> None:
        if ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {ipc}")
        smallest = min(real.class_count(c) for c in range(real.num_classes))
        if ipc > smallest:
            worst = min(range(real.num_classes), key=real.class_count)
            raise ValueError(f"ipc={ipc} is larger than class {worst} ({real.class_name(worst)}), which has only "
                             f"{smallest} real images; choose ipc <= {smallest}")


@dataclass
class GradientConfig:
    """Fields every gradient-based synthesizer has (subclass configs extend this).

    Args:
        ipc: synthetic images per class.
        iterations: optimisation steps.
        init: "real" (random real images of the class) or "noise" (standard normal in the encoded space).
        checkpoint_every: steps between atomic checkpoints when a checkpoint path is given (0 = only at the end).
    """

    ipc: int = 10
    iterations: int = 1000
    init: str = "real"
    checkpoint_every: int = 100


class GradientSynthesizer(Synthesizer):
    """Optimises learnable synthetic tensors; subclasses define what is learned and the loss."""

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__(config, device=device, seed=seed)
        # All sampling (real batches, augmentation parameters) draws from this one CPU generator, whose
        # state is checkpointed: a resumed run continues the exact same random stream.
        self.generator = make_generator(self.seed)
        self.params = nn.ParameterDict()
        self.step = 0

    # -- what a method implements --------------------------------------------------------------
    @abstractmethod
    def init_synthetic(self, real: RealData) -> dict[str, nn.Parameter]:
        """Learnable tensors, e.g. ``{"x": (K*ipc, C, H, W)}``; labels go in :attr:`buffers`."""

    @abstractmethod
    def loss(self, real: RealData, step: int) -> Tensor:
        """The method's objective at ``step`` (a 0-d tensor with a graph to ``self.params``)."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Default: SGD on all learnable tensors with the config's ``lr_images`` and ``momentum``."""
        lr = getattr(self.config, "lr_images", 1.0)
        momentum = getattr(self.config, "momentum", 0.5)
        return [torch.optim.SGD(self.params.values(), lr=lr, momentum=momentum)]

    def after_step(self, step: int) -> None:
        """Hook after each optimiser step (e.g. a model-pool update)."""

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state to checkpoint (tensors and plain values only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`extra_state`."""

    def synthetic_set(self, real: RealData) -> SyntheticSet:
        """Detached CPU copy of the learned tensors with full metadata."""
        tensors = {"x": self.params["x"].detach().cpu().clone(), "y": self.labels.detach().cpu().clone()}
        tensors.update(real.encoding.tensors())
        return SyntheticSet(tensors, self.base_meta(real, learned=sorted(self.params.keys()), step=self.step))

    # -- the loop -----------------------------------------------------------------------------
    def setup(self, real: RealData) -> None:
        """Creates the learnable tensors and optimisers (idempotent for a given seed)."""
        self.labels = self.make_labels(real)
        self.params = nn.ParameterDict(self.init_synthetic(real))
        self.opts = self.optimizers()
        self.step = 0

    def make_labels(self, real: RealData) -> Tensor:
        ipc = self.config.ipc
        return torch.arange(real.num_classes, device=self.device).repeat_interleave(ipc)

    def fit(self, real: RealData, *, callbacks: Sequence[Callback] = (), checkpoint: str | Path | None = None,
            resume: bool = False, progress: bool = True) -> SyntheticSet:
        """Runs ``config.iterations`` steps (continuing from ``checkpoint`` when ``resume``).

        Args:
            real: the class-indexed real training data.
            callbacks: called as ``cb(self, step, logs)`` after each step.
            checkpoint: path of the atomic checkpoint, written every ``config.checkpoint_every`` steps
                and at the end.
            resume: load ``checkpoint`` first if it exists.
        """
        self.setup(real)
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint)
        every = int(getattr(self.config, "checkpoint_every", 0) or 0)
        total = int(self.config.iterations)
        bar = tqdm(range(self.step, total), initial=self.step, total=total, desc=f"distill {self.name}",
                   disable=not progress, mininterval=1.0)
        for step in bar:
            loss = self.loss(real, step)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{self.name} loss is {value} at step {step}; the synthetic images diverged. Lower the image "
                    f"learning rate (now {getattr(self.config, 'lr_images', '?')}) or check the real data for NaN"
                )
            for opt in self.opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in self.opts:
                opt.step()
            self.after_step(step)
            self.step = step + 1
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            # Checkpoint before callbacks: a failing callback (e.g. a periodic evaluation) loses no work.
            if checkpoint is not None and every and self.step % every == 0 and self.step < total:
                self.save_checkpoint(checkpoint)
            logs = {"loss": value}
            for cb in callbacks:
                cb(self, self.step, logs)
        if checkpoint is not None:
            self.save_checkpoint(checkpoint)
        return self.synthetic_set(real)

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> None:
        """Atomically writes everything needed to continue bit-for-bit: tensors, optimiser states,
        the generator state, the step and the method's extra state."""
        atomic_torch_save({
            "format": CHECKPOINT_FORMAT,
            "synthesizer": self.name,
            "step": self.step,
            "seed": self.seed,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": [opt.state_dict() for opt in self.opts],
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }, path)

    def load_checkpoint(self, path: str | Path) -> None:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a ddistill checkpoint")
        if blob["synthesizer"] != self.name or blob["seed"] != self.seed:
            raise ValueError(f"{path} belongs to synthesizer {blob['synthesizer']!r} seed {blob['seed']}, not "
                             f"{self.name!r} seed {self.seed}; use a fresh run directory")
        with torch.no_grad():
            for k, v in blob["params"].items():
                if k not in self.params or self.params[k].shape != v.shape:
                    raise ValueError(f"checkpoint tensor {k} {tuple(v.shape)} does not fit this run's config")
                self.params[k].copy_(v.to(self.device))
        for opt, state in zip(self.opts, blob["optimizers"]):
            opt.load_state_dict(state)
        self.generator.set_state(blob["generator"])
        self.step = int(blob["step"])
        self.load_extra_state(blob["extra"])

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
