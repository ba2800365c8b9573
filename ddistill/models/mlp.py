"""Three-layer MLP of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ddistill.models._registry import MODELS
from ddistill.models._layers import BaseNet, make_act, make_head, to_2tuple

__all__ = ["MLP"]


class MLP(BaseNet):
    """DC's MLP (Zhao et al. 2021): flatten -> Linear(D, 128) -> ReLU -> Linear(128, 128) -> ReLU -> Linear(128, K).

    The input dimension is ``in_channels * H * W`` (DC hard-codes ``28*28*1`` or ``32*32*3``, the same numbers).
    ``features`` are the hidden activations, which are 2-D ``(B, 128)`` tensors rather than feature maps;
    ``embed`` is the last hidden activation, the classifier's input.

    Args:
        in_channels: number of input channels.
        num_classes: number of logits; 0 replaces the classifier by an Identity.
        image_size: input size, ``int`` or ``(H, W)``.
        hidden: widths of the hidden layers.
        act: activation name.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)``
        - ``features``: ``len(hidden)`` tensors ``(B, hidden_i)``
        - ``embed``: ``(B, hidden[-1])``
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        hidden: Sequence[int] = (128, 128),
        act: str = "relu",
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer")
        h, w = to_2tuple(image_size)
        dims = [in_channels * h * w, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = make_act(act)
        self.embed_dim = dims[-1]
        self.classifier = make_head(self.embed_dim, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        # flatten (not view) copies channels_last input into logical C,H,W order.
        x = x.flatten(1)
        feats: list[Tensor] = []
        for layer in self.layers:
            x = self.act(layer(x))
            feats.append(x)
        return feats, x


@MODELS.register("mlp")
def mlp(**kwargs: Any) -> MLP:
    """DC MLP with two 128-unit ReLU hidden layers."""
    return MLP(**kwargs)
