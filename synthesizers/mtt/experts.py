"""Training expert trajectories for trajectory matching (MTT; Cazenavette et al., "Dataset Distillation by Matching
Training Trajectories", CVPR 2022) and AST's smooth experts (Shen, Yang & Lam, "AST: Effective Dataset Distillation
through Alignment with Smooth and High-Quality Expert Trajectories", arXiv 2310.10541).

MTT (Sec. 3.1, ``buffer.py``) trains with plain SGD; AST makes the trajectory smoother, i.e. the per-epoch change
||theta*_{t+1} - theta*_t|| small and steady, with

- a *clipping loss*: the cross-entropy scaled by a factor rising 0.5, 0.55, ..., 0.95 over the first ten epochs
  (then 1), which damps the large early updates;
- a *gradient penalty* (WGAN-GP style, on the clean input): lambda * mean_(b,h,w) (||d sum(logits) / dx||_c - 1)^2;
- a different optimiser recipe: SGD momentum 0.9, weight decay 1e-3, lr 0.003 scaled by 0.6 at mid-training.

Reproducibility: expert ``i`` of a run with seed ``s`` draws its initial weights from
``ModelFamily(seed=f(s)).build(i)`` and its shuffling and augmentation from a generator seeded with
``derive_seed(s, stream, i)``. Nothing else is random, so expert ``i`` is bit-identical whether it is trained alone,
in shard k of n, or in one run of all experts. The file format is :mod:`synthesizers.mtt.expert_file`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.augment import build_augment
from ddistill import config as cfgmod
from ddistill.config import config_from_preset
from ddistill.data import DataSpec, RealData, load_data
from ddistill.io import JSONLLogger, atomic_write
from ddistill.models import ModelFamily
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.progress import progress_bar
from ddistill.utils.train import TrainRecipe, accuracy, train_classifier

from .expert_file import STORAGE_DTYPES, ExpertFile, ParamLayout

__all__ = ["AST_CLIP_FACTORS", "EXPERT_PRESETS", "ExpertConfig", "ExpertLoss", "expert_config_from_preset",
           "ExpertRunConfig", "expert_family", "gradient_penalty", "new_expert_file", "train_expert",
           "train_expert_run", "trajectory_smoothness"]

#: ``derive_seed`` stream ids: weight initialisation and data order/augmentation of expert ``i`` (never reused).
_INIT_STREAM = 0x5E1
_DATA_STREAM = 0x5E2

#: AST's clipping-loss factors for epochs 0..9 (``buffer.py``, ``--loss_decay``); later epochs use 1.
AST_CLIP_FACTORS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def trajectory_smoothness(trajectory: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-epoch parameter change ||theta*_{t+1} - theta*_t||_2 of one expert (AST's smoothness notion).

    Smaller, steadier values are a smoother trajectory, which the student can follow more easily (AST Sec. 3.2).

    Shape: ``epochs + 1`` flat vectors (or an (E+1, P) tensor) -> (E,) float64.
    """
    snaps = list(trajectory)
    if len(snaps) < 2:
        raise ValueError("a trajectory needs at least two snapshots to measure its per-epoch change")
    return torch.stack([(b.double() - a.double()).norm() for a, b in zip(snaps[:-1], snaps[1:])])


def _mtt_recipe() -> TrainRecipe:
    """MTT's ``buffer.py``: SGD lr 0.01, no momentum, no weight decay, batch 256, 50 epochs, DSA, no lr decay."""
    return TrainRecipe(epochs=50, lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=256, schedule="step",
                       lr_decay_at="never", lr_decay=1.0, rebuild_optimizer_at_decay=True, augment="dsa")


@dataclass
class ExpertConfig:
    """How one expert is trained. Defaults: MTT's ``buffer.py`` (see ``train``); preset ``ast`` switches on AST's
    smoothing (see :data:`EXPERT_PRESETS`).

    Args:
        preset: name of the preset these values came from ("mtt", "ast", ... or "custom"), recorded in the files.
        model: registered network (the distillation/evaluation architecture, ConvNet-3 in the papers).
        model_kwargs: architecture overrides.
        train: the SGD recipe (``train.epochs`` epochs give ``epochs + 1`` snapshots). At the lr drop the optimiser
            is rebuilt, dropping its momentum, as both official codes do; AST's ``buffer.py`` decays after finishing
            epoch ``epochs // 2 + 1``, i.e. ``lr_decay_at: half+2``.
        clip_loss: AST's clipping loss: scale the cross-entropy of epoch e by ``clip_factors[e]`` (1 after them).
        clip_factors: the clipping schedule; AST 0.5, 0.55, ..., 0.95 over the first ten epochs.
        grad_penalty: lambda of AST's gradient penalty on the clean input (0 = off; AST uses 2).
        perf: speed settings; bf16 autocast and compile are off by default because the gradient penalty
            differentiates twice and trajectories are meant to be exact.
    """

    preset: str = "mtt"
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainRecipe = field(default_factory=_mtt_recipe)
    clip_loss: bool = False
    clip_factors: list[float] = field(default_factory=lambda: list(AST_CLIP_FACTORS))
    grad_penalty: float = 0.0
    perf: PerfConfig = field(default_factory=lambda: PerfConfig(channels_last=None, bf16=False, compile=False))

    def __post_init__(self) -> None:
        if self.train.epochs < 1 or self.train.iterations is not None:
            raise ValueError(f"experts train whole epochs (train.epochs >= 1, train.iterations null), got epochs "
                             f"{self.train.epochs}, iterations {self.train.iterations}")
        if isinstance(self.train.lr, str):
            raise ValueError(f"experts need a numeric train.lr, not {self.train.lr!r}")
        if self.grad_penalty < 0:
            raise ValueError(f"grad_penalty must be >= 0 (0 = off), got {self.grad_penalty}")

    @property
    def epochs(self) -> int:
        return self.train.epochs

    def clip_factor(self, epoch: int) -> float:
        """Cross-entropy factor of ``epoch`` (AST clipping loss; 1 when off or after the schedule)."""
        if not self.clip_loss or epoch >= len(self.clip_factors):
            return 1.0
        return float(self.clip_factors[epoch])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Expert recipes. ``mtt``: MTT's ``buffer.py``. ``ast``: AST's ``buffer.py`` with ``--optim SGDMOM --loss_decay
