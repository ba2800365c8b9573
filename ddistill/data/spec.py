"""Which real data a run uses (:class:`DataSpec`, the ``dataset:`` block of every config) and the one function that
loads it (:func:`load_data`), for images and graphs alike."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from . import folder as _folder  # noqa: F401  (registers imagefolder, cifar10_jpeg, tinyimagenet)
from .classes import select_classes
from .encoding import Encoding
from .image import DATASETS
from .info import ImageData
from .real import RealData

__all__ = ["DataSpec", "is_graph_dataset", "load_data", "load_split", "make_encoding"]


@dataclass
class DataSpec:
    """Which real data to load (the ``dataset:`` block of a config, recorded as ``meta["data"]`` in every set).

    Args:
        name: dataset registry name (``ddistill list datasets`` / ``ddistill list graph_datasets``).
        root: folder (or archive for folder datasets) holding the files.
        download: let torchvision / PyG download (needs internet).
        zca: ZCA-whiten (fitted on the whole training split, MTT's recipe); replaces mean/std.
        zca_eps: ZCA regularisation (0.1 in MTT).
        kwargs: loader-specific options (e.g. ``{image_size: [64, 64]}`` for folders, ``{split_seed: 1}`` for
            graphs).
        classes: keep only these classes of an image dataset, relabelled 0..k-1 in the listed order (None = all).
            Class-split protocols use it: e.g. CIFAR-10 classes 0-4 as an unlabelled transfer source and 5-9 as the
            labelled target, so source and target never share a label.
        store: a folder of memory-mapped uint8 stores, one per split (``<store>/train``, ``<store>/test``), for
            folder datasets (``imagefolder``, ``cifar10_jpeg``) too large to decode into RAM; built from ``root``
            on first use (or ahead with ``ddistill build-store``). The training split is then read batch by batch
            (:class:`~ddistill.data.store.MemmapRealData`) instead of held in memory; None (default) = the in-RAM
            path. See :mod:`ddistill.data.store`.
        resolution: side in pixels of a store's square images (shorter side resized, centre crop), e.g. 64 or 128;
            needed to build the store, checked against an existing one.
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False
    zca: bool = False
    zca_eps: float = 0.1
    kwargs: dict[str, Any] = field(default_factory=dict)
    classes: list[int] | None = None
    store: str | None = None
    resolution: int | None = None

    def __post_init__(self) -> None:
        if self.resolution is not None:
            if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 1:
                raise ValueError(f"dataset.resolution must be a positive integer (pixels), got {self.resolution!r}")
            if self.store is None:
                raise ValueError("dataset.resolution is the side of a store's images: set dataset.store=<folder> too "
                                 "(for images decoded into RAM, resize with dataset.kwargs.image_size=[H, W])")
        if self.classes is not None:
            if not self.classes or len(set(self.classes)) != len(self.classes) or any(
                    not isinstance(c, int) or c < 0 for c in self.classes):
                raise ValueError(f"dataset.classes must be a non-empty list of distinct class indices, got "
                                 f"{self.classes}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "root": self.root, "download": self.download, "zca": self.zca,
                "zca_eps": self.zca_eps, "kwargs": dict(self.kwargs),
                "classes": None if self.classes is None else list(self.classes), "store": self.store,
                "resolution": self.resolution}

    def label(self) -> str:
        """A short name for tables and keys: ``cifar10`` or ``cifar10[5,6,7,8,9]``."""
        return self.name + (f"[{','.join(map(str, self.classes))}]" if self.classes is not None else "")


def is_graph_dataset(name: str) -> bool:
    from .graph import GRAPH_DATASETS

    return name in GRAPH_DATASETS


def check_kwargs(loader: Any, kwargs: dict[str, Any], dataset: str) -> None:
    """Raises a ValueError naming the keys of ``dataset.kwargs`` that ``loader`` does not take, and the valid ones."""
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    fixed = {"root", "split", "download"}
    valid = sorted(k for k in params if k not in fixed)
    unknown = sorted(k for k in kwargs if k not in params or k in fixed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in dataset.kwargs for dataset '{dataset}'; valid keys: {valid}")


def load_split(spec: DataSpec, split: str) -> ImageData:
    """One split of an image dataset as uint8 pixels (unknown names list the registered datasets). With
    ``spec.store`` the split is read from its store and copied into RAM whole (for the test split, or a store small
    enough; :func:`load_data` maps the training split instead)."""
    if spec.store is not None:
        from .store import load_store_split

        return load_store_split(spec, split)
    loader = DATASETS.get(spec.name)
    check_kwargs(loader, spec.kwargs, spec.name)
    data = loader(root=spec.root, split=split, download=spec.download, **spec.kwargs)
    return data if spec.classes is None else select_classes(data, spec.classes, where=f"dataset '{spec.name}'")


def make_encoding(train: ImageData, *, zca: bool = False, zca_eps: float = 0.1,
                  normalize: bool | None = None) -> Encoding:
    """The encoding of a training split: mean/std normalisation, or ZCA fitted on the whole split.

    With ZCA, mean/std normalisation is skipped by default, as in the MTT/KIP CIFAR recipes.
    """
    from .zca import ZCA

    info = train.info
    normalize = (not zca) if normalize is None else normalize
    shape = (info.in_channels, *info.image_size)
    enc = Encoding(info.mean, info.std, shape, normalize=normalize)
    if zca:
        enc.zca = ZCA.fit(Encoding(info.mean, info.std, shape, normalize=normalize).encode(train.x), eps=zca_eps)
    return enc


def load_data(spec: DataSpec, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """The training data of a run and its test data.

    Images: ``(RealData, ImageData)``, the encoded class-indexed training split (which remembers ``spec``, so every
    set made from it records where its data came from) and the raw uint8 test split; with ``spec.store`` the
    training split is a :class:`~ddistill.data.store.MemmapRealData` that reads class batches from disk. Graphs: the
    whole :class:`~ddistill.data.graph.GraphDataset` (train / val / test) twice, as Mirage and the graph evaluator
    take it.
    """
    if is_graph_dataset(spec.name):
        from .graph import GRAPH_DATASETS, load_graph_dataset

        check_kwargs(GRAPH_DATASETS.get(spec.name), spec.kwargs, spec.name)
        if spec.classes is not None:
            raise ValueError(f"dataset.classes selects classes of image datasets; '{spec.name}' is a graph dataset")
        if spec.store is not None:
            raise ValueError(f"dataset.store holds images; '{spec.name}' is a graph dataset")
        graphs = load_graph_dataset(spec.name, spec.root, download=spec.download, **spec.kwargs)
        graphs.spec = spec
        return graphs, graphs
    if spec.store is not None:
        from .store import load_store_data

        return load_store_data(spec, device)
    train = load_split(spec, "train")
    test = load_split(spec, "test")
    encoding = make_encoding(train, zca=spec.zca, zca_eps=spec.zca_eps)
    return RealData.from_images(train, encoding, device, spec=spec), test
