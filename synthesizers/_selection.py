"""Machinery shared by the coreset baselines: turning selected real indices into a SyntheticSet and
computing the embeddings they select on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddistill.data import RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainSchedule, train_classifier


@dataclass
class EmbeddingConfig:
    """The network whose embeddings a coreset method selects on.

    Args:
        model: registry name of the network.
        model_kwargs: constructor overrides.
        train_epochs: epochs of plain SGD on the whole real set before embedding (DC's coreset rows use a
            ConvNet trained on real data); 0 embeds with a randomly initialised network.
        lr, batch_size: recipe of that training (momentum 0.9, wd 5e-4).
    """

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train_epochs: int = 5
    lr: float = 0.01
    batch_size: int = 256


def embed_real(real: RealData, cfg: EmbeddingConfig, *, seed: int, device: torch.device) -> Tensor:
    """Embeddings of every real training image. Shape: (N, D) float32."""
    family = ModelFamily(cfg.model, in_channels=real.x.shape[1], num_classes=real.num_classes,
                         image_size=tuple(real.x.shape[2:]), seed=derive_seed(seed, 7), **cfg.model_kwargs)
    net = family.build(0, device)
    perf = PerfConfig().resolve(device)
    net = perf.prepare_model(net)
    if cfg.train_epochs > 0:
        train_classifier(net, real.x, real.y, TrainSchedule(cfg.train_epochs, cfg.lr, batch_size=cfg.batch_size),
                         generator=make_generator(derive_seed(seed, 8)), perf=perf, progress="embedding net")
    net.eval()
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(real), 1024), desc="embedding", leave=False):
            xb = perf.prepare_input(real.x[start : start + 1024])
            with perf.autocast(device):
                out.append(net.embed(xb).float())
    return torch.cat(out)


def selection_set(synth, real: RealData, indices: Tensor, *, record_indices: bool = True, **meta: Any) -> SyntheticSet:
    """A set made of real images at ``indices`` (class-major order), with full metadata (including the
    selected ``source_indices`` unless ``record_indices`` is False, e.g. for the whole dataset)."""
    indices = indices.to(real.x.device)
    tensors = {"x": real.x[indices].detach().cpu().clone(), "y": real.y[indices].detach().cpu().clone(),
               **real.encoding.tensors()}
    if record_indices:
        meta["source_indices"] = indices.cpu().tolist()
    return SyntheticSet(tensors, synth.base_meta(real, **meta))


@dataclass
class CoresetConfig:
    """Args:
        ipc: images per class.
        embedding: the network whose features the selection works on.
    """

    ipc: int = 10
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)


class CoresetSynthesizer:
    """Mixin for per-class selection baselines: embed the real set once, then pick ``ipc`` indices per
    class with :attr:`select` ``(features (n, D), k) -> (k,) indices``."""

    select: Callable[[Tensor, int], Tensor]

    def fit(self, real: RealData, *, callbacks: Sequence[Any] = (), **_: object) -> SyntheticSet:
        self.check_ipc(real, self.config.ipc)
        feats = embed_real(real, self.config.embedding, seed=self.seed, device=self.device)
        chosen = []
        for c in range(real.num_classes):
            idx = real.class_indices(c)
            chosen.append(idx[type(self).select(feats[idx], self.config.ipc).to(idx.device)])
        return selection_set(self, real, torch.cat(chosen))

