"""Datasets stored as folders of image files: any ImageFolder tree, the CIFAR-10 JPEG mirror (``cifar10_jpeg``) and
TinyImageNet in its standard layout. A folder may also be given as a ``.tar``/``.tar.gz`` archive, which is extracted
once into the cache; the decoded images are cached as one tensor file, so later runs read seconds instead of
decoding for minutes.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.progress import progress_bar
from ..io import atomic_torch_save
from ._cache import build_once, cache_dir, fingerprint
from .image import DATASETS, MEAN_STD, _channel_stats, _check_split
from .info import DatasetInfo, ImageData

# --------------------------------------------------------------------------------------------
# Folders of images: ImageFolder (any tree of class sub-folders) and TinyImageNet
# --------------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _extract_archive(path: Path) -> Path:
    """Extracts a ``.tar``/``.tar.gz`` once into the cache, atomically (:func:`~ddistill.data._cache.build_once`):
    members go to a temporary folder that is renamed into place only when the whole archive was read, so an
    interrupted or corrupt extraction is never reused; processes extracting the same archive take turns. A damaged
    archive is an error naming it."""
    stat = path.stat()
    target = cache_dir() / "extracted" / fingerprint(path.resolve(), stat.st_size, stat.st_mtime_ns)

    def extract(tmp: Path) -> None:
        try:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                for m in progress_bar(members, desc=f"extracting {path.name}", unit="file", leave=False):
                    tar.extract(m, tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path} is not a readable archive ({type(e).__name__}: {e}); it is truncated or "
                             f"damaged: replace it") from None
        (tmp / ".complete").touch()

    # A folder without the marker was left by an interrupted run or a version that extracted in place: rebuilt.
    return build_once(target, complete=lambda folder: (folder / ".complete").exists(), fill=extract)


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
        path = _extract_archive(path)
    # Descend through single wrapper folders (cifar10-jpg.tar.gz holds cifar10/{train,test}).
    while path.is_dir() and not (path / "train").is_dir():
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) != 1:
            break
        path = subdirs[0]
    return path


def find_classes(folder: Path) -> list[str]:
    """The class names of an ImageFolder split: the sorted names of the sub-folders of ``folder`` (torchvision
    ImageFolder's rule); [] when ``folder`` is not a folder."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def list_images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Every image file of ``folder/<class>/`` for ``classes`` in order, class-major and sorted by name within a class,
    with its class index. A class without a folder contributes nothing (the caller decides whether that is an error).
    """
    paths: list[Path] = []
    labels: list[int] = []
    for c, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) \
            if (folder / cls).is_dir() else []
        paths += files
        labels += [c] * len(files)
    return paths, labels


def _decode(paths: list[Path], image_size: tuple[int, int] | None, channels: int, desc: str) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == 1 else "RGB"
    out: list[np.ndarray] = []
    for p in progress_bar(paths, desc=desc, unit="img", leave=False, mininterval=2.0):
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if image_size is not None and im.size != (image_size[1], image_size[0]):
                    im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
                out.append(np.asarray(im))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"cannot decode image {p} ({type(e).__name__}: {e}); it is truncated or not an image: "
                             f"replace or remove it") from None
    sizes = {a.shape[:2] for a in out}
    if len(sizes) > 1:
        raise ValueError(f"images under {paths[0].parent.parent} have different sizes {sorted(sizes)[:4]}; "
                         f"pass image_size=[H, W] to resize them")
    arr = np.stack(out)
    arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr))


#: Version of the decoded-image cache layout (part of every cache key).
_CACHE_VERSION = 2


def _cached_decode(key_parts: tuple, paths: list[Path], labels: list[int], image_size, channels: int, desc: str):
    """Decodes files once; later calls read one tensor file (seconds instead of minutes for CIFAR).

    The key covers every file's path, size and modification time, so an edited, added or removed image gives a new
    cache; a cache file that cannot be read (truncated, foreign) or does not match the listing (image count, labels)
    is decoded again and replaced.
    """
    cache = cache_dir() / "decoded" / f"{fingerprint(_CACHE_VERSION, *key_parts)}.pt"
    y = torch.tensor(labels, dtype=torch.int64)
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            x = blob["x"]
            if (isinstance(x, Tensor) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[0] == len(paths)
                    and torch.equal(blob["y"], y)):
                return x, y
        except Exception:  # noqa: BLE001  (any unreadable cache is simply rebuilt)
            pass
    x = _decode(paths, image_size, channels, desc)
    atomic_torch_save({"x": x, "y": y}, cache)
    return x, y


def _folder_fingerprint(paths: list[Path], base: Path) -> str:
    """One hash of every file's relative path, size and modification time (a stat per file: about 0.1 s for the 60k
    CIFAR-10 images)."""
    digest = hashlib.sha1()
    for p in paths:
        st = p.stat()
        digest.update(f"{p.relative_to(base)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


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
    if channels not in (1, 3):
        raise ValueError(f"dataset.kwargs.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) != channels:
            raise ValueError(f"dataset.kwargs.{name} needs {channels} values (one per channel), got {list(value)}")
    if std is not None and any(v <= 0 for v in std):
        raise ValueError(f"dataset.kwargs.std must be positive, got {list(std)}")
    if image_size is not None and (len(image_size) != 2 or any(int(v) < 1 for v in image_size)):
        raise ValueError(f"dataset.kwargs.image_size must be [H, W] with positive sides, got {list(image_size)}")
    base = _resolve_folder_root(root, alias)
    classes = find_classes(base / "train")
    if not classes:
        raise FileNotFoundError(f"dataset '{alias}': no class folders under {base / 'train'} (expected train/<class>/*.jpg)")
    size = tuple(image_size) if image_size else None

    def load_split(s: str) -> tuple[Tensor, Tensor]:
        folder = base / s
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset '{alias}': split folder {folder} is missing; found {sorted(os.listdir(base))}")
        paths, labels = list_images(folder, classes)
        if not paths:
            raise FileNotFoundError(f"dataset '{alias}': no images under {folder}")
        key = ("imagefolder", folder.resolve(), size, channels, len(paths), _folder_fingerprint(paths, folder))
        return _cached_decode(key, paths, labels, size, channels, f"decoding {alias}/{s}")

    x, y = load_split(split)
    if mean is None or std is None:
        mean, std = _channel_stats(x if split == "train" else load_split("train")[0])
    info = DatasetInfo(alias, len(classes), channels, (int(x.shape[2]), int(x.shape[3])), tuple(mean), tuple(std),
                       tuple(classes))
    return ImageData(x, y, info)


#: Where the CIFAR-10 JPEG mirror is staged beside a checkout of the repository (see ../shared/data/README.md).
CIFAR10_JPEG_ARCHIVE = "../shared/data/cifar10-jpg.tar.gz"


@DATASETS.register("cifar10_jpeg")
def cifar10_jpeg(root: str | None = None, split: str = "train", download: bool = False,
                 image_size: list[int] | None = None) -> ImageData:
    """CIFAR-10 as the public JPEG mirror (quality 75, ImageFolder layout ``cifar10/{train,test}/<class>/*.jpg``),
    with the CIFAR-10 normalisation constants of the DC/DM/MTT/DataDAM code (not the mirror's own statistics), so
    sets distilled from it are encoded as the papers encode CIFAR-10.

    ``root`` is the folder or the ``.tar.gz`` (e.g. ``../shared/data/cifar10-jpg.tar.gz``); ``image_size`` resizes
    (e.g. ``[64, 64]``). The pixels are JPEG-decoded, so absolute accuracies sit a little below lossless CIFAR-10.
    """
    if root is None:
        raise ValueError(f"dataset 'cifar10_jpeg' needs dataset.root: the mirror's folder or archive, e.g. "
                         f"{CIFAR10_JPEG_ARCHIVE}")
    mean, std = MEAN_STD["cifar10"]
    return imagefolder(root, split, download, image_size=image_size, channels=3, mean=list(mean), std=list(std),
                       alias="cifar10_jpeg")


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
    key = ("tinyimagenet", base.resolve(), split, len(paths), _folder_fingerprint(paths, base))
    x, y = _cached_decode(key, paths, labels, (64, 64), 3, f"decoding tinyimagenet/{split}")
    mean, std = MEAN_STD["tinyimagenet"]
    return ImageData(x, y, DatasetInfo("tinyimagenet", len(wnids), 3, (64, 64), mean, std, tuple(wnids)))
