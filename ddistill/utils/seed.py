"""Explicit randomness: library code takes ``torch.Generator`` objects and never reseeds global RNGs."""
from __future__ import annotations

import torch


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator seeded with ``seed`` (CPU by default: index sampling is done on the CPU)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def derive_seed(seed: int, *streams: int) -> int:
    """Deterministically mixes ``seed`` with stream ids (e.g. model index, step) into a 63-bit seed."""
    h = int(seed) & 0xFFFFFFFFFFFFFFFF
    for s in streams:
        h = (h * 6364136223846793005 + (int(s) & 0xFFFFFFFF) + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    return h >> 1
