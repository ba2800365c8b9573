"""Datasets: a registry of loaders returning whole splits as uint8 tensors, the class-indexed store
of encoded real images, and the pixel encoding (mean/std, ZCA) that travels with synthetic sets."""
from __future__ import annotations

from typing import Any

import torch

from .encoding import Encoding
from .image import DATASETS, MEAN_STD
from .info import DatasetInfo, ImageData
from .real import RealData
from .zca import ZCA

__all__ = ["DATASETS", "MEAN_STD", "DatasetInfo", "Encoding", "ImageData", "RealData", "ZCA", "get_dataset",
           "list_datasets", "make_encoding", "load_real"]


def get_dataset(name: str, *, root: str | None = None, split: str = "train", download: bool = False,
                **kwargs: Any) -> ImageData:
    """Loads one split of a registered dataset. Unknown names raise a KeyError listing the choices."""
    return DATASETS.get(name)(root=root, split=split, download=download, **kwargs)


def list_datasets() -> list[str]:
    return DATASETS.names()


def make_encoding(train: ImageData, *, zca: bool = False, zca_eps: float = 0.1, normalize: bool | None = None) -> Encoding:
    """The encoding of a training split: mean/std normalisation, or ZCA fitted on the whole split.

    With ZCA, mean/std normalisation is skipped by default, as in the MTT/KIP CIFAR recipes.
    """
    info = train.info
    normalize = (not zca) if normalize is None else normalize
    shape = (info.in_channels, *info.image_size)
    enc = Encoding(info.mean, info.std, shape, normalize=normalize)
    if zca:
        enc.zca = ZCA.fit(Encoding(info.mean, info.std, shape, normalize=normalize).encode(train.x), eps=zca_eps)
    return enc


def load_real(name: str, *, root: str | None = None, download: bool = False, zca: bool = False,
              zca_eps: float = 0.1, device: torch.device | str = "cpu", **kwargs: Any) -> tuple[RealData, ImageData]:
    """Train split as a :class:`RealData` store plus the raw test split (encode it with ``real.encoding``)."""
    train = get_dataset(name, root=root, split="train", download=download, **kwargs)
    test = get_dataset(name, root=root, split="test", download=download, **kwargs)
    encoding = make_encoding(train, zca=zca, zca_eps=zca_eps)
    return RealData.from_images(train, encoding, device), test
