"""Datasets: registries of loaders (images: whole splits as uint8 tensors; graphs: PyG ``Data`` lists), the
class-indexed store of encoded real images (in RAM, or memory-mapped from an on-disk uint8 store for splits too large
for RAM: :mod:`ddistill.data.store`), the pixel encoding (mean/std, ZCA) that travels with synthetic sets,
the ``dataset:`` config block (:class:`DataSpec`) and the loaders of a run's training and evaluation data."""
from __future__ import annotations

from typing import Any

import torch

from .encoding import Encoding
from .eval_data import EvalData, EvalNeeds, load_eval_data
from .image import DATASETS, MEAN_STD
from .info import DatasetInfo, ImageData
from .real import RealData
from .spec import DataSpec, is_graph_dataset, load_data, load_split, make_encoding
from .store import ImageStore, MemmapRealData, build_store
from .zca import ZCA

__all__ = ["DATASETS", "MEAN_STD", "DataSpec", "DatasetInfo", "Encoding", "EvalData", "EvalNeeds", "ImageData",
           "ImageStore", "MemmapRealData", "RealData", "ZCA", "build_store", "get_dataset", "is_graph_dataset",
           "list_datasets", "load_data", "load_eval_data", "load_real", "load_split", "make_encoding"]


def get_dataset(name: str, *, root: str | None = None, split: str = "train", download: bool = False,
                **kwargs: Any) -> ImageData:
    """Loads one split of a registered dataset. Unknown names raise a KeyError listing the choices."""
    return load_split(DataSpec(name, root, download, kwargs=kwargs), split)


def list_datasets() -> list[str]:
    return DATASETS.names()


def load_real(name: str, *, root: str | None = None, download: bool = False, zca: bool = False,
              zca_eps: float = 0.1, device: torch.device | str = "cpu", **kwargs: Any) -> tuple[RealData, ImageData]:
    """Train split as a :class:`RealData` store plus the raw test split (encode it with ``real.encoding``);
    :func:`load_data` for an image dataset named by keywords."""
    return load_data(DataSpec(name, root, download, zca, zca_eps, dict(kwargs)), device)
