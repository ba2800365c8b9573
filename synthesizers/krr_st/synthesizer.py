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

Options beyond the official code (issue #15; the defaults reproduce it):

- **Ridge rule.** ``ridge`` is the official ``lambda = ridge * tr(K_ss)`` factor (1e-6), or ``"auto"``: at
  initialisation (after the pool is spread), every value of ``ridge_grid`` is scored by the held-out KRR loss of the
  initial set, and the lowest wins (ties: the smaller ridge). Why: with p features plus the bias column and N synthetic
  images, ``K_ss`` is rank min(N, p + 1); at the interpolation threshold p + 1 ~ N its smallest eigenvalues approach 0
  and 1e-6 tr(K_ss) no longer regularises the solve (a width-32 ConvNet on 32x32 images gives 513 features: at
  N = 500 the held-out KRR loss was ~1.0 with 1e-6 against 0.51 with 1e-4). The choice, the grid's losses and the ratio
  (p + 1) / N are recorded in ``meta["ridge"]``.
- **Held-out diagnostics.** ``heldout_real`` real training images are set aside (a generator of their own) and never
  drawn for the initialisation or the outer loss. The held-out KRR loss (Algorithm 1's prediction from the synthetic
  set, evaluated on those images without augmentation, mean over the pool's networks) is measured at the start, every
  ``diagnostic_every`` steps and at the end, beside how far the images moved (mean ``|x - x_init|`` in [0, 1] pixels
  and in the encoded space) and the targets moved. The values reach the step logs (the run's ``log.jsonl``) and
  ``meta["diagnostics"]``; the diagnostics draw no random numbers, so they never change the run.
- **Image learning rate units.** ``lr_images`` / ``lr_images_units`` state the images' AdamW rate in raw [0, 1] pixels
  or in the encoded space whatever ``x_space`` is (see :class:`KRRSTConfig`).

The model pool is :mod:`.pool`, the teacher and its file format :mod:`.teacher`, and the conversion to and from the
official ``x_syn.pt`` / ``y_syn.pt`` files :mod:`.official`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.augment import RandomPadCropFlip, black_level
from ddistill.data import Encoding, RealData
from ddistill.distributed import Distributed
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator

from ..base import SYNTHESIZERS, GradientSynthesizer, LoopConfig
from .pool import ModelPool
from .teacher import BarlowTwinsConfig, TeacherInfo, load_teacher

__all__ = ["KRRST", "KRRSTConfig", "LR_IMAGES_UNITS", "RIDGE_RULES", "X_SPACES", "krr_predict"]

#: Where ``x_syn`` lives: the real data's encoding, or raw [0, 1] pixels (the official code's convention).
X_SPACES = ("normalized", "raw")

_SOLVE_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Rules ``ridge`` accepts besides a number (see :class:`KRRSTConfig`).
RIDGE_RULES = ("auto",)

#: Units of ``lr_images``: those of ``x_space`` (the official behaviour), raw [0, 1] pixels, or the encoded space.
LR_IMAGES_UNITS = ("x_space", "raw", "encoded")

#: ``derive_seed`` stream of the pool's network family.
POOL_STREAM = 21
#: ``derive_seed`` stream of the held-out real images (``heldout_real``): not the run's generator, so holding images
#: out draws nothing from the stream the initialisation and the real batches use.
HELDOUT_STREAM = 22
#: ``(p + 1) / N`` in this band counts as near the interpolation threshold (recorded, and warned about for a small
#: fixed ridge): the double-descent peak of min-norm regression sits at 1, and is broad.
INTERPOLATION_BAND = (0.5, 2.0)


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
            The official images are raw [0, 1] pixels, so the official rates are in pixel units; see
            ``lr_images_units`` for ``x_space="normalized"``.
        lr_images: the images' rate (None = ``lr``, one rate for both as the official code); the targets keep ``lr``.
        lr_images_units: what ``lr_images`` is measured in: "x_space" (the units the images are stored in: the
            official behaviour and the default), "raw" ([0, 1] pixels) or "encoded" (the real data's mean/std space).
            How the units relate: with ``x = (p - mean) / std`` the gradient w.r.t. the normalised ``x`` is ``std``
            times the gradient w.r.t. the raw ``p``. KRR-ST's outer optimiser is AdamW, whose step
            ``lr * m_hat / (sqrt(v_hat) + eps)`` does not depend on the gradient's scale (up to eps): a step of
            ``lr`` in normalised units moves the pixels by ``lr * std``. Hence ``lr_raw ~= lr_encoded * std``, and
            "raw" with ``x_space="normalized"`` uses ``lr_images / std`` on the normalised images (CIFAR stds
            ~0.2-0.25: 4-5x the number); "encoded" with ``x_space="raw"`` uses ``lr_images * std``. AdamW has one
            rate per parameter group and the images are one tensor, so the mean of the channel stds is used (exact
            for one channel; CIFAR's channel stds differ by a few percent). (For plain SGD the conversion would be
            ``lr_raw = lr_encoded * std**2``; it does not apply here.) Not defined with ZCA (no per-pixel std).
            Recorded in ``meta["outer_lr"]``.
        weight_decay: outer AdamW weight decay.
        lr_end_factor: LinearLR end factor over ``iterations``.
        grad_clip: per-tensor gradient-norm clipping of x and y (0 = off, the official default).
        batch_real: real images per outer step.
        ridge: a number: lambda = ridge * tr(K_ss) (official 1e-6); or "auto": the value of ``ridge_grid`` with the
            lowest held-out KRR loss of the initial set at initialisation (needs ``heldout_real`` > 0). Use "auto"
            when the pool network's feature count p + 1 is close to N (a width-32 ConvNet at 32 px: p + 1 = 513,
            N = 500), where 1e-6 tr(K_ss) does not regularise. The value used and why: ``meta["ridge"]``.
        ridge_grid: candidates of ``ridge: auto``.
        heldout_real: real training images held out from the initialisation and every outer batch (0 = none, the
            official behaviour; then there is no held-out KRR loss). Drawn by a generator of their own.
        diagnostic_every: steps between diagnostics (held-out KRR loss, image and target movement) in the step logs
            (0 = only at the start and the end). The CLI writes the logs of every 10th step, so use a multiple of 10.
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
    ridge: float | str = 1e-6
    ridge_grid: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    heldout_real: int = 0
    diagnostic_every: int = 0
    lr_images: float | None = None
    lr_images_units: str = "x_space"
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
        if isinstance(self.ridge, str) and self.ridge not in RIDGE_RULES:
            try:  # "1e-4" from a command line or YAML without a dot
                self.ridge = float(self.ridge)
            except ValueError:
                raise ValueError(f"unknown ridge '{self.ridge}'; choose a number >= 0 (lambda = ridge * tr(K_ss)) or "
                                 f"one of {list(RIDGE_RULES)}") from None
        if not isinstance(self.ridge, str) and not (self.ridge >= 0 and math.isfinite(self.ridge)):
            raise ValueError(f"ridge must be a finite number >= 0 or one of {list(RIDGE_RULES)}, got {self.ridge}")
        if not self.ridge_grid or any(not (r > 0 and math.isfinite(r)) for r in self.ridge_grid):
            raise ValueError(f"ridge_grid must be a non-empty list of finite numbers > 0, got {self.ridge_grid}")
        if self.heldout_real < 0 or self.diagnostic_every < 0:
            raise ValueError(f"heldout_real and diagnostic_every must be >= 0, got {self.heldout_real} and "
                             f"{self.diagnostic_every}")
        if self.ridge == "auto" and self.heldout_real < 1:
            raise ValueError("ridge='auto' picks lambda by the held-out KRR loss: set heldout_real > 0 (e.g. 1024)")
        if self.lr_images_units not in LR_IMAGES_UNITS:
            raise ValueError(f"unknown lr_images_units '{self.lr_images_units}'; choose from {list(LR_IMAGES_UNITS)}")
        if self.lr_images is not None and not self.lr_images > 0:
            raise ValueError(f"lr_images must be > 0 (or null = lr), got {self.lr_images}")


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

    #: Under torchrun the real batch of each step is sharded over the ranks (every rank draws and augments the whole
    #: batch, so the generator advances as in one process, and forwards only its rows through the teacher and the
    #: pool network); the outer MSE is a sum over real rows, so the summed gradients are those of one process.
    shares_work = True

    def __init__(self, config: KRRSTConfig | None = None, *, device: torch.device | str = "cpu", seed: int = 0,
                 teacher: nn.Module | None = None, dist: Distributed | None = None) -> None:
        super().__init__(config, device=device, seed=seed, dist=dist)
        self._teacher_module = teacher
        self.teacher: nn.Module | None = None
        self.teacher_info: TeacherInfo | None = None
        self.pool: ModelPool | None = None
        self._pool_ready = False
        self._last_idx = -1
        #: lambda / tr(K_ss) in use: the config's number, or the ``ridge: auto`` choice once the pool is spread.
        self.ridge_value: float | None = None
        self._ridge_info: dict[str, Any] | None = None
        self._diag_start: dict[str, Any] | None = None
        self._diag_curve: list[dict[str, Any]] = []

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
        if cfg.num_images + cfg.heldout_real > n_real:
            raise ValueError(f"num_images={cfg.num_images} plus heldout_real={cfg.heldout_real} exceeds the {n_real} "
                             f"real training images")
        if cfg.x_space == "raw" and real.encoding.zca is not None:
            raise ValueError("x_space='raw' is not defined for ZCA-whitened data; use x_space='normalized'")
        if self.dist.world_size > cfg.batch_real:
            raise ValueError(f"krr_st shards the real batch (batch_real={cfg.batch_real}) over the ranks: run at most "
                             f"{cfg.batch_real} processes, not {self.dist.world_size}")
        if self._lr_unit_scale_needed() and real.encoding.zca is not None:
            raise ValueError(f"lr_images_units='{cfg.lr_images_units}' with x_space='{cfg.x_space}' needs a mean/std "
                             f"encoding, not ZCA; use lr_images_units='x_space'")
        self._encoding = real.encoding
        self._n_real = n_real
        self.ridge_value = None if cfg.ridge == "auto" else float(cfg.ridge)
        self._ridge_info, self._diag_start, self._diag_curve = None, None, []
        self._train_idx: Tensor | None = None
        self._heldout_idx: Tensor | None = None
        if cfg.heldout_real:
            perm = torch.randperm(n_real, generator=make_generator(derive_seed(self.seed, HELDOUT_STREAM)))
            self._heldout_idx = perm[: cfg.heldout_real].sort().values
            self._train_idx = perm[cfg.heldout_real :].sort().values
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
        idx = self._draw(cfg.num_images)
        x = real.x[idx.to(real.x.device)].detach().clone().to(self.device)
        y = self._teacher_forward(x)
        if cfg.x_space == "raw":
            x = real.encoding.decode(x)
        # Step-0 copies: the diagnostics measure how far the images and targets moved from here.
        self._x_init, self._y_init = x.detach().clone(), y.detach().float().clone()
        self._heldout: tuple[Tensor, Tensor] | None = None
        if self._heldout_idx is not None:
            # Encoded and unaugmented like the teacher's view of the initial set; targets computed once.
            x_h = real.x[self._heldout_idx.to(real.x.device)].detach().to(self.device)
            self._heldout = (x_h, self._teacher_forward(x_h))

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

    def _draw(self, k: int) -> Tensor:
        """``k`` real training indices without replacement from the run's generator, never a held-out one (with
        ``heldout_real`` = 0 this is ``randperm(n_real)[:k]``, the draw of earlier versions)."""
        if self._train_idx is None:
            return torch.randperm(self._n_real, generator=self.generator)[:k]
        return self._train_idx[torch.randperm(int(self._train_idx.numel()), generator=self.generator)[:k]]

    def _lr_unit_scale_needed(self) -> bool:
        cfg = self.config
        return cfg.lr_images_units != "x_space" and (cfg.lr_images_units == "raw") != (cfg.x_space == "raw")

    def _mean_std(self) -> float:
        return float(sum(self._encoding.std) / len(self._encoding.std))

    def image_lr(self) -> float:
        """The images' AdamW rate (before the schedule) in the units the images are stored in (``x_space``).

        ``lr_images`` (or ``lr``) converted from ``lr_images_units``: AdamW's step is about ``lr`` in the parameter's
        own units, and one normalised unit is ``std`` pixels, so raw -> normalised divides by the mean channel std and
        encoded -> raw multiplies by it (see :class:`KRRSTConfig`).
        """
        cfg = self.config
        lr = cfg.lr if cfg.lr_images is None else float(cfg.lr_images)
        if not self._lr_unit_scale_needed() or not self._encoding.normalize:
            return lr  # same units, or data never normalised (encoded == raw)
        return lr / self._mean_std() if cfg.lr_images_units == "raw" else lr * self._mean_std()

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """One AdamW over images and targets together (``train.py``: ``outer_opt="adam"`` maps to AdamW); two
        parameter groups only when the images' rate differs from the targets' (``lr_images``)."""
        cfg = self.config
        lr_x = self.image_lr()
        if lr_x == cfg.lr:
            # One group, as before: the same updates and the same optimiser-state layout (old checkpoints resume).
            self._base_lrs = [cfg.lr]
            return [torch.optim.AdamW([self.params["x"], self.params["y"]], lr=cfg.lr, weight_decay=cfg.weight_decay)]
        self._base_lrs = [lr_x, cfg.lr]
        return [torch.optim.AdamW([{"params": [self.params["x"]], "lr": lr_x}, {"params": [self.params["y"]]}],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)]

    def init_pool(self, steps: list[int] | None = None) -> None:
        """Spreads the pool over training progress: slot i trains t_i ~ U{1..T} steps on the initial set (drawn
        from the run's generator), or ``steps[i]`` steps when given (e.g. 0 to time the outer step alone). The first
        :meth:`loss` calls this when it has not been called."""
        cfg = self.config
        if steps is None:
            steps = torch.randint(1, cfg.online_iteration + 1, (cfg.num_models,), generator=self.generator).tolist()
        self.pool.initialize(self.params["x"].detach(), self.params["y"].detach(), steps, progress=True)
        self._pool_ready = True
        self._choose_ridge()
        if self._diag_start is None:
            self._diag_start = {"step": self.iteration, **self.diagnostics()}

    def _choose_ridge(self) -> None:
        """Sets :attr:`ridge_value` (``ridge: auto``: the grid value with the lowest held-out KRR loss of the current,
        initial set over the spread pool) and records the choice with the interpolation ratio (p + 1) / N."""
        cfg = self.config
        with torch.no_grad():
            model = self.pool.models[0].eval()
            p = int(model.embed(self.params["x"][:2].detach()).flatten(1).shape[1]) + int(cfg.bias_feature)
        ratio = p / cfg.num_images
        near = INTERPOLATION_BAND[0] <= ratio <= INTERPOLATION_BAND[1]
        info: dict[str, Any] = {"rule": "auto" if cfg.ridge == "auto" else "fixed", "lambda": "ridge * tr(K_ss)",
                                "features": p, "bias_feature": cfg.bias_feature, "num_images": cfg.num_images,
                                "interpolation_ratio": ratio, "near_interpolation_threshold": near}
        if cfg.ridge == "auto":
            losses = self.heldout_krr_loss(cfg.ridge_grid)
            best = min(range(len(losses)), key=lambda i: (losses[i], cfg.ridge_grid[i]))
            self.ridge_value = float(cfg.ridge_grid[best])
            info.update(grid=list(cfg.ridge_grid), heldout_loss=losses, heldout_images=cfg.heldout_real,
                        why=f"lowest held-out KRR loss ({losses[best]:.4g}) of the initial set over the "
                            f"{cfg.num_models} spread pool networks on {cfg.heldout_real} held-out real images, "
                            f"among {len(losses)} candidates")
        else:
            info["why"] = "given by the config (ridge)"
            if near and self.ridge_value < 1e-4:
                warnings.warn(f"KRR-ST: (p + 1) / N = {p}/{cfg.num_images} = {ratio:.2f} is near the interpolation "
                              f"threshold, where ridge={self.ridge_value:g} barely regularises K_ss; consider "
                              f"ridge: auto (with heldout_real > 0)", stacklevel=2)
        info["value"] = self.ridge_value
        self._ridge_info = info

    @torch.no_grad()
    def heldout_krr_loss(self, ridges: Sequence[float] | None = None, *, chunk: int = 1024,
                         initial: bool = False) -> list[float]:
        """Algorithm 1's prediction from the current synthetic set, scored on the held-out real images: for each
        ridge, the mean over the pool's networks (eval mode) of ``MSE(K_hs (K_ss + lambda I)^{-1} Y_s, g(X_h))``, no
        augmentation. None = the ridge in use. ``initial=True`` scores the set as it was initialised instead, under
        the same (current) pool networks: the paired baseline, since the pool trains and resets during the run and
        a loss read under other networks is not comparable. Draws no random numbers.

        Shape: X_h (heldout_real, C, H, W), g(X_h) (heldout_real, D) -> one float per ridge.
        """
        ridges = [self.ridge_value] if ridges is None else [float(r) for r in ridges]
        return self._heldout_losses([self._initial_set() if initial else self._current_set()], ridges, chunk)[0]

    def _current_set(self) -> tuple[Tensor, Tensor]:
        return self.params["x"].detach(), self.params["y"].detach()

    def _initial_set(self) -> tuple[Tensor, Tensor]:
        return self._x_init, self._y_init.to(self.params["y"].dtype)

    @torch.no_grad()
    def _heldout_losses(self, sets: Sequence[tuple[Tensor, Tensor]], ridges: Sequence[float],
                        chunk: int = 1024) -> list[list[float]]:
        """:meth:`heldout_krr_loss` of several (x, y) sets, embedding the held-out images once per pool network.
        Returns one list (one float per ridge) per set."""
        if self._heldout is None:
            raise ValueError("the held-out KRR loss needs held-out real images: set heldout_real > 0")
        cfg = self.config
        x_h, y_h = self._heldout
        totals = [[0.0] * len(ridges) for _ in sets]
        for model in self.pool.models:
            model.eval()  # running statistics, as the outer loss uses them
            f_h = torch.cat([model.embed(x_h[i : i + chunk]) for i in range(0, x_h.shape[0], chunk)])
            for k, (x, y) in enumerate(sets):
                f_s = model.embed(x)
                for j, r in enumerate(ridges):
                    y_hat = krr_predict(f_s, f_h, y, ridge=r, bias=cfg.bias_feature, dtype=self.solve_dtype)
                    totals[k][j] += float(F.mse_loss(y_hat.float(), y_h))
        return [[t / len(self.pool.models) for t in row] for row in totals]

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """How the set stands now: ``image_shift_pixels`` (mean ``|x - x_init|`` in [0, 1] pixel units, not clamped:
        a pixel pushed below 0 keeps its whole move, unlike :meth:`SyntheticSet.decode_images`),
        ``image_shift_encoded`` (the same in the real data's encoded space), ``target_shift`` (mean ``|y - y_init|``)
        and, with held-out images and a spread pool, ``heldout_krr_loss`` (:meth:`heldout_krr_loss` at the ridge in
        use). Draws no random numbers, so measuring never changes the run."""
        x, x0 = self.params["x"].detach(), self._x_init
        enc = self._encoding
        if self.config.x_space == "raw":
            pix, pix0, code, code0 = x, x0, enc.encode(x), enc.encode(x0)
        else:
            pix, pix0, code, code0 = enc.decode(x), enc.decode(x0), x, x0
        out = {"image_shift_pixels": float((pix - pix0).abs().mean()),
               "image_shift_encoded": float((code - code0).abs().mean()),
               "target_shift": float((self.params["y"].detach().float() - self._y_init).abs().mean())}
        if self._heldout is not None and self._pool_ready and self.ridge_value is not None:
            # One pass over the pool embeds the held-out images once for both sets.
            now, init = self._heldout_losses([self._current_set(), self._initial_set()], [self.ridge_value])
            out["heldout_krr_loss"], out["heldout_krr_loss_initial_set"] = now[0], init[0]
        return out

    def log_step(self, step: int, logs: dict[str, float]) -> None:
        """Adds the diagnostics to the logs every ``diagnostic_every`` steps and at the last step."""
        every = self.config.diagnostic_every
        if (every and step % every == 0) or step == self.total_steps:
            diag = self.diagnostics()
            self._diag_curve.append({"step": step, **diag})
            logs = {**logs, **diag}
            if step == self.total_steps and self._diag_start and "heldout_krr_loss" in self._diag_start:
                logs["heldout_krr_loss_start"] = self._diag_start["heldout_krr_loss"]
        super().log_step(step, logs)

    @property
    def pool_ready(self) -> bool:
        return self._pool_ready

    # -- the method ------------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """LinearLR from 1 to ``lr_end_factor`` over ``iterations`` (the official scheduler steps after each
        outer step, so step ``s`` (0-based) uses factor ``1 + (end - 1) * s / iterations``)."""
        cfg = self.config
        frac = min(step, cfg.iterations) / max(cfg.iterations, 1)
        return 1.0 + (cfg.lr_end_factor - 1.0) * frac

    def lr_at(self, step: int) -> float:
        """The targets' rate at ``step`` (``lr`` times :meth:`lr_factor`; the images' when ``lr_images`` is unset)."""
        return self.config.lr * self.lr_factor(step)

    def sample_real(self, real: RealData) -> Tensor:
        """A real batch (without replacement), augmented. Shape: (batch_real', C, H, W) on ``self.device``."""
        idx = self._draw(self.config.batch_real)
        x = real.x[idx.to(real.x.device)].to(self.device)
        if self.augment is not None:
            x = self.augment(x, generator=self.generator)
        return x

    def loss(self, real: RealData, step: int) -> Tensor:
        """KRR-ST outer loss (``algorithms/distill.py``): ``MSE(K_ts (K_ss + lambda I)^{-1} Y_s, g(X_t))``."""
        if not self._pool_ready:
            self.init_pool()
        # The schedule is a function of the step (not a scheduler object), so a resumed run is exact.
        factor = self.lr_factor(step)
        for group, base in zip(self.opts[0].param_groups, self._base_lrs):
            group["lr"] = base * factor
        idx = int(torch.randint(self.config.num_models, (1,), generator=self.generator))
        self._last_idx = idx
        model = self.pool.models[idx]
        model.eval()  # BatchNorm with running statistics for the KRR features, as the official code
        x_real = self.sample_real(real)
        batch = int(x_real.shape[0])
        if self.dist.enabled:
            rows = self.dist.owned(batch)
            x_real = x_real[rows[0] : rows[-1] + 1]
        y_real = self._teacher_forward(x_real)
        with torch.no_grad():
            f_real = model.embed(x_real)
        f_syn = model.embed(self.params["x"])
        y_hat = krr_predict(f_syn, f_real, self.params["y"], ridge=self.ridge_value, bias=self.config.bias_feature,
                            dtype=self.solve_dtype)
        if self.dist.enabled:  # this rank's share of the mean over the whole batch's B x D entries
            return ((y_hat.float() - y_real) ** 2).sum() / (batch * y_real.shape[1])
        return F.mse_loss(y_hat.float(), y_real)

    def after_step(self, step: int) -> None:
        """One online step (or reset) of the model used in this step, on the updated (detached) set."""
        self.pool.update(self._last_idx, self.params["x"].detach(), self.params["y"].detach())

    # -- state -----------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"pool_ready": self._pool_ready, "pool": self.pool.state_dict() if self._pool_ready else None,
                "ridge_value": self.ridge_value, "ridge_info": self._ridge_info, "diag_start": self._diag_start,
                "diag_curve": list(self._diag_curve)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._pool_ready = bool(state["pool_ready"])
        if self._pool_ready:
            self.pool.load_state_dict(state["pool"])
        # Checkpoints of earlier versions lack these: the fixed ridge of the config then applies.
        if state.get("ridge_value") is not None:
            self.ridge_value = float(state["ridge_value"])
        self._ridge_info = state.get("ridge_info")
        self._diag_start = state.get("diag_start")
        self._diag_curve = list(state.get("diag_curve") or [])

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
            ridge=self._ridge_info or {"rule": "auto" if cfg.ridge == "auto" else "fixed", "value": self.ridge_value,
                                       "why": "not chosen yet: the pool is spread (and an auto ridge picked) at the "
                                              "first outer step"},
            outer_lr=self._lr_meta(),
            diagnostics=self._diagnostics_meta(),
        )
        return SyntheticSet(tensors, meta)

    def _lr_meta(self) -> dict[str, Any]:
        cfg = self.config
        lr_x = self.image_lr()
        std = self._mean_std() if self._encoding.normalize and self._encoding.zca is None else None
        in_pixels = lr_x if cfg.x_space == "raw" or not self._encoding.normalize else (lr_x * std if std else None)
        return {"optimizer": "AdamW", "targets": cfg.lr, "images": lr_x, "images_units": cfg.x_space,
                "images_in_raw_pixels": in_pixels, "given": cfg.lr if cfg.lr_images is None else cfg.lr_images,
                "given_units": cfg.lr_images_units, "mean_std": std, "schedule": f"linear to x{cfg.lr_end_factor:g}"}

    def _diagnostics_meta(self) -> dict[str, Any]:
        end = self._diag_curve[-1] if self._diag_curve and self._diag_curve[-1]["step"] == self.iteration else None
        if end is None:
            end = {"step": self.iteration, **self.diagnostics()}
        out: dict[str, Any] = {
            "heldout_images": self.config.heldout_real, "start": self._diag_start, "end": end,
            "curve": list(self._diag_curve),
            "what": "heldout_krr_loss: the KRR prediction from the set on held-out real training images never used "
                    "for the initialisation or the outer loss (mean over the pool networks, no augmentation); "
                    "heldout_krr_loss_initial_set: the same for the initial set under the same pool networks (the "
                    "pool trains and resets, so only this paired pair is comparable along the curve); "
                    "image_shift_pixels / image_shift_encoded: mean |x - x_init| in [0, 1] pixels / encoded units; "
                    "target_shift: mean |y - y_init|",
        }
        if "heldout_krr_loss" not in end:
            out["heldout_krr_loss_missing"] = ("heldout_real is 0" if not self.config.heldout_real else
                                               "no outer step ran: the pool was never spread")
        return out


class _Reencode(nn.Module):
    """Feeds a teacher trained on another encoding: ``teacher(to.encode(frm.decode(x)))``."""

    def __init__(self, teacher: nn.Module, frm: Encoding, to: Encoding) -> None:
        super().__init__()
        self.teacher, self.frm, self.to_enc = teacher, frm, to

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher(self.to_enc.encode(self.frm.decode(x)))
