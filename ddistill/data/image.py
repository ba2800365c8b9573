"""Image dataset loaders: scikit-learn digits (bundled) and torchvision's MNIST/FashionMNIST/CIFAR/SVHN (folders of
image files: :mod:`ddistill.data.folder`).

Every loader returns a whole split as :class:`ImageData` (uint8 pixels in memory): distillation
samples class batches at random thousands of times, which a ``DataLoader`` over files would make slow.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..registry import Registry
from .info import DatasetInfo, ImageData

DATASETS = Registry("dataset")

SPLITS = ("train", "test")

# Normalisation constants as used by the DC/DM/MTT/DataDAM code bases.
MEAN_STD = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose from {list(SPLITS)}")


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 images (N, C, H, W) on the [0, 1] scale."""
    xf = x.float().div_(255.0).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(xf.mean(1).tolist()), tuple(xf.std(1).tolist())


# --------------------------------------------------------------------------------------------
# scikit-learn digits: the embedded default dataset (ships with scikit-learn, no download)
# --------------------------------------------------------------------------------------------
DIGITS_TEST_FRACTION = 0.25


@DATASETS.register("digits")
def digits(root: str | None = None, split: str = "train", download: bool = False, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, values 0..16).

    The split is a fixed stratified 75/25 split drawn with ``seed`` (a local numpy Generator), so the
    same seed always gives the same train/test images.
    """
    _check_split(split)
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(np.round(data.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(data.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(data.target == c)
        test_mask[rng.permutation(idx)[: int(round(len(idx) * DIGITS_TEST_FRACTION))]] = True
    mask = torch.from_numpy(test_mask if split == "test" else ~test_mask)
    # Constants from the train split so that train and test are encoded identically.
    mean, std = _channel_stats(x[torch.from_numpy(~test_mask)])
    info = DatasetInfo("digits", 10, 1, (8, 8), mean, std, tuple(str(i) for i in range(10)))
    return ImageData(x[mask], y[mask], info)


# --------------------------------------------------------------------------------------------
# torchvision datasets (download only when asked; a clear error naming the files otherwise)
# --------------------------------------------------------------------------------------------
_EXPECTED_FILES = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "fashion_mnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "cifar10": "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
    "cifar100": "cifar-100-python/{train,test,meta}",
    "svhn": "{train,test}_32x32.mat",
}


class DatasetFilesMissing(FileNotFoundError):
    """A dataset's files are not where the user pointed. The problem and the way out are kept apart: the way out
    (``dataset.download=true``) is an option of ``distill``/``evaluate`` only, so a command without it (``ddistill
    import``) states the problem with its own remedy instead of editing this message."""

    def __init__(self, problem: str, remedy: str):
        super().__init__(f"{problem} {remedy}")
        self.problem = problem
        self.remedy = remedy


def _torchvision_dataset(name: str, cls_factory: Callable, root: str | None, split: str, download: bool):
    _check_split(split)
    if root is None:
        raise ValueError(f"dataset '{name}' needs a root folder (dataset.root=...)")
    try:
        return cls_factory(root, split == "train", download)
    except RuntimeError as e:
        if download:
            raise
        raise DatasetFilesMissing(
            f"dataset '{name}' not found under {os.path.abspath(root)}: expected {_EXPECTED_FILES[name]} there.",
            f"Pass dataset.download=true on a machine with internet, or copy the files in ({e})",
        ) from None


def _cifar_class(base: type, verify_md5: bool) -> type:
    if verify_md5:
        return base

    # A rebuilt or re-packed copy has other MD5s than torchvision's table; check existence only.
    class Unverified(base):  # type: ignore[misc, valid-type]
        train_list = [[f, None] for f, _ in base.train_list]
        test_list = [[f, None] for f, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return Unverified


def _register_torchvision(name: str, builder: Callable, num_classes: int, channels: int, size: int) -> None:
    def load(root: str | None = None, split: str = "train", download: bool = False, verify_md5: bool = True) -> ImageData:
        ds = _torchvision_dataset(name, lambda r, t, d: builder(r, t, d, verify_md5), root, split, download)
        x, y, classes = _tensors_from_torchvision(ds)
        mean, std = MEAN_STD[name]
        return ImageData(x, y, DatasetInfo(name, num_classes, channels, (size, size), mean, std, classes))

    load.__name__ = name
    load.__doc__ = f"torchvision's {name} as uint8 tensors (no download unless ``download=True``)."
    DATASETS.register(name)(load)


def _tensors_from_torchvision(ds) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    data = ds.data
    data = data if isinstance(data, Tensor) else torch.from_numpy(np.asarray(data))
    if data.dim() == 3:  # MNIST-like (N, H, W)
        data = data.unsqueeze(1)
    elif data.shape[-1] in (1, 3):  # CIFAR (N, H, W, C); SVHN is already (N, C, H, W)
        data = data.permute(0, 3, 1, 2)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    classes = tuple(getattr(ds, "classes", ()) or (str(i) for i in range(int(y.max()) + 1)))
    return data.contiguous().to(torch.uint8), y, classes


def _tv(name: str):
    import torchvision.datasets as tvd

    return getattr(tvd, name)


_register_torchvision("mnist", lambda r, t, d, v: _tv("MNIST")(r, train=t, download=d), 10, 1, 28)
_register_torchvision("fashion_mnist", lambda r, t, d, v: _tv("FashionMNIST")(r, train=t, download=d), 10, 1, 28)
_register_torchvision("cifar10", lambda r, t, d, v: _cifar_class(_tv("CIFAR10"), v)(r, train=t, download=d), 10, 3, 32)
_register_torchvision(
    "cifar100", lambda r, t, d, v: _cifar_class(_tv("CIFAR100"), v)(r, train=t, download=d), 100, 3, 32
)
_register_torchvision(
    "svhn", lambda r, t, d, v: _tv("SVHN")(r, split="train" if t else "test", download=d), 10, 3, 32
)
