"""Random crop with zero padding plus horizontal flip (``RandomCrop(size, padding)`` + ``RandomHorizontalFlip``), with an
explicit generator: the standard CIFAR training augmentation, used by KRR-ST for its real batches and by the transfer
evaluator for fine-tuning. Registered as ``pad_crop_flip``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.encoding import Encoding

__all__ = ["RandomPadCropFlip", "black_level"]


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
