"""Distribution matching (DM; Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023).

Each iteration samples a freshly initialised network psi and, for every class c, matches the mean
embedding of augmented real and synthetic images (DM Eq. 4, an MMD with a linear kernel)::

    L = sum_c || mean_i psi(A(x_real_c,i; w_c)) - mean_j psi(A(x_syn_c,j; w_c)) ||^2

where A is DSA with one parameter draw w_c shared by the real and synthetic batch of class c (siamese).
All classes go through the network in one batched pass (exactly equal to DM's class-by-class loop for
networks without cross-sample statistics, e.g. the default instance-norm ConvNet).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ddistill.data import RealData

from ._matching import FreshNetworkMatching, MatchingConfig
from .base import SYNTHESIZERS


@dataclass
class DMConfig(MatchingConfig):
    """DM hyper-parameters (paper defaults: ipc 10, 20000 iterations, lr 1.0, momentum 0.5, batch 256); the fields
    are :class:`~synthesizers._matching.MatchingConfig`'s."""

    iterations: int = 20000


@SYNTHESIZERS.register("dm")
class DistributionMatching(FreshNetworkMatching):
    Config = DMConfig

    def loss(self, real: RealData, step: int) -> Tensor:
        net = self.sample_network(step)
        x_real, x_syn = self.siamese_class_batches(real)
        k = len(self.classes)  # this rank's classes (all of them in one process)
        with torch.no_grad(), self.perf.autocast(self.device):
            emb_real = net.embed(self.perf.prepare_input(x_real)).float()
        with self.perf.autocast(self.device):
            emb_syn = net.embed(self.perf.prepare_input(x_syn)).float()
        mean_real = torch.stack([e.mean(0) for e in torch.split(emb_real, self.real_batch_sizes(real))])
        mean_syn = emb_syn.reshape(k, self.config.ipc, -1).mean(1)
        return ((mean_real - mean_syn) ** 2).sum()
