"""Model zoo: the architectures of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021) and
its successors, behind one registry.

Every image model takes ``(in_channels, num_classes, image_size)`` and implements

- ``forward(x) -> (B, num_classes)`` logits,
- ``forward_features(x) -> (per-stage activations, embedding)`` in one pass, with ``features(x)`` / ``embed(x)``
  built on it, and ``embed_dim``.

Example:
    >>> from ddistill.models import create_model
    >>> net = create_model("convnet", in_channels=3, num_classes=10, image_size=32)
    >>> net = create_model("convnet", in_channels=3, num_classes=10, image_size=32, norm="batchnorm", width=64)
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ddistill.registry import Registry

MODELS = Registry("model")

# The submodules register themselves into MODELS on import, so they must come after its definition.
from ddistill.models import alexnet, convnet, lenet, mlp, resnet, vgg  # noqa: E402,F401
from ddistill.models.alexnet import AlexNet  # noqa: E402
from ddistill.models.convnet import ConvNet  # noqa: E402
from ddistill.models.family import ModelFamily  # noqa: E402
from ddistill.models.lenet import LeNet  # noqa: E402
from ddistill.models.mlp import MLP  # noqa: E402
from ddistill.models.resnet import ResNet  # noqa: E402
from ddistill.models.vgg import VGG  # noqa: E402

__all__ = [
    "EVAL_POOLS",
    "MODELS",
    "MLP",
    "VGG",
    "AlexNet",
    "ConvNet",
    "LeNet",
    "ModelFamily",
    "ResNet",
    "create_model",
    "list_models",
]

# DC's cross-architecture evaluation set and ConvNet ablation pools (``utils.get_eval_pool`` / paper Tables 2, 5).
EVAL_POOLS: dict[str, list[str]] = {
    "cross": ["convnet", "alexnet", "vgg11", "resnet18"],
    "depth": ["convnet_d1", "convnet_d2", "convnet_d3", "convnet_d4"],
    "width": ["convnet_w32", "convnet_w64", "convnet_w128", "convnet_w256"],
    "act": ["convnet_sigmoid", "convnet_relu", "convnet_leakyrelu"],
    "norm": ["convnet_nn", "convnet_bn", "convnet_ln", "convnet_in", "convnet_gn"],
    "pool": ["convnet_np", "convnet_mp", "convnet_ap"],
}


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
