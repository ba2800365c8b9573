"""Explicit randomness: library code takes ``torch.Generator`` objects and never reseeds global RNGs."""
from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Runs the block with torch's global RNG forked and seeded with ``seed``, then restores the caller's state.

    For code that can only draw from the global RNG (``nn.Module`` initialisers, dropout): the draws are
    reproducible and the caller's random stream is untouched. On a CUDA ``device`` its generator is forked and
    seeded too; otherwise only the CPU generator is.
    """
    dev = torch.device(device)
    cuda = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.manual_seed(int(seed))
        yield

