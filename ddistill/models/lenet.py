"""LeNet of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ddistill.models._registry import MODELS
from ddistill.models._layers import BaseNet, ConvNormAct, make_head, to_2tuple

__all__ = ["LeNet"]


class LeNet(BaseNet):
    """DC's LeNet-5 (Zhao et al. 2021): two 5x5 conv/ReLU/max-pool stages, then 120-84-K fully connected layers.

    For 1-channel input the first convolution is padded by 2, as in DC, so 28 px digits and 32 px images both
    reach the ``16 x 5 x 5`` map DC's first linear layer expects; other sizes are sized analytically.

    ``features`` are the two convolutional ReLU outputs (before pooling); ``embed`` is the 84-d hidden activation
    that feeds the final linear classifier.

    Args:
        in_channels: number of input channels.
        num_classes: number of logits; 0 replaces the classifier by an Identity.
        image_size: input size, ``int`` or ``(H, W)``.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)``
        - ``features``: ``[(B, 6, H1, W1), (B, 16, H2, W2)]``
        - ``embed``: ``(B, 84)``
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int | tuple[int, int]) -> None:
        super().__init__()
        hw = to_2tuple(image_size)
        pad = 2 if in_channels == 1 else 0
        self.conv1 = ConvNormAct(in_channels, 6, in_hw=hw, kernel_size=5, padding=pad, pool="maxpooling")
        self.conv2 = ConvNormAct(6, 16, in_hw=self.conv1.out_hw, kernel_size=5, padding=0, pool="maxpooling")
        h, w = self.conv2.out_hw
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.relu = nn.ReLU()
        self.embed_dim = 84
        self.classifier = make_head(self.embed_dim, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        a1, x = self.conv1(x)
        a2, x = self.conv2(x)
        x = self.relu(self.fc1(x.flatten(1)))
        return [a1, a2], self.relu(self.fc2(x))


@MODELS.register("lenet")
def lenet(**kwargs: Any) -> LeNet:
    """DC LeNet."""
    return LeNet(**kwargs)
