"""Small-image AlexNet of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021)."""
from __future__ import annotations

from typing import Any


from ddistill.models._registry import MODELS
from ddistill.models._layers import BlockStackNet, ConvNormAct, to_2tuple

__all__ = ["AlexNet"]

# (out_channels, kernel_size, padding, max-pool after the activation); DC ``networks.py:AlexNet``.
_ALEXNET_CFG: tuple[tuple[int, int, int, bool], ...] = (
    (128, 5, 2, True),
    (192, 5, 2, True),
    (256, 3, 1, False),
    (192, 3, 1, False),
    (192, 3, 1, True),
)


class AlexNet(BlockStackNet):
    """DC's AlexNet for 28/32 px images (Zhao et al. 2021), optionally with a norm after every convolution.

    Five convolutions (128-5x5, 192-5x5, 256-3x3, 192-3x3, 192-3x3) with ReLU, 2x2 max pooling after the first,
    second and fifth, and a single linear classifier on the flattened map (``192 * 4 * 4`` at 32 px). For
    1-channel input the first convolution is padded by 4 instead of 2, as in DC, so 28 px digits yield the same
    geometry as 32 px images. ``norm="batchnorm"`` gives DC's AlexNetBN.

    ``features`` are the five ReLU outputs (before any pooling, as DataDAM hooks them); ``embed`` is the
    flattened final pooled map feeding the classifier (DC's ``AlexNet.embed``).

    Args:
        in_channels: number of input channels.
        num_classes: number of logits; 0 replaces the classifier by an Identity.
        image_size: input size, ``int`` or ``(H, W)``.
        norm: normalisation after each convolution (``"none"`` for DC AlexNet, ``"batchnorm"`` for AlexNetBN).

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)``
        - ``features``: 5 tensors ``(B, C_i, H_i, W_i)``
        - ``embed``: ``(B, embed_dim)``, ``embed_dim = 3072`` at 32 px
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        norm: str = "none",
    ) -> None:
        super().__init__()
        hw = to_2tuple(image_size)
        blocks = []
        channels = in_channels
        for i, (out_channels, kernel, padding, pooled) in enumerate(_ALEXNET_CFG):
            if i == 0 and in_channels == 1:
                padding = 4  # DC: grows 28 px digits to the 32 px geometry.
            block = ConvNormAct(
                channels,
                out_channels,
                in_hw=hw,
                kernel_size=kernel,
                padding=padding,
                norm=norm,
                act="relu",
                pool="maxpooling" if pooled else "none",
            )
            blocks.append(block)
            channels, hw = out_channels, block.out_hw
        self._finish(blocks, channels, hw, num_classes)



@MODELS.register("alexnet")
def alexnet(**kwargs: Any) -> AlexNet:
    """DC AlexNet (no normalisation)."""
    return AlexNet(**{"norm": "none", **kwargs})


@MODELS.register("alexnet_bn")
def alexnet_bn(**kwargs: Any) -> AlexNet:
    """DC AlexNetBN (batch norm after every convolution)."""
    return AlexNet(**{"norm": "batchnorm", **kwargs})
