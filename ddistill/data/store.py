"""A memory-mapped, class-indexed uint8 image store on disk, for training splits too large to decode into RAM
(ImageNet-1K at 64 px is about 16 GB of uint8 pixels before any copy; encoded as float32 it would be four times that).

A store is built ONCE from an ImageFolder split (one sub-folder of images per class, listed exactly as
:mod:`ddistill.data.folder` lists it) at a chosen resolution, and is a folder of three files:

- ``images.u8``: the raw pixels, (N, C, R, R) uint8, C-contiguous, no header (written through ``np.memmap``, read
  through a read-only memory map);
- ``labels.npy``: the (N,) int64 class of every row (``np.load(allow_pickle=False)``);
- ``meta.json``: format name and version, shape, class names, per-class counts and offsets, resolution, resize rule,
  per-channel mean/std of the stored pixels, the source folder.

Rows are sorted class-major (class ``c`` is rows ``offsets[c] .. offsets[c+1] - 1``, files sorted by name within a
class), so a class is one contiguous range. Loading never executes code: JSON, ``np.load(allow_pickle=False)`` and a
memory map only, and every file is checked against ``meta.json`` (a short or damaged file is an error naming it).

Reading rows copies just those rows out of the map and then unmaps the pages the copy faulted in (``madvise
(MADV_DONTNEED)``; the kernel's page cache keeps them, so a second read is still a memory copy): recent kernels map
whole large folios (up to megabytes) per fault, so without that a few thousand random rows would count most of a
store in the process's resident set.

:class:`MemmapRealData` is the :class:`~ddistill.data.real.RealData` of a store: the same class index, sampling and
encoding, but ``x[idx]`` reads and encodes only the rows ``idx`` (a synthesizer's class batch), so memory does not grow
with the size of the store. Code that only indexes ``x`` works unchanged, including mini-batch training over the whole
split (``train_classifier``: MTT experts, the random-subset control), which then reads every batch from disk. Code that
needs the split as one tensor (``real.x.to(...)``, a torch function or numpy on ``real.x``: the whole-set control,
ZCA fitting) raises a TypeError/AttributeError saying so; :meth:`MemmapRealData.materialize` loads it explicitly when it
fits.

A ``dataset:`` block selects a store with ``store: <folder>`` (and ``resolution: R`` to build it from ``root`` on first
use): the folder then holds one store per split, ``<folder>/train`` and ``<folder>/test`` (built from ``root/train``
and ``root/test``, else ``root/val``; :func:`load_store_data`; ``ddistill build-store`` builds it ahead of time). The
encoding is mean/std normalisation with ``dataset.kwargs.mean/std``, the dataset's constants (``cifar10_jpeg``), or
else the training store's exact per-channel statistics (the in-RAM folder loader computes them in float32, so their
last digits can differ: give mean/std to make both paths encode identically, as the configs do).
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..io import move_folder_into_place
from ..utils.progress import progress_bar
from .classes import class_lookup, select_classes
from .encoding import Encoding
from .folder import IMAGE_EXTENSIONS, _resolve_folder_root, find_classes, list_images
from .image import MEAN_STD, _check_split
from .info import DatasetInfo, ImageData
from .real import RealData

__all__ = ["RESIZE_MODES", "STORE_FORMAT", "STORE_VERSION", "EncodedRows", "ImageStore", "MemmapRealData",
           "StoreWriter", "build_dataset_store", "build_store", "load_store_data", "load_store_split",
           "resize_image", "split_source"]

#: ``meta.json`` "format" of every store, and the newest layout version this code reads and writes.
STORE_FORMAT = "ddistill.image_store"
STORE_VERSION = 1

IMAGES_FILE = "images.u8"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"

#: How an image becomes R x R: ``center_crop`` = shorter side resized to R (bilinear), then the central R x R crop
#: (torchvision ``Resize(R)`` + ``CenterCrop(R)``, the usual ImageNet preprocessing); ``stretch`` = resized to R x R
#: ignoring the aspect ratio (what MTT's ``Resize((R, R))`` does to its ImageNet subsets).
RESIZE_MODES = ("center_crop", "stretch")

#: Split folders a dataset store is built from, in order of preference (ImageNet-style trees call the test split val/).
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}

#: Images decoded per task (and per progress-bar update) while building.
_CHUNK = 256

#: Rows copied out of the map between two unmappings (bounds the pages mapped at once: rows x folio size).
_ROWS_PER_RELEASE = 64

#: Folder datasets a ``dataset.store`` can serve; the value is the fixed mean/std the dataset's in-RAM loader uses
#: (None = ``dataset.kwargs.mean/std``, else the statistics of the training store).
_STORE_DATASETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagefolder": None, "cifar10_jpeg": MEAN_STD["cifar10"]}


# ---------------------------------------------------------------------------------------------------------------
# Decoding one image
# ---------------------------------------------------------------------------------------------------------------
def resize_image(im: Any, resolution: int, resize: str = "center_crop") -> Any:
    """A PIL image as ``resolution`` x ``resolution`` by the rule ``resize`` (see :data:`RESIZE_MODES`).

    ``center_crop`` reproduces torchvision's ``Resize(R)`` + ``CenterCrop(R)`` on PIL images exactly: the shorter
    side becomes R and the longer ``int(R * long / short)`` (bilinear, PIL's antialiased filter), then the crop
    starts at ``round((side - R) / 2)``. An image already R x R is returned unchanged.
    """
    from PIL import Image

    w, h = im.size
    if resize == "stretch":
        return im if (w, h) == (resolution, resolution) else im.resize((resolution, resolution), Image.BILINEAR)
    if resize != "center_crop":
        raise ValueError(f"unknown resize '{resize}'; choose from {list(RESIZE_MODES)}")
    if w <= h:
        new_w, new_h = resolution, int(resolution * h / w)
    else:
        new_w, new_h = int(resolution * w / h), resolution
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BILINEAR)
    if (new_w, new_h) == (resolution, resolution):
        return im
    top, left = int(round((new_h - resolution) / 2.0)), int(round((new_w - resolution) / 2.0))
    return im.crop((left, top, left + resolution, top + resolution))


def _load_image(path: Path, resolution: int, channels: int, resize: str) -> np.ndarray:
    """One image file as (C, R, R) uint8 (converted to L or RGB first, as the in-RAM folder loader does)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(resize_image(im.convert("L" if channels == 1 else "RGB"), resolution, resize))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {path} ({type(e).__name__}: {e}); it is truncated or not an image: "
                         f"replace or remove it") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _load_chunk(paths: list[Path], resolution: int, channels: int, resize: str) -> np.ndarray:
    """Images as one (n, C, R, R) uint8 block (a worker task: top-level so a process pool can pickle it)."""
    return np.stack([_load_image(p, resolution, channels, resize) for p in paths])


