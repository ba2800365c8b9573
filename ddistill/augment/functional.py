"""Functional differentiable siamese augmentation (DSA) ops.

Each op of DSA (Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021) is split
into a ``sample_*`` function, which draws the random parameters from an explicit :class:`torch.Generator`, and a pure
function that applies already-drawn parameters to an image batch and is differentiable w.r.t. the images. Splitting
the two is what makes the augmentation *siamese*: one parameter draw can be replayed on the real and on the synthetic
batch.

Semantics follow the authors' reference implementation (``VICO-UoE/DatasetCondensation``, ``utils.py``:
``rand_flip``, ``rand_scale``, ``rand_rotate``, ``rand_brightness``, ``rand_saturation``, ``rand_contrast``,
``rand_crop``, ``rand_cutout``): given the same parameter values, the outputs are the same. In particular the affine
ops use ``F.affine_grid``/``F.grid_sample`` with ``align_corners=False`` (bilinear, zero padding), which is what the
reference gets from PyTorch's defaults.

Parameter tensors have a leading dim ``n`` that must be either the batch size ``B`` (one draw per image) or ``1``
(one draw broadcast to every image: the siamese case, e.g. the same draw applied to a real batch of 256 and a
synthetic batch of 10).

The integer ranges of ``crop`` and ``cutout`` depend on the image size, which is unknown when parameters are sampled
ahead of the images. Their samplers therefore return uniforms in ``[0, 1)`` that are mapped to the reference's
discrete uniform ranges at application time (:func:`crop_shift_from_uniform`, :func:`cutout_center_from_uniform`);
``crop``/``cutout`` also accept the integer values directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "flip",
    "scale",
    "rotate",
    "brightness",
    "saturation",
    "contrast",
    "crop",
    "cutout",
    "sample_flip",
    "sample_scale",
    "sample_rotate",
    "sample_brightness",
    "sample_saturation",
    "sample_contrast",
    "sample_crop",
    "sample_cutout",
    "crop_shift_from_uniform",
    "cutout_center_from_uniform",
]


# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------
def _check_batch(x: Tensor, p: Tensor, name: str) -> int:
    """Returns the param batch size after checking it is 1 or ``x``'s batch size."""
    if x.dim() != 4:
        raise ValueError(f"{name}: expected an image batch of shape (B, C, H, W), got {tuple(x.shape)}")
    if p.dim() == 0:
        raise ValueError(f"{name}: parameters need a leading batch dim, got a 0-d tensor")
    n = p.shape[0]
    if n not in (1, x.shape[0]):
        raise ValueError(f"{name}: parameter batch {n} must be 1 (siamese broadcast) or the image batch {x.shape[0]}")
    return n


def _per_sample(p: Tensor, x: Tensor) -> Tensor:
    """Reshapes a (n,) scalar-per-sample parameter to (n, 1, 1, 1) in ``x``'s dtype (keeps bf16 inputs in bf16)."""
    return p.reshape(-1, 1, 1, 1).to(device=x.device, dtype=x.dtype)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """``torch.rand`` on the generator's own device, then moved: lets a CPU generator drive a CUDA batch."""
    draw_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=draw_device)
    return u if device is None else u.to(device)


def _uniform_to_int(u: Tensor, low: int, high: int) -> Tensor:
    """Maps uniforms in [0, 1) to integers uniform in ``[low, high)`` (like ``torch.randint(low, high)``)."""
    k = high - low
    # float64 so u * k never rounds up to k; the clamp guards the remaining edge anyway.
    return (u.to(torch.float64) * k).floor().long().clamp_(0, max(k - 1, 0)) + low


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    """Warps ``x`` with per-sample 2x3 matrices ``theta`` of shape (n, 2, 3), n in {1, B}.

    Mirrors the reference: ``affine_grid`` + bilinear ``grid_sample``, zero padding, ``align_corners=False``.
    """
    b, c, h, w = x.shape
    n = theta.shape[0]
    grid = F.affine_grid(theta.to(x.device), [n, c, h, w], align_corners=False)
    if n != b:  # siamese: one grid, expanded (no copy); grid_sample is per-pixel so this equals a per-image loop
        grid = grid.expand(b, h, w, 2)
    # grid_sample requires grid.dtype == x.dtype (outside autocast); under autocast it upcasts both itself.
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _theta_dtype(x: Tensor) -> torch.dtype:
    # The reference builds theta in float32; keep float64 for float64 inputs (gradcheck) and never go below float32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------------------