#: --gp True`` (its README command): SGD momentum 0.9, wd 1e-3, lr 0.003 x0.6 after mid-training, clipping loss and
#: gradient penalty (lambda 2). ``ast_optim``: the AST optimiser recipe alone (for ablations of the two switches).
_AST_OPTIM = {"lr": 0.003, "momentum": 0.9, "weight_decay": 1e-3, "lr_decay": 0.6, "lr_decay_at": "half+2"}
EXPERT_PRESETS: dict[str, dict[str, Any]] = {
    "mtt": {"train": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "lr_decay": 1.0, "lr_decay_at": "never"},
            "clip_loss": False, "grad_penalty": 0.0},
    "ast": {"train": dict(_AST_OPTIM), "clip_loss": True, "grad_penalty": 2.0},
    "ast_optim": {"train": dict(_AST_OPTIM), "clip_loss": False, "grad_penalty": 0.0},
}


def expert_config_from_preset(preset: str | None = None, **overrides: Any) -> ExpertConfig:
    """``ExpertConfig`` filled from ``EXPERT_PRESETS[preset]`` then ``overrides`` (strict: unknown keys raise)."""
    return config_from_preset(ExpertConfig, EXPERT_PRESETS, preset, overrides, where="experts")


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
    augment = build_augment(config.train.augment, real.info.name)
    snapshots = [layout.flatten(model)]
    # Snapshots are read from the original module: a compiled wrapper renames parameters (``_orig_mod.``).
    trained = perf.prepare_model(model)
    train_classifier(trained, real.x, real.y.to(real.x.device), config.train, generator=generator, perf=perf,
                     loss_fn=ExpertLoss(config, augment, generator, perf), progress=progress,
                     on_epoch_end=lambda epoch, loss: snapshots.append(layout.flatten(model)))
    return snapshots


