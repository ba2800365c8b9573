"""ConvNet of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021) and its ablations.

The default network is DC's ``ConvNet``: ``depth`` blocks of ``Conv2d(3x3, width) -> norm -> act -> 2x2 pool``
followed by one linear layer on the flattened final map, with ``width=128``, ``act="relu"``,
``norm="instancenorm"`` and ``pool="avgpooling"``. ``width`` may also be a list of per-block widths, which gives the
``convnet_<w1>_<w2>_..._bn`` backbones of KRR-ST (Lee et al., "Self-Supervised Dataset Distillation for Transfer
Learning", ICLR 2024).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


from ddistill.models._registry import MODELS
from ddistill.models._layers import BlockStackNet, ConvNormAct, default_convnet_depth, to_2tuple

__all__ = ["ConvNet"]


class ConvNet(BlockStackNet):
    """DC's ConvNet (Zhao et al. 2021), generalised to any input size and to per-block widths.

    Each block is ``Conv2d(k=3, padding=1) -> norm -> act -> pool(2x2, stride 2)``. As in DC, a 1-channel input
    gets ``padding=3`` on the first convolution, which turns a 28 px digit into a 32 px map so MNIST-like data and
    CIFAR share one geometry (the classifier is therefore sized as for 32 px). Classifier input sizes are derived
    analytically, so they equal DC's constants at 28/32 px and stay correct at 64/128 px.

    ``features`` returns, for every block, the output of its activation *before* pooling. This is the tensor
    DataDAM (Sajedi et al., ICCV 2023) hooks for its attention maps (forward hooks on the ReLU modules of DC's
    ``features`` Sequential, ``main_DataDAM.py:attach_hooks``). ``embed`` is the flattened output of the last
    block after pooling, i.e. exactly what feeds the classifier (DC/DM's ``ConvNet.embed``).

    Args:
        in_channels: number of input channels.
        num_classes: number of logits; 0 replaces the classifier by an Identity.
        image_size: input size, ``int`` or ``(H, W)``.
        width: channels of every block (DC default 128), or a list with one width per block.
        depth: number of blocks. ``None`` picks it from ``image_size`` (3 up to 32 px, 4 at 64 px, 5 at 128 px;
            see :func:`~ddistill.models._layers.default_convnet_depth`); must equal ``len(width)`` if both given.
        act: ``"relu"``, ``"sigmoid"``, ``"leakyrelu"`` (slope 0.01) or ``"swish"``.
        norm: ``"instancenorm"`` (GroupNorm with one group per channel, as DC), ``"batchnorm"``, ``"layernorm"``
            (over the whole ``(C, H, W)`` map, as DC), ``"groupnorm"`` (4 groups) or ``"none"``.
        pool: ``"avgpooling"``, ``"maxpooling"`` or ``"none"``.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)``
        - ``features``: list of ``depth`` tensors ``(B, width_i, H_i, W_i)`` (pre-pooling activations)
        - ``embed``: ``(B, embed_dim)`` with ``embed_dim = width_last * H_out * W_out``
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        width: int | Sequence[int] = 128,
        depth: int | None = None,
        act: str = "relu",
        norm: str = "instancenorm",
        pool: str = "avgpooling",
    ) -> None:
        super().__init__()
        hw = to_2tuple(image_size)
        if isinstance(width, int):
            depth = default_convnet_depth(hw) if depth is None else int(depth)
            widths = [width] * depth
        else:
            widths = [int(w) for w in width]
            if depth is not None and depth != len(widths):
                raise ValueError(f"depth={depth} contradicts the {len(widths)} per-block widths {widths}")
        if not widths:
            raise ValueError("ConvNet needs at least one block")

        blocks = []
        channels = in_channels
        for i, w in enumerate(widths):
            # DC's padding=3 on the first conv of 1-channel nets turns 28 px digits into 32 px maps.
            padding = 3 if (i == 0 and in_channels == 1) else 1
            block = ConvNormAct(channels, w, in_hw=hw, kernel_size=3, padding=padding, norm=norm, act=act, pool=pool)
            blocks.append(block)
            channels, hw = w, block.out_hw
        self.widths = widths
        self._finish(blocks, channels, hw, num_classes)



def _convnet(defaults: dict[str, Any], kwargs: dict[str, Any]) -> ConvNet:
    # Caller overrides win over the variant's defaults, so e.g. convnet_bn(width=64) is a 64-wide BN ConvNet.
    return ConvNet(**{**defaults, **kwargs})


@MODELS.register("convnet")
def convnet(**kwargs: Any) -> ConvNet:
    """DC ConvNet: width 128, ReLU, instance norm, average pooling, depth chosen from ``image_size``."""
    return _convnet({}, kwargs)


# Depth ablation (DC Table 5 / ``utils.get_network`` ConvNetD1..D4); D5 is the 128 px backbone of MTT/DataDAM.
@MODELS.register("convnet_d1")
def convnet_d1(**kwargs: Any) -> ConvNet:
    """ConvNet with one block."""
    return _convnet({"depth": 1}, kwargs)


