"""Trajectory-matching sets: MTT, AST, FTD and DATM (``images_best.pt``, ``labels_best.pt``, ``lr_best.pt``).

What the official code writes (``./logged_files/<dataset>/<run>/``, DATM one level deeper under ``Normal/``):

- ``images_<it>.pt`` / ``images_best.pt``: float32 (K*ipc, C, H, W), class-major, in the space the student trained
  in: mean/std-normalised pixels, or with ``--zca`` [0, 1] pixels whitened by kornia's ``ZCAWhitening(eps=0.1)`` fitted
  on the whole training split (no mean/std). ``images_zca_<it>.pt`` is the inverse-whitened copy kept for display.
- ``labels_<it>.pt`` / ``labels_best.pt``: MTT saves int64 class indices; DATM saves its learned (K*ipc, K) soft
  labels, logits that its soft cross-entropy passes through a softmax; AST saves none.
- ``lr_<it>.pt`` / ``lr_best.pt``: the learned student rate, a 0-d tensor. Only DATM saves it; MTT and AST log it to
  wandb ("Synthetic_LR") only, so give it with ``--lr``.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..synset import SyntheticSet
from ._base import IMPORTERS, Foreign, Importer, ImportOptions, InteropError, Target, as_tensor, build_set, \
    load_foreign, read_lr_file

__all__ = ["MTTImporter", "resolve_files"]

#: Roles of the files of a run folder, by file-name prefix.
_ROLE = re.compile(r"^(images|labels|lr|syn_lr)(.*)\.pt$")


def resolve_files(paths: list[Path], *, default_suffix: str, fmt: str) -> dict[str, Path]:
    """Which file holds the images, the labels and the learned rate.

    ``paths`` is one folder (its ``images<suffix>.pt``, ``labels<suffix>.pt`` and ``lr<suffix>.pt`` are read, suffix
    ``default_suffix``), or the files themselves, told apart by their names (``images*.pt``, ``labels*.pt``,
    ``lr*.pt``). A role not given explicitly is filled by the sibling of the images file with the same suffix when one
    exists (``images_best.pt`` -> ``labels_best.pt``, ``lr_best.pt``).
    """
    if not paths:
        raise InteropError(f"{fmt} import needs a folder or an images file")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        images = folder / f"images{default_suffix}.pt"
        if not images.is_file():
            found = sorted(p.name for p in folder.glob("images*.pt"))
            hint = f"; it has {', '.join(found[:6])}{'...' if len(found) > 6 else ''}: name the file to import" \
                if found else ""
            raise InteropError(f"no images{default_suffix}.pt in {folder}{hint}")
        files = {"images": images}
    else:
        files = {}
        for path in paths:
            if path.is_dir():
                raise InteropError(f"{path} is a folder; give either one folder or the files")
            match = _ROLE.match(path.name)
            if not match:
                raise InteropError(f"cannot tell what {path.name} holds: {fmt} files are named images*.pt, "
                                   f"labels*.pt and lr*.pt")
            role = "lr" if match.group(1) == "syn_lr" else match.group(1)
            if role in files:
                raise InteropError(f"two {role} files given: {files[role].name} and {path.name}")
            files[role] = path
        if "images" not in files:
            raise InteropError(f"no images file among {', '.join(p.name for p in paths)}")
    images = files["images"]
    suffix = _ROLE.match(images.name).group(2)  # type: ignore[union-attr]
    if suffix.startswith("_zca"):
        raise InteropError(f"{images.name} holds inverse-whitened pixels kept for display; import "
                           f"images{suffix[4:]}.pt (the whitened tensors the student trained on) with --zca")
    for role in ("labels", "lr"):
        sibling = images.with_name(f"{role}{suffix}.pt")
        if role not in files and sibling.is_file():
            files[role] = sibling
    return files


@IMPORTERS.register("mtt")
class MTTImporter(Importer):
    """MTT / AST / FTD / DATM run folders."""

    reads = "images_best.pt [labels_best.pt] [lr_best.pt] (or a run folder; images_<it>.pt for another iteration)"
    encoding = ("mean/std-normalised, or with --zca [0, 1] pixels ZCA-whitened (kornia, eps 0.1, fitted on the whole "
                "training split); hard labels (MTT), soft logits (DATM) or none (AST: class-major); lr only from DATM "
                "or --lr")

    def read(self, paths: list[Path], target: Target, options: ImportOptions) -> SyntheticSet:
        files = resolve_files(paths, default_suffix="_best", fmt="mtt")
        x = as_tensor(load_foreign(files["images"], "MTT images"), files["images"], "the images")
        y = as_tensor(load_foreign(files["labels"], "MTT labels"), files["labels"], "the labels") \
            if "labels" in files else None
        lr = read_lr_file(files, options)
        assumed = []
        if lr is None and options.lr is None:
            assumed.append("no learned lr (MTT and AST do not save it): the set has none; pass --lr to add it")
        return build_set(self.name, Foreign(x, y, lr, files), target, options, assumed=assumed)
