"""CIFAR-style VGG of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021)."""
from __future__ import annotations

from typing import Any


from ddistill.models._registry import MODELS
from ddistill.models._layers import BlockStackNet, ConvNormAct, to_2tuple

__all__ = ["VGG", "VGG_CFGS"]

# Integers are 3x3 conv widths, "M" a 2x2 max pool (DC ``networks.py:cfg_vgg``, after kuangliu/pytorch-cifar).
VGG_CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(BlockStackNet):
    """DC's small-image VGG (Zhao et al. 2021): 3x3 conv -> norm -> ReLU stacks, max pools, one linear layer.

    DC's VGG11 normalises with instance norm (``GroupNorm(C, C)``) and VGG11BN with batch norm. At 32 px the five
    max pools leave a 1x1 map, so the classifier is ``Linear(512, K)`` exactly as in DC; other sizes flatten the
    final map. For 1-channel input the first convolution uses ``padding=3`` (28 px -> 32 px), as DC does. DC's
    trailing ``AvgPool2d(kernel_size=1, stride=1)`` is the identity and is omitted.

    ``features`` are the ReLU outputs of all convolutions (8 for VGG11, before pooling, as DataDAM hooks them);
    ``embed`` is the flattened final map feeding the classifier (DC's ``VGG.embed``).

    Args:
        in_channels: number of input channels.
        num_classes: number of logits; 0 replaces the classifier by an Identity.
        image_size: input size, ``int`` or ``(H, W)``.
        cfg: key of :data:`VGG_CFGS` (``"vgg11"`` ... ``"vgg19"``).
        norm: normalisation after each convolution (``"instancenorm"`` for VGG11, ``"batchnorm"`` for VGG11BN).

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)``
        - ``features``: one ``(B, C_i, H_i, W_i)`` tensor per convolution
        - ``embed``: ``(B, embed_dim)``, ``embed_dim = 512`` at 32 px
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        cfg: str = "vgg11",
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        layout = VGG_CFGS[cfg.lower()]
        hw = to_2tuple(image_size)
        blocks = []
        channels = in_channels
        for i, item in enumerate(layout):
            if item == "M":
                continue  # folded into the preceding block's pool
            pooled = i + 1 < len(layout) and layout[i + 1] == "M"
            block = ConvNormAct(
                channels,
                int(item),
                in_hw=hw,
                kernel_size=3,
                padding=3 if (i == 0 and in_channels == 1) else 1,
                norm=norm,
                act="relu",
                pool="maxpooling" if pooled else "none",
            )
            blocks.append(block)
            channels, hw = int(item), block.out_hw
        self._finish(blocks, channels, hw, num_classes)



@MODELS.register("vgg11")
def vgg11(**kwargs: Any) -> VGG:
    """DC VGG11 (instance norm)."""
    return VGG(**{"cfg": "vgg11", "norm": "instancenorm", **kwargs})


@MODELS.register("vgg11_bn")
def vgg11_bn(**kwargs: Any) -> VGG:
    """DC VGG11BN (batch norm)."""
    return VGG(**{"cfg": "vgg11", "norm": "batchnorm", **kwargs})
