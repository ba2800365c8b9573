"""How images are represented when models see them: pixels in [0, 1], then mean/std normalisation,
or (for the trajectory-matching CIFAR recipes) ZCA whitening *instead of* mean/std, as MTT does.

The encoding travels with every :class:`~ddistill.synset.SyntheticSet` (``meta["encoding"]`` plus the
ZCA tensors), so an evaluator encodes the real test set exactly as the synthetic images were encoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from .zca import ZCA


@dataclass
class Encoding:
    """Pixel -> model-input transform.

    Args:
        mean, std: per-channel constants; applied unless ``zca`` is set and ``normalize`` is False.
        shape: (C, H, W) of encoded images.
        normalize: apply mean/std.
        zca: optional fitted ZCA (applied after normalisation if both are on).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, int, int]
    normalize: bool = True
    zca: ZCA | None = None

    def encode(self, x: Tensor, *, batch_size: int = 4096) -> Tensor:
        """uint8 or [0,1] float pixels (N, C, H, W) -> float32 model inputs (N, C, H, W)."""
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for i in range(0, x.shape[0], batch_size):  # chunked: ZCA on 50k x 3072 at once needs 600 MB extra
            out[i : i + batch_size] = self._encode_chunk(x[i : i + batch_size])
        return out

    def _encode_chunk(self, x: Tensor) -> Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.normalize:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        if self.zca is not None:
            x = self.zca.apply(x)
        return x

    def decode(self, x: Tensor) -> Tensor:
        """Model inputs -> [0, 1]-scale pixels (not clamped); inverse of :meth:`encode`."""
        x = x.detach().float()
        if self.zca is not None:
            x = self.zca.invert(x)
        if self.normalize:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = x * std + mean
        return x

    # -- (de)serialisation into SyntheticSet meta + tensors -----------------------------------
    def to_meta(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "normalize": self.normalize,
            "zca": self.zca is not None,
            "zca_eps": None if self.zca is None else self.zca.eps,
        }

    def tensors(self) -> dict[str, Tensor]:
        return {} if self.zca is None else self.zca.tensors()

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor] | None = None) -> "Encoding":
        zca = None
        if meta.get("zca"):
            if tensors is None or "zca_w" not in tensors or "zca_mean" not in tensors:
                raise ValueError("encoding says the set is ZCA-whitened but the file has no zca_w/zca_mean tensors")
            zca = ZCA(tensors["zca_mean"], tensors["zca_w"], float(meta.get("zca_eps") or 0.0))
        return cls(tuple(meta["mean"]), tuple(meta["std"]), tuple(meta["shape"]), bool(meta.get("normalize", True)), zca)