@MODELS.register("convnet_d2")
def convnet_d2(**kwargs: Any) -> ConvNet:
    """ConvNet with two blocks."""
    return _convnet({"depth": 2}, kwargs)


@MODELS.register("convnet_d3")
def convnet_d3(**kwargs: Any) -> ConvNet:
    """ConvNet with three blocks (DC's default for 28/32 px)."""
    return _convnet({"depth": 3}, kwargs)


@MODELS.register("convnet_d4")
def convnet_d4(**kwargs: Any) -> ConvNet:
    """ConvNet with four blocks (the 64 px backbone of DM/MTT)."""
    return _convnet({"depth": 4}, kwargs)


@MODELS.register("convnet_d5")
def convnet_d5(**kwargs: Any) -> ConvNet:
    """ConvNet with five blocks (the 128 px backbone of MTT/DataDAM)."""
    return _convnet({"depth": 5}, kwargs)


# Width ablation (ConvNetW32..W256).
@MODELS.register("convnet_w32")
def convnet_w32(**kwargs: Any) -> ConvNet:
    """ConvNet with 32 channels per block."""
    return _convnet({"width": 32}, kwargs)


@MODELS.register("convnet_w64")
def convnet_w64(**kwargs: Any) -> ConvNet:
    """ConvNet with 64 channels per block."""
    return _convnet({"width": 64}, kwargs)


@MODELS.register("convnet_w128")
def convnet_w128(**kwargs: Any) -> ConvNet:
    """ConvNet with 128 channels per block (the default)."""
    return _convnet({"width": 128}, kwargs)


@MODELS.register("convnet_w256")
def convnet_w256(**kwargs: Any) -> ConvNet:
    """ConvNet with 256 channels per block."""
    return _convnet({"width": 256}, kwargs)


# Activation ablation (ConvNetAS / AR / AL).
@MODELS.register("convnet_sigmoid")
def convnet_sigmoid(**kwargs: Any) -> ConvNet:
    """ConvNet with sigmoid activations."""
    return _convnet({"act": "sigmoid"}, kwargs)


@MODELS.register("convnet_relu")
def convnet_relu(**kwargs: Any) -> ConvNet:
    """ConvNet with ReLU activations (the default)."""
    return _convnet({"act": "relu"}, kwargs)


@MODELS.register("convnet_leakyrelu")
def convnet_leakyrelu(**kwargs: Any) -> ConvNet:
    """ConvNet with LeakyReLU(0.01) activations."""
    return _convnet({"act": "leakyrelu"}, kwargs)


# Normalisation ablation (ConvNetNN / BN / LN / IN / GN).
@MODELS.register("convnet_nn")
def convnet_nn(**kwargs: Any) -> ConvNet:
    """ConvNet without normalisation."""
    return _convnet({"norm": "none"}, kwargs)


@MODELS.register("convnet_bn")
def convnet_bn(**kwargs: Any) -> ConvNet:
    """ConvNet with batch norm."""
    return _convnet({"norm": "batchnorm"}, kwargs)


@MODELS.register("convnet_ln")
def convnet_ln(**kwargs: Any) -> ConvNet:
    """ConvNet with layer norm over each block's whole ``(C, H, W)`` map."""
    return _convnet({"norm": "layernorm"}, kwargs)


@MODELS.register("convnet_in")
def convnet_in(**kwargs: Any) -> ConvNet:
    """ConvNet with instance norm (the default)."""
    return _convnet({"norm": "instancenorm"}, kwargs)


@MODELS.register("convnet_gn")
def convnet_gn(**kwargs: Any) -> ConvNet:
    """ConvNet with 4-group group norm."""
    return _convnet({"norm": "groupnorm"}, kwargs)


# Pooling ablation (ConvNetNP / MP / AP).
@MODELS.register("convnet_np")
def convnet_np(**kwargs: Any) -> ConvNet:
    """ConvNet without pooling (the classifier sees the full-resolution map)."""
    return _convnet({"pool": "none"}, kwargs)


@MODELS.register("convnet_mp")
def convnet_mp(**kwargs: Any) -> ConvNet:
    """ConvNet with 2x2 max pooling."""
    return _convnet({"pool": "maxpooling"}, kwargs)


@MODELS.register("convnet_ap")
def convnet_ap(**kwargs: Any) -> ConvNet:
    """ConvNet with 2x2 average pooling (the default)."""
    return _convnet({"pool": "avgpooling"}, kwargs)


# KRR-ST backbones (``models/wrapper.py:get_model`` parses the widths and norm out of these names).
@MODELS.register("convnet_128_256_512_bn")
def convnet_128_256_512_bn(**kwargs: Any) -> ConvNet:
    """KRR-ST's 32 px backbone: three BN blocks of 128, 256 and 512 channels."""
    return _convnet({"width": [128, 256, 512], "norm": "batchnorm"}, kwargs)


@MODELS.register("convnet_64_128_256_512_bn")
def convnet_64_128_256_512_bn(**kwargs: Any) -> ConvNet:
    """KRR-ST's 64 px backbone: four BN blocks of 64, 128, 256 and 512 channels."""
    return _convnet({"width": [64, 128, 256, 512], "norm": "batchnorm"}, kwargs)