def _decoded_blocks(paths: list[Path], resolution: int, channels: int, resize: str, workers: int,
                    desc: str, progress: bool) -> Iterator[np.ndarray]:
    """(n, C, R, R) blocks of ``paths`` in order; decoded in ``workers`` processes when > 0 (each image is decoded on
    its own, so the pixels do not depend on the number of workers)."""
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    bar = progress_bar(total=len(paths), desc=desc, unit="img", enabled=progress, leave=False, mininterval=2.0)
    try:
        if workers <= 0:
            for chunk in chunks:
                yield _load_chunk(chunk, resolution, channels, resize)
                bar.update(len(chunk))
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the parent holds torch's thread pools, which a fork would copy in an undefined state.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending: deque = deque()
            todo = iter(chunks)
            try:
                # A bounded window of tasks: results come back in order and at most 2 x workers blocks wait in RAM.
                for chunk in todo:
                    pending.append((len(chunk), pool.submit(_load_chunk, chunk, resolution, channels, resize)))
                    if len(pending) >= 2 * workers:
                        n, fut = pending.popleft()
                        yield fut.result()
                        bar.update(n)
                while pending:
                    n, fut = pending.popleft()
                    yield fut.result()
                    bar.update(n)
            except BaseException:
                for _, fut in pending:
                    fut.cancel()
                raise
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------------------------
# meta.json
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreMeta:
    """The contents of ``meta.json`` (see the module docstring). ``offsets`` has K + 1 entries (the last is N)."""

    shape: tuple[int, int, int, int]
    class_names: tuple[str, ...]
    counts: tuple[int, ...]
    offsets: tuple[int, ...]
    resolution: int
    resize: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    created: str = ""
    version: int = STORE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, "version": self.version, "shape": list(self.shape), "dtype": "uint8",
                "layout": "images.u8: raw (N, C, H, W) uint8, C order; rows class-major, class c = rows "
                          "offsets[c] .. offsets[c+1]-1",
                "resolution": self.resolution, "resize": self.resize, "class_names": list(self.class_names),
                "counts": list(self.counts), "offsets": list(self.offsets), "mean": list(self.mean),
                "std": list(self.std), "source": self.source, "created": self.created}

    @classmethod
    def read(cls, folder: Path) -> "StoreMeta":
        """Reads and checks ``folder/meta.json``; FileNotFoundError / ValueError naming the file and the problem."""
        path = folder / META_FILE
        if not folder.is_dir():
            raise FileNotFoundError(f"image store {folder} does not exist (or is not a folder)")
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not an image store: {META_FILE} is missing (build one with "
                                    f"ddistill build-store or ddistill.data.store.build_store)")
        try:
            blob = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not readable JSON ({type(e).__name__}: {e}); the store is damaged: rebuild "
                             f"it (overwrite=True / --overwrite)") from None
        if not isinstance(blob, dict) or blob.get("format") != STORE_FORMAT:
            found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
            raise ValueError(f"{path} is not a ddistill image store (format {found!r}, expected {STORE_FORMAT!r})")
        version = blob.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{path} has a malformed format version {version!r}; the store is damaged: rebuild it")
        if version > STORE_VERSION:
            raise ValueError(f"{path} is image-store format version {version}; this ddistill reads versions <= "
                             f"{STORE_VERSION}: upgrade ddistill")
        try:
            meta = cls(shape=tuple(int(v) for v in blob["shape"]),
                       class_names=tuple(str(v) for v in blob["class_names"]),
                       counts=tuple(int(v) for v in blob["counts"]), offsets=tuple(int(v) for v in blob["offsets"]),
                       resolution=int(blob["resolution"]), resize=str(blob["resize"]),
                       mean=tuple(float(v) for v in blob["mean"]), std=tuple(float(v) for v in blob["std"]),
                       source=str(blob.get("source", "")), created=str(blob.get("created", "")), version=version)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} lacks or has a malformed field ({type(e).__name__}: {e}); the store is damaged: "
                             f"rebuild it") from None
        problem = meta._problem()
        if problem:
            raise ValueError(f"{path} is inconsistent: {problem}; the store is damaged: rebuild it")
        return meta

    def _problem(self) -> str:
        n, c, h, w = (self.shape + (0, 0, 0, 0))[:4]
        k = len(self.class_names)
        if len(self.shape) != 4 or min(self.shape) < 1:
            return f"shape {list(self.shape)} is not a positive (N, C, H, W)"
        if c not in (1, 3) or h != self.resolution or w != self.resolution:
            return f"shape {list(self.shape)} does not hold {self.resolution} px images with 1 or 3 channels"
        if k < 1 or len(self.counts) != k or len(self.offsets) != k + 1:
            return f"{k} class names, {len(self.counts)} counts and {len(self.offsets)} offsets (expected K, K, K + 1)"
        if min(self.counts) < 1 or sum(self.counts) != n:
            return f"class counts {list(self.counts)[:8]}... must be >= 1 and sum to N = {n}"
        if list(self.offsets) != [0, *np.cumsum(self.counts).tolist()]:
            return "offsets are not the running sum of the counts"
        if len(self.mean) != c or len(self.std) != c:
            return f"mean/std need {c} values"
        return ""


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------
class ImageStore:
    """An opened store: ``images`` (N, C, R, R) uint8, a read-only view of the memory-mapped file; ``labels`` (N,)
    int64; ``meta``.

    Use :meth:`open`; nothing is read into memory until rows are read (:meth:`read`).
    """

    def __init__(self, path: Path, meta: StoreMeta, images: np.ndarray, labels: np.ndarray,
                 mapped: mmap.mmap | None = None) -> None:
        self.path, self.meta, self.images, self.labels, self._mapped = path, meta, images, labels, mapped

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ImageStore":
        """Opens and checks a store: ``meta.json`` consistent, ``images.u8`` exactly N*C*R*R bytes, ``labels.npy`` a
        plain (N,) integer array equal to the class ranges. Raises FileNotFoundError / ValueError naming the file."""
        folder = Path(path).expanduser()
        meta = StoreMeta.read(folder)
        images_path, labels_path = folder / IMAGES_FILE, folder / LABELS_FILE
        expected = int(np.prod(meta.shape))
        if not images_path.is_file():
            raise FileNotFoundError(f"image store {folder}: {IMAGES_FILE} is missing; the store is damaged: rebuild it")
        found = images_path.stat().st_size
        if found != expected:
            n, c, h, w = meta.shape
            raise ValueError(f"{images_path} holds {found} bytes but {META_FILE} says {expected} ({n} images of "
                             f"{c}x{h}x{w} uint8); the file is truncated or damaged: rebuild the store "
                             f"(overwrite=True)")
        try:
            labels = np.load(labels_path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"image store {folder}: {LABELS_FILE} is missing; the store is damaged: "
                                    f"rebuild it") from None
        except (ValueError, OSError, EOFError) as e:  # truncated, not .npy, or an object (pickle) array: refused
            raise ValueError(f"{labels_path} is not a readable plain .npy array ({type(e).__name__}: {e}); the store "
                             f"is damaged: rebuild it") from None
        if not isinstance(labels, np.ndarray):  # e.g. an .npz archive under the .npy name
            raise ValueError(f"{labels_path} is not a plain .npy array ({type(labels).__name__}); the store is "
                             f"damaged: rebuild it")
        want = np.repeat(np.arange(len(meta.counts), dtype=np.int64), meta.counts)
        if labels.shape != want.shape or labels.dtype.kind not in "iu" or not np.array_equal(labels, want):
            raise ValueError(f"{labels_path} ({labels.dtype}, shape {labels.shape}) does not match the class ranges "
                             f"of {META_FILE} ({len(want)} rows, class-major); the store is damaged: rebuild it")
        with open(images_path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), expected, access=mmap.ACCESS_READ)
        images = np.frombuffer(mapped, dtype=np.uint8).reshape(meta.shape)  # read-only: the map is
        return cls(folder, meta, images, labels.astype(np.int64, copy=False), mapped)

    def __reduce__(self) -> tuple:
        # Pickling (a process pool, deepcopy) reopens the file instead of copying every pixel into the pickle.
        return (ImageStore.open, (str(self.path),))

    def __len__(self) -> int:
        return int(self.meta.shape[0])

    def __repr__(self) -> str:
        n, c, h, w = self.meta.shape
        return f"ImageStore({str(self.path)!r}, {n} images of {c}x{h}x{w}, {self.num_classes} classes)"

    @property
    def num_classes(self) -> int:
        return len(self.meta.class_names)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.meta.shape))

    def class_range(self, c: int) -> range:
        """The rows of class ``c`` (contiguous)."""
        return range(self.meta.offsets[c], self.meta.offsets[c + 1])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The uint8 pixels of ``rows`` (1-D int64, in range), in that order, as a new array: only those rows' pages
        are read, and unmapped again afterwards (:meth:`release`). Shape: (len(rows), C, R, R)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, *self.meta.shape[1:]), dtype=np.uint8)
        # Read in file order (sequential pages, the kernel's read-ahead helps), then put the rows back in order.
        order = None if rows.size < 2 or np.all(rows[1:] >= rows[:-1]) else np.argsort(rows, kind="stable")
        src = rows if order is None else rows[order]
        for i in range(0, rows.size, _ROWS_PER_RELEASE):
            part = slice(i, i + _ROWS_PER_RELEASE)
            block = np.take(self.images, src[part], axis=0)
            if order is None:
                out[part] = block
            else:
                out[order[part]] = block
            self.release()
        return out

    def release(self) -> None:
        """Unmaps the pages of the store this process has touched (the page cache keeps them; the data stays
        readable: the next access maps them again), so its resident set does not grow with what it has read."""
        if self._mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mapped.madvise(mmap.MADV_DONTNEED)

    def info(self, name: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> DatasetInfo:
        """The :class:`DatasetInfo` of the store; mean/std default to the stored pixels' statistics."""
        n, c, h, w = self.meta.shape
        return DatasetInfo(name, self.num_classes, c, (h, w), tuple(mean if mean is not None else self.meta.mean),
                           tuple(std if std is not None else self.meta.std), tuple(self.meta.class_names))

    def to_image_data(self, info: DatasetInfo) -> ImageData:
        """The whole store copied into RAM as :class:`ImageData` (N * C * R * R bytes; for test splits and small
        stores)."""
        return ImageData(torch.from_numpy(self.read(np.arange(len(self)))), torch.from_numpy(self.labels.copy()), info)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def _is_store(folder: Path) -> bool:
    """Whether ``folder`` carries a store's ``meta.json`` (even if its other files are damaged)."""
    try:
        blob = json.loads((folder / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(blob, dict) and blob.get("format") == STORE_FORMAT


def _check_destination(out: Path, overwrite: bool) -> None:
    """Raises unless ``out`` is free: absent, an empty folder, or (with ``overwrite``) an existing store."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"{out} already exists; pass overwrite=True (--overwrite) to replace the store there, or "
                         f"choose another folder")
    if not (out.is_dir() and _is_store(out)):
        raise ValueError(f"{out} exists and is not an image store (no readable {META_FILE} of format "
                         f"{STORE_FORMAT!r}); overwrite replaces stores only: remove it yourself or choose another "
                         f"folder")


def _check_disk_space(folder: Path, nbytes: int) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < nbytes + (64 << 20):
        raise ValueError(f"not enough disk space for the store: it needs {nbytes / 2**30:.2f} GiB and {probe} has "
                         f"{free / 2**30:.2f} GiB free")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # not every platform syncs folders
        pass
    finally:
        os.close(fd)


class StoreWriter:
    """Writes a store block by block into a temporary folder beside ``out_dir``; :meth:`commit` renames it into place
    (atomic: readers see no store or the whole store). Used as a context manager, an exception (or a missing commit)
    removes the temporary folder.

    Args:
        out_dir: the store folder; must be absent or an empty folder, or an existing store with ``overwrite``.
        class_names: the K classes; ``counts[c]`` rows of class ``c`` must be appended in class order.
        counts: rows per class (each >= 1).
        channels: 1 or 3.
        resolution: R (rows are (C, R, R)).
        resize: the rule the rows were made with (recorded).
        source: where the images came from (recorded).
        overwrite: replace an existing store at ``out_dir``.
    """

    def __init__(self, out_dir: str | os.PathLike, *, class_names: Sequence[str], counts: Sequence[int], channels: int,
                 resolution: int, resize: str = "center_crop", source: str = "", overwrite: bool = False) -> None:
        self.out = Path(out_dir).expanduser()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer (pixels), got {resolution!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize '{resize}'; choose from {list(RESIZE_MODES)}")
        counts = [int(v) for v in counts]
        if len(counts) != len(class_names) or not counts or min(counts) < 1:
            raise ValueError(f"a store needs at least one row per class; got {len(class_names)} classes and counts "
                             f"{counts[:8]}")
        _check_destination(self.out, overwrite)
        self.overwrite = overwrite
        self.shape = (sum(counts), channels, resolution, resolution)
        nbytes = int(np.prod(self.shape))
        _check_disk_space(self.out.parent, nbytes)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        self.meta = StoreMeta(self.shape, tuple(class_names), tuple(counts), (0, *np.cumsum(counts).tolist()),
                              resolution, resize, (), (), source=source)
        try:
            self.images: np.memmap | None = np.memmap(self.tmp / IMAGES_FILE, dtype=np.uint8, mode="w+",
                                                      shape=self.shape)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.filled = 0
        # Exact per-channel pixel histograms: mean/std from integer sums, independent of block sizes.
        self.hist = np.zeros((channels, 256), dtype=np.int64)
        self.committed = False

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.committed:
            self.abort()

    def append(self, block: np.ndarray) -> None:
        """Writes the next rows. Shape: (n, C, R, R) uint8."""
        if self.images is None:
            raise ValueError("this StoreWriter was committed or aborted")
        block = np.asarray(block)
        if block.dtype != np.uint8 or block.shape[1:] != self.shape[1:]:
            raise ValueError(f"store rows must be uint8 {self.shape[1:]}, got {block.dtype} {block.shape[1:]}")
        end = self.filled + block.shape[0]
        if end > self.shape[0]:
            raise ValueError(f"too many rows: the store holds {self.shape[0]}, {end} were appended")
        self.images[self.filled : end] = block
        for ch in range(self.shape[1]):
            self.hist[ch] += np.bincount(block[:, ch].reshape(-1), minlength=256)
        self.filled = end

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (unbiased) std on the [0, 1] scale, from exact integer sums."""
        values = np.arange(256, dtype=object)
        means, stds = [], []
        for h in self.hist.astype(object):
            n, s1, s2 = int(h.sum()), int((h * values).sum()), int((h * values * values).sum())
            means.append(s1 / n / 255.0)
            stds.append(((n * s2 - s1 * s1) / (n * max(n - 1, 1))) ** 0.5 / 255.0)
        return tuple(means), tuple(stds)

    def commit(self) -> Path:
        """Finishes the files, syncs them and renames the folder to ``out_dir``; returns it."""
        if self.images is None:
            raise ValueError("this StoreWriter was committed or aborted")
        if self.filled != self.shape[0]:
            raise ValueError(f"the store holds {self.shape[0]} rows but only {self.filled} were appended")
        self.images.flush()
        self.images = None  # closes the map before the rename
        _fsync(self.tmp / IMAGES_FILE)
        labels = np.repeat(np.arange(len(self.meta.counts), dtype=np.int64), self.meta.counts)
        np.save(self.tmp / LABELS_FILE, labels, allow_pickle=False)
        mean, std = self._stats()
        meta = replace(self.meta, mean=mean, std=std, created=time.strftime("%Y-%m-%d %H:%M:%S"))
        (self.tmp / META_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
        for name in (LABELS_FILE, META_FILE):
            _fsync(self.tmp / name)
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        self._move_into_place()  # syncs the parent folder too
        self.committed = True
        return self.out

    def _move_into_place(self) -> None:
        _check_destination(self.out, self.overwrite)  # again: another process may have written there meanwhile
        move_folder_into_place(self.tmp, self.out, what="store")

    def abort(self) -> None:
        """Removes the temporary folder (nothing is written at ``out_dir``)."""
        self.images = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_store(source_root: str | os.PathLike, out_dir: str | os.PathLike, resolution: int, *, channels: int = 3,
                resize: str = "center_crop", classes: Sequence[str] | None = None, max_per_class: int | None = None,
                workers: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Decodes an ImageFolder split once into a store at ``out_dir``; returns ``out_dir``.

    Every image is converted to L (``channels=1``) or RGB, then resized by ``resize``: ``center_crop`` (default)
    resizes the shorter side to ``resolution`` (bilinear) and takes the central ``resolution`` x ``resolution`` crop,
    exactly torchvision's ``Resize(R)`` + ``CenterCrop(R)``; ``stretch`` resizes to R x R ignoring the aspect ratio.
    Images already R x R are stored unchanged.

    Args:
        source_root: a folder with one sub-folder of images per class (``<class>/<image>``, the files
            :func:`ddistill.data.folder.list_images` lists).
        out_dir: the store folder to create; it must not exist (an empty folder is fine) unless ``overwrite``.
        resolution: R, the side of the stored images in pixels (e.g. 64 or 128).
        channels: 1 or 3.
        resize: ``center_crop`` or ``stretch``.
        classes: the class names, in label order (default: the sorted sub-folders of ``source_root``); pass the
            training split's classes when building a test split.
        max_per_class: keep only the first n images (by name) of each class (quick experiments).
        workers: decode in this many processes (0 = in this process); the pixels are the same either way.
        overwrite: replace an existing store at ``out_dir`` (only a store: any other folder is refused).
        progress: show a progress bar (on a terminal).

    Raises:
        FileNotFoundError: ``source_root`` is missing or has no class folders.
        ValueError: a class holds no images, an image cannot be decoded, ``out_dir`` exists, bad arguments, or the
            disk lacks the space. Nothing is left at ``out_dir`` when building fails.
    """
    src = Path(source_root).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"{src} does not exist or is not a folder; point at an ImageFolder split (one "
                                f"sub-folder of images per class)")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer (pixels), got {resolution!r}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1 or None, got {max_per_class}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    names = list(classes) if classes is not None else find_classes(src)
    if not names:
        raise FileNotFoundError(f"no class folders under {src} (expected {src}/<class>/<image>)")
    _check_destination(Path(out_dir).expanduser(), overwrite)  # before decoding for hours
    paths, labels = list_images(src, names)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    empty = [names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        shown = ", ".join(str(src / n) for n in empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise ValueError(f"class folder(s) {shown} are missing or hold no images (extensions "
                         f"{', '.join(IMAGE_EXTENSIONS)}); every class needs at least one image")
    if max_per_class is not None:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        keep = np.concatenate([np.arange(s, s + min(n, max_per_class)) for s, n in zip(starts, counts)])
        paths = [paths[i] for i in keep]
        counts = np.minimum(counts, max_per_class)
    with StoreWriter(out_dir, class_names=names, counts=counts.tolist(), channels=channels, resolution=resolution,
                     resize=resize, source=str(src.resolve()), overwrite=overwrite) as writer:
        for block in _decoded_blocks(paths, resolution, channels, resize, workers, f"building {writer.out.name}",
                                     progress):
            writer.append(block)
        return writer.commit()


def split_source(base: Path, split: str) -> Path:
    """The folder of ``split`` under a dataset root: ``train/``; ``test/``, else ``val/`` (ImageNet-style trees)."""
    for name in SPLIT_FOLDERS[split]:
        if (base / name).is_dir():
            return base / name
    raise FileNotFoundError(f"no {' or '.join(n + '/' for n in SPLIT_FOLDERS[split])} folder under {base} for the "
                            f"{split} split (found {sorted(p.name for p in base.iterdir()) if base.is_dir() else []})")


def build_dataset_store(root: str | os.PathLike, out_dir: str | os.PathLike, resolution: int, *,
                        splits: Sequence[str] = ("train", "test"), name: str = "imagefolder",
                        **options: Any) -> dict[str, Path]:
    """One store per split of a dataset root (``train/`` and ``test/`` or ``val/``, or a ``.tar.gz`` of them) at
    ``out_dir/<split>``: the layout ``dataset.store`` reads. Every split uses the training split's classes.
    ``options`` go to :func:`build_store`. Returns ``{split: folder}``."""
    base = _resolve_folder_root(str(root), name)
    classes = find_classes(split_source(base, "train"))
    if not classes:
        raise FileNotFoundError(f"dataset '{name}': no class folders under {base / 'train'} (expected "
                                f"train/<class>/<image>)")
    out = Path(out_dir).expanduser()
    return {s: build_store(split_source(base, s), out / s, resolution, classes=classes, **options) for s in splits}


# ---------------------------------------------------------------------------------------------------------------
# The RealData of a store
# ---------------------------------------------------------------------------------------------------------------
_WHOLE_SPLIT = ("the real images of a memory-mapped store (dataset.store) are read only for the rows x[idx] indexes; "
                "{what} needs the whole split as one tensor. Load it explicitly with real.materialize() (N x C x R x R "
                "float32 in memory) when it fits, or use the in-RAM path (no dataset.store)")


class EncodedRows:
    """``RealData.x`` of a store: looks like the (N, C, R, R) float32 tensor of encoded images (``shape``, ``dtype``,
    ``device``, ``len``), but indexing it (``x[idx]``, ``x[a:b]``, ``x[i]``) reads only those rows from the memory map
    and encodes them on ``device`` -- exactly as :meth:`RealData.from_images` encodes the whole split, so identical
    pixels give identical tensors. Any other use (a torch function, ``.to``, ``.float``, numpy) raises an error
    saying so.

    Args:
        store: the opened store.
        rows: store row of every position (a subset or class selection), or None for all rows in order.
        encoding: pixel -> model-input transform.
        device: where encoded rows are returned.
    """

    dtype = torch.float32
    ndim = 4

    def __init__(self, store: ImageStore, rows: np.ndarray | None, encoding: Encoding, device: torch.device) -> None:
        self.store, self.rows, self.encoding, self.device = store, rows, encoding, torch.device(device)
        n = len(store) if rows is None else int(rows.shape[0])
        self.shape = torch.Size((n, *store.meta.shape[1:]))

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"EncodedRows({tuple(self.shape)}, float32 on {self.device}, from {self.store.path})"

    def dim(self) -> int:
        return 4

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def positions(self, index: Any) -> np.ndarray:
        """``index`` (slice, int, 1-D integer or boolean tensor / array / list) as positions in [0, N). Shape: (k,)."""
        n = len(self)
        if isinstance(index, slice):
            return np.arange(n, dtype=np.int64)[index]
        if isinstance(index, (bool, np.bool_)) or index is None or index is Ellipsis or isinstance(index, tuple):
            raise TypeError(f"EncodedRows supports 1-D row indexing (int, slice, index or mask), not {index!r}; "
                            + _WHOLE_SPLIT.format(what="multi-dimensional indexing"))
        if isinstance(index, Tensor):
            index = index.detach().cpu().numpy()
        pos = np.asarray(index)
        if pos.size == 0:
            return np.zeros(0, dtype=np.int64)
        if pos.dtype == np.bool_:
            if pos.shape != (n,):
                raise IndexError(f"a boolean mask over the rows needs shape ({n},), got {pos.shape}")
            return np.flatnonzero(pos)
        if pos.dtype.kind not in "iu" or pos.ndim > 1:
            raise TypeError(f"rows must be indexed by integers (1-D), got {pos.dtype} of shape {pos.shape}")
        pos = pos.astype(np.int64).reshape(-1)
        bad = pos[(pos < -n) | (pos >= n)]
        if bad.size:
            raise IndexError(f"index {int(bad[0])} is out of range for {n} images")
        return np.where(pos < 0, pos + n, pos)

    def store_rows(self, index: Any) -> np.ndarray:
        pos = self.positions(index)
        return pos if self.rows is None else self.rows[pos]

    def __getitem__(self, index: Any) -> Tensor:
        """Encoded images of ``index``. Shape: (k, C, R, R) float32 on ``device`` ((C, R, R) for an int)."""
        single = isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_))
        pixels = torch.from_numpy(self.store.read(self.store_rows([index] if single else index)))
        out = self.encoding.encode(pixels.to(self.device))
        return out[0] if single else out

    def take(self, index: Any) -> "EncodedRows":
        """The rows at ``index`` as a new view (nothing is read)."""
        return EncodedRows(self.store, self.store_rows(index), self.encoding, self.device)

    def with_encoding(self, encoding: Encoding) -> "EncodedRows":
        return EncodedRows(self.store, self.rows, encoding, self.device)

    def read_all(self, chunk: int = 4096) -> Tensor:
        """Every row, encoded, as one tensor (reads the whole store). Shape: (N, C, R, R) float32 on ``device``."""
        out = torch.empty(tuple(self.shape), dtype=torch.float32, device=self.device)
        for i in range(0, len(self), chunk):
            out[i : i + chunk] = self[i : i + chunk]
        return out

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(_WHOLE_SPLIT.format(what="converting it to a numpy array"))

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        raise TypeError(_WHOLE_SPLIT.format(what=f"torch's {getattr(func, '__name__', func)}"))

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes EncodedRows lacks (.to, .float, .cpu, ...): the tensor methods of a whole split.
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"EncodedRows has no '{name}': " + _WHOLE_SPLIT.format(what=f"x.{name}"))


@dataclass(repr=False)
class MemmapRealData(RealData):
    """:class:`RealData` whose images stay in a memory-mapped store: the same per-class index, :meth:`sample`,
    :meth:`sample_indices`, :meth:`subset`, ``info`` and ``encoding``, but ``x`` is an :class:`EncodedRows` view that
    reads and encodes only the rows it is indexed with (a class batch), so resident memory does not grow with N.

    ``y`` (N,) int64 lives on the device, as in :class:`RealData`. Mini-batch training that only indexes ``x``
    (``train_classifier(real.x, real.y, ...)``) works and reads each batch from disk; anything that needs the whole
    split as one tensor (``real.x.to(...)``, torch functions on ``real.x``: the whole-set control, ZCA) raises an
    error naming :meth:`materialize`.

    Args:
        x: the view of the store rows (its encoding is replaced by ``encoding`` if they differ).
        y, info, encoding, spec: as :class:`RealData`.
    """

    x: EncodedRows  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.x.encoding is not self.encoding:  # e.g. dataclasses.replace(real, encoding=...)
            self.x = self.x.with_encoding(self.encoding)
        super().__post_init__()

    def __repr__(self) -> str:
        return f"MemmapRealData({self.x!r}, {self.num_classes} classes, dataset {self.info.name!r})"

    @classmethod
    def from_store(cls, store: ImageStore, info: DatasetInfo, encoding: Encoding,
                   device: torch.device | str = "cpu", *, spec: Any = None) -> "MemmapRealData":
        """The training data of ``store`` (all rows), encoded with ``encoding`` on ``device`` when indexed."""
        y = torch.from_numpy(store.labels).to(device)
        return cls(EncodedRows(store, None, encoding, torch.device(device)), y, info, encoding, spec)

    def subset(self, index: Tensor) -> "MemmapRealData":
        """The images at ``index`` (a view: nothing is read) with a fresh class index."""
        index = torch.as_tensor(index)
        return replace(self, x=self.x.take(index), y=self.y[index.to(self.y.device)])

    def select_classes(self, classes: Sequence[int], *, where: str = "dataset") -> "MemmapRealData":
        """Only the images of ``classes``, relabelled ``classes[i] -> i`` (as ``dataset.classes``)."""
        lookup, info = class_lookup(self.info, list(classes), where=where)
        new_y = lookup.to(self.y.device)[self.y]
        keep = (new_y >= 0).nonzero().squeeze(1)
        return replace(self, x=self.x.take(keep), y=new_y[keep], info=info)

    def materialize(self) -> RealData:
        """The whole split encoded in memory as a plain :class:`RealData` (N x C x R x R float32 on the device):
        explicit, for the uses that need one tensor."""
        return RealData(self.x.read_all(), self.y, self.info, self.encoding, self.spec)


# ---------------------------------------------------------------------------------------------------------------
# dataset: {store: ...}
# ---------------------------------------------------------------------------------------------------------------
def _store_options(spec: Any) -> dict[str, Any]:
    """The ``dataset.kwargs`` a store-backed dataset accepts (checked), with defaults."""
    if spec.name not in _STORE_DATASETS:
        raise ValueError(f"dataset.store serves folder datasets ({sorted(_STORE_DATASETS)}), not '{spec.name}'; use "
                         f"name: imagefolder with root: <ImageFolder root>")
    valid = {"channels", "mean", "std", "alias"} if spec.name == "imagefolder" else set()
    kwargs = dict(spec.kwargs)
    if "image_size" in kwargs:
        raise ValueError("dataset.kwargs.image_size does not apply to a store: its images are dataset.resolution "
                         "pixels square (shorter side resized, centre crop)")
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in dataset.kwargs for a store of dataset '{spec.name}'; valid "
                         f"keys: {sorted(valid)}")
    channels = int(kwargs.get("channels", 3))
    if channels not in (1, 3):
        raise ValueError(f"dataset.kwargs.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    mean, std = kwargs.get("mean"), kwargs.get("std")
    if _STORE_DATASETS[spec.name] is not None:
        mean, std = _STORE_DATASETS[spec.name]
    for key, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) != channels:
            raise ValueError(f"dataset.kwargs.{key} needs {channels} values (one per channel), got {list(value)}")
    if (mean is None) != (std is None):
        raise ValueError("dataset.kwargs: give both mean and std, or neither (the training store's statistics)")
    if std is not None and any(v <= 0 for v in std):
        raise ValueError(f"dataset.kwargs.std must be positive, got {list(std)}")
    return {"channels": channels, "mean": mean, "std": std, "alias": kwargs.get("alias", spec.name)}


def _check_buildable(spec: Any, split: str, folder: Path) -> None:
    """Raises, naming what to set, unless ``dataset.root`` and ``dataset.resolution`` can build ``folder``."""
    if spec.root is None:
        raise FileNotFoundError(f"dataset.store: there is no {split} store at {folder} and dataset.root is not "
                                f"set, so it cannot be built; set dataset.root (an ImageFolder root with train/ "
                                f"and test/ or val/) and dataset.resolution, or run: ddistill build-store <root> "
                                f"{spec.store} --resolution R")
    if spec.resolution is None:
        raise ValueError(f"dataset.resolution is needed to build the store {folder} from {spec.root} (e.g. 64 or "
                         f"128 pixels)")
    if not Path(spec.root).expanduser().exists():
        raise FileNotFoundError(f"dataset.root {spec.root} does not exist: set it to the ImageFolder root (train/ "
                                f"and val/ or test/, one sub-folder of images per class; or a .tar.gz of it) "
                                f"that the store {folder} is built from")


def _build_split(spec: Any, split: str, folder: Path, channels: int, classes: Sequence[str] | None) -> None:
    """Builds ``folder`` from ``dataset.root``'s ``split`` folder at ``dataset.resolution``."""
    base = _resolve_folder_root(spec.root, spec.name)
    src = split_source(base, split)
    print(f"building the {split} store {folder} from {src} at {spec.resolution} px (once; later runs read it)",
          flush=True)
    build_store(src, folder, int(spec.resolution), channels=channels,
                classes=list(classes) if classes is not None else None)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<split>.lock`` beside the store being built, so that processes starting together
    (the ranks of a torchrun job) build it once: the others wait, then open it. A no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish building {folder}", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_or_build(spec: Any, split: str, channels: int, classes: Sequence[str] | None) -> ImageStore:
    """``<dataset.store>/<split>``, built from ``dataset.root`` at ``dataset.resolution`` if it does not exist."""
    folder = Path(spec.store).expanduser() / split
    if not folder.exists():
        _check_buildable(spec, split, folder)
        with _build_lock(folder):
            if not folder.exists():  # not built by another process while this one waited
                _build_split(spec, split, folder, channels, classes)
    store = ImageStore.open(folder)
    if spec.resolution is not None and store.meta.resolution != spec.resolution:
        raise ValueError(f"the store {folder} holds {store.meta.resolution} px images but dataset.resolution is "
                         f"{spec.resolution}; point dataset.store at another folder (or rebuild this one with "
                         f"ddistill build-store --overwrite)")
    if store.meta.shape[1] != channels:
        raise ValueError(f"the store {folder} holds {store.meta.shape[1]}-channel images but dataset.kwargs.channels "
                         f"is {channels}")
    if classes is not None and tuple(store.meta.class_names) != tuple(classes):
        raise ValueError(f"the store {folder} has other classes than the training store ({store.num_classes} vs "
                         f"{len(classes)}); rebuild it from the same dataset root")
    return store


def _open_stores(spec: Any, split: str) -> tuple[ImageStore, ImageStore, DatasetInfo]:
    """(train store, ``split`` store, info): the training store gives the classes and the default mean/std."""
    if spec.store is None:
        raise ValueError("dataset.store is not set")
    opts = _store_options(spec)
    train = _open_or_build(spec, "train", opts["channels"], None)
    other = train if split == "train" else _open_or_build(spec, split, opts["channels"], train.meta.class_names)
    return train, other, train.info(opts["alias"], opts["mean"], opts["std"])


def load_store_split(spec: Any, split: str) -> ImageData:
    """One split of a store-backed dataset copied into RAM as uint8 :class:`ImageData` (builds the stores first if
    needed). For a large training split prefer :func:`load_store_data`, which maps it instead."""
    _check_split(split)
    _, store, info = _open_stores(spec, split)
    data = store.to_image_data(info)
    return data if spec.classes is None else select_classes(data, spec.classes, where=f"dataset '{spec.name}'")


def load_store_data(spec: Any, device: torch.device | str = "cpu") -> tuple[MemmapRealData, ImageData]:
    """(training data memory-mapped, test split in RAM) of a ``dataset:`` block with ``store`` (what
    :func:`~ddistill.data.spec.load_data` returns for it). The encoding is mean/std normalisation (``dataset.zca`` is
    refused: fitting ZCA needs the whole split in memory)."""
    if spec.zca:
        raise ValueError("dataset.zca fits the whitening on the whole training split in memory, which a store "
                         "(dataset.store) exists to avoid; use zca: false (mean/std normalisation) with a store")
    return load_store_real(spec, None, device), load_store_split(spec, "test")


def load_store_real(spec: Any, encoding: Encoding | None = None,
                    device: torch.device | str = "cpu") -> MemmapRealData:
    """The memory-mapped training split of a ``dataset:`` block with ``store``, encoded with ``encoding`` (a set's
    own encoding when an evaluator needs the real training split: its controls then read batches from disk too);
    None = mean/std normalisation with the store's statistics (or the dataset's constants)."""
    train, _, info = _open_stores(spec, "train")
    if encoding is None:
        encoding = Encoding(info.mean, info.std, (info.in_channels, *info.image_size), normalize=True)
    real = MemmapRealData.from_store(train, info, encoding, device, spec=spec)
    if spec.classes is not None:
        real = real.select_classes(spec.classes, where=f"dataset '{spec.name}'")
    return real
