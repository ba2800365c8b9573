"""Conversion between a KRR-ST :class:`SyntheticSet` and the official ``selfsup_dd`` files ``x_syn.pt`` / ``y_syn.pt``
(plain float tensors, images in raw [0, 1] pixels), so released sets can be scored by ``evaluators.transfer``."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ddistill.data import Encoding
from ddistill.io import atomic_torch_save
from ddistill.synset import SyntheticSet

__all__ = ["export_official", "import_official"]


def export_official(synset: SyntheticSet, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Writes ``x_syn.pt`` and ``y_syn.pt`` as the official code stores and reads them (``test.py``): plain float
    tensors, images in raw [0, 1] pixel space (decoded from the set's encoding), targets (N, D).

    Shape: x_syn (N, C, H, W), y_syn (N, D).
    """
    if synset.meta.get("labels") != "regression":
        raise ValueError(f"export_official writes KRR-ST sets (labels 'regression'), not '{synset.meta.get('labels')}'")
    encoding = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
    folder = Path(folder)
    x_path = atomic_torch_save(encoding.decode(synset.x).float(), folder / "x_syn.pt")
    y_path = atomic_torch_save(synset.y.detach().float().cpu(), folder / "y_syn.pt")
    return x_path, y_path


def import_official(folder: str | os.PathLike, *, dataset: str, mean: tuple[float, ...], std: tuple[float, ...],
                    model: str = "convnet_128_256_512_bn", num_classes: int = 0) -> SyntheticSet:
    """Reads the authors' released ``x_syn.pt`` / ``y_syn.pt`` (raw pixels) into a :class:`SyntheticSet` with
    ``x_space: raw`` (encoding ``normalize: false``, the dataset's mean/std recorded for display), so the transfer
    evaluator can score the released sets exactly as ``test.py`` does.

    Args:
        folder: holds ``x_syn.pt`` and ``y_syn.pt``.
        dataset: source dataset name (e.g. "cifar100").
        mean, std: the source normalisation constants.
        model: the evaluation network recorded in the set.
        num_classes: source class count (metadata only; the set is label-free).
    """
    folder = Path(folder)
    x = torch.load(folder / "x_syn.pt", map_location="cpu", weights_only=True).detach().float()
    y = torch.load(folder / "y_syn.pt", map_location="cpu", weights_only=True).detach().float()
    if x.dim() != 4 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected x_syn (N, C, H, W) and y_syn (N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    encoding = Encoding(tuple(mean), tuple(std), tuple(x.shape[1:]), normalize=False)
    meta = {"synthesizer": "krr_st", "dataset": dataset, "num_classes": int(num_classes), "ipc": None,
            "num_images": int(x.shape[0]), "encoding": encoding.to_meta(), "labels": "regression",
            "learned": ["x", "y"], "x_space": "raw", "target_dim": int(y.shape[1]), "eval_model": model,
            "eval_model_kwargs": {}, "source": f"official files {folder}"}
    return SyntheticSet({"x": x, "y": y}, meta)
