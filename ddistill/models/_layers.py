"""Shared building blocks of the model zoo: name -> constructor maps for norms, activations and pools,
spatial-size arithmetic, a conv/norm/act/pool block and the common :class:`BaseNet` interface.

The option names follow DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021), whose
ConvNet ablations are spelled ``instancenorm``/``batchnorm``/``layernorm``/``groupnorm``/``none``,
``relu``/``sigmoid``/``leakyrelu`` and ``maxpooling``/``avgpooling``/``none``; short aliases are accepted too.
"""
from __future__ import annotations

import math
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeatureMapCollapsed",
    "InstanceGroupNorm",
    "ACT_LAYERS",
    "NORM_LAYERS",
    "POOL_LAYERS",
    "BaseNet",
    "BlockStackNet",
    "ConvNormAct",
    "canonical_pool",
    "check_size",
    "conv_out_size",
    "default_convnet_depth",
    "make_act",
    "make_head",
    "make_norm",
    "make_pool",
    "pool_out_size",
    "to_2tuple",
]

HW = tuple[int, int]
NormFactory = Callable[[int, HW], nn.Module]


def to_2tuple(size: int | tuple[int, int] | list[int]) -> HW:
    """Normalises an image size given as ``int`` or ``(H, W)`` to a ``(H, W)`` tuple of ints."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


# ---------------------------------------------------------------------------------------------------------------
# Normalisation layers. Factories take (channels, (H, W)) because DC's layernorm normalises over the whole
# (C, H, W) map of a sample and therefore needs the spatial size at construction time.
# ---------------------------------------------------------------------------------------------------------------
def _batchnorm(channels: int, hw: HW) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=True)


class InstanceGroupNorm(nn.GroupNorm):
    """``GroupNorm(C, C, affine=True)`` (DC's "instancenorm") computed with the instance-norm kernel.

    The two are the same function (per-sample, per-channel biased statistics, eps 1e-5) with the same
    parameters and state dict, but PyTorch's CPU ``group_norm`` kernel is slow for one channel per group,
    especially on channels_last bf16 activations (555 ms vs 193 ms fwd+bwd on 256x128x32x32 here; see
    ``benchmarks/eval_throughput.py``), so the forward pass dispatches to ``F.instance_norm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def _instancenorm(channels: int, hw: HW) -> nn.Module:
    # DC implements instance norm as a GroupNorm with one group per channel rather than nn.InstanceNorm2d:
    # same statistics, but the affine parameters are always present and there are no running buffers.
    return InstanceGroupNorm(channels, channels, affine=True)


def _instancenorm_native(channels: int, hw: HW) -> nn.Module:
    # Same function as "instancenorm" through PyTorch's own GroupNorm kernel: the reference row of
    # benchmarks/eval_throughput.py, and a fallback should the two kernels ever disagree.
    return nn.GroupNorm(channels, channels, affine=True)


def _layernorm(channels: int, hw: HW) -> nn.Module:
    return nn.LayerNorm((channels, hw[0], hw[1]), elementwise_affine=True)


def _groupnorm(channels: int, hw: HW) -> nn.Module:
    return nn.GroupNorm(4, channels, affine=True)


def _no_norm(channels: int, hw: HW) -> nn.Module:
    return nn.Identity()


NORM_LAYERS: dict[str, NormFactory] = {
    "batchnorm": _batchnorm,
    "instancenorm": _instancenorm,
    "instancenorm_native": _instancenorm_native,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "none": _no_norm,
}
_NORM_ALIASES = {"bn": "batchnorm", "in": "instancenorm", "ln": "layernorm", "gn": "groupnorm", "nn": "none"}

ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "leakyrelu": lambda: nn.LeakyReLU(negative_slope=0.01),
    # DC's later "swish" ablation is x * sigmoid(x), which is exactly SiLU.
    "swish": nn.SiLU,
}

POOL_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "maxpooling": lambda: nn.MaxPool2d(kernel_size=2, stride=2),
    "avgpooling": lambda: nn.AvgPool2d(kernel_size=2, stride=2),
    "none": nn.Identity,
}
_POOL_ALIASES = {"max": "maxpooling", "mp": "maxpooling", "avg": "avgpooling", "ap": "avgpooling", "np": "none"}


def _resolve(kind: str, name: str | None, table: dict[str, object], aliases: dict[str, str]) -> str:
    key = "none" if name is None else str(name).lower()
    key = aliases.get(key, key)
    if key not in table:
        raise ValueError(f"unknown {kind} '{name}'; choose from {sorted(table)} (aliases: {sorted(aliases)})")
    return key


def make_norm(name: str | None, channels: int, hw: HW) -> nn.Module:
    """Builds the normalisation layer ``name`` for a ``(channels, *hw)`` feature map (``none`` -> Identity)."""
    return NORM_LAYERS[_resolve("norm", name, NORM_LAYERS, _NORM_ALIASES)](channels, hw)


def make_act(name: str) -> nn.Module:
    """Builds the activation ``name`` (``relu``, ``sigmoid``, ``leakyrelu`` or ``swish``)."""
    return ACT_LAYERS[_resolve("activation", name, ACT_LAYERS, {})]()


def make_pool(name: str | None) -> nn.Module:
    """Builds the 2x2/stride-2 pooling ``name`` (``maxpooling``, ``avgpooling``; ``none`` -> Identity)."""
    return POOL_LAYERS[_resolve("pooling", name, POOL_LAYERS, _POOL_ALIASES)]()


