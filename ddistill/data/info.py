"""Plain containers shared by every image dataset loader."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about an image dataset.

    Args:
        name: registry name (``cifar10``, ``imagefolder``, ...).
        num_classes: number of classes K.
        in_channels: image channels C.
        image_size: (H, W).
        mean, std: per-channel normalisation constants (pixel scale [0, 1]).
        class_names: K human-readable class names.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())


@dataclass
class ImageData:
    """A whole split held in memory as uint8 pixels (compact; normalised on demand).

    Shape:
        x: (N, C, H, W) uint8; y: (N,) int64 in [0, K).
    """

    x: Tensor
    y: Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"ImageData expects x (N,C,H,W) and y (N,); got {tuple(self.x.shape)} and {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: Tensor) -> "ImageData":
        return ImageData(self.x[index], self.y[index], self.info)
