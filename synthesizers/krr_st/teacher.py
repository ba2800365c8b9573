"""Self-supervised teachers for KRR-ST: Barlow Twins training and the teacher file format.

KRR-ST (Lee et al., "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024) regresses the
representations of a self-supervised *teacher*. The authors ship Barlow Twins ResNet-18 checkpoints but not the
code that trained them, so this module provides one:

- :func:`barlow_twins_loss` -- Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
  ICML 2021, Eq. (1): ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` on the cross-correlation ``C`` of the
  batch-standardised projector outputs of two views.
- :class:`BarlowTwinsAugment` -- the Barlow Twins / BYOL view pipeline for small images (random resized crop, flip,
  colour jitter, grayscale, optional blur, solarisation on the second view), parameters drawn from an explicit
  :class:`torch.Generator` and applied with torch / kornia functional ops (kornia's augmentation modules draw from
  the global RNG, which would make runs irreproducible).
- :func:`train_teacher` -- trains ``backbone + projector`` and returns the backbone (the projector is dropped: KRR-ST
  regresses the 512-d backbone output). Checkpointed every epoch, resumable bit-for-bit.
- :func:`save_teacher` / :func:`load_teacher` -- the self-describing ``ddistill.teacher`` file.

A teacher's quality is reported with the core linear probe (:func:`ddistill.utils.probe.linear_probe`).

Recipe (what :class:`BarlowTwinsConfig` defaults to, and why): the solo-learn CIFAR Barlow Twins recipe
(``solo-learn/scripts/pretrain/cifar/barlow.yaml``: projector 2048-2048-2048, loss scale 0.1, LARS lr 0.3 at batch
256, weight decay 1e-4, eta 0.02 with clipping, biases and norm parameters excluded, 10 warm-up epochs then cosine,
1000 epochs; asymmetric augmentations with solarisation p = 0.2 on the second view and no blur at 32 px), with
``lambda = 5e-3`` (the Barlow Twins paper uses 5.1e-3). ``optimizer: sgd`` or ``adamw`` are available for small
budgets.

Plugging in another teacher: any ``nn.Module`` mapping encoded images ``(B, C, H, W)`` to vectors ``(B, D)`` can be
passed to KRR-ST directly. To turn a downloaded official checkpoint into a teacher file::

    from ddistill.data import Encoding
    from ddistill.models import create_model
    from synthesizers.krr_st.teacher import save_teacher

    kwargs = {"stem_padding": 2}   # the official teacher's conv1 has padding=2; torchvision module names
    net = create_model("resnet18_ssl", in_channels=3, num_classes=0, image_size=32, **kwargs)
    net.load_state_dict(torch.load("teacher_ckpt/barlow_twins_resnet18_cifar100.pt", map_location="cpu",
                                      weights_only=True))
    enc = Encoding((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), (3, 32, 32))   # selfsup_dd's CIFAR-100 stats
    save_teacher("teacher.pt", net, model="resnet18_ssl", model_kwargs=kwargs, encoding=enc, dataset="cifar100")
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill import __version__
from ddistill.config import to_dict
from ddistill.data import Encoding, RealData
from ddistill.io import load_artifact, save_artifact
from ddistill.models import MODELS, create_model
from ddistill.registry import Registry
from ddistill.utils.perf import PerfConfig
from ddistill.utils.probe import LinearProbeConfig
from ddistill.utils.progress import progress_bar
from ddistill.utils.seed import derive_seed, make_generator, seeded_rng
from ddistill.utils.train import cosine_lr

__all__ = [
    "BarlowTwins",
    "BarlowTwinsAugment",
    "BarlowTwinsConfig",
    "LARS",
    "OPTIMIZERS",
    "TeacherFileError",
    "TeacherInfo",
    "barlow_twins_loss",
    "load_teacher",
    "save_teacher",
    "train_teacher",
    "warmup_cosine",
]

TEACHER_FORMAT = "ddistill.teacher"
TEACHER_VERSION = 1
TEACHER_CHECKPOINT_FORMAT = "ddistill.teacher_checkpoint"

#: ``derive_seed`` streams of teacher training: backbone init, projector init, data order / augmentation.
_BACKBONE_STREAM, _PROJECTOR_STREAM, _DATA_STREAM = 1, 2, 3


# ---------------------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------------------
def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3, *, eps: float = 1e-5) -> Tensor:
    """Barlow Twins objective (Zbontar et al. 2021, Eq. 1).

    Each embedding dimension is standardised over the batch (mean 0, biased std 1, as the official code's
    ``BatchNorm1d(affine=False)`` in training mode, with the same ``eps`` inside the square root); then
    ``C = z1_n^T z2_n / B`` and ``L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``. Computed in float32.

    Args:
        z1, z2: projector outputs of the two views.
        lambd: weight of the redundancy-reduction (off-diagonal) term.
        eps: variance stabiliser of the standardisation.

    Shape:
        z1, z2: (B, D) -> ().
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"barlow_twins_loss expects two (B, D) tensors of one shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("barlow_twins_loss needs a batch of at least 2 to standardise over")

    def standardise(z: Tensor) -> Tensor:
        z = z.float()
        mean = z.mean(0, keepdim=True)
        var = z.var(0, unbiased=False, keepdim=True)
        return (z - mean) / torch.sqrt(var + eps)

    c = standardise(z1).T @ standardise(z2) / z1.shape[0]  # (D, D)
    diag = torch.diagonal(c)
    on_diag = (1.0 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag


# ---------------------------------------------------------------------------------------------------------------
# Augmentations (explicit generators)
# ---------------------------------------------------------------------------------------------------------------
def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _bernoulli(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator) < p


def _grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma, as torchvision / kornia. Shape: (B, 3, H, W) -> (B, 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class BarlowTwinsAugment:
    """The two-view pipeline of Barlow Twins / BYOL for small images, on [0, 1] pixels.

    Per view: RandomResizedCrop(scale, ratio) -> horizontal flip -> colour jitter with probability ``jitter_p``
    (brightness, contrast, saturation, hue in a random order, torchvision semantics) -> grayscale -> Gaussian blur ->
    solarisation. Blur and solarisation probabilities are per view (``(view 1, view 2)``), which gives the asymmetric
    pipeline of the Barlow Twins paper. Saturation, hue and grayscale are skipped for 1-channel images.

    All parameters are drawn on the CPU from the ``generator`` passed to :meth:`__call__`.

    Args:
        config: a :class:`BarlowTwinsConfig` (its augmentation fields are read).
    """

    def __init__(self, config: "BarlowTwinsConfig") -> None:
        self.cfg = config

    def __call__(self, x: Tensor, view: int, generator: torch.Generator | None = None) -> Tensor:
        """Augments a batch of [0, 1] pixel images for view 0 or 1.

        Shape: (B, C, H, W) -> (B, C, H, W).
        """
        if view not in (0, 1):
            raise ValueError(f"view must be 0 or 1, got {view}")
        cfg = self.cfg
        x = self.resized_crop(x, generator)
        b, c = x.shape[:2]
        dev = x.device
        flip = _bernoulli(b, cfg.flip_p, generator).to(dev).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
        jitter = _bernoulli(b, cfg.jitter_p, generator).to(dev).view(b, 1, 1, 1)
        x = torch.where(jitter, self.color_jitter(x, generator), x)
        if c == 3:
            gray = _bernoulli(b, cfg.grayscale_p, generator).to(dev).view(b, 1, 1, 1)
            x = torch.where(gray, _grayscale(x).expand_as(x), x)
        if cfg.blur_p[view] > 0:
            blur = _bernoulli(b, cfg.blur_p[view], generator).to(dev).view(b, 1, 1, 1)
            x = torch.where(blur, self.blur(x, generator), x)
        solar = _bernoulli(b, cfg.solarize_p[view], generator).to(dev).view(b, 1, 1, 1)
        return torch.where(solar & (x >= 0.5), 1.0 - x, x)

    def resized_crop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """torchvision's RandomResizedCrop sampling (10 attempts, then the central crop), vectorised, applied
        with one bilinear ``grid_sample``. Shape: (B, C, H, W) -> (B, C, H, W)."""
        cfg = self.cfg
        b, _, h, w = x.shape
        tries = 10
        area = h * w * _uniform(b * tries, cfg.crop_scale[0], cfg.crop_scale[1], generator).view(b, tries)
        log_r = _uniform(b * tries, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator)
        ratio = log_r.exp().view(b, tries)
        cw = torch.sqrt(area * ratio).round()
        ch = torch.sqrt(area / ratio).round()
        ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
        rows = torch.arange(b)
        cw = torch.where(first >= 0, cw[rows, first.clamp(min=0)], torch.full((b,), float(w)))
        ch = torch.where(first >= 0, ch[rows, first.clamp(min=0)], torch.full((b,), float(h)))
        top = torch.floor(torch.rand(b, generator=generator) * (h - ch + 1))
        left = torch.floor(torch.rand(b, generator=generator) * (w - cw + 1))
        # Box -> affine map of normalised coordinates (align_corners=False: pixel centres at (2k+1)/size - 1).
        cx = (left + cw / 2) / w * 2 - 1
        cy = (top + ch / 2) / h * 2 - 1
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = cw / w
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def color_jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """torchvision ColorJitter semantics with per-sample factors and one random op order per batch.

        Shape: (B, C, H, W) -> (B, C, H, W) in [0, 1].
        """
        import kornia.enhance as KE  # local: kornia is only needed when training a teacher

        cfg = self.cfg
        b, c = x.shape[:2]
        dev = x.device
        bright = _uniform(b, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, generator).to(dev).view(b, 1, 1, 1)
        contrast = _uniform(b, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, generator).to(dev).view(b, 1, 1, 1)
        sat = _uniform(b, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, generator).to(dev).view(b, 1, 1, 1)
        hue = _uniform(b, -cfg.hue, cfg.hue, generator).to(dev)
        order = torch.randperm(4, generator=generator).tolist()
        for op in order:
            if op == 0:
                x = (x * bright).clamp(0, 1)
            elif op == 1:
                mean = (_grayscale(x) if c == 3 else x).mean(dim=(1, 2, 3), keepdim=True)
                x = ((x - mean) * contrast + mean).clamp(0, 1)
            elif op == 2 and c == 3:
                gray = _grayscale(x)
                x = ((x - gray) * sat + gray).clamp(0, 1)
            elif op == 3 and c == 3 and cfg.hue > 0:
                # torchvision's hue factor h shifts the hue by h * 360 degrees; kornia takes radians.
                x = KE.adjust_hue(x, hue * 2 * math.pi).clamp(0, 1)
        return x

    def blur(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Gaussian blur, sigma ~ U(0.1, 2.0) per sample, kernel about 10 % of the image side (SimCLR)."""
        import kornia.filters as KF

        b, _, h, _ = x.shape
        sigma = _uniform(b, 0.1, 2.0, generator).to(x.device, x.dtype)
        k = max(3, int(0.1 * h) // 2 * 2 + 1)
        return KF.gaussian_blur2d(x, (k, k), torch.stack([sigma, sigma], 1))


# ---------------------------------------------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------------------------------------------
class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as used for Barlow Twins / solo-learn.

    For every parameter that is not excluded (biases and norm parameters, i.e. 1-d tensors, when
    ``exclude_bias_and_norm``): ``g <- (g + wd * p) * r`` with trust ratio
    ``r = eta * ||p|| / (||g|| + wd * ||p|| + eps)`` (1 if either norm is 0), clipped to ``min(r / lr, 1)`` when
    ``clip_lr``. Excluded parameters get neither weight decay nor adaptation. Then SGD with momentum:
    ``v <- m v + g``, ``p <- p - lr v``.

    Args:
        params: parameters or groups.
        lr: learning rate.
        momentum: heavy-ball momentum.
        weight_decay: L2 coefficient (added to the gradient before adaptation).
        eta: trust coefficient.
        clip_lr: clip the adapted rate so it never exceeds ``lr``.
        exclude_bias_and_norm: skip 1-d parameters.
        eps: denominator stabiliser.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02,
                 clip_lr: bool = True, exclude_bias_and_norm: bool = True, eps: float = 1e-8) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr,
                        exclude_bias_and_norm=exclude_bias_and_norm, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not (group["exclude_bias_and_norm"] and p.ndim == 1):
                    p_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    trust = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                    trust = torch.where((p_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    if group["clip_lr"] and lr > 0:
                        trust = torch.clamp(trust / lr, max=1.0)
                    g = (g + wd * p) * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-lr)
        return loss


def _lars(params: list[nn.Parameter], cfg: "BarlowTwinsConfig") -> torch.optim.Optimizer:
    return LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta,
                clip_lr=cfg.lars_clip_lr)


def _sgd(params: list[nn.Parameter], cfg: "BarlowTwinsConfig") -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _adamw(params: list[nn.Parameter], cfg: "BarlowTwinsConfig") -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


#: Optimiser builders for teacher training, ``builder(params, config) -> Optimizer``.
OPTIMIZERS = Registry("teacher optimizer")
OPTIMIZERS.register("lars")(_lars)
OPTIMIZERS.register("sgd")(_sgd)
OPTIMIZERS.register("adamw")(_adamw)


def warmup_cosine(step: int, total: int, warmup: int, base: float, start: float, final: float) -> float:
    """Linear warm-up from ``start`` to ``base`` over ``warmup`` steps, then cosine from ``base`` to ``final``."""
    if step < warmup:
        return start + (base - start) * step / max(warmup, 1)
    return cosine_lr(step - warmup, max(total - warmup, 1), base, final)


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class BarlowTwinsConfig:
    """Barlow Twins teacher training (defaults: solo-learn's CIFAR recipe, see the module docstring).

    Args:
        model: backbone registry name; its ``num_classes=0`` output is the teacher representation.
        model_kwargs: backbone overrides (``stem_padding: 2`` = the official KRR-ST teacher's stem).
        projector_dims: widths of the projector's linear layers; all but the last are followed by BN + ReLU.
        lambd: off-diagonal weight of the Barlow Twins loss.
        loss_scale: factor on the loss (solo-learn uses 0.1 on CIFAR).
        epochs: passes over the training images.
        batch_size: images per step (the last incomplete batch of an epoch is dropped: BN and the loss standardise
            over the batch).
        max_images: train on a generator-drawn subset of this many images (0 = all), for small budgets.
        optimizer: ``"lars"``, ``"sgd"`` or ``"adamw"`` (see :data:`OPTIMIZERS`).
        lr: peak learning rate at ``batch_size`` (not rescaled).
        momentum, weight_decay: optimiser settings.
        lars_eta, lars_clip_lr: LARS trust coefficient and clipping.
        warmup_epochs: linear warm-up length (in epochs, may be fractional).
        warmup_start_lr: learning rate at step 0.
        min_lr: learning rate at the end of the cosine.
        crop_scale, crop_ratio: RandomResizedCrop area fraction and aspect-ratio ranges.
        flip_p: horizontal flip probability.
        jitter_p: probability of colour jitter; brightness/contrast/saturation/hue its strengths.
        grayscale_p: probability of converting to grayscale.
        blur_p: Gaussian blur probability for (view 1, view 2).
        solarize_p: solarisation probability for (view 1, view 2).
        checkpoint_every: epochs between checkpoints when a checkpoint path is given.
        probe: linear-probe settings used to report the teacher's accuracy.
        perf: speed settings for the training passes.
    """

    model: str = "resnet18_ssl"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"stem_padding": 2})
    projector_dims: list[int] = field(default_factory=lambda: [2048, 2048, 2048])
    lambd: float = 5e-3
    loss_scale: float = 0.1
    epochs: int = 1000
    batch_size: int = 256
    max_images: int = 0
    optimizer: str = "lars"
    lr: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lars_eta: float = 0.02
    lars_clip_lr: bool = True
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 3e-5
    min_lr: float = 0.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (0.0, 0.0)
    solarize_p: tuple[float, float] = (0.0, 0.2)
    checkpoint_every: int = 1
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    perf: PerfConfig = field(default_factory=lambda: PerfConfig(compile=False))

    def __post_init__(self) -> None:
        OPTIMIZERS.get(self.optimizer)  # unknown names list the choices
        if not self.projector_dims:
            raise ValueError("projector_dims needs at least one layer width")
        if self.epochs < 0 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 0 and batch_size >= 2, got {self.epochs} and {self.batch_size}")


# ---------------------------------------------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------------------------------------------
class BarlowTwins(nn.Module):
    """Backbone + projector (Zbontar et al. 2021, Fig. 1): ``Linear -> BN -> ReLU`` blocks, then a last ``Linear``.

    Args:
        backbone: module mapping images to ``(B, in_dim)`` representations.
        in_dim: representation size.
        projector_dims: widths of the projector's linear layers (the last is the embedding size).

    Shape:
        (B, C, H, W) -> (B, projector_dims[-1]).
    """

    def __init__(self, backbone: nn.Module, in_dim: int, projector_dims: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        layers: list[nn.Module] = []
        dims = [in_dim, *projector_dims]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            # bias=False as in the official code: every layer but the last is followed by BN, and the loss
            # standardises the last one over the batch, so biases would be removed anyway.
            layers.append(nn.Linear(a, b, bias=False))
            if i < len(dims) - 2:
                layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        self.projector = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))


def _build_backbone(cfg: BarlowTwinsConfig, shape: Sequence[int], seed: int) -> nn.Module:
    with seeded_rng(seed):
        return create_model(cfg.model, in_channels=int(shape[0]), num_classes=0, image_size=tuple(shape[1:]),
                            **cfg.model_kwargs)


def _output_dim(module: nn.Module, shape: Sequence[int], device: torch.device | str) -> int:
    was = module.training
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros(2, *shape, device=device))
    module.train(was)
    if out.dim() != 2:
        raise ValueError(f"a teacher must map images to vectors (B, D); this one returns shape {tuple(out.shape)}")
    return int(out.shape[1])


def train_teacher(
    real: RealData,
    cfg: BarlowTwinsConfig | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Trains a Barlow Twins backbone on the images of ``real`` (labels are never read).

    Each step draws a batch, decodes it to [0, 1] pixels, makes two views with :class:`BarlowTwinsAugment`,
    re-encodes them with ``real.encoding`` (so the teacher consumes exactly what KRR-ST feeds it) and minimises
    ``loss_scale * barlow_twins_loss(projector(backbone(v1)), projector(backbone(v2)))``.

    Args:
        real: training images (``real.x`` encoded with ``real.encoding``).
        cfg: hyper-parameters (None = defaults).
        seed: seeds the backbone/projector initialisation and the single data/augmentation generator.
        device: where to train.
        checkpoint: path of an atomic checkpoint written every ``cfg.checkpoint_every`` epochs.
        resume: continue from ``checkpoint`` when it exists (bit-for-bit: weights, optimiser, generator, epoch).
        progress: tqdm bars.
        on_epoch_end: hook ``(epoch, mean_loss)`` called after the epoch's checkpoint.

    Returns:
        The backbone in eval mode, mapping encoded images ``(B, C, H, W)`` to ``(B, D)``.
    """
    cfg = cfg or BarlowTwinsConfig()
    device = torch.device(device)
    shape = tuple(real.x.shape[1:])
    backbone = _build_backbone(cfg, shape, derive_seed(seed, _BACKBONE_STREAM))
    in_dim = _output_dim(backbone, shape, "cpu")
    with seeded_rng(derive_seed(seed, _PROJECTOR_STREAM)):
        model = BarlowTwins(backbone, in_dim, cfg.projector_dims)
    model = model.to(device)
    opt = OPTIMIZERS.get(cfg.optimizer)(list(model.parameters()), cfg)
    generator = make_generator(derive_seed(seed, _DATA_STREAM))
    perf = cfg.perf.resolve(device)
    net = perf.prepare_model(model)
    augment = BarlowTwinsAugment(cfg)

    n_all = int(real.x.shape[0])
    subset = torch.randperm(n_all, generator=generator)[: cfg.max_images] if cfg.max_images else torch.arange(n_all)
    n = int(subset.numel())
    batch = min(cfg.batch_size, n)
    if batch < 2:
        raise ValueError(f"teacher training needs at least 2 images, got {n}")
    steps_per_epoch = n // batch
    total = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    start_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        start_epoch = _load_teacher_checkpoint(checkpoint, model, opt, generator, seed, cfg)

    bar = progress_bar(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="barlow twins",
                       enabled=progress)
    for epoch in bar:
        model.train()
        order = subset[torch.randperm(n, generator=generator)]
        total_loss = 0.0
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            lr = warmup_cosine(step, total, warmup, cfg.lr, cfg.warmup_start_lr, cfg.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[s * batch : (s + 1) * batch].to(real.x.device)
            pixels = real.encoding.decode(real.x[idx]).clamp(0, 1)
            v1 = real.encoding.encode(augment(pixels, 0, generator)).to(device)
            v2 = real.encoding.encode(augment(pixels, 1, generator)).to(device)
            with perf.autocast(device):
                z1 = net(perf.prepare_input(v1))
                z2 = net(perf.prepare_input(v2))
            loss = cfg.loss_scale * barlow_twins_loss(z1.float(), z2.float(), cfg.lambd)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"Barlow Twins loss became {loss.item()} at epoch {epoch} step {s}; lower "
                                         f"the learning rate (now {lr:.3g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach())
        mean_loss = total_loss / max(steps_per_epoch, 1)
        bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
        done = epoch + 1
        if checkpoint is not None and cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or done == cfg.epochs):
            save_artifact({
                "seed": seed,
                "config": _recipe(cfg),
                "epoch": done,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": generator.get_state(),
            }, checkpoint, format=TEACHER_CHECKPOINT_FORMAT, version=1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, mean_loss)
    backbone = model.backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


def _recipe(cfg: BarlowTwinsConfig) -> dict[str, Any]:
    """The config fields that determine the trained weights (speed, checkpoint and probe settings may change on
    resume)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("perf", "checkpoint_every", "probe")}


def _load_teacher_checkpoint(path: str | os.PathLike, model: nn.Module, opt: torch.optim.Optimizer,
                             generator: torch.Generator, seed: int, cfg: BarlowTwinsConfig) -> int:
    blob = load_artifact(path, format=TEACHER_CHECKPOINT_FORMAT, what="teacher-training checkpoint",
                         required=("seed", "config", "epoch", "model", "optimizer", "generator"))
    if blob["seed"] != seed or blob["config"] != _recipe(cfg):
        raise ValueError(f"{path} was written by a run with another seed or config; use a fresh checkpoint path "
                         f"(or the same config and seed={blob['seed']})")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    generator.set_state(blob["generator"])
    return int(blob["epoch"])


# ---------------------------------------------------------------------------------------------------------------
# Teacher file
# ---------------------------------------------------------------------------------------------------------------
class TeacherFileError(ValueError):
    """A file is not a readable ddistill teacher (foreign, truncated, newer version, or mismatched weights)."""


@dataclass
class TeacherInfo:
    """What a teacher file says about its network.

    Args:
        model: registry name of the architecture (built with ``num_classes=0``).
        model_kwargs: architecture overrides.
        encoding: the input encoding the teacher expects.
        dataset: name of the data it was trained on.
        config: training config (JSON-able), if any.
        linear_probe_accuracy: linear-probe test accuracy (%) on ``dataset``, if measured.
        output_dim: representation size D.
        path: the file it was read from (None for in-memory teachers).
        sha256: digest of the file, for provenance.
    """

    model: str
    model_kwargs: dict[str, Any]
    encoding: Encoding
    dataset: str
    config: dict[str, Any] | None = None
    linear_probe_accuracy: float | None = None
    output_dim: int | None = None
    path: str | None = None
    sha256: str | None = None

    def to_meta(self) -> dict[str, Any]:
        """JSON-able summary recorded in synthetic sets."""
        return {"model": self.model, "model_kwargs": self.model_kwargs, "dataset": self.dataset,
                "encoding": self.encoding.to_meta(), "linear_probe_accuracy": self.linear_probe_accuracy,
                "output_dim": self.output_dim, "path": self.path, "sha256": self.sha256}


def save_teacher(
    path: str | os.PathLike,
    network: nn.Module,
    *,
    model: str,
    model_kwargs: dict[str, Any] | None = None,
    encoding: Encoding,
    dataset: str,
    config: dict[str, Any] | None = None,
    linear_probe_accuracy: float | None = None,
) -> Path:
    """Writes a self-describing teacher file atomically (loads with ``weights_only=True``).

    Args:
        path: destination (``teacher.pt``).
        network: the backbone; rebuilt on load as ``create_model(model, ..., num_classes=0, **model_kwargs)``,
            so its ``state_dict`` must fit that architecture.
        model: registry name of the architecture.
        model_kwargs: architecture overrides used to build it.
        encoding: input encoding the teacher expects (mean/std, shape; ZCA tensors are stored too).
        dataset: name of the training data.
        config: JSON-able training config.
        linear_probe_accuracy: linear-probe accuracy (%) to record.
    """
    MODELS.get(model)  # a file naming an unknown architecture could never be loaded
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    dev = next((p.device for p in network.parameters()), torch.device("cpu"))
    blob = {
        "model": model,
        "model_kwargs": dict(model_kwargs or {}),
        "state_dict": state,
        "encoding": encoding.to_meta(),
        "encoding_tensors": {k: v.cpu() for k, v in encoding.tensors().items()},
        "dataset": dataset,
        "config": config,
        "linear_probe_accuracy": None if linear_probe_accuracy is None else float(linear_probe_accuracy),
        "output_dim": _output_dim(network, encoding.shape, dev),
        "ddistill_version": __version__,
    }
    return save_artifact(blob, path, format=TEACHER_FORMAT, version=TEACHER_VERSION)


def load_teacher(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, TeacherInfo]:
    """Reads a teacher file written by :func:`save_teacher`.

    Returns:
        ``(module, info)``: the network in eval mode with frozen parameters on ``device``, and its description.

    Raises:
        FileNotFoundError: no file at ``path``.
        TeacherFileError: the file is foreign, truncated, from a newer ddistill, or its weights do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no teacher file at {path}; train one with `python scripts/train_teacher.py CONFIG` "
                                f"or convert a checkpoint with synthesizers.krr_st.teacher.save_teacher")
    hint = (" A bare state_dict must be loaded into its architecture and written as a teacher file with "
            "synthesizers.krr_st.teacher.save_teacher (see that module's docstring).")
    blob = load_artifact(path, format=TEACHER_FORMAT, what="teacher", max_version=TEACHER_VERSION,
                         required=("model", "model_kwargs", "state_dict", "encoding", "dataset"),
                         error=TeacherFileError, hint=hint)
    encoding = Encoding.from_meta(blob["encoding"], blob.get("encoding_tensors") or {})
    shape = tuple(encoding.shape)
    try:
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten; keep the caller's RNG untouched
            net = create_model(blob["model"], in_channels=int(shape[0]), num_classes=0, image_size=tuple(shape[1:]),
                               **blob["model_kwargs"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise TeacherFileError(f"{path}: the stored weights do not fit model {blob['model']!r} with "
                               f"{blob['model_kwargs']}: {str(e).splitlines()[0]}") from None
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = TeacherInfo(blob["model"], dict(blob["model_kwargs"]), encoding, str(blob["dataset"]), blob.get("config"),
                       blob.get("linear_probe_accuracy"), blob.get("output_dim"), str(path), digest)
    return net, info
