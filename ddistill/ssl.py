"""Self-supervised teachers for KRR-ST: Barlow Twins training, the teacher file format, and a linear probe.

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
- :func:`linear_probe` -- frozen features + multinomial logistic regression, to report a teacher's quality.

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
    from ddistill.ssl import save_teacher

    kwargs = {"stem_padding": 2}   # the official teacher's conv1 has padding=2; torchvision module names
    net = create_model("resnet18_ssl", in_channels=3, num_classes=0, image_size=32, **kwargs)
    net.load_state_dict(torch.load("teacher_ckpt/barlow_twins_resnet18_cifar100.pt", map_location="cpu"))
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
from tqdm.auto import tqdm

from ddistill.config import to_dict
import ddistill
from ddistill.data import Encoding, RealData
from ddistill.models import MODELS, create_model
from ddistill.registry import Registry
from ddistill.synset import atomic_torch_save
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator, seeded_rng

__all__ = [
    "BarlowTwins",
    "BarlowTwinsAugment",
    "BarlowTwinsConfig",
    "LARS",
    "LinearProbeConfig",
    "OPTIMIZERS",
    "RandomPadCropFlip",
    "TeacherFileError",
    "TeacherInfo",
    "barlow_twins_loss",
    "linear_probe",
    "load_teacher",
    "save_teacher",
    "train_teacher",
]

TEACHER_FORMAT = "ddistill.teacher"
TEACHER_VERSION = 1
TEACHER_CHECKPOINT_FORMAT = "ddistill.teacher_checkpoint"


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


def black_level(encoding: Encoding) -> Tensor:
    """Per-channel encoded value of a black pixel: the fill of zero padding applied before normalisation.

    Exact for mean/std encodings; for ZCA encodings the spatial mean of the encoded black image is used.
    Shape: (C,).
    """
    zeros = torch.zeros(1, *encoding.shape)
    return encoding.encode(zeros).mean(dim=(0, 2, 3))


class RandomPadCropFlip(nn.Module):
    """``RandomCrop(size, padding)`` + ``RandomHorizontalFlip(0.5)`` with an explicit generator.

    The augmentation of KRR-ST's real batches and of the downstream fine-tuning (``selfsup_dd`` ``get_aug``: kornia
    ``RandomCrop(padding=4)`` + flip applied to [0, 1] pixels *before* normalisation, so padding is black). Here the
    images are already encoded, so padding uses ``fill`` (the encoded black level, see :func:`black_level`).

    Args:
        padding: pixels of padding on each side (crop offsets are uniform in ``[0, 2 * padding]``).
        flip: also flip horizontally with probability 0.5.
        fill: per-channel padding value in the encoded space (None = 0).

    Shape:
        (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, padding: int = 4, flip: bool = True, fill: Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)
        self.flip = bool(flip)
        self.register_buffer("fill", None if fill is None else torch.as_tensor(fill, dtype=torch.float32),
                             persistent=False)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, c, h, w = x.shape
        p = self.padding
        if p > 0:
            fill = (self.fill if self.fill is not None else x.new_zeros(c)).to(x.device, x.dtype).view(1, c, 1, 1)
            # Pad (x - fill) with zeros and add fill back: the padded border equals ``fill`` exactly.
            padded = F.pad(x - fill, (p, p, p, p)) + fill
            top = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
            left = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
            rows = (top[:, None] + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * p)
            padded = padded.gather(2, rows)
            cols = (left[:, None] + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
            x = padded.gather(3, cols)
        if self.flip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
        return x

    def extra_repr(self) -> str:
        return f"padding={self.padding}, flip={self.flip}"


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
    span = max(total - warmup, 1)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * min(step - warmup, span) / span))


# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LinearProbeConfig:
    """Logistic regression on frozen features (defaults: ``selfsup_dd`` ``algorithms/linear_eval.py``).

    Args:
        iterations: SGD steps.
        lr: initial learning rate (cosine-annealed to 0).
        momentum: SGD momentum.
        weight_decay: L2 on the linear layer.
        batch_size: features per step.
        standardize: z-score features with the train statistics first (an invertible affine map, so the model
            class is unchanged; it only conditions SGD -- the official code does not do it).
    """

    iterations: int = 5000
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 512
    standardize: bool = True


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
    backbone = _build_backbone(cfg, shape, derive_seed(seed, 1))
    in_dim = _output_dim(backbone, shape, "cpu")
    with seeded_rng(derive_seed(seed, 2)):
        model = BarlowTwins(backbone, in_dim, cfg.projector_dims)
    model = model.to(device)
    opt = OPTIMIZERS.get(cfg.optimizer)(list(model.parameters()), cfg)
    generator = make_generator(derive_seed(seed, 3))
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

    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="barlow twins",
               disable=not progress, mininterval=1.0)
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
            atomic_torch_save({
                "format": TEACHER_CHECKPOINT_FORMAT,
                "seed": seed,
                "config": _recipe(cfg),
                "epoch": done,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": generator.get_state(),
            }, checkpoint)
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
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != TEACHER_CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a ddistill teacher-training checkpoint")
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
        "format": TEACHER_FORMAT,
        "version": TEACHER_VERSION,
        "model": model,
        "model_kwargs": dict(model_kwargs or {}),
        "state_dict": state,
        "encoding": encoding.to_meta(),
        "encoding_tensors": {k: v.cpu() for k, v in encoding.tensors().items()},
        "dataset": dataset,
        "config": config,
        "linear_probe_accuracy": None if linear_probe_accuracy is None else float(linear_probe_accuracy),
        "output_dim": _output_dim(network, encoding.shape, dev),
        "ddistill_version": ddistill.__version__,
    }
    return atomic_torch_save(blob, path)


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
                                f"or convert a checkpoint with ddistill.ssl.save_teacher")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign pickles
        first = str(e).splitlines()[0] if str(e) else ""
        raise TeacherFileError(f"{path} is not a readable ddistill teacher (truncated, or not a torch file?): "
                               f"{type(e).__name__}: {first}") from None
    if not isinstance(blob, dict) or blob.get("format") != TEACHER_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        hint = (" It looks like a bare state_dict: load it into the architecture yourself and write a teacher file "
                "with ddistill.ssl.save_teacher (see the ddistill.ssl docstring).") if isinstance(blob, dict) else ""
        raise TeacherFileError(f"{path} is not a ddistill teacher (format {found!r}, expected {TEACHER_FORMAT!r})."
                               + hint)
    version = blob.get("version")
    if not isinstance(version, int) or version > TEACHER_VERSION:
        raise TeacherFileError(f"{path} has teacher format version {version}; this ddistill reads versions <= "
                               f"{TEACHER_VERSION}; upgrade ddistill")
    missing = [k for k in ("model", "model_kwargs", "state_dict", "encoding", "dataset") if k not in blob]
    if missing:
        raise TeacherFileError(f"{path} lacks {missing}; it was not written by ddistill.ssl.save_teacher")
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


# ---------------------------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(encoder: nn.Module | Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int = 1024,
                     device: torch.device | str = "cpu") -> Tensor:
    """``encoder(x)`` in eval mode, batched, on ``device``. Shape: (N, C, H, W) -> (N, D) float32."""
    module = encoder if isinstance(encoder, nn.Module) else getattr(encoder, "__self__", None)
    was = module.training if isinstance(module, nn.Module) else None
    if isinstance(module, nn.Module):
        module.eval()
    out = [encoder(x[i : i + batch_size].to(device)).float().flatten(1) for i in range(0, x.shape[0], batch_size)]
    if isinstance(module, nn.Module) and was is not None:
        module.train(was)
    return torch.cat(out)


def linear_probe(
    encoder: nn.Module | Callable[[Tensor], Tensor],
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    progress: bool = False,
) -> float:
    """Top-1 test accuracy (%) of multinomial logistic regression on frozen ``encoder`` features.

    Features are computed once (eval mode, no augmentation); a linear layer is trained by SGD with momentum and a
    cosine schedule on mini-batches of them (``selfsup_dd`` ``linear_eval.py`` recipe).

    Args:
        encoder: maps encoded images to vectors (a module, or e.g. ``net.embed``).
        train: ``(x, y)`` encoded training images and int64 labels.
        test: ``(x, y)`` encoded test images and labels.
        config: probe hyper-parameters.
        num_classes: number of classes (None = from the labels).
        generator: CPU generator for the initialisation and batch order.
        device: where features and the probe live.
        batch_size: feature-extraction batch size.
        progress: tqdm bar over the SGD steps.

    Shape:
        train/test x: (N, C, H, W); y: (N,).
    """
    cfg = config or LinearProbeConfig()
    device = torch.device(device)
    f_tr = extract_features(encoder, train[0], batch_size=batch_size, device=device)
    f_te = extract_features(encoder, test[0], batch_size=batch_size, device=device)
    y_tr, y_te = train[1].to(device), test[1].to(device)
    if cfg.standardize:
        mean, std = f_tr.mean(0, keepdim=True), f_tr.std(0, keepdim=True).clamp_min(1e-6)
        f_tr, f_te = (f_tr - mean) / std, (f_te - mean) / std
    k = int(num_classes or int(max(int(y_tr.max()), int(y_te.max()))) + 1)
    generator = generator or make_generator(0)
    with seeded_rng(int(torch.randint(2**62, (1,), generator=generator))):
        linear = nn.Linear(f_tr.shape[1], k)
    linear = linear.to(device)
    opt = torch.optim.SGD(linear.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = f_tr.shape[0]
    order, cursor = torch.randperm(n, generator=generator), 0
    for it in tqdm(range(cfg.iterations), desc="linear probe", disable=not progress, leave=False, mininterval=1.0):
        for group in opt.param_groups:
            group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * it / max(cfg.iterations, 1)))
        if cursor >= n:  # a new epoch: reshuffle (the official loader's InfIterator)
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + cfg.batch_size].to(device)
        cursor += cfg.batch_size
        loss = F.cross_entropy(linear(f_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = linear(f_te).argmax(1)
    return 100.0 * (pred == y_te).float().mean().item()