def new_expert_file(real: RealData, config: ExpertConfig, seed: int, *, storage_dtype: str = "float32") -> ExpertFile:
    """An empty :class:`ExpertFile` describing the experts of run ``seed`` with ``config`` on ``real``."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype '{storage_dtype}'; choose from {sorted(STORAGE_DTYPES)}")
    layout = ParamLayout.from_module(expert_family(real, config, seed).build(0))
    return ExpertFile(config.model, dict(config.model_kwargs),
                      {"in_channels": int(real.x.shape[1]), "num_classes": int(real.num_classes),
                       "image_size": [int(s) for s in real.x.shape[2:]]},
                      list(layout.names), [list(s) for s in layout.shapes], real.encoding.to_meta(), real.info.name,
                      int(seed), config.to_dict(), storage_dtype=storage_dtype)


# ---------------------------------------------------------------------------------------------------------------
# An expert-training run (``scripts/train_experts.py``)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ExpertRunConfig:
    """An expert-training run (the YAML files of ``scripts/configs/experts/``).

    Args:
        name: run name; the default output folder is ``runs/experts/<name>``.
        seed: run seed; expert i is a function of (seed, i) only.
        device: "cpu", "cuda", ... ("cuda" becomes "cuda:$LOCAL_RANK" under torchrun).
        dataset: the real training data (set ``zca`` as the distillation will).
        num_experts: experts in the whole run (MTT: 100).
        experts_per_file: consecutive experts per file (MTT groups 10); null = one file for the run.
        storage_dtype: "float32" or "bfloat16" snapshots.
        evaluate: record each expert's final test accuracy.
        experts: ExpertConfig fields, with an optional ``preset`` ("mtt", "ast", "ast_optim").
        progress: tqdm bars (shown only on a terminal).
    """

    name: str = "experts"
    seed: int = 0
    device: str = "cpu"
    dataset: DataSpec = field(default_factory=DataSpec)
    num_experts: int = 100
    experts_per_file: int | None = 10
    storage_dtype: str = "float32"
    evaluate: bool = True
    experts: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise cfgmod.ConfigError(f"num_experts must be >= 1, got {self.num_experts}")
        if self.experts_per_file is not None and self.experts_per_file < 1:
            raise cfgmod.ConfigError(f"experts_per_file must be >= 1 or null, got {self.experts_per_file}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise cfgmod.ConfigError(f"unknown storage_dtype '{self.storage_dtype}'; "
                                     f"choose from {sorted(STORAGE_DTYPES)}")

    @classmethod
    def load(cls, path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> "ExpertRunConfig":
        """Parses an expert-run YAML (plus ``a.b=c`` overrides) strictly; the expert block is validated too."""
        run = cfgmod.from_dict(cls, cfgmod.load(path, list(overrides)), where=str(path or "config"))
        run.expert_config()
        return run

    def expert_config(self) -> ExpertConfig:
        spec = dict(self.experts)
        return expert_config_from_preset(spec.pop("preset", None), **spec)

    def file_groups(self) -> list[list[int]]:
        """Expert indices of each file of the run."""
        size = self.experts_per_file or self.num_experts
        return [list(range(s, min(s + size, self.num_experts))) for s in range(0, self.num_experts, size)]


def expert_file_name(indices: list[int]) -> str:
    return f"experts_{indices[0]:05d}-{indices[-1]:05d}.pt"


def _record_run_config(out: Path, resolved: dict[str, Any]) -> None:
    """Writes ``out/config.yaml``; a folder already holding another run's experts is an error."""
    path = out / "config.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text())
        keys = ("seed", "dataset", "num_experts", "experts_per_file", "storage_dtype", "experts")
        differ = [k for k in keys if old.get(k) != resolved.get(k)]
        if differ:
            raise FileExistsError(f"{out} holds experts of a different run (config differs in {differ}); "
                                  f"choose another --out")
        return
    atomic_write(path, lambda f: f.write(yaml.safe_dump(resolved, sort_keys=False)), binary=False)


def train_expert_run(run: ExpertRunConfig, out: str | os.PathLike, *, shard: int = 0,
                     shards: int = 1) -> dict[str, Any]:
    """Trains the experts of shard ``shard`` of ``shards`` of ``run`` into the folder ``out``: shard k trains the files
    j with j % shards == k. Each file is rewritten atomically after every expert and the experts already in it are
    skipped, so an interrupted shard resumes where it stopped.

    Returns ``{"trained": [...], "skipped": [...], "files": [...]}``.
    """
    cfg = run.expert_config()
    device = run.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = cfgmod.to_dict(run)
    resolved["experts"] = cfg.to_dict()
    _record_run_config(out, resolved)
    groups = [g for j, g in enumerate(run.file_groups()) if j % shards == shard]
    summary: dict[str, Any] = {"trained": [], "skipped": [], "files": [str(out / expert_file_name(g)) for g in groups]}
    if not groups:
        print(f"shard {shard}/{shards}: no files to train ({len(run.file_groups())} files in the run)", flush=True)
        return summary

    real, test = load_data(run.dataset, device)
    x_test = real.encoding.encode(test.x.to(device)) if run.evaluate else None
    y_test = test.y.to(device) if run.evaluate else None
    logger = JSONLLogger(out / "log.jsonl")
    todo = sum(len(g) for g in groups)
    print(f"shard {shard}/{shards}: {todo} experts of {run.num_experts} ({cfg.preset}, {cfg.model}, {cfg.epochs} "
          f"epochs) on {real.info.name} into {out}", flush=True)
    bar = progress_bar(total=todo, desc=f"experts shard {shard}/{shards}", enabled=run.progress)
    for group in groups:
        path = out / expert_file_name(group)
        blank = new_expert_file(real, cfg, run.seed, storage_dtype=run.storage_dtype)
        if path.exists():
            current = ExpertFile.load(path)
            if current.header() != blank.header():
                raise FileExistsError(f"{path} holds experts of a different run; choose another --out")
        else:
            current = blank
        for i in group:
            if i in current.expert_indices:
                summary["skipped"].append(i)
                bar.update(1)
                continue
            snaps = train_expert(real, cfg, index=i, seed=run.seed, device=device,
                                 progress=f"expert {i}" if run.progress else False)
            acc = None
            if run.evaluate:
                model = current.build_model(snaps[-1], device=device)
                acc = 100.0 * accuracy(model, x_test, y_test)
            current.add(i, snaps, acc)
            current.save(path)  # atomic: an interruption loses at most the expert in progress
            change = trajectory_smoothness(snaps)
            logger.log(expert=i, test_accuracy=acc, param_change=change.tolist(), shard=f"{shard}/{shards}")
            summary["trained"].append(i)
            bar.update(1)
            bar.set_postfix(acc=f"{acc:.1f}" if acc is not None else "-", change=f"{change.mean():.3g}")
    bar.close()
    print(f"shard {shard}/{shards}: trained {len(summary['trained'])}, already present {len(summary['skipped'])}",
          flush=True)
    return summary
