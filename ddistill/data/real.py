"""The class-indexed store of real training images that every synthesizer samples from."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .encoding import Encoding
from .info import DatasetInfo, ImageData


@dataclass
class RealData:
    """All real training images, encoded once, with a per-class index.

    Args:
        x: encoded images (N, C, H, W) float32 on ``device``.
        y: labels (N,) int64 on ``device``.
        info: dataset facts (classes, shape, ...).
        encoding: how ``x`` was produced from pixels (saved into every synthetic set).
        spec: the ``dataset:`` block it was loaded from (a :class:`~ddistill.data.spec.DataSpec`), recorded as
            ``meta["data"]`` in every set made from it so the set can be re-evaluated; None for hand-made data.
    """

    x: Tensor
    y: Tensor
    info: DatasetInfo
    encoding: Encoding
    spec: Any = None

    def __post_init__(self) -> None:
        order = torch.argsort(self.y.cpu(), stable=True)
        counts = torch.bincount(self.y.cpu(), minlength=self.info.num_classes)
        self._by_class: list[Tensor] = list(torch.split(order.to(self.x.device), counts.tolist()))

    @classmethod
    def from_images(cls, data: ImageData, encoding: Encoding, device: torch.device | str = "cpu", *,
                    spec: Any = None) -> "RealData":
        x = encoding.encode(data.x.to(device))
        return cls(x, data.y.to(device), data.info, encoding, spec)

    def subset(self, index: Tensor) -> "RealData":
        """The images at ``index`` (same info, encoding and spec) with a fresh class index."""
        index = index.to(self.x.device)
        return replace(self, x=self.x[index], y=self.y[index])

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_count(self, c: int) -> int:
        return int(self._by_class[c].numel())

    def class_indices(self, c: int) -> Tensor:
        """Indices into ``x`` of every image of class ``c``. Shape: (n_c,)."""
        self._check_class(c)
        return self._by_class[c]

    def sample(self, c: int, n: int, generator: torch.Generator | None = None, *, replace: bool = False) -> Tensor:
        """``n`` random images of class ``c``, drawn with ``generator`` (CPU generator).

        Without ``replace``, ``n`` larger than the class is clipped to the whole class (DC's
        ``get_images`` behaviour for real batches); use :meth:`sample_indices` with ``strict=True`` when
        asking for more than the class has is an error (e.g. IPC initialisation).

        Shape: (min(n, n_c), C, H, W).
        """
        return self.x[self.sample_indices(c, n, generator, replace=replace)]

    def sample_indices(
        self, c: int, n: int, generator: torch.Generator | None = None, *, replace: bool = False, strict: bool = False
    ) -> Tensor:
        idx = self.class_indices(c)
        count = idx.numel()
        if strict and not replace and n > count:
            raise ValueError(
                f"class {c} ({self.class_name(c)}) has only {count} real images, fewer than the {n} requested; "
                f"lower ipc to at most {min(self.class_count(k) for k in range(self.num_classes))}"
            )
        if replace:
            pick = torch.randint(count, (n,), generator=generator)
        else:
            pick = torch.randperm(count, generator=generator)[:n]
        return idx[pick.to(idx.device)]

    def class_name(self, c: int) -> str:
        names = self.info.class_names
        return names[c] if c < len(names) else str(c)

    def _check_class(self, c: int) -> None:
        if not 0 <= c < self.num_classes:
            raise IndexError(f"class {c} out of range [0, {self.num_classes})")
