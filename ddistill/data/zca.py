"""ZCA whitening as used by KIP/MTT/FTD/DATM on CIFAR (kornia's ``ZCAWhitening``, eps 0.1 in MTT).

The fitted state (mean vector and whitening matrix) is plain tensors so it can be stored inside a
:class:`~ddistill.synset.SyntheticSet` (``zca_mean``, ``zca_w``): an evaluator must apply the same
transform to the test set, and a set evaluated without its ZCA loses most of its accuracy (MTT #11).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ZCA:
    """Fitted ZCA whitening: ``x_white = (x.flatten(1) - mean) @ W``.

    Shape:
        mean: (D,), W: (D, D) with D = C*H*W.
    """

    mean: Tensor
    w: Tensor
    eps: float

    @classmethod
    def fit(cls, x: Tensor, eps: float = 0.1) -> "ZCA":
        """Fits on images ``x`` (N, C, H, W) in [0, 1] with kornia's estimator (biased=False covariance)."""
        from kornia.enhance import ZCAWhitening

        zca = ZCAWhitening(eps=eps, compute_inv=False).fit(x.float())
        return cls(zca.mean_vector.reshape(-1).detach().clone(), zca.transform_matrix.detach().clone(), float(eps))

    def apply(self, x: Tensor) -> Tensor:
        """Whitens ``x`` (N, C, H, W); differentiable, batched."""
        flat = x.reshape(x.shape[0], -1) - self.mean.to(x)
        return (flat @ self.w.to(x)).reshape(x.shape)

    def invert(self, x: Tensor) -> Tensor:
        """Maps whitened images back to pixel space (for display)."""
        w_inv = torch.linalg.inv(self.w.double()).to(x)
        return (x.reshape(x.shape[0], -1) @ w_inv + self.mean.to(x)).reshape(x.shape)

    def tensors(self) -> dict[str, Tensor]:
        return {"zca_mean": self.mean, "zca_w": self.w}