def canonical_pool(name: str | None) -> str:
    """Canonical DC spelling of a pooling name (``"ap"`` -> ``"avgpooling"``)."""
    return _resolve("pooling", name, POOL_LAYERS, _POOL_ALIASES)


def make_head(in_features: int, num_classes: int) -> nn.Module:
    """Linear classifier; ``num_classes == 0`` gives an Identity so ``forward`` returns the embedding (timm style)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


# ---------------------------------------------------------------------------------------------------------------
# Spatial arithmetic: the zoo sizes its classifiers analytically instead of hard-coding DC's 32 px numbers, so
# the same classes also work at 64/128 px. At DC's sizes the results coincide with DC's constants.
# ---------------------------------------------------------------------------------------------------------------
def conv_out_size(hw: HW, kernel_size: int, padding: int = 0, stride: int = 1) -> HW:
    return tuple((s + 2 * padding - kernel_size) // stride + 1 for s in hw)  # type: ignore[return-value]


def pool_out_size(hw: HW, pool: str | None) -> HW:
    return hw if canonical_pool(pool) == "none" else (hw[0] // 2, hw[1] // 2)


class FeatureMapCollapsed(ValueError):
    """An architecture's feature map shrinks below one pixel on the given image size (e.g. depth 4 with pooling on
    8 px digits). A ValueError of its own so callers (the NAS evaluator's pre-flight check) tell "too deep for these
    images" from any other bad argument without reading the message."""


def check_size(hw: HW, what: str) -> HW:
    if min(hw) < 1:
        raise FeatureMapCollapsed(f"{what}: the feature map collapsed to {hw}; the input is too small for this "
                                  f"architecture")
    return hw


def default_convnet_depth(image_size: int | tuple[int, int]) -> int:
    """ConvNet depth used when none is given: 3 up to 32 px, 4 at 64 px, 5 at 128 px (one block per doubling).

    DC/DM/MTT use ConvNet-D3 on 28/32 px data, ConvNet-D4 on 64 px (Tiny ImageNet) and ConvNet-D5 on 128 px
    (ImageNet subsets); this keeps the final map at about 4x4 whatever the resolution.
    """
    side = min(to_2tuple(image_size))
    return max(3, int(math.log2(side)) - 2)


class ConvNormAct(nn.Module):
    """``conv -> norm -> act -> pool`` block that returns both the activation and the pooled map.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        in_hw: input spatial size, needed to size layer norm and to report ``act_hw`` / ``out_hw``.
        kernel_size: square kernel size.
        padding: zero padding of the convolution.
        norm: normalisation name (see :data:`NORM_LAYERS`).
        act: activation name (see :data:`ACT_LAYERS`).
        pool: pooling name (see :data:`POOL_LAYERS`).
        bias: whether the convolution has a bias.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: tuple ``(activation (B, out_channels, H', W'), pooled (B, out_channels, H'', W''))``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        in_hw: HW,
        kernel_size: int = 3,
        padding: int = 1,
        norm: str | None = "none",
        act: str = "relu",
        pool: str | None = "none",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)
        self.act_hw = check_size(conv_out_size(in_hw, kernel_size, padding), type(self).__name__)
        self.norm = make_norm(norm, out_channels, self.act_hw)
        self.act = make_act(act)
        self.pool = make_pool(pool)
        self.out_hw = check_size(pool_out_size(self.act_hw, pool), type(self).__name__)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = self.act(self.norm(self.conv(x)))
        return a, self.pool(a)


class BaseNet(nn.Module):
    """Common interface of every network in the zoo.

    Subclasses implement :meth:`forward_features` (one pass returning the per-stage activations and the
    embedding) and own a ``classifier`` head mapping the embedding to logits; ``embed_dim`` is the embedding size.
    """

    embed_dim: int
    classifier: nn.Module

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:  # pragma: no cover - abstract
        """Returns ``(per-stage activations, embedding (B, embed_dim))`` computed in a single pass."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Shape: ``(B, C, H, W) -> (B, num_classes)`` (``(B, embed_dim)`` when ``num_classes == 0``)."""
        return self.classifier(self.forward_features(x)[1])

    def features(self, x: Tensor) -> list[Tensor]:
        """Per-stage activations (see the subclass docstring for which tensors these are)."""
        return self.forward_features(x)[0]

    def embed(self, x: Tensor) -> Tensor:
        """Embedding fed to the classifier. Shape: ``(B, C, H, W) -> (B, embed_dim)``."""
        return self.forward_features(x)[1]

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}"


class BlockStackNet(BaseNet):
    """A :class:`BaseNet` made of a stack of blocks, each returning ``(activation, output)``; the
    activations are the per-stage features and the flattened last output is the embedding."""

    blocks: nn.ModuleList

    def _finish(self, blocks: list[nn.Module], channels: int, hw: HW, num_classes: int) -> None:
        """Stores the blocks and builds the linear head on the flattened (channels, *hw) output."""
        self.blocks = nn.ModuleList(blocks)
        self.out_hw = hw
        self.embed_dim = channels * hw[0] * hw[1]
        self.classifier = make_head(self.embed_dim, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        feats: list[Tensor] = []
        for block in self.blocks:
            a, x = block(x)
            feats.append(a)
        return feats, x.flatten(1)

