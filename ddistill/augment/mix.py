"""Batch-mixing augmentations as DD-Ranking applies them (``ddranking`` v0.2.0 ``aug/mixup.py``, ``aug/cutmix.py``;
re-implemented): Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) on the *images only*.

DD-Ranking mixes a batch with a permutation of itself and keeps each image's own target: the labels are not mixed.
Under its soft-label ``relabel`` protocol that is consistent (the teacher labels the mixed image); with hard labels
it is DD-Ranking's behaviour, kept for comparability with its numbers, and stated here because the papers' Mixup /
CutMix mix the labels too.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CutMix", "Mixup"]


def _beta(a: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(a, a), reproducible from ``generator`` (torch's Beta sampler takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(a, a))


class Mixup(nn.Module):
    """``x <- lam * x + (1 - lam) * x[perm]`` with one ``lam ~ Beta(alpha, alpha)`` per batch.

    Args:
        alpha: the Beta parameter (DD-Ranking's ``lambda``; 0.8 in its SRe2L configs).

    Shape: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, alpha: float = 0.8) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        lam = _beta(self.alpha, generator)
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return lam * x + (1.0 - lam) * x[perm]


class CutMix(nn.Module):
    """Pastes one box of ``x[perm]`` into every image; the box has side ratio ``sqrt(1 - lam)``,
    ``lam ~ Beta(beta, beta)`` per batch, a uniform centre, and is clipped at the borders.

    Args:
        beta: the Beta parameter (1.0 in DD-Ranking's configs).

    Shape: (B, C, H, W) -> (B, C, H, W) (a new tensor; the input is not modified).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"cutmix beta must be > 0, got {beta}")
        self.beta = float(beta)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        lam = _beta(self.beta, generator)
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        h, w = x.shape[2], x.shape[3]
        ratio = math.sqrt(1.0 - lam)
        bh, bw = int(h * ratio), int(w * ratio)
        cy, cx = (int(v) for v in torch.randint(0, 1 << 30, (2,), generator=generator))
        cy, cx = cy % h, cx % w
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        return out
