"""Small-image ResNet-18 variants of DC (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021)
and the CIFAR-stem torchvision ResNet-18 used as a self-supervised teacher by KRR-ST (Lee et al., ICLR 2024).

Module names follow torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample``, ``fc``), so
torchvision-format checkpoints load into ``resnet18_ssl``; ``classifier`` is an alias of ``fc``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ddistill.models._registry import MODELS
from ddistill.models._layers import BaseNet, check_size, conv_out_size, make_head, make_norm, to_2tuple

__all__ = ["BasicBlock", "ResNet"]

HW = tuple[int, int]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016), as in DC's ``BasicBlock``.

    With ``avgpool_downsample`` the block is DC's ``BasicBlock_AP``: strided convolutions are replaced by a
    stride-1 convolution followed by 2x2 average pooling, both in the main path (after the first ReLU) and in the
    projection shortcut (between the 1x1 convolution and its norm).

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: 1 or 2.
        norm: normalisation name.
        in_hw: input spatial size (needed for layer norm and to report ``out_hw``).
        avgpool_downsample: use DC's ``_AP`` downsampling.

    Shape:
        - Input: ``(B, in_planes, H, W)``
        - Output: ``(B, planes, H / stride, W / stride)``
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        norm: str,
        in_hw: HW,
        avgpool_downsample: bool = False,
    ) -> None:
        super().__init__()
        conv_stride = 1 if avgpool_downsample else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        hw = conv_out_size(in_hw, 3, 1, conv_stride)
        self.bn1 = make_norm(norm, planes, hw)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2) if avgpool_downsample and stride != 1 else nn.Identity()
        if avgpool_downsample and stride != 1:
            hw = (hw[0] // 2, hw[1] // 2)
        self.out_hw = check_size(hw, type(self).__name__)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes, hw)

        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes * self.expansion:
            out = planes * self.expansion
            if avgpool_downsample:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, out, kernel_size=1, stride=1, bias=False),
                    nn.AvgPool2d(kernel_size=2, stride=2) if stride != 1 else nn.Identity(),
                    make_norm(norm, out, hw),
                )
            else:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, out, kernel_size=1, stride=stride, bias=False),
                    make_norm(norm, out, hw),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        # Out-of-place add: DC's ``out += shortcut`` would clobber a tensor autograd may still need.
        return self.relu(out + identity)


class ResNet(BaseNet):
    """ResNet for small images with a 3x3 stride-1 stem and no stem max-pool (DC, Zhao et al. 2021).

    Stages of 64/128/256/512 channels with strides 1/2/2/2. Two heads are available, matching DC:

    - ``head="avgpool"`` (DC ``ResNet``): global average pooling, ``Linear(512, K)``. DC writes
      ``F.avg_pool2d(out, 4)``, which is global pooling for the 4x4 map of 28/32 px input; global pooling keeps
      64 px input working too.
    - ``head="flatten"`` (DC ``ResNet_AP``): no pooling, ``Linear(512 * H_out * W_out, K)``
      (``512 * 4 * 4`` at 32 px, ``512 * 3 * 3`` at 28 px, as in DC).

    ``features`` are the outputs of ``layer1``..``layer4`` (each ends in a ReLU); ``embed`` is the head input.

    Args:
        in_channels: number of input channels.
        num_classes: number of logits; 0 replaces ``fc`` by an Identity so ``forward`` returns the embedding.
        image_size: input size, ``int`` or ``(H, W)``.
        layers: residual blocks per stage (``(2, 2, 2, 2)`` is ResNet-18).
        norm: ``"instancenorm"`` (DC ResNet18), ``"batchnorm"`` (ResNet18BN), or any name of ``NORM_LAYERS``.
        avgpool_downsample: DC's ``_AP`` blocks (stride-1 conv + 2x2 average pooling instead of strided convs).
        head: ``"avgpool"`` or ``"flatten"``, see above.
        stem_padding: padding of the 3x3 stem convolution (KRR-ST's Barlow Twins teacher uses 2).
        torchvision_init: re-initialise like torchvision (Kaiming-normal fan-out convs, unit/zero norm affines)
            instead of PyTorch's default initialisation used by DC.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)``
        - ``features``: 4 tensors ``(B, 64 * 2**i, H_i, W_i)``
        - ``embed``: ``(B, embed_dim)``; 512 with the avgpool head, ``512 * H_out * W_out`` with flatten
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        layers: Sequence[int] = (2, 2, 2, 2),
        norm: str = "instancenorm",
        avgpool_downsample: bool = False,
        head: str = "avgpool",
        stem_padding: int = 1,
        torchvision_init: bool = False,
    ) -> None:
        super().__init__()
        if head not in ("avgpool", "flatten"):
            raise ValueError(f"unknown head '{head}'; choose from ['avgpool', 'flatten']")
        if len(layers) != 4:
            raise ValueError(f"ResNet expects 4 stages, got layers={list(layers)}")
        hw = check_size(conv_out_size(to_2tuple(image_size), 3, stem_padding), type(self).__name__)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=stem_padding, bias=False)
        self.bn1 = make_norm(norm, 64, hw)
        self.relu = nn.ReLU()

        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
            stage = []
            for s in [stride] + [1] * (blocks - 1):
                block = BasicBlock(in_planes, planes, s, norm, hw, avgpool_downsample)
                stage.append(block)
                in_planes, hw = planes * BasicBlock.expansion, block.out_hw
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.head = head
        self.out_hw = hw
        self.embed_dim = in_planes if head == "avgpool" else in_planes * hw[0] * hw[1]
        self.fc = make_head(self.embed_dim, num_classes)
        if torchvision_init:
            self._torchvision_init()

    @property
    def classifier(self) -> nn.Module:  # type: ignore[override]
        return self.fc

    def _torchvision_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        feats: list[Tensor] = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            feats.append(x)
        if self.head == "avgpool":
            return feats, x.mean(dim=(2, 3))
        return feats, x.flatten(1)


def _resnet18(defaults: dict[str, Any], kwargs: dict[str, Any]) -> ResNet:
    return ResNet(**{"layers": (2, 2, 2, 2), **defaults, **kwargs})


@MODELS.register("resnet18")
def resnet18(**kwargs: Any) -> ResNet:
    """DC ResNet18: instance norm, strided downsampling, global average pooling."""
    return _resnet18({"norm": "instancenorm"}, kwargs)


@MODELS.register("resnet18_bn")
def resnet18_bn(**kwargs: Any) -> ResNet:
    """DC ResNet18BN: batch norm, strided downsampling, global average pooling."""
    return _resnet18({"norm": "batchnorm"}, kwargs)


@MODELS.register("resnet18_bn_ap")
def resnet18_bn_ap(**kwargs: Any) -> ResNet:
    """DC ResNet18BN_AP: batch norm, average-pool downsampling inside the blocks, flattened (unpooled) head."""
    return _resnet18({"norm": "batchnorm", "avgpool_downsample": True, "head": "flatten"}, kwargs)


@MODELS.register("resnet18_ssl")
def resnet18_ssl(**kwargs: Any) -> ResNet:
    """torchvision ResNet-18 with a CIFAR stem (3x3 stride-1 conv, no max-pool), batch norm, torchvision init.

    Used as the self-supervised (e.g. Barlow Twins) teacher by KRR-ST; with ``num_classes=0`` it returns the
    512-d representation. KRR-ST's teacher uses ``stem_padding=2``; the default here is the usual 1.
    """
    return _resnet18({"norm": "batchnorm", "torchvision_init": True, "stem_padding": 1}, kwargs)