# pure ops
# ----------------------------------------------------------------------------------------------------------------------
def flip(x: Tensor, mask: Tensor) -> Tensor:
    """Horizontal flip of the images where ``mask`` is true (DSA ``flip``; reference: ``rand_flip``).

    Args:
        x: image batch.
        mask: bool, true = flip the width axis.

    Shape:
        - x: (B, C, H, W); mask: (n,), n in {1, B}; output: (B, C, H, W).
    """
    _check_batch(x, mask, "flip")
    m = mask.reshape(-1, 1, 1, 1).to(device=x.device, dtype=torch.bool)
    return torch.where(m, x.flip(3), x)


def scale(x: Tensor, factors: Tensor) -> Tensor:
    """Anisotropic scaling about the image centre (DSA ``scale``; reference: ``rand_scale``).

    ``factors[:, 0]`` multiplies the horizontal and ``factors[:, 1]`` the vertical sampling coordinate, i.e. the
    affine matrix is ``[[sx, 0, 0], [0, sy, 0]]``; a factor > 1 shrinks the content (zero fill), < 1 enlarges it.

    Args:
        x: image batch.
        factors: (sx, sy) per sample.

    Shape:
        - x: (B, C, H, W); factors: (n, 2), n in {1, B}; output: (B, C, H, W).
    """
    n = _check_batch(x, factors, "scale")
    f = factors.to(_theta_dtype(x))
    theta = torch.zeros(n, 2, 3, dtype=f.dtype, device=f.device)
    theta[:, 0, 0] = f[:, 0]
    theta[:, 1, 1] = f[:, 1]
    return _affine(x, theta)


def rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotation about the image centre by ``angle`` radians, positive = anticlockwise (DSA ``rotate``; reference:
    ``rand_rotate``, matrix ``[[cos a, sin(-a), 0], [sin a, cos a, 0]]``).

    Args:
        x: image batch.
        angle: rotation in radians per sample.

    Shape:
        - x: (B, C, H, W); angle: (n,), n in {1, B}; output: (B, C, H, W).
    """
    n = _check_batch(x, angle, "rotate")
    a = angle.reshape(n).to(_theta_dtype(x))
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    # sin(-a) rather than -sin(a): the reference's exact expression, so float32 matrices agree bit for bit.
    theta = torch.stack([torch.stack([cos, torch.sin(-a), zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


def brightness(x: Tensor, offset: Tensor) -> Tensor:
    """Adds a per-sample constant (DSA ``color``/brightness; reference: ``rand_brightness``, ``x + (u - 0.5) * r``).

    Args:
        x: image batch.
        offset: additive shift per sample, ``(u - 0.5) * ratio`` as drawn by :func:`sample_brightness`.

    Shape:
        - x: (B, C, H, W); offset: (n,), n in {1, B}; output: (B, C, H, W).
    """
    _check_batch(x, offset, "brightness")
    return x + _per_sample(offset, x)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Scales each pixel's deviation from its channel mean (DSA ``color``/saturation; reference:
    ``rand_saturation``). With one channel the deviation is zero, so the op is the identity, as in the reference.

    Args:
        x: image batch.
        factor: multiplier per sample, ``u * ratio`` as drawn by :func:`sample_saturation`.

    Shape:
        - x: (B, C, H, W); factor: (n,), n in {1, B}; output: (B, C, H, W).
    """
    _check_batch(x, factor, "saturation")
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Scales each image's deviation from its global mean over (C, H, W) (DSA ``color``/contrast; reference:
    ``rand_contrast``).

    Args:
        x: image batch.
        factor: multiplier per sample, ``u + ratio`` as drawn by :func:`sample_contrast`.

    Shape:
        - x: (B, C, H, W); factor: (n,), n in {1, B}; output: (B, C, H, W).
    """
    _check_batch(x, factor, "contrast")
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def crop_shift_from_uniform(u: Tensor, height: int, width: int, ratio: float = 0.125) -> Tensor:
    """Maps uniforms from :func:`sample_crop` to the reference's integer translations.

    The reference draws ``randint(-s, s + 1)`` with ``s = int(size * ratio + 0.5)`` separately for rows (from H) and
    columns (from W); this returns integers with exactly that distribution.

    Shape:
        - u: (n, 2) floats in [0, 1); output: (n, 2) long (row shift, column shift).
    """
    sh, sw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    return torch.stack([_uniform_to_int(u[:, 0], -sh, sh + 1), _uniform_to_int(u[:, 1], -sw, sw + 1)], 1)


def crop(x: Tensor, shift: Tensor, ratio: float = 0.125) -> Tensor:
    """Random-crop-after-padding as an integer translation with zero fill (DSA ``crop``; reference: ``rand_crop``).

    ``out[..., i, j] = x[..., i + dy, j + dx]`` where in range, else 0: the reference pads by one zero pixel, clamps
    the shifted indices into the padded image and gathers, which is the same thing for any shift.

    Args:
        x: image batch.
        shift: long (dy, dx) per sample; or floats in [0, 1) from :func:`sample_crop`, mapped with
            :func:`crop_shift_from_uniform` using ``ratio`` and ``x``'s size.
        ratio: padding ratio, only used for float ``shift``.

    Shape:
        - x: (B, C, H, W); shift: (n, 2), n in {1, B}; output: (B, C, H, W).
    """
    n = _check_batch(x, shift, "crop")
    b, c, h, w = x.shape
    if shift.is_floating_point():
        shift = crop_shift_from_uniform(shift, h, w, ratio)
    shift = shift.to(device=x.device, dtype=torch.long)
    padded = F.pad(x, [1, 1, 1, 1])
    rows = (torch.arange(h, device=x.device) + shift[:, :1] + 1).clamp_(0, h + 1)  # (n, H)
    cols = (torch.arange(w, device=x.device) + shift[:, 1:] + 1).clamp_(0, w + 1)  # (n, W)
    if n == 1:  # siamese: one index vector per axis, plain index_select (cheaper than a per-sample gather)
        return padded.index_select(2, rows[0]).index_select(3, cols[0])
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def cutout_center_from_uniform(u: Tensor, height: int, width: int, ratio: float = 0.5) -> Tensor:
    """Maps uniforms from :func:`sample_cutout` to the reference's integer cutout centres.

    The reference draws ``randint(0, size + (1 - k % 2))`` with ``k = int(size * ratio + 0.5)`` the cutout side,
    separately for rows (H) and columns (W); this returns integers with exactly that distribution.

    Shape:
        - u: (n, 2) floats in [0, 1); output: (n, 2) long (row centre, column centre).
    """
    kh, kw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    return torch.stack(
        [_uniform_to_int(u[:, 0], 0, height + 1 - kh % 2), _uniform_to_int(u[:, 1], 0, width + 1 - kw % 2)], 1
    )


def cutout(x: Tensor, center: Tensor, ratio: float = 0.5) -> Tensor:
    """Zeroes one rectangle per image (DSA ``cutout``; reference: ``rand_cutout``).

    The rectangle has side ``k = int(size * ratio + 0.5)`` per axis and covers indices ``center - k // 2`` ...
    ``center - k // 2 + k - 1`` clamped into the image (the reference clamps each index, and clamping a contiguous
    range gives the contiguous range between the clamped ends).

    Args:
        x: image batch.
        center: long (row, column) centre per sample; or floats in [0, 1) from :func:`sample_cutout`, mapped with
            :func:`cutout_center_from_uniform`.
        ratio: side of the rectangle relative to the image side.

    Shape:
        - x: (B, C, H, W); center: (n, 2), n in {1, B}; output: (B, C, H, W).
    """
    _check_batch(x, center, "cutout")
    _, _, h, w = x.shape
    kh, kw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if kh == 0 or kw == 0:  # empty rectangle: the reference multiplies by an all-ones mask
        return x
    if center.is_floating_point():
        center = cutout_center_from_uniform(center, h, w, ratio)
    center = center.to(device=x.device, dtype=torch.long)
    top = center[:, :1] - kh // 2
    left = center[:, 1:] - kw // 2
    r = torch.arange(h, device=x.device)
    q = torch.arange(w, device=x.device)
    in_rows = (r >= top.clamp(0, h - 1)) & (r <= (top + kh - 1).clamp(0, h - 1))  # (n, H)
    in_cols = (q >= left.clamp(0, w - 1)) & (q <= (left + kw - 1).clamp(0, w - 1))  # (n, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    # multiply by a 0/1 mask (not masked_fill) so gradients and values match the reference exactly
    return x * keep.unsqueeze(1).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# samplers: the draws and their order mirror the reference (one torch.rand of length n per drawn quantity)
# ----------------------------------------------------------------------------------------------------------------------
def sample_flip(
    n: int, prob: float = 0.5, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws flip decisions ``u < prob`` (reference: ``rand_flip``).

    Shape:
        - output: (n,) bool.
    """
    return _uniform(n, generator, device) < prob


