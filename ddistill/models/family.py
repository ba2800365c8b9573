"""Reproducible streams of freshly initialised networks.

Distillation methods such as DC/DSA/DM (Zhao et al. 2021, 2023) draw a new randomly initialised network at every
outer iteration, and evaluation trains several fresh networks per architecture. DC reseeds the global RNG from the
wall clock inside ``get_network``; here each network's initialisation depends only on ``(seed, index)`` and is drawn
inside a forked RNG, so runs are reproducible, resumable, and never disturb the caller's random stream.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ddistill.models._registry import MODELS, create_model
from ddistill.utils.seed import seeded_rng

__all__ = ["ModelFamily"]

_MIX = 1_000_003


class ModelFamily:
    """Reproducible stream of freshly initialised networks.

    Network ``index`` of a family is initialised from the derived seed ``(seed * 1_000_003 + index) % 2**63``,
    inside :func:`ddistill.utils.seed.seeded_rng` (a forked RNG), so ``build(i)`` always returns the same weights and
    the caller's global RNG state is exactly as before the call. Only the CPU generator is seeded: weights are
    created on the CPU and then moved to ``device``, so they are identical on every device.

    Args:
        name: registered model name (see :func:`ddistill.models.list_models`).
        in_channels: number of input channels.
        num_classes: number of classes.
        image_size: ``int`` or ``(H, W)``.
        seed: seed of the stream.
        **model_kwargs: architecture overrides passed to :func:`ddistill.models.create_model`.

    Example:
        >>> fam = ModelFamily("convnet", in_channels=3, num_classes=10, image_size=32, seed=0)
        >>> net = fam.sample()        # index 0
        >>> net = fam.sample()        # index 1
        >>> state = fam.state_dict()  # store with the checkpoint; load_state_dict() continues at index 2
    """

    def __init__(
        self,
        name: str,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        seed: int = 0,
        **model_kwargs: Any,
    ) -> None:
        MODELS.get(name)  # fail fast on typos, with the list of valid names
        self.name = name
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        self.seed = int(seed)
        self.model_kwargs = dict(model_kwargs)
        self._next_index = 0

    def derived_seed(self, index: int) -> int:
        """Seed used to initialise network ``index``."""
        if index < 0:
            raise ValueError(f"index must be non-negative, got {index}")
        return (self.seed * _MIX + int(index)) % 2**63

    def build(self, index: int, device: torch.device | str = "cpu") -> nn.Module:
        """Network ``index`` of the stream, on ``device``; the same ``(seed, index)`` always gives the same weights."""
        with seeded_rng(self.derived_seed(index)):
            model = create_model(
                self.name,
                in_channels=self.in_channels,
                num_classes=self.num_classes,
                image_size=self.image_size,
                **self.model_kwargs,
            )
        return model.to(device)

    def sample(self, device: torch.device | str = "cpu") -> nn.Module:
        """Next network of the stream (advances the internal counter)."""
        index = self._next_index
        self._next_index += 1
        return self.build(index, device)

    @property
    def next_index(self) -> int:
        """Index that the next :meth:`sample` call will build."""
        return self._next_index

    def state_dict(self) -> dict[str, Any]:
        """Position of the stream, for checkpointing."""
        return {"name": self.name, "seed": self.seed, "next_index": self._next_index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the position saved by :meth:`state_dict`; the stream must be the same (name and seed)."""
        for key in ("name", "seed"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"state_dict is for {key}={state[key]!r}, this family has {getattr(self, key)!r}")
        self._next_index = int(state["next_index"])

    def __repr__(self) -> str:
        return (
            f"ModelFamily({self.name!r}, in_channels={self.in_channels}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, seed={self.seed}, next_index={self._next_index}"
            + "".join(f", {k}={v!r}" for k, v in self.model_kwargs.items())
            + ")"
        )
