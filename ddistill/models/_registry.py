"""The model registry and factory (kept apart from the package ``__init__`` so the architecture modules can register
into it without importing a half-initialised package)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ddistill.registry import Registry

MODELS = Registry("model")


def create_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    **overrides: Any,
) -> nn.Module:
    """Builds the registered model ``name``.

    Args:
        name: registry key (see :func:`list_models`); unknown names raise ``KeyError`` listing the choices.
        in_channels: number of input channels.
        num_classes: number of logits (0 gives an Identity head, so ``forward`` returns the embedding).
        image_size: ``int`` or ``(H, W)``.
        **overrides: architecture keyword arguments that replace the variant's defaults
            (e.g. ``norm="batchnorm"``, ``width=64``, ``depth=4``).

    Returns:
        A freshly initialised module, drawn from the global RNG (use :class:`ModelFamily` for seeded streams).
    """
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **overrides)


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()