def sample_scale(
    n: int, ratio: float = 1.2, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws ``sx`` then ``sy`` uniform in ``[1/ratio, ratio)`` (reference: ``rand_scale``).

    Shape:
        - output: (n, 2) float32 (sx, sy).
    """
    # same float32 expression as the reference so equal uniforms give equal factors
    sx = _uniform(n, generator, device) * (ratio - 1.0 / ratio) + 1.0 / ratio
    sy = _uniform(n, generator, device) * (ratio - 1.0 / ratio) + 1.0 / ratio
    return torch.stack([sx, sy], 1)


def sample_rotate(
    n: int, degrees: float = 15.0, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws angles uniform in ``[-degrees, degrees)``, returned in radians (reference: ``rand_rotate``).

    Shape:
        - output: (n,) float32 radians.
    """
    return (_uniform(n, generator, device) - 0.5) * 2 * degrees / 180 * math.pi


def sample_brightness(
    n: int, ratio: float = 1.0, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws additive offsets ``(u - 0.5) * ratio`` (reference: ``rand_brightness``).

    Shape:
        - output: (n,) float32.
    """
    return (_uniform(n, generator, device) - 0.5) * ratio


def sample_saturation(
    n: int, ratio: float = 2.0, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws saturation multipliers ``u * ratio`` (reference: ``rand_saturation``).

    Shape:
        - output: (n,) float32.
    """
    return _uniform(n, generator, device) * ratio


def sample_contrast(
    n: int, ratio: float = 0.5, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws contrast multipliers ``u + ratio`` (reference: ``rand_contrast``).

    Shape:
        - output: (n,) float32.
    """
    return _uniform(n, generator, device) + ratio


def sample_crop(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws the row then the column uniform for :func:`crop` (reference: ``rand_crop``'s two ``randint`` calls).

    Shape:
        - output: (n, 2) float32 in [0, 1), mapped to integer shifts by :func:`crop_shift_from_uniform`.
    """
    return torch.stack([_uniform(n, generator, device), _uniform(n, generator, device)], 1)


def sample_cutout(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draws the row then the column uniform for :func:`cutout` (reference: ``rand_cutout``'s two ``randint`` calls).

    Shape:
        - output: (n, 2) float32 in [0, 1), mapped to integer centres by :func:`cutout_center_from_uniform`.
    """
    return torch.stack([_uniform(n, generator, device), _uniform(n, generator, device)], 1)
