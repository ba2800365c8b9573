"""Expert trajectories for trajectory matching (MTT; Cazenavette et al., "Dataset Distillation by Matching Training
Trajectories", CVPR 2022) and AST's smooth experts (Shen, Yang & Lam, "AST: Effective Dataset Distillation through
Alignment with Smooth and High-Quality Expert Trajectories", arXiv 2310.10541).

An *expert* is a network trained on the real training set; its *trajectory* is the flat parameter vector theta*_t
recorded at initialisation and after every epoch (``epochs + 1`` snapshots). MTT (Sec. 3.1, ``buffer.py``) trains
with plain SGD; AST makes the trajectory smoother, i.e. the per-epoch change ||theta*_{t+1} - theta*_t|| small and
steady, with

- a *clipping loss*: the cross-entropy scaled by a factor rising 0.5, 0.55, ..., 0.95 over the first ten epochs
  (then 1), which damps the large early updates;
- a *gradient penalty* (WGAN-GP style, on the clean input): lambda * mean_(b,h,w) (||d sum(logits) / dx||_c - 1)^2;
- a different optimiser recipe: SGD momentum 0.9, weight decay 1e-3, lr 0.003 scaled by 0.6 at mid-training.

This module holds the expert training function, the self-describing on-disk format (:class:`ExpertFile`), the merge of
sharded runs, a lazily loading :class:`ExpertBuffer` over a folder of files, and the smoothness measure.

Reproducibility: expert ``i`` of a run with seed ``s`` draws its initial weights from
``ModelFamily(seed=f(s)).build(i)`` and its shuffling and augmentation from a generator seeded with
``derive_seed(s, stream, i)``. Nothing else is random, so expert ``i`` is bit-identical whether it is trained alone,
in shard k of n, or in one run of all experts.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddistill.augment import AUGMENTS, build_augment
from ddistill.data import RealData
from ddistill.models import ModelFamily
from ddistill.synset import atomic_torch_save
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainSchedule, train_classifier

__all__ = [
    "EXPERT_PRESETS",
    "ExpertBuffer",
    "ExpertConfig",
    "ExpertFile",
    "ExpertFileError",
    "ExpertLoss",
    "ParamLayout",
    "STORAGE_DTYPES",
    "expert_config_from_preset",
    "expert_family",
    "gradient_penalty",
    "load_flat_",
    "merge_expert_files",
    "train_expert",
    "trajectory_smoothness",
]

FORMAT = "ddistill.experts"
VERSION = 1

#: ``derive_seed`` stream ids: weight initialisation and data order/augmentation of expert ``i`` (never reused).
_INIT_STREAM = 0x5E1
_DATA_STREAM = 0x5E2

#: AST's clipping-loss factors for epochs 0..9 (``buffer.py``, ``--loss_decay``); later epochs use 1.
AST_CLIP_FACTORS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)

#: Storage dtypes of trajectories (bf16 halves the 6.5 GB of 100 CIFAR-10 ConvNet-3 experts).
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------
# Flat parameter vectors
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamLayout:
    """How a flat parameter vector splits into a module's named parameters (``named_parameters`` order).

    Args:
        names: parameter names, e.g. ``("blocks.0.conv.weight", ...)``.
        shapes: one shape per name.

    Shape:
        flat vectors: (P,) with P = sum of the shapes' element counts.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def numel(self) -> int:
        return sum(self.numels)

    def flatten(self, module: nn.Module) -> Tensor:
        """Detached float32 CPU copy of ``module``'s parameters as one vector. Shape: (P,)."""
        # reshape (not view) copies channels_last conv weights into logical order.
        return torch.cat([p.detach().reshape(-1).float().cpu() for p in module.parameters()])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` shaped like the parameters, for ``torch.func.functional_call`` (keeps the graph)."""
        if flat.dim() != 1 or flat.numel() != self.numel:
            raise ValueError(f"flat parameter vector has shape {tuple(flat.shape)}, expected ({self.numel},)")
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.numels), self.shapes)}

    def slices(self) -> list[tuple[str, slice, tuple[int, ...]]]:
        """``(name, slice into the flat vector, shape)`` per parameter."""
        out, start = [], 0
        for n, s, k in zip(self.names, self.shapes, self.numels):
            out.append((n, slice(start, start + k), s))
            start += k
        return out


@torch.no_grad()
def load_flat_(module: nn.Module, flat: Tensor) -> nn.Module:
    """Copies the flat vector ``flat`` (P,) into ``module``'s parameters in place; returns the module."""
    layout = ParamLayout.from_module(module)
    for p, v in zip(module.parameters(), layout.unflatten(flat.to(torch.float32)).values()):
        p.copy_(v.to(p.device, p.dtype))
    return module


def trajectory_smoothness(trajectory: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-epoch parameter change ||theta*_{t+1} - theta*_t||_2 of one expert (AST's smoothness notion).

    Smaller, steadier values are a smoother trajectory, which the student can follow more easily (AST Sec. 3.2).

    Shape: ``epochs + 1`` flat vectors (or an (E+1, P) tensor) -> (E,) float64.
    """
    snaps = list(trajectory)
    if len(snaps) < 2:
        raise ValueError("a trajectory needs at least two snapshots to measure its per-epoch change")
    return torch.stack([(b.double() - a.double()).norm() for a, b in zip(snaps[:-1], snaps[1:])])


# ---------------------------------------------------------------------------------------------------------------
# Expert training
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ExpertConfig:
    """How one expert is trained. Defaults: MTT's ``buffer.py`` (SGD lr 0.01, no momentum, no weight decay, batch 256,
    50 epochs, DSA on, no lr decay); preset ``ast`` switches on AST's smoothing (see :data:`EXPERT_PRESETS`).

    Args:
        preset: name of the preset these values came from ("mtt", "ast", ... or "custom"), recorded in the files.
        model: registered network (the distillation/evaluation architecture, ConvNet-3 in the papers).
        model_kwargs: architecture overrides.
        epochs: training epochs (``epochs + 1`` snapshots are recorded).
        lr: initial SGD learning rate.
        momentum, weight_decay: SGD settings.
        batch_size: mini-batch size.
        lr_decay: factor applied once at ``lr_decay_epoch`` (the SGD optimiser is rebuilt then, dropping its
            momentum, as both official codes do).
        lr_decay_epoch: first epoch index trained with the decayed rate; None = never; "mid" = ``epochs // 2 + 2``,
            the timing of AST's ``buffer.py`` (it decays after finishing epoch ``epochs // 2 + 1``).
        augment: "dsa" (fresh per-sample DSA parameters on every batch, as MTT) or "none".
        dsa_strategy: None = the dataset's default strategy (no flip for digits).
        clip_loss: AST's clipping loss: scale the cross-entropy of epoch e by ``clip_factors[e]`` (1 after them).
        clip_factors: the clipping schedule; AST 0.5, 0.55, ..., 0.95 over the first ten epochs.
        grad_penalty: lambda of AST's gradient penalty on the clean input (0 = off; AST uses 2).
        perf: speed settings; bf16 autocast and compile are off by default because the gradient penalty
            differentiates twice and trajectories are meant to be exact.
    """

    preset: str = "mtt"
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    lr_decay: float = 1.0
    lr_decay_epoch: int | str | None = None
    augment: str = "dsa"
    dsa_strategy: str | None = None
    clip_loss: bool = False
    clip_factors: list[float] = field(default_factory=lambda: list(AST_CLIP_FACTORS))
    grad_penalty: float = 0.0
    perf: PerfConfig = field(default_factory=lambda: PerfConfig(channels_last=None, bf16=False, compile=False))

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if isinstance(self.lr_decay_epoch, str) and self.lr_decay_epoch != "mid":
            raise ValueError(f"lr_decay_epoch must be an int, null or 'mid', not {self.lr_decay_epoch!r}")
        if self.grad_penalty < 0:
            raise ValueError(f"grad_penalty must be >= 0 (0 = off), got {self.grad_penalty}")
        AUGMENTS.get(self.augment)  # unknown names list the choices

    def decay_epoch(self) -> int | None:
        """First epoch trained with ``lr * lr_decay``, or None."""
        if self.lr_decay_epoch is None or self.lr_decay == 1.0:
            return None
        if self.lr_decay_epoch == "mid":
            return self.epochs // 2 + 2
        return int(self.lr_decay_epoch)

    def clip_factor(self, epoch: int) -> float:
        """Cross-entropy factor of ``epoch`` (AST clipping loss; 1 when off or after the schedule)."""
        if not self.clip_loss or epoch >= len(self.clip_factors):
            return 1.0
        return float(self.clip_factors[epoch])

    def schedule(self) -> TrainSchedule:
        decay = self.decay_epoch()
        return TrainSchedule(self.epochs, self.lr, self.momentum, self.weight_decay, self.batch_size,
                             lr_decay_epoch=-1 if decay is None else decay, lr_decay=self.lr_decay,
                             rebuild_optimizer_at_decay=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Expert recipes. ``mtt``: MTT's ``buffer.py``. ``ast``: AST's ``buffer.py`` with ``--optim SGDMOM --loss_decay
#: --gp True`` (its README command): SGD momentum 0.9, wd 1e-3, lr 0.003 x0.6 after mid-training, clipping loss and
#: gradient penalty (lambda 2). ``ast_optim``: the AST optimiser recipe alone (for ablations of the two switches).
EXPERT_PRESETS: dict[str, dict[str, Any]] = {
    "mtt": {"preset": "mtt", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "lr_decay": 1.0,
            "lr_decay_epoch": None, "clip_loss": False, "grad_penalty": 0.0},
    "ast": {"preset": "ast", "lr": 0.003, "momentum": 0.9, "weight_decay": 1e-3, "lr_decay": 0.6,
            "lr_decay_epoch": "mid", "clip_loss": True, "grad_penalty": 2.0},
    "ast_optim": {"preset": "ast_optim", "lr": 0.003, "momentum": 0.9, "weight_decay": 1e-3, "lr_decay": 0.6,
                  "lr_decay_epoch": "mid", "clip_loss": False, "grad_penalty": 0.0},
}


def expert_config_from_preset(preset: str | None = None, **overrides: Any) -> ExpertConfig:
    """``ExpertConfig`` filled from ``EXPERT_PRESETS[preset]`` then ``overrides`` (strict: unknown keys raise)."""
    from ddistill.config import from_dict

    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in EXPERT_PRESETS:
            raise KeyError(f"unknown expert preset '{preset}'; choose from {sorted(EXPERT_PRESETS)}")
        values.update(EXPERT_PRESETS[preset])
    values.update(overrides)
    return from_dict(ExpertConfig, values, where="experts")


def gradient_penalty(model: nn.Module, x: Tensor) -> Tensor:
    """AST's gradient penalty (WGAN-GP form, Gulrajani et al. 2017) on the clean input:
    mean over (b, h, w) of (||d sum(f(x)) / dx[b, :, h, w]||_2 - 1)^2, the norm taken over channels as in AST's
    ``utils.epoch_gp``. ``create_graph`` so that the penalty itself is trained (double backward).

    Shape: x (B, C, H, W) -> ().
    """
    x = x.detach().requires_grad_(True)
    out = model(x).float()
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return ((grad.norm(p=2, dim=1) - 1.0) ** 2).mean()


class ExpertLoss:
    """Per-batch loss of expert training: DSA, forward, cross-entropy x the clipping factor of the epoch, plus the
    gradient penalty. Used as ``train_classifier(..., loss_fn=ExpertLoss(...))``.

    Args:
        config: the expert recipe.
        augment: module called as ``augment(x, generator=generator)`` (per-sample parameters), or None.
        generator: the expert's generator (shared with the loop's shuffling, so the stream is one sequence).
        perf: resolved speed settings.
    """

    def __init__(self, config: ExpertConfig, augment: nn.Module | None, generator: torch.Generator,
                 perf: PerfConfig) -> None:
        self.config, self.augment, self.generator, self.perf = config, augment, generator, perf

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor, epoch: int) -> Tensor:
        xa = self.augment(xb, generator=self.generator) if self.augment is not None else xb
        xa = self.perf.prepare_input(xa)
        with self.perf.autocast(xb.device):
            out = model(xa)
        loss = F.cross_entropy(out.float(), yb) * self.config.clip_factor(epoch)
        if self.config.grad_penalty > 0:
            # On the clean (unaugmented) batch, as AST's epoch_gp; outside autocast: second-order terms in bf16
            # would be mostly rounding noise.
            loss = loss + self.config.grad_penalty * gradient_penalty(model, self.perf.prepare_input(xb))
        return loss


def expert_family(real: RealData, config: ExpertConfig, seed: int) -> ModelFamily:
    """The stream of expert initialisations of a run: expert ``i`` starts from ``expert_family(...).build(i)``."""
    return ModelFamily(config.model, in_channels=real.x.shape[1], num_classes=real.num_classes,
                       image_size=tuple(real.x.shape[2:]), seed=derive_seed(seed, _INIT_STREAM), **config.model_kwargs)


def train_expert(real: RealData, config: ExpertConfig, *, index: int, seed: int,
                 device: torch.device | str = "cpu", progress: bool | str = False) -> list[Tensor]:
    """Trains expert ``index`` of the run ``seed`` on all of ``real`` and records its trajectory (MTT Sec. 3.1).

    The randomness of expert ``index`` derives only from ``(seed, index)``: shards of a run are independent and
    give bit-identical experts.

    Args:
        real: the encoded real training set (ZCA or mean/std, as the distillation will use).
        config: the training recipe (MTT or AST).
        index: expert number within the run.
        seed: run seed.
        device: where the network trains.
        progress: tqdm bar over epochs (a string is its description).

    Returns:
        ``config.epochs + 1`` float32 CPU vectors: theta*_0 (initialisation) and theta*_e after every epoch e.

    Shape: each snapshot (P,), P = number of network parameters.
    """
    device = torch.device(device)
    model = expert_family(real, config, seed).build(index, device)
    layout = ParamLayout.from_module(model)
    generator = make_generator(derive_seed(seed, _DATA_STREAM, index))
    perf = config.perf.resolve(device)
    augment = build_augment(config.augment, real.info.name, config.dsa_strategy)
    snapshots = [layout.flatten(model)]
    # Snapshots are read from the original module: a compiled wrapper renames parameters (``_orig_mod.``).
    trained = perf.prepare_model(model)
    train_classifier(trained, real.x, real.y.to(real.x.device), config.schedule(), generator=generator, perf=perf,
                     loss_fn=ExpertLoss(config, augment, generator, perf), progress=progress,
                     on_epoch_end=lambda epoch, loss: snapshots.append(layout.flatten(model)))
    return snapshots


# ---------------------------------------------------------------------------------------------------------------
# The on-disk format
# ---------------------------------------------------------------------------------------------------------------
class ExpertFileError(ValueError):
    """A file is not a readable ddistill expert file (foreign, truncated, inconsistent or from a newer version)."""


#: Keys that must agree between files of one run (and between shards being merged).
HEADER_KEYS = ("model", "model_kwargs", "model_args", "param_names", "param_shapes", "encoding", "dataset", "seed",
               "expert_config", "storage_dtype")


@dataclass
class ExpertFile:
    """A group of expert trajectories with everything needed to use them: the architecture (to rebuild the student
    for ``functional_call``), the parameter layout, the data encoding (ZCA or not: mixing them silently ruins a
    distillation), the dataset, the run seed and the training recipe.

    On disk (``torch.save``, loads with ``weights_only=True``)::

        {"format": "ddistill.experts", "version": 1, "model", "model_kwargs", "model_args", "param_names",
         "param_shapes", "encoding", "dataset", "seed", "expert_config", "storage_dtype", "expert_indices",
         "trajectories": [[flat tensor per snapshot] per expert], "test_accuracy": [float | None per expert],
         "ddistill_version"}

    Args:
        model, model_kwargs: registered network and overrides.
        model_args: ``{"in_channels", "num_classes", "image_size"}`` of the network.
        param_names, param_shapes: the flat-vector layout (``named_parameters`` order).
        encoding: ``Encoding.to_meta()`` of the data the experts saw (incl. the ZCA flag and eps).
        dataset: dataset name.
        seed: run seed (expert i is reproducible from (seed, i)).
        expert_config: the :class:`ExpertConfig` as a dict.
        expert_indices: run-level index of each expert, ascending.
        trajectories: per expert, ``epochs + 1`` flat vectors (float32 or bfloat16).
        test_accuracy: per expert, final test accuracy in % (None if not measured).
    """

    model: str
    model_kwargs: dict[str, Any]
    model_args: dict[str, Any]
    param_names: list[str]
    param_shapes: list[list[int]]
    encoding: dict[str, Any]
    dataset: str
    seed: int
    expert_config: dict[str, Any]
    expert_indices: list[int] = field(default_factory=list)
    trajectories: list[list[Tensor]] = field(default_factory=list)
    test_accuracy: list[float | None] = field(default_factory=list)
    storage_dtype: str = "float32"

    @classmethod
    def for_run(cls, real: RealData, config: ExpertConfig, seed: int, *,
                storage_dtype: str = "float32") -> "ExpertFile":
        """An empty file describing the experts of run ``seed`` with ``config`` on ``real``."""
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"unknown storage dtype '{storage_dtype}'; choose from {sorted(STORAGE_DTYPES)}")
        layout = ParamLayout.from_module(expert_family(real, config, seed).build(0))
        return cls(config.model, dict(config.model_kwargs),
                   {"in_channels": int(real.x.shape[1]), "num_classes": int(real.num_classes),
                    "image_size": [int(s) for s in real.x.shape[2:]]},
                   list(layout.names), [list(s) for s in layout.shapes], real.encoding.to_meta(), real.info.name,
                   int(seed), config.to_dict(), storage_dtype=storage_dtype)

    # -- content -------------------------------------------------------------------------------------------------
    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(tuple(self.param_names), tuple(tuple(s) for s in self.param_shapes))

    @property
    def num_epochs(self) -> int | None:
        return len(self.trajectories[0]) - 1 if self.trajectories else None

    def header(self) -> dict[str, Any]:
        """The run-describing keys, in canonical JSON form (lists, not tuples), so headers compare by content.

        The JSON round trip also gives the saved pickle a canonical object structure: pickle output depends on
        which strings are shared objects, and without it a merged file would hold the same data in other bytes.
        """
        return json.loads(json.dumps({k: getattr(self, k) for k in HEADER_KEYS}))

    def add(self, index: int, trajectory: Sequence[Tensor], test_accuracy: float | None = None) -> None:
        """Appends expert ``index`` (kept in ascending index order)."""
        if index in self.expert_indices:
            raise ValueError(f"expert {index} is already in this file")
        dtype = STORAGE_DTYPES[self.storage_dtype]
        numel = self.layout.numel
        snaps = []
        for t in trajectory:
            if t.dim() != 1 or t.numel() != numel:
                raise ValueError(f"snapshot of shape {tuple(t.shape)} does not match the layout ({numel},)")
            snaps.append(t.detach().to("cpu", dtype).clone())
        if self.trajectories and len(snaps) != len(self.trajectories[0]):
            raise ValueError(f"expert {index} has {len(snaps)} snapshots, the file's experts have "
                             f"{len(self.trajectories[0])}")
        pos = sum(1 for i in self.expert_indices if i < index)
        self.expert_indices.insert(pos, int(index))
        self.trajectories.insert(pos, snaps)
        self.test_accuracy.insert(pos, None if test_accuracy is None else float(test_accuracy))

    def trajectory(self, position: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """The ``position``-th expert of the file as one tensor. Shape: (epochs + 1, P)."""
        return torch.stack([t.to(dtype) for t in self.trajectories[position]])

    def smoothness(self) -> Tensor:
        """Per-epoch parameter change of every expert. Shape: (num experts, epochs) float64."""
        return torch.stack([trajectory_smoothness(t) for t in self.trajectories])

    def build_model(self, flat: Tensor | None = None, *, device: torch.device | str = "cpu") -> nn.Module:
        """The expert architecture, with the parameters ``flat`` (P,) if given."""
        from ddistill.models import create_model

        args = dict(self.model_args)
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
            model = create_model(self.model, in_channels=args["in_channels"], num_classes=args["num_classes"],
                                 image_size=tuple(args["image_size"]), **self.model_kwargs).to(device)
        if list(ParamLayout.from_module(model).names) != list(self.param_names):
            raise ExpertFileError(f"model '{self.model}' no longer has the parameters recorded in the expert file")
        return load_flat_(model, flat) if flat is not None else model

    # -- I/O -----------------------------------------------------------------------------------------------------
    def to_blob(self) -> dict[str, Any]:
        import ddistill

        return {"format": FORMAT, "version": VERSION, **self.header(), "expert_indices": list(self.expert_indices),
                "trajectories": self.trajectories, "test_accuracy": list(self.test_accuracy),
                "ddistill_version": ddistill.__version__}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the file atomically (temp file + rename): an interrupted save never truncates a good file."""
        return atomic_torch_save(self.to_blob(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False) -> "ExpertFile":
        """Reads and validates an expert file; ``mmap`` maps tensors lazily instead of reading them.

        Raises:
            FileNotFoundError: no file at ``path``.
            ExpertFileError: foreign or truncated file, newer format version, or inconsistent content.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no expert file at {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as e:  # truncated zips and foreign pickles raise several types
            first = str(e).splitlines()[0] if str(e) else ""
            raise ExpertFileError(f"{path} is not a readable ddistill expert file (truncated or not a torch file?): "
                                  f"{type(e).__name__}: {first}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
            raise ExpertFileError(f"{path} is not a ddistill expert file (format {found!r}, expected {FORMAT!r}); "
                                  f"MTT's replay_buffer_*.pt lists must be converted first")
        version = blob.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise ExpertFileError(f"{path} has expert format version {version}; this ddistill reads versions <= "
                                  f"{VERSION}: upgrade ddistill")
        missing = [k for k in (*HEADER_KEYS, "expert_indices", "trajectories", "test_accuracy") if k not in blob]
        if missing:
            raise ExpertFileError(f"{path} lacks the keys {missing}")
        out = cls(**{k: blob[k] for k in HEADER_KEYS}, expert_indices=list(blob["expert_indices"]),
                  trajectories=[list(t) for t in blob["trajectories"]], test_accuracy=list(blob["test_accuracy"]))
        out.validate(path)
        return out

    def validate(self, where: str | os.PathLike = "expert file") -> None:
        """Raises :class:`ExpertFileError` if the content is inconsistent."""
        n = len(self.expert_indices)
        if len(self.trajectories) != n or len(self.test_accuracy) != n:
            raise ExpertFileError(f"{where}: {n} expert indices but {len(self.trajectories)} trajectories and "
                                  f"{len(self.test_accuracy)} accuracies")
        if len(set(self.expert_indices)) != n or list(self.expert_indices) != sorted(self.expert_indices):
            raise ExpertFileError(f"{where}: expert indices must be unique and ascending, got {self.expert_indices}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ExpertFileError(f"{where}: unknown storage dtype {self.storage_dtype!r}")
        numel = self.layout.numel
        lengths = {len(t) for t in self.trajectories}
        if len(lengths) > 1:
            raise ExpertFileError(f"{where}: experts have different numbers of snapshots {sorted(lengths)}")
        for i, traj in zip(self.expert_indices, self.trajectories):
            for t in traj:
                if not isinstance(t, Tensor) or t.dim() != 1 or t.numel() != numel:
                    raise ExpertFileError(f"{where}: expert {i} has a snapshot that is not a ({numel},) vector")


def _header_mismatch(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in HEADER_KEYS if a.get(k) != b.get(k)]


def merge_expert_files(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                       require_complete: bool = True) -> Path:
    """Merges expert files of one run (e.g. the shards of ``scripts/train_experts.py``) into one file.

    The result is exactly the file one unsharded run writes: the same header and the experts in ascending index
    order with the same tensors.

    Args:
        paths: files to merge (any order).
        out: the merged file (written atomically).
        require_complete: the indices must be exactly 0..N-1 (no expert missing, e.g. from an unfinished shard).

    Raises:
        ExpertFileError: files from different runs (differing header keys are named), duplicated experts, or
            missing experts when ``require_complete``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("merge_expert_files needs at least one file")
    files = [ExpertFile.load(p, mmap=True) for p in paths]
    first = files[0]
    for p, f in zip(paths[1:], files[1:]):
        bad = _header_mismatch(first.header(), f.header())
        if bad:
            raise ExpertFileError(f"{p} and {paths[0]} come from different runs: they differ in {bad}")
    owner: dict[int, Path] = {}
    entries = []
    for p, f in zip(paths, files):
        for i, traj, acc in zip(f.expert_indices, f.trajectories, f.test_accuracy):
            if i in owner:
                raise ExpertFileError(f"expert {i} is in both {owner[i]} and {p}")
            owner[i] = p
            entries.append((i, traj, acc))
    entries.sort(key=lambda e: e[0])
    indices = [e[0] for e in entries]
    if require_complete and indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        raise ExpertFileError(f"experts {missing} are missing (unfinished shard?); pass require_complete=False to "
                              f"merge anyway")
    merged = ExpertFile(**first.header(), expert_indices=indices, trajectories=[e[1] for e in entries],
                        test_accuracy=[e[2] for e in entries])
    merged.validate(out)
    return merged.save(out)


# ---------------------------------------------------------------------------------------------------------------
# Lazy access to many files
# ---------------------------------------------------------------------------------------------------------------
def expert_paths(path: str | os.PathLike) -> list[Path]:
    """The expert files at ``path``: the file itself, or the ``*.pt`` files of a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.pt") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no expert files (*.pt) in {path}; train them with scripts/train_experts.py")
        return files
    raise FileNotFoundError(f"no expert file or folder at {path}; train experts with scripts/train_experts.py")


class ExpertBuffer:
    """Expert trajectories spread over many files, read one file at a time (MTT's default, non-``load_all`` mode).

    Sampling follows MTT's ``distill.py``: files are visited in a random order, the experts of the current file in
    a random order, and the order is redrawn when every file has been used. All draws come from the caller's
    generator, and :meth:`state_dict` captures the position, so a resumed distillation sees the same experts.
    Files are memory-mapped, so only the snapshots that are actually read cost memory.

    Args:
        path: an expert file or a folder of them (all from one run).
        max_experts: use only experts with index < max_experts (ablations, CPU budgets).
        mmap: memory-map files instead of reading them whole.
    """

    def __init__(self, path: str | os.PathLike, *, max_experts: int | None = None, mmap: bool = True) -> None:
        self.path = Path(path)
        self.mmap = mmap
        self.files: list[tuple[Path, list[int]]] = []
        header: dict[str, Any] | None = None
        owner: dict[int, Path] = {}
        epochs: int | None = None
        for p in expert_paths(path):
            f = ExpertFile.load(p, mmap=True)
            if header is None:
                header, header_path = f.header(), p
            else:
                bad = _header_mismatch(header, f.header())
                if bad:
                    raise ExpertFileError(f"{p} and {header_path} come from different runs: they differ in {bad}")
            for i in f.expert_indices:
                if i in owner:
                    raise ExpertFileError(f"expert {i} is in both {owner[i]} and {p}; keep one of the files")
                owner[i] = p
            if f.num_epochs is not None:
                if epochs is not None and f.num_epochs != epochs:
                    raise ExpertFileError(f"{p} holds {f.num_epochs}-epoch experts, other files {epochs}-epoch")
                epochs = f.num_epochs
            keep = [pos for pos, i in enumerate(f.expert_indices) if max_experts is None or i < max_experts]
            if keep:
                self.files.append((p, keep))
        if not self.files or header is None or epochs is None:
            raise ExpertFileError(f"no experts in {path}" + (f" with index < {max_experts}" if max_experts else ""))
        self.header = header
        self.num_epochs: int = epochs
        self._file_order: list[int] = []
        self._file_pos = -1
        self._expert_order: list[int] = []
        self._expert_pos = 0
        self._loaded: tuple[int, ExpertFile] | None = None

    @property
    def num_experts(self) -> int:
        return sum(len(k) for _, k in self.files)

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(tuple(self.header["param_names"]), tuple(tuple(s) for s in self.header["param_shapes"]))

    def _file(self, j: int) -> ExpertFile:
        if self._loaded is None or self._loaded[0] != j:
            self._loaded = None  # drop the previous file before mapping the next
            self._loaded = (j, ExpertFile.load(self.files[j][0], mmap=self.mmap))
        return self._loaded[1]

    def sample(self, generator: torch.Generator) -> tuple[int, list[Tensor]]:
        """Next expert: ``(run-level index, epochs + 1 flat snapshots)`` (stored dtype, CPU, possibly mmapped)."""
        if self._expert_pos >= len(self._expert_order):
            if self._file_pos + 1 >= len(self._file_order):
                self._file_order = torch.randperm(len(self.files), generator=generator).tolist()
                self._file_pos = -1
            self._file_pos += 1
            n = len(self.files[self._file_order[self._file_pos]][1])
            self._expert_order = torch.randperm(n, generator=generator).tolist()
            self._expert_pos = 0
        j = self._file_order[self._file_pos]
        pos = self.files[j][1][self._expert_order[self._expert_pos]]
        self._expert_pos += 1
        f = self._file(j)
        return f.expert_indices[pos], f.trajectories[pos]

    def state_dict(self) -> dict[str, Any]:
        return {"file_order": list(self._file_order), "file_pos": self._file_pos,
                "expert_order": list(self._expert_order), "expert_pos": self._expert_pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if any(j >= len(self.files) for j in state["file_order"]):
            raise ValueError("expert buffer state refers to files that are not there any more")
        self._file_order = [int(j) for j in state["file_order"]]
        self._file_pos = int(state["file_pos"])
        self._expert_order = [int(j) for j in state["expert_order"]]
        self._expert_pos = int(state["expert_pos"])

    def __repr__(self) -> str:
        return (f"ExpertBuffer({str(self.path)!r}, files={len(self.files)}, experts={self.num_experts}, "
                f"epochs={self.num_epochs}, model={self.header['model']!r})")


def iter_experts(path: str | os.PathLike, *,
                 progress: bool = False) -> Iterable[tuple[int, list[Tensor], float | None]]:
    """Every ``(index, trajectory, test accuracy)`` at ``path`` (a file or folder), one file in memory at a time."""
    for p in tqdm(expert_paths(path), desc="expert files", disable=not progress):
        f = ExpertFile.load(p, mmap=True)
        yield from zip(f.expert_indices, f.trajectories, f.test_accuracy)
