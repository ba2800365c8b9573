"""KRR-ST: kernel ridge regression on self-supervised targets (Lee et al., "Self-Supervised Dataset Distillation for
Transfer Learning", ICLR 2024, Algorithm 1; official code ``db-Lee/selfsup_dd``).

The method learns N synthetic images ``X_s`` *and* N target representations ``Y_s`` (D-dim, no labels) so that a
linear regressor fitted in closed form on the synthetic set predicts a self-supervised teacher's representations of
real images. Each outer step:

1. draw a model from a pool of M networks at different stages of online training, in eval mode;
2. draw a real batch ``X_t`` (RandomCrop(pad 4) + flip) and its teacher targets ``Y_t = g(X_t)``;
3. features with a constant bias column, ``F_s = [f(X_s), 1]`` and ``F_t = [f(X_t), 1]``; linear kernels
   ``K_ss = F_s F_s^T`` and ``K_ts = F_t F_s^T``;
4. ``Y_hat = K_ts (K_ss + lambda I)^{-1} Y_s`` with ``lambda = 1e-6 tr(K_ss)`` (detached);
5. loss ``MSE(Y_hat, Y_t)`` (mean over all B x D entries), AdamW step on ``X_s`` and ``Y_s`` together;
6. one SGD step of the drawn model on ``MSE(model(X_s), Y_s)`` (the full synthetic set as one batch); after T such
   steps the model is re-initialised (see ``pool_reset_counter``).

Fidelity notes (official code at ``selfsup_dd@4beb4b1``):

- ``model_pool.py`` ``ModelPool.update`` re-initialises a model once its counter reaches T but never resets the
  counter, so after its first reset a slot is re-initialised on *every* later visit and never trained again.
  ``pool_reset_counter=True`` (default) is the intended behaviour (re-initialise and restart the counter);
  ``False`` reproduces the official code. In both cases the visit that re-initialises does not also train, as in
  the official code.
- ``train.py`` keeps ``x_syn`` in raw [0, 1] pixels while real images are normalised before any model sees them.
  ``x_space="normalized"`` (default) keeps ``x_syn`` in the real data's encoding; ``x_space="raw"`` reproduces the
  official convention and records ``normalize: false`` in the set's encoding.
- The pool's initial training lengths are ``t_i ~ U{1..T}`` (the official ``np.random.randint(1, T)`` draws
  ``1..T-1``; the difference is one value out of a thousand).
- Real batches are ``batch_real`` images drawn without replacement by a fresh generator permutation each step
  (the official code iterates a shuffled loader, so batches are disjoint within an epoch).

The model pool is :mod:`.pool`, the teacher and its file format :mod:`.teacher`, and the conversion to and from the
official ``x_syn.pt`` / ``y_syn.pt`` files :mod:`.official`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.augment import RandomPadCropFlip, black_level
from ddistill.data import Encoding, RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed

from ..base import SYNTHESIZERS, GradientSynthesizer, LoopConfig
from .pool import ModelPool
from .teacher import BarlowTwinsConfig, TeacherInfo, load_teacher

__all__ = ["KRRST", "KRRSTConfig", "X_SPACES", "krr_predict"]

#: Where ``x_syn`` lives: the real data's encoding, or raw [0, 1] pixels (the official code's convention).
X_SPACES = ("normalized", "raw")

_SOLVE_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: ``derive_seed`` stream of the pool's network family.
POOL_STREAM = 21


def krr_predict(feat_syn: Tensor, feat_real: Tensor, y_syn: Tensor, *, ridge: float = 1e-6, bias: bool = True,
                dtype: torch.dtype | None = None) -> Tensor:
    """Closed-form kernel ridge regression prediction of KRR-ST (``algorithms/distill.py``).

    ``Y_hat = K_ts (K_ss + lambda I)^{-1} Y_s`` with linear kernels on the features (plus a constant-1 column when
    ``bias``), ``K_ss = F_s F_s^T``, ``K_ts = F_t F_s^T`` and ``lambda = ridge * tr(K_ss)`` treated as a constant
    (detached). Solved with :func:`torch.linalg.solve`; gradients flow to ``feat_syn`` and ``y_syn``.

    Args:
        feat_syn: features of the synthetic images.
        feat_real: features of the real batch.
        y_syn: synthetic targets.
        ridge: regulariser relative to the kernel trace.
        bias: append a constant-1 feature.
        dtype: compute dtype of the kernels and the solve (None = that of ``feat_syn``).

    Shape:
        feat_syn (N, F), feat_real (B, F), y_syn (N, D) -> (B, D) in ``dtype``.
    """
    dtype = dtype or feat_syn.dtype
    f_s, f_t, y = feat_syn.to(dtype), feat_real.to(dtype), y_syn.to(dtype)
    if bias:
        f_s = torch.cat([f_s, f_s.new_ones(f_s.shape[0], 1)], 1)
        f_t = torch.cat([f_t, f_t.new_ones(f_t.shape[0], 1)], 1)
    k_ss = f_s @ f_s.T  # (N, N)
    k_ts = f_t @ f_s.T  # (B, N)
    lam = ridge * torch.trace(k_ss.detach())
    eye = torch.eye(k_ss.shape[0], dtype=dtype, device=k_ss.device)
    return k_ts @ torch.linalg.solve(k_ss + lam * eye, y)


@dataclass
class KRRSTConfig(LoopConfig):
    """KRR-ST hyper-parameters. Defaults: the CIFAR-100 setting of the official code and README (preset
    ``cifar100``); ``teacher`` must be set.

    Args:
        preset: name of the preset these values came from (recorded in the set).
        num_images: N, the size of the synthetic set (the method is label-free: there is no ipc).
        teacher: path of a ``ddistill.teacher`` file (``scripts/train_teacher.py``); or pass ``teacher=`` a module.
        teacher_training: how ``scripts/train_teacher.py`` trains the teacher for this run (not read by the
            synthesizer itself; recorded with the set's config).
        model: inner network of the pool, also the default evaluation network.
        model_kwargs: overrides for ``model``.
        num_models: M, pool size.
        online_iteration: T, online SGD steps a pool model gets before it is re-initialised.
        online_lr, online_momentum, online_weight_decay: the pool's SGD.
        pool_reset_counter: True = re-initialise and restart the counter (intended); False = the official
            ``model_pool.py`` defect (counter never reset: after the first reset the slot is re-initialised on
            every later visit).
        iterations: outer steps.
        lr: outer AdamW learning rate for images and targets (README: 1e-4 CIFAR-100, 1e-5 TinyImageNet/ImageNet).
        weight_decay: outer AdamW weight decay.
        lr_end_factor: LinearLR end factor over ``iterations``.
        grad_clip: per-tensor gradient-norm clipping of x and y (0 = off, the official default).
        batch_real: real images per outer step.
        ridge: lambda = ridge * tr(K_ss).
        bias_feature: append a constant-1 feature before the kernels.
        solve_dtype: "float32" or "float64" for the kernels and the solve.
        augment_real: RandomCrop(pad ``crop_padding``) + horizontal flip on real batches.
        crop_padding: padding of the random crop.
        flip: horizontal flips on real batches.
        x_space: "normalized" (x_syn in the real data's encoding) or "raw" (official: [0, 1] pixels).
        checkpoint_every: steps between checkpoints (official ``save_every`` 2000).
        perf: speed settings for the teacher's forward passes (the pool and the solve stay in float32; bf16 is off
            by default because it would round the regression targets to 3 significant digits).
    """

    preset: str = "custom"
    num_images: int = 1000
    teacher: str | None = None
    teacher_training: BarlowTwinsConfig = field(default_factory=BarlowTwinsConfig)
    model: str = "convnet_128_256_512_bn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_models: int = 10
    online_iteration: int = 1000
    online_lr: float = 0.1
    online_momentum: float = 0.9
    online_weight_decay: float = 1e-3
    pool_reset_counter: bool = True
    iterations: int = 160000
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_end_factor: float = 1e-3
    grad_clip: float = 0.0
    batch_real: int = 1024
    ridge: float = 1e-6
    bias_feature: bool = True
    solve_dtype: str = "float32"
    augment_real: bool = True
    crop_padding: int = 4
    flip: bool = True
    x_space: str = "normalized"
    checkpoint_every: int = 2000
    perf: PerfConfig = field(default_factory=lambda: PerfConfig(bf16=False, compile=False))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.x_space not in X_SPACES:
            raise ValueError(f"unknown x_space '{self.x_space}'; choose from {list(X_SPACES)}")
        if self.solve_dtype not in _SOLVE_DTYPES:
            raise ValueError(f"unknown solve_dtype '{self.solve_dtype}'; choose from {sorted(_SOLVE_DTYPES)}")
        if self.num_images < 1 or self.num_models < 1 or self.online_iteration < 1:
            raise ValueError("num_images, num_models and online_iteration must be >= 1")


_CIFAR100 = {"preset": "cifar100", "num_images": 1000, "model": "convnet_128_256_512_bn", "lr": 1e-4}
_TINY = {"preset": "tinyimagenet", "num_images": 2000, "model": "convnet_64_128_256_512_bn", "lr": 1e-5}
_IMAGENET64 = {"preset": "imagenet64", "num_images": 1000, "model": "convnet_64_128_256_512_bn", "lr": 1e-5}
#: What the official code does besides the hyper-parameters: the never-reset pool counter and raw-pixel x_syn.
_OFFICIAL = {"pool_reset_counter": False, "x_space": "raw"}


@SYNTHESIZERS.register("krr_st")
class KRRST(GradientSynthesizer):
    """KRR-ST (Lee et al., ICLR 2024): learns images and D-dim targets by closed-form KRR on teacher features.

    Args:
        config: :class:`KRRSTConfig`.
        device: where everything runs.
        seed: seeds the shuffle, pool, real batches and augmentations (all through ``self.generator`` and
            :class:`ModelFamily`).
        teacher: a module mapping encoded images ``(B, C, H, W)`` to ``(B, D)``; overrides ``config.teacher``. It
            must take the real data's encoding.
    """

    Config = KRRSTConfig
    presets = {
        "cifar100": _CIFAR100,
        "tinyimagenet": _TINY,
        "imagenet64": _IMAGENET64,
        "cifar100_official": {**_CIFAR100, **_OFFICIAL, "preset": "cifar100_official"},
        "tinyimagenet_official": {**_TINY, **_OFFICIAL, "preset": "tinyimagenet_official"},
        "imagenet64_official": {**_IMAGENET64, **_OFFICIAL, "preset": "imagenet64_official"},
    }

    def __init__(self, config: KRRSTConfig | None = None, *, device: torch.device | str = "cpu", seed: int = 0,
                 teacher: nn.Module | None = None) -> None:
        super().__init__(config, device=device, seed=seed)
        self._teacher_module = teacher
        self.teacher: nn.Module | None = None
        self.teacher_info: TeacherInfo | None = None
        self.pool: ModelPool | None = None
        self._pool_ready = False
        self._last_idx = -1

    # -- setup ---------------------------------------------------------------------------------------------
    def make_labels(self, real: RealData) -> None:
        # Label-free: the learned targets live in self.params["y"]; class labels are never read.
        return None

    def evaluation_model(self) -> tuple[str | None, dict[str, Any]]:
        """The pool's inner network."""
        return self.config.model, dict(self.config.model_kwargs)

    def _load_teacher(self, real: RealData) -> nn.Module:
        cfg = self.config
        if self._teacher_module is not None:
            teacher = self._teacher_module.to(self.device).eval()
            teacher.requires_grad_(False)
            self.teacher_info = None
            return teacher
        if cfg.teacher is None:
            raise ValueError("KRR-ST needs a teacher: set synthesizer.teacher to a teacher.pt written by "
                             "`python scripts/train_teacher.py CONFIG`, or pass KRRST(..., teacher=module)")
        teacher, info = load_teacher(cfg.teacher, device=self.device)
        self.teacher_info = info
        if tuple(info.encoding.shape) != tuple(real.x.shape[1:]):
            raise ValueError(f"the teacher {cfg.teacher} takes images of shape {tuple(info.encoding.shape)}, the real "
                             f"data are {tuple(real.x.shape[1:])}")
        if info.encoding.to_meta() != real.encoding.to_meta():
            # The teacher was trained on another encoding: decode the real pixels and re-encode for it.
            teacher = _Reencode(teacher, real.encoding, info.encoding)
        return teacher

    def build(self, real: RealData) -> None:
        """The teacher, the real-batch augmentation and the solve dtype."""
        cfg = self.config
        n_real = int(real.x.shape[0])
        if cfg.num_images > n_real:
            raise ValueError(f"num_images={cfg.num_images} exceeds the {n_real} real training images")
        if cfg.x_space == "raw" and real.encoding.zca is not None:
            raise ValueError("x_space='raw' is not defined for ZCA-whitened data; use x_space='normalized'")
        self.perf = cfg.perf.resolve(self.device)
        self.teacher = self.perf.prepare_model(self._load_teacher(real))
        self.solve_dtype = _SOLVE_DTYPES[cfg.solve_dtype]
        self.augment = RandomPadCropFlip(cfg.crop_padding, cfg.flip, black_level(real.encoding)).to(self.device) \
            if cfg.augment_real else None

    def init_synthetic(self, real: RealData) -> dict[str, nn.Parameter]:
        """The first N images of a generator-shuffled real set, and their teacher representations.

        The teacher runs in eval mode on un-augmented images (``train.py``). Labels are never read.
        """
        cfg = self.config
        n_real = int(real.x.shape[0])
        idx = torch.randperm(n_real, generator=self.generator)[: cfg.num_images]
        x = real.x[idx.to(real.x.device)].detach().clone().to(self.device)
        y = self._teacher_forward(x)
        if cfg.x_space == "raw":
            x = real.encoding.decode(x)

        self.family = ModelFamily(cfg.model, in_channels=int(x.shape[1]), num_classes=int(y.shape[1]),
                                  image_size=tuple(x.shape[2:]), seed=derive_seed(self.seed, POOL_STREAM),
                                  **cfg.model_kwargs)
        self.pool = ModelPool(self.family, cfg.num_models, cfg.online_iteration, lr=cfg.online_lr,
                              momentum=cfg.online_momentum, weight_decay=cfg.online_weight_decay,
                              reset_counter=cfg.pool_reset_counter, device=self.device)
        self._pool_ready = False
        x_param, y_param = nn.Parameter(x), nn.Parameter(y.float().clone())
        if cfg.grad_clip > 0:
            # Per-tensor norm clipping (official: clip_grad_norm_ on x and on y separately) as gradient hooks,
            # because the base loop steps right after backward.
            for p in (x_param, y_param):
                p.register_hook(lambda g, c=cfg.grad_clip: g * torch.clamp(c / (g.norm() + 1e-6), max=1.0))
        return {"x": x_param, "y": y_param}

    @torch.no_grad()
    def _teacher_forward(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        outs = []
        for i in range(0, x.shape[0], batch_size):
            with self.perf.autocast(self.device):
                outs.append(self.teacher(self.perf.prepare_input(x[i : i + batch_size])).float())
        out = torch.cat(outs)
        if out.dim() != 2:
            raise ValueError(f"the teacher must return (B, D) vectors, got shape {tuple(out.shape)}")
        return out

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """One AdamW over images and targets together (``train.py``: ``outer_opt="adam"`` maps to AdamW)."""
        return [torch.optim.AdamW([self.params["x"], self.params["y"]], lr=self.config.lr,
                                  weight_decay=self.config.weight_decay)]

    def init_pool(self, steps: list[int] | None = None) -> None:
        """Spreads the pool over training progress: slot i trains t_i ~ U{1..T} steps on the initial set (drawn
        from the run's generator), or ``steps[i]`` steps when given (e.g. 0 to time the outer step alone). The first
        :meth:`loss` calls this when it has not been called."""
        cfg = self.config
        if steps is None:
            steps = torch.randint(1, cfg.online_iteration + 1, (cfg.num_models,), generator=self.generator).tolist()
        self.pool.initialize(self.params["x"].detach(), self.params["y"].detach(), steps, progress=True)
        self._pool_ready = True

    @property
    def pool_ready(self) -> bool:
        return self._pool_ready

    # -- the method ------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """LinearLR from 1 to ``lr_end_factor`` over ``iterations`` (the official scheduler steps after each
        outer step, so step ``s`` (0-based) uses factor ``1 + (end - 1) * s / iterations``)."""
        cfg = self.config
        frac = min(step, cfg.iterations) / max(cfg.iterations, 1)
        return cfg.lr * (1.0 + (cfg.lr_end_factor - 1.0) * frac)

    def sample_real(self, real: RealData) -> Tensor:
        """A real batch (without replacement), augmented. Shape: (batch_real', C, H, W) on ``self.device``."""
        n_real = int(real.x.shape[0])
        idx = torch.randperm(n_real, generator=self.generator)[: self.config.batch_real]
        x = real.x[idx.to(real.x.device)].to(self.device)
        if self.augment is not None:
            x = self.augment(x, generator=self.generator)
        return x

    def loss(self, real: RealData, step: int) -> Tensor:
        """KRR-ST outer loss (``algorithms/distill.py``): ``MSE(K_ts (K_ss + lambda I)^{-1} Y_s, g(X_t))``."""
        if not self._pool_ready:
            self.init_pool()
        # The schedule is a function of the step (not a scheduler object), so a resumed run is exact.
        for group in self.opts[0].param_groups:
            group["lr"] = self.lr_at(step)
        idx = int(torch.randint(self.config.num_models, (1,), generator=self.generator))
        self._last_idx = idx
        model = self.pool.models[idx]
        model.eval()  # BatchNorm with running statistics for the KRR features, as the official code
        x_real = self.sample_real(real)
        y_real = self._teacher_forward(x_real)
        with torch.no_grad():
            f_real = model.embed(x_real)
        f_syn = model.embed(self.params["x"])
        y_hat = krr_predict(f_syn, f_real, self.params["y"], ridge=self.config.ridge, bias=self.config.bias_feature,
                            dtype=self.solve_dtype)
        return F.mse_loss(y_hat.float(), y_real)

    def after_step(self, step: int) -> None:
        """One online step (or reset) of the model used in this step, on the updated (detached) set."""
        self.pool.update(self._last_idx, self.params["x"].detach(), self.params["y"].detach())

    # -- state -----------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"pool_ready": self._pool_ready, "pool": self.pool.state_dict() if self._pool_ready else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._pool_ready = bool(state["pool_ready"])
        if self._pool_ready:
            self.pool.load_state_dict(state["pool"])

    def synthetic_set(self, real: RealData) -> SyntheticSet:
        """``x`` (N, C, H, W) and regression targets ``y`` (N, D) float, with the metadata of a label-free set."""
        cfg = self.config
        encoding = real.encoding
        if cfg.x_space == "raw":
            encoding = Encoding(real.encoding.mean, real.encoding.std, real.encoding.shape, normalize=False)
        tensors = {"x": self.params["x"].detach().cpu().clone(), "y": self.params["y"].detach().float().cpu().clone()}
        tensors.update(encoding.tensors())
        info = self.teacher_info
        target = info.model if info is not None else type(self._teacher_module).__name__
        meta = self.base_meta(
            real,
            ipc=None,
            labels="regression",
            learned=["x", "y"],
            step=self.iteration,
            num_images=cfg.num_images,
            target_model=target,
            teacher=info.to_meta() if info is not None else {"model": target, "path": None},
            target_dim=int(self.params["y"].shape[1]),
            x_space=cfg.x_space,
            encoding=encoding.to_meta(),
            pool={"resets": self.pool.resets if self.pool else 0, "trainings": self.pool.trainings if self.pool else 0,
                  "reset_counter": cfg.pool_reset_counter},
        )
        return SyntheticSet(tensors, meta)


class _Reencode(nn.Module):
    """Feeds a teacher trained on another encoding: ``teacher(to.encode(frm.decode(x)))``."""

    def __init__(self, teacher: nn.Module, frm: Encoding, to: Encoding) -> None:
        super().__init__()
        self.teacher, self.frm, self.to_enc = teacher, frm, to

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher(self.to_enc.encode(self.frm.decode(x)))
