"""The on-disk format of a distilled set: one ``.pt`` file that loads with ``weights_only=True``.

A :class:`SyntheticSet` is a dict of tensors plus JSON-able metadata. The metadata records how the
tensors are encoded (normalisation, ZCA, shape) so that evaluators never guess it: a set evaluated
with the wrong normalisation or without its ZCA silently loses tens of points (MTT issues #11, #29).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .io import atomic_write, load_artifact, save_artifact

FORMAT = "ddistill.synset"
VERSION = 1

#: Metadata keys every set carries.
REQUIRED_META = ("synthesizer", "dataset", "num_classes")
#: What a set holds (``meta["kind"]``) and how its labels are read (``meta["labels"]``).
KINDS = ("image", "graph")
LABEL_KINDS = ("hard", "soft", "regression")


class SyntheticSetError(ValueError):
    """A file is not a readable ddistill synthetic set (foreign, truncated, or from a newer version)."""


@dataclass
class SyntheticSet:
    """A distilled dataset.

    Args:
        tensors: ``x`` (N, C, H, W) float images in the encoding given by ``meta["encoding"]``;
            ``y`` (N,) long hard labels, or (N, K) float soft labels / regression targets;
            optional ``lr`` () learned learning rate; optional ``zca_w`` (D, D) and ``zca_mean`` (D,)
            whitening state. Graph sets use PyG field names (``x``, ``edge_index``, ``ptr``, ``y``, ``weight``).
        meta: JSON-able metadata: synthesizer, dataset, num_classes, ipc, encoding, labels, learned,
            seed, step, config, ddistill_version, ... (see README, "SyntheticSet format").
    """

    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # ``kind`` says how to read the tensors; sets written before it existed: graph sets have node offsets.
        self.meta.setdefault("kind", "graph" if "ptr" in self.tensors else "image")

    # -- convenience views -------------------------------------------------------------------
    @property
    def x(self) -> Tensor:
        return self.tensors["x"]

    @property
    def y(self) -> Tensor:
        return self.tensors["y"]

    def __len__(self) -> int:
        y = self.tensors.get("y")
        return int(y.shape[0]) if isinstance(y, Tensor) and y.dim() else 0

    def validate(self) -> None:
        """Raises :class:`SyntheticSetError` naming the first inconsistency of the tensors or the metadata: missing
        or mistyped keys, tensors that are not tensors, images whose shape disagrees with the recorded encoding,
        labels of the wrong dtype, width or range, non-finite images."""
        meta, tensors = self.meta, self.tensors
        if not isinstance(meta, dict) or not isinstance(tensors, dict):
            raise SyntheticSetError("a synthetic set needs a dict of tensors and a dict of metadata")
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise SyntheticSetError(f"synthetic set metadata lacks {missing}; required keys are {list(REQUIRED_META)}")
        bad = [k for k, v in tensors.items() if not isinstance(v, Tensor)]
        if bad:
            raise SyntheticSetError(f"synthetic set entries {bad} are not tensors")
        for key in ("x", "y"):
            if key not in tensors:
                raise SyntheticSetError(f"synthetic set has no '{key}' tensor; it has {sorted(tensors)}")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise SyntheticSetError(f"synthetic set metadata must be JSON-able: {e}") from None
        k = meta["num_classes"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise SyntheticSetError(f"meta['num_classes'] must be a non-negative integer, got {k!r}")
        for key in ("synthesizer", "dataset"):
            if not isinstance(meta[key], str):
                raise SyntheticSetError(f"meta[{key!r}] must be a string, got {meta[key]!r}")
        if meta.get("kind", "image") not in KINDS:
            raise SyntheticSetError(f"meta['kind'] must be one of {list(KINDS)}, got {meta.get('kind')!r}")
        if meta.get("kind", "image") == "image":
            self._validate_image(k)
        if self.x.is_floating_point() and not torch.isfinite(self.x).all():
            raise SyntheticSetError("synthetic images contain NaN or Inf")

    def _validate_image(self, num_classes: int) -> None:
        x, y, meta = self.x, self.y, self.meta
        if x.dim() != 4 or not x.is_floating_point():
            raise SyntheticSetError(f"image sets need x of shape (N, C, H, W) and a float dtype, got "
                                    f"{tuple(x.shape)} {x.dtype}")
        if x.shape[0] != y.shape[0]:
            raise SyntheticSetError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        encoding = meta.get("encoding")
        if encoding is not None:
            if not isinstance(encoding, dict) or not isinstance(encoding.get("shape"), list):
                raise SyntheticSetError(f"meta['encoding'] must be a dict with a 'shape' list, got {encoding!r}")
            if list(encoding["shape"]) != list(x.shape[1:]):
                raise SyntheticSetError(f"the images are {list(x.shape[1:])} but meta['encoding']['shape'] says "
                                        f"{encoding['shape']}")
        labels = meta.get("labels", "hard")
        if labels == "hard":
            if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32):
                raise SyntheticSetError(f"hard labels must be an (N,) integer tensor, got {tuple(y.shape)} {y.dtype}")
            if y.numel() and (int(y.min()) < 0 or (num_classes and int(y.max()) >= num_classes)):
                raise SyntheticSetError(f"labels must lie in [0, {num_classes}) (meta['num_classes']), got "
                                        f"[{int(y.min())}, {int(y.max())}]")
        elif labels == "soft":
            if y.dim() != 2 or not y.is_floating_point() or (num_classes and y.shape[1] != num_classes):
                raise SyntheticSetError(f"soft labels must be an (N, {num_classes}) float tensor, got "
                                        f"{tuple(y.shape)} {y.dtype}")
        elif labels == "regression":
            if y.dim() != 2 or not y.is_floating_point():
                raise SyntheticSetError(f"regression targets must be an (N, D) float tensor, got {tuple(y.shape)} "
                                        f"{y.dtype}")
        else:
            raise SyntheticSetError(f"meta['labels'] must be one of {list(LABEL_KINDS)}, got {labels!r}")

    # -- I/O ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Writes the set atomically (temp file + rename) so an interrupted save never leaves a
        truncated file in place of a good one."""
        self.validate()
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        return save_artifact({"tensors": tensors, "meta": self.meta}, path, format=FORMAT, version=VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyntheticSet":
        """Loads a set saved by :meth:`save` (``weights_only=True``: no code runs); raises
        :class:`SyntheticSetError` naming the problem."""
        blob = load_artifact(path, format=FORMAT, what="synthetic set", max_version=VERSION,
                             required=("tensors", "meta"), error=SyntheticSetError)
        if not isinstance(blob["tensors"], dict) or not isinstance(blob["meta"], dict):
            raise SyntheticSetError(f"{path}: 'tensors' and 'meta' must be dicts")
        out = cls(dict(blob["tensors"]), dict(blob["meta"]))
        out.validate()
        return out

    # -- derived quantities ------------------------------------------------------------------
    def decode_images(self) -> Tensor:
        """Returns ``x`` mapped back to [0, 1] pixels for display (undoes ZCA and mean/std).

        Shape: (N, C, H, W) float in [0, 1] (clamped).
        """
        from ddistill.data.encoding import Encoding  # local: keeps synset import-light

        return Encoding.from_meta(self.meta["encoding"], self.tensors).decode(self.x).clamp(0, 1)

    def save_grid(self, path: str | os.PathLike, *, nrow: int | None = None, scale: int = 4) -> Path:
        """Writes a PNG grid, one row per class (``ipc`` columns), for a quick look at the images."""
        from torchvision.utils import save_image

        images = self.decode_images()
        if nrow is None:
            nrow = self.meta.get("ipc") or int(math.ceil(math.sqrt(len(images))))
        order = torch.argsort(self._hard_labels(), stable=True)
        images = images[order]
        if scale > 1:
            images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        return atomic_write(path, lambda f: save_image(images, f, format="png", nrow=int(nrow), padding=2,
                                                      pad_value=1.0))

    def _hard_labels(self) -> Tensor:
        y = self.y
        return y.argmax(1) if y.dim() == 2 else y

    def describe(self) -> str:
        """A short human-readable summary (used by ``ddistill show``)."""
        lines = [f"SyntheticSet: {len(self)} samples"]
        for k, v in self.tensors.items():
            lines.append(f"  tensor {k:10s} {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}")
        for k, v in self.meta.items():
            text = json.dumps(v) if not isinstance(v, str) else v
            if len(text) > 100:
                text = text[:97] + "..."
            lines.append(f"  {k}: {text}")
        return "\n".join(lines)
