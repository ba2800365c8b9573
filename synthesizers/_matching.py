"""Fresh-network matching: the machinery of the methods that, every iteration, sample a newly initialised network and
match statistics of real and synthetic images of each class through it (DM, DataDAM; a gradient-matching DC would
subclass this too, with ``trainable=True`` networks).

A subclass writes :meth:`~synthesizers.base.GradientSynthesizer.loss` only; the base builds the network family, the
augmentation, the images and their SGD, and provides :meth:`FreshNetworkMatching.sample_network` and
:meth:`FreshNetworkMatching.siamese_class_batches`.

Under ``torchrun`` the classes are sharded over the ranks (:attr:`FreshNetworkMatching.classes`): every rank samples
the same network (it is indexed by the step) and makes every class's draws (real indices, DSA parameters) in the
single-process order, but forwards only its own classes; the loss is a sum over classes, so the summed gradients are
those of one process. Batch-norm networks normalise with the statistics of all ranks' batches
(:class:`~ddistill.distributed.GlobalBatchNorm`), so the official DataDAM preset keeps its meaning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ddistill.augment import build_augment
from ddistill.data import RealData
from ddistill.distributed import synchronise_batch_norm
from ddistill.models import ModelFamily
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed

from .base import GradientConfig, GradientSynthesizer

#: ``derive_seed`` stream of the network family (the value every recorded DM/DataDAM set was made with).
NETWORK_STREAM = 11


@dataclass
class MatchingConfig(GradientConfig):
    """Fields of every fresh-network matching method.

    Args:
        model: network family sampled every iteration (also the set's default evaluation network).
        model_kwargs: constructor overrides (e.g. ``{norm: batchnorm}``).
        lr_images: SGD learning rate on the images.
        momentum: SGD momentum on the images.
        batch_real: real images per class per iteration.
        augment: "dsa" or "none".
        dsa_strategy: None = the dataset's default strategy.
        perf: speed settings for the network passes (bf16 autocast, channels_last).
    """

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr_images: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    augment: str = "dsa"
    dsa_strategy: str | None = None
    perf: PerfConfig = field(default_factory=PerfConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_real < 1:
            raise ValueError(f"batch_real must be >= 1, got {self.batch_real}")


class FreshNetworkMatching(GradientSynthesizer):
    """Base of DM-style methods: learnable images ``x`` (SGD with ``lr_images`` / ``momentum``), a fresh network per
    step from a seeded :class:`ModelFamily`, siamese DSA per class."""

    shares_work = True

    def build(self, real: RealData) -> None:
        cfg = self.config
        if self.dist.world_size > real.num_classes:
            raise ValueError(f"{self.name} shards the {real.num_classes} classes over the ranks: run at most "
                             f"{real.num_classes} processes, not {self.dist.world_size}")
        #: The classes this rank forwards (all of them in a single process).
        self.classes = self.dist.owned(real.num_classes)
        self.family = ModelFamily(cfg.model, in_channels=real.x.shape[1], num_classes=real.num_classes,
                                  image_size=tuple(real.x.shape[2:]), seed=derive_seed(self.seed, NETWORK_STREAM),
                                  **cfg.model_kwargs)
        self.augment = build_augment(cfg.augment, real.info.name, cfg.dsa_strategy)
        self.perf = cfg.perf.resolve(self.device)

    def init_synthetic(self, real: RealData) -> dict[str, nn.Parameter]:
        return {"x": nn.Parameter(self.init_images(real, self.config.ipc, self.config.init))}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD([self.params["x"]], lr=self.config.lr_images, momentum=self.config.momentum)]

    def evaluation_model(self) -> tuple[str | None, dict[str, Any]]:
        return self.config.model, dict(self.config.model_kwargs)

    def sample_network(self, step: int, *, trainable: bool = False) -> nn.Module:
        """Network ``step`` of the family (indexed by step, not a running counter, so a resumed run samples the same
        networks), prepared for fast feature extraction; frozen unless ``trainable``."""
        net = synchronise_batch_norm(self.family.build(step, self.device), self.dist)
        if not trainable:
            for p in net.parameters():
                p.requires_grad_(False)
        return self.perf.prepare_feature_extractor(net)

    def siamese_class_batches(self, real: RealData) -> tuple[Tensor, Tensor]:
        """Per class of :attr:`classes`: a real batch and the class's synthetic images, augmented with one shared
        parameter draw. The draws of every class are made (in class order) so the generator advances as in a single
        process whichever classes this rank owns.

        Shape: (K' * batch_real', C, H, W), (K' * ipc, C, H, W), class-major, K' = len(classes).
        """
        return self.siamese_batches_of(real, self.class_draws(real))

    def class_draws(self, real: RealData) -> list[tuple[int, Tensor, Any]]:
        """The step's random draws, ``(class, real indices, augmentation parameters)`` for each class of
        :attr:`classes`. Every class's draws are made (in class order), so the generator advances as in a single
        process whichever classes this rank owns; nothing is materialised yet."""
        mine = set(self.classes)
        draws = []
        for c in range(real.num_classes):
            idx = real.sample_indices(c, self.config.batch_real, self.generator)
            params = self.augment.sample_params(1, generator=self.generator)
            if c in mine:
                draws.append((c, idx, params))
        return draws

    def siamese_batches_of(self, real: RealData, draws: list[tuple[int, Tensor, Any]]) -> tuple[Tensor, Tensor]:
        """The augmented real batches and synthetic images of ``draws`` (:meth:`class_draws`), class-major.

        Shape: (sum of real batch sizes, C, H, W), (len(draws) * ipc, C, H, W).
        """
        ipc = self.config.ipc
        x_syn = self.params["x"]
        reals = [self.augment(real.x[idx], params) for _, idx, params in draws]
        syns = [self.augment(x_syn[c * ipc : (c + 1) * ipc], params) for c, _, params in draws]
        return torch.cat(reals), torch.cat(syns)

    def real_batch_sizes(self, real: RealData) -> list[int]:
        """Real images per class of :attr:`classes` in :meth:`siamese_class_batches` (classes smaller than
        ``batch_real`` give all)."""
        return [min(self.config.batch_real, real.class_count(c)) for c in self.classes]
