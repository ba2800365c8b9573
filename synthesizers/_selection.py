"""Machinery shared by the coreset baselines: turning selected real indices into a SyntheticSet and
computing the embeddings they select on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ddistill.utils.progress import progress_bar
from ddistill.augment import build_augment
from ddistill.data import RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainRecipe, train_classifier

from .base import Synthesizer

#: ``derive_seed`` streams of the embedding network's initialisation and of its training order.
EMBED_INIT_STREAM, EMBED_TRAIN_STREAM = 7, 8


@dataclass
class EmbeddingConfig:
    """The network whose embeddings a coreset method selects on.

    Args:
        model: registry name of the network.
        model_kwargs: constructor overrides.
        train: SGD on the whole real set before embedding (DC's coreset rows use a ConvNet trained on real data;
            ``train.epochs: 0`` embeds with a randomly initialised network). Default: 5 epochs of DC's recipe
            without augmentation.
    """

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=5, augment="none"))


def embed_real(real: RealData, cfg: EmbeddingConfig, *, seed: int, device: torch.device) -> Tensor:
    """Embeddings of every real training image. Shape: (N, D) float32."""
    family = ModelFamily(cfg.model, in_channels=real.x.shape[1], num_classes=real.num_classes,
                         image_size=tuple(real.x.shape[2:]), seed=derive_seed(seed, EMBED_INIT_STREAM), **cfg.model_kwargs)
    net = family.build(0, device)
    perf = PerfConfig().resolve(device)
    net = perf.prepare_model(net)
    if cfg.train.epochs > 0 or cfg.train.iterations:
        augment = build_augment(cfg.train.augment, real.info.name, encoding=real.encoding)
        train_classifier(net, real.x, real.y, cfg.train, augment=augment,
                         generator=make_generator(derive_seed(seed, EMBED_TRAIN_STREAM)), perf=perf,
                         progress="embedding net")
    net.eval()
    out = []
    with torch.no_grad():
        for start in progress_bar(range(0, len(real), 1024), desc="embedding", leave=False):
            xb = perf.prepare_input(real.x[start : start + 1024])
            with perf.autocast(device):
                out.append(net.embed(xb).float())
    return torch.cat(out)


def selection_set(synth: Synthesizer, real: RealData, indices: Tensor, *, ipc: int | None, record_indices: bool = True,
                  **meta: Any) -> SyntheticSet:
    """A set made of real images at ``indices`` (class-major order), with full metadata (including the
    selected ``source_indices`` unless ``record_indices`` is False, e.g. for the whole dataset)."""
    indices = indices.to(real.x.device)
    tensors = {"x": real.x[indices].detach().cpu().clone(), "y": real.y[indices].detach().cpu().clone(),
               **real.encoding.tensors()}
    if record_indices:
        meta["source_indices"] = indices.cpu().tolist()
    return SyntheticSet(tensors, synth.base_meta(real, ipc=ipc, **meta))


@dataclass
class CoresetConfig:
    """Args:
        ipc: images per class.
        embedding: the network whose features the selection works on.
    """

    ipc: int = 10
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)

    def __post_init__(self) -> None:
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")


class CoresetSynthesizer(Synthesizer):
    """Base of per-class selection baselines: embed the real set once, then pick ``ipc`` indices per
    class with :attr:`select` ``(features (n, D), k) -> (k,) indices``."""

    Config = CoresetConfig
    select: Callable[[Tensor, int], Tensor]

    def synthesize(self, real: RealData) -> SyntheticSet:
        self.check_ipc(real, self.config.ipc)
        feats = embed_real(real, self.config.embedding, seed=self.seed, device=self.device)
        chosen = []
        for c in range(real.num_classes):
            idx = real.class_indices(c)
            chosen.append(idx[type(self).select(feats[idx], self.config.ipc).to(idx.device)])
        return selection_set(self, real, torch.cat(chosen), ipc=self.config.ipc)

