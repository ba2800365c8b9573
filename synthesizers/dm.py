"""Distribution matching (DM; Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023).

Each iteration samples a freshly initialised network psi and, for every class c, matches the mean
embedding of augmented real and synthetic images (DM Eq. 4, an MMD with a linear kernel)::

    L = sum_c || mean_i psi(A(x_real_c,i; w_c)) - mean_j psi(A(x_syn_c,j; w_c)) ||^2

where A is DSA with one parameter draw w_c shared by the real and synthetic batch of class c (siamese).
All classes go through the network in one batched pass (exactly equal to DM's class-by-class loop for
networks without cross-sample statistics, e.g. the default instance-norm ConvNet).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ddistill.augment import build_augment
from ddistill.data import RealData
from ddistill.models import ModelFamily
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed

from .base import SYNTHESIZERS, GradientConfig, GradientSynthesizer


@dataclass
class DMConfig(GradientConfig):
    """DM hyper-parameters (paper defaults: ipc 10, 20000 iterations, lr 1.0, momentum 0.5, batch 256).

    Args:
        model: network family sampled every iteration.
        model_kwargs: constructor overrides (e.g. ``{norm: batchnorm}``).
        lr_images: SGD learning rate on the images.
        momentum: SGD momentum on the images.
        batch_real: real images per class per iteration.
        augment: "dsa" or "none".
        dsa_strategy: None = the dataset's default strategy.
        perf: speed settings for the network passes (bf16 autocast, channels_last).
    """

    iterations: int = 20000
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr_images: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    augment: str = "dsa"
    dsa_strategy: str | None = None
    perf: PerfConfig = field(default_factory=PerfConfig)


@SYNTHESIZERS.register("dm")
class DistributionMatching(GradientSynthesizer):
    Config = DMConfig
    name = "dm"

    def init_synthetic(self, real: RealData) -> dict[str, nn.Parameter]:
        cfg = self.config
        self.family = ModelFamily(cfg.model, in_channels=real.x.shape[1], num_classes=real.num_classes,
                                  image_size=tuple(real.x.shape[2:]), seed=derive_seed(self.seed, 11),
                                  **cfg.model_kwargs)
        self.augment = build_augment(cfg.augment, real.info.name, cfg.dsa_strategy)
        self.perf = cfg.perf.resolve(self.device)
        return {"x": nn.Parameter(self.init_images(real, cfg.ipc, cfg.init))}

    def sample_network(self, step: int) -> nn.Module:
        # Indexed by step (not a running counter), so a resumed run samples the same networks.
        net = self.family.build(step, self.device)
        for p in net.parameters():
            p.requires_grad_(False)
        return self.perf.prepare_feature_extractor(net)

    def augmented_batches(self, real: RealData) -> tuple[Tensor, Tensor]:
        """Per class: a real batch and the class's synthetic images, augmented with shared params.

        Shape: (K * batch_real', C, H, W), (K * ipc, C, H, W), class-major.
        """
        ipc = self.config.ipc
        reals, syns = [], []
        x_syn = self.params["x"]
        for c in range(real.num_classes):
            xr = real.sample(c, self.config.batch_real, self.generator)
            xs = x_syn[c * ipc : (c + 1) * ipc]
            params = self.augment.sample_params(1, generator=self.generator)
            reals.append(self.augment(xr, params))
            syns.append(self.augment(xs, params))
        return torch.cat(reals), torch.cat(syns)

    def loss(self, real: RealData, step: int) -> Tensor:
        net = self.sample_network(step)
        x_real, x_syn = self.augmented_batches(real)
        k = real.num_classes
        with torch.no_grad(), self.perf.autocast(self.device):
            emb_real = net.embed(self.perf.prepare_input(x_real)).float()
        with self.perf.autocast(self.device):
            emb_syn = net.embed(self.perf.prepare_input(x_syn)).float()
        n_real = [real.class_count(c) for c in range(k)]
        sizes = [min(self.config.batch_real, n) for n in n_real]
        mean_real = torch.stack([e.mean(0) for e in torch.split(emb_real, sizes)])
        mean_syn = emb_syn.reshape(k, self.config.ipc, -1).mean(1)
        return ((mean_real - mean_syn) ** 2).sum()
