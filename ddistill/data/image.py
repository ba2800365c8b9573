"""Image dataset loaders: scikit-learn digits (bundled), torchvision's MNIST/FashionMNIST/CIFAR/SVHN,
any ImageFolder tree (decoded once and cached), and TinyImageNet in its standard layout.

Every loader returns a whole split as :class:`ImageData` (uint8 pixels in memory): distillation
samples class batches at random thousands of times, which a ``DataLoader`` over files would make slow.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..registry import Registry
from ._cache import cache_dir, fingerprint
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


def _torchvision_dataset(name: str, cls_factory: Callable, root: str | None, split: str, download: bool):
    _check_split(split)
    if root is None:
        raise ValueError(f"dataset '{name}' needs a root folder (dataset.root=...)")
    try:
        return cls_factory(root, split == "train", download)
    except RuntimeError as e:
        if download:
            raise
        raise FileNotFoundError(
            f"dataset '{name}' not found under {os.path.abspath(root)}: expected {_EXPECTED_FILES[name]} there. "
            f"Pass dataset.download=true on a machine with internet, or copy the files in ({e})"
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


# --------------------------------------------------------------------------------------------
# Folders of images: ImageFolder (any tree of class sub-folders) and TinyImageNet
# --------------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _resolve_folder_root(root: str | None, name: str) -> Path:
    """Accepts a folder, or a ``.tar``/``.tar.gz`` archive that is extracted once into the cache."""
    if root is None:
        raise ValueError(f"dataset '{name}' needs a root folder (dataset.root=...)")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"dataset '{name}': {path} does not exist. Point dataset.root at the folder holding train/ and test/ "
            f"(class sub-folders inside), or at a .tar.gz of it (e.g. ../shared/data/cifar10-jpg.tar.gz)"
        )
    if path.is_file() and (path.name.endswith((".tar", ".tar.gz", ".tgz"))):
        stat = path.stat()
        target = cache_dir() / "extracted" / fingerprint(path.resolve(), stat.st_size, stat.st_mtime_ns)
        done = target / ".complete"
        if not done.exists():
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                for m in tqdm(members, desc=f"extracting {path.name}", unit="file", leave=False):
                    tar.extract(m, target, filter="data")
            done.touch()
        path = target
    # Descend through single wrapper folders (cifar10-jpg.tar.gz holds cifar10/{train,test}).
    while path.is_dir() and not (path / "train").is_dir():
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) != 1:
            break
        path = subdirs[0]
    return path


def _decode(paths: list[Path], image_size: tuple[int, int] | None, channels: int, desc: str) -> Tensor:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out: list[np.ndarray] = []
    for p in tqdm(paths, desc=desc, unit="img", leave=False, mininterval=2.0):
        with Image.open(p) as im:
            im = im.convert(mode)
            if image_size is not None and im.size != (image_size[1], image_size[0]):
                im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
            out.append(np.asarray(im))
    sizes = {a.shape[:2] for a in out}
    if len(sizes) > 1:
        raise ValueError(f"images under {paths[0].parent.parent} have different sizes {sorted(sizes)[:4]}; "
                         f"pass image_size=[H, W] to resize them")
    arr = np.stack(out)
    arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _cached_decode(key_parts: tuple, paths: list[Path], labels: list[int], image_size, channels: int, desc: str):
    """Decodes files once; later calls read one tensor file (seconds instead of minutes for CIFAR)."""
    cache = cache_dir() / "decoded" / f"{fingerprint(*key_parts)}.pt"
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        return blob["x"], blob["y"]
    x = _decode(paths, image_size, channels, desc)
    y = torch.tensor(labels, dtype=torch.int64)
    from ..synset import atomic_torch_save

    atomic_torch_save({"x": x, "y": y}, cache)
    return x, y


def _folder_fingerprint(paths: list[Path]) -> tuple:
    stats = [p.stat() for p in paths[:: max(1, len(paths) // 64)]]
    return (len(paths), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0))


@DATASETS.register("imagefolder")
def imagefolder(
    root: str | None = None,
    split: str = "train",
    download: bool = False,
    image_size: list[int] | None = None,
    channels: int = 3,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    alias: str = "imagefolder",
) -> ImageData:
    """Any ``root/{train,test}/<class>/<image>`` tree (torchvision ImageFolder layout), e.g. the CIFAR-10
    JPEG mirror. ``root`` may also be a ``.tar.gz`` of such a tree. Decoded once and cached as a tensor.

    Classes are the sorted sub-folder names of ``train/`` (ImageFolder's rule). Mean/std default to the
    per-channel statistics of the train split.
    """
    _check_split(split)
    if download:
        raise ValueError("imagefolder reads local files only; download is not available for it")
    base = _resolve_folder_root(root, alias)
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir()) if (base / "train").is_dir() else []
    if not classes:
        raise FileNotFoundError(f"dataset '{alias}': no class folders under {base / 'train'} (expected train/<class>/*.jpg)")
    size = tuple(image_size) if image_size else None

    def load_split(s: str) -> tuple[Tensor, Tensor]:
        folder = base / s
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset '{alias}': split folder {folder} is missing; found {sorted(os.listdir(base))}")
        paths, labels = [], []
        for c, cls in enumerate(classes):
            files = sorted(p for p in (folder / cls).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) \
                if (folder / cls).is_dir() else []
            paths += files
            labels += [c] * len(files)
        if not paths:
            raise FileNotFoundError(f"dataset '{alias}': no images under {folder}")
        key = ("imagefolder", folder.resolve(), size, channels, *_folder_fingerprint(paths))
        return _cached_decode(key, paths, labels, size, channels, f"decoding {alias}/{s}")

    x, y = load_split(split)
    if mean is None or std is None:
        mean, std = _channel_stats(x if split == "train" else load_split("train")[0])
    info = DatasetInfo(alias, len(classes), channels, (int(x.shape[2]), int(x.shape[3])), tuple(mean), tuple(std),
                       tuple(classes))
    return ImageData(x, y, info)


@DATASETS.register("tinyimagenet")
def tinyimagenet(root: str | None = None, split: str = "train", download: bool = False) -> ImageData:
    """TinyImageNet-200 in its standard layout: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
    ``val/images/*.JPEG`` + ``val/val_annotations.txt``. ``split="test"`` reads the labelled val split
    (the official test labels are not public), as the DC/MTT code does.
    """
    _check_split(split)
    if download:
        raise ValueError("tinyimagenet is not downloaded by ddistill; unpack tiny-imagenet-200.zip and set dataset.root")
    base = _resolve_folder_root(root, "tinyimagenet")
    wnids_file = base / "wnids.txt"
    if not wnids_file.exists():
        raise FileNotFoundError(f"dataset 'tinyimagenet': {wnids_file} not found; expected the tiny-imagenet-200 layout")
    wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        paths, labels = [], []
        for w in wnids:
            files = sorted((base / "train" / w / "images").glob("*.JPEG"))
            paths += files
            labels += [index[w]] * len(files)
    else:
        ann = base / "val" / "val_annotations.txt"
        if not ann.exists():
            raise FileNotFoundError(f"dataset 'tinyimagenet': {ann} not found")
        rows = [line.split("\t") for line in ann.read_text().splitlines() if line.strip()]
        paths = [base / "val" / "images" / r[0] for r in rows]
        labels = [index[r[1]] for r in rows]
    if not paths:
        raise FileNotFoundError(f"dataset 'tinyimagenet': no images for split '{split}' under {base}")
    key = ("tinyimagenet", base.resolve(), split, *_folder_fingerprint(paths))
    x, y = _cached_decode(key, paths, labels, (64, 64), 3, f"decoding tinyimagenet/{split}")
    mean, std = MEAN_STD["tinyimagenet"]
    return ImageData(x, y, DatasetInfo("tinyimagenet", len(wnids), 3, (64, 64), mean, std, tuple(wnids)))
