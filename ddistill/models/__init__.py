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

from ddistill.models import alexnet, convnet, lenet, mlp, resnet, vgg  # noqa: F401  (register into MODELS)
from ddistill.models._layers import FeatureMapCollapsed
from ddistill.models._registry import MODELS, create_model, list_models
from ddistill.models.alexnet import AlexNet
from ddistill.models.convnet import ConvNet
from ddistill.models.family import ModelFamily
from ddistill.models.lenet import LeNet
from ddistill.models.mlp import MLP
from ddistill.models.resnet import ResNet
from ddistill.models.vgg import VGG

__all__ = [
    "EVAL_POOLS",
    "MODELS",
    "MLP",
    "VGG",
    "AlexNet",
    "ConvNet",
    "FeatureMapCollapsed",
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
