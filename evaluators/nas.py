"""Neural architecture search with a distilled set as the training proxy (DC Sec. 4.4, DM, DataDAM Table 5).

Every architecture of a ConvNet search space (the DC/DM/DataDAM space: width x depth x activation x
normalisation x pooling = 4 x 4 x 3 x 5 x 3 = 720 ConvNets) is trained briefly on the proxy set and, for
the correlation, on real training data. Both are scored on a validation split held out from the real
training set (the test split is never used for selection). Reported: the Spearman rank correlation of
proxy vs real validation accuracy, the test accuracy of the architecture the proxy selects when trained
on real data (next to the best architecture by real validation accuracy), and the search time.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ddistill.augment import build_augment
from ddistill.data import Encoding, ImageData, RealData
from ddistill.models import create_model
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator, seeded_rng
from ddistill.utils.train import TrainSchedule, accuracy, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator

#: The DC NAS space (Zhao et al. 2021, Sec. 4.4): 720 ConvNets.
SEARCH_SPACE: dict[str, list[Any]] = {
    "width": [32, 64, 128, 256],
    "depth": [1, 2, 3, 4],
    "act": ["sigmoid", "relu", "leakyrelu"],
    "norm": ["none", "batchnorm", "layernorm", "instancenorm", "groupnorm"],
    "pool": ["none", "maxpooling", "avgpooling"],
}


def enumerate_space(space: dict[str, list[Any]] = SEARCH_SPACE) -> list[dict[str, Any]]:
    """Every combination of the space as ConvNet kwargs, in a fixed order."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (ties get average ranks), via scipy."""
    return float(spearmanr(a, b).statistic)


@dataclass
class NASConfig:
    """Args:
        num_architectures: architectures sampled from the space (0 = all 720).
        proxy_epochs: epochs on the proxy (distilled) set per architecture.
        real_epochs: epochs on the real training set (minus validation) per architecture.
        real_train_size: real training images used for the real runs (0 = all but validation).
        val_size: real training images held out for validation.
        lr, batch_size: SGD recipe (momentum 0.9, wd 5e-4, x0.1 at half).
        augment: "dsa" or "none" for the proxy runs (real runs use none: they have plenty of data).
        perf: speed settings.
        progress: tqdm bars.
    """

    space: dict[str, list[Any]] | None = None
    num_architectures: int = 0
    proxy_epochs: int = 200
    real_epochs: int = 20
    real_train_size: int = 0
    val_size: int = 5000
    lr: float = 0.01
    batch_size: int = 256
    augment: str = "dsa"
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True


@EVALUATORS.register("nas")
class NASEvaluator(Evaluator):
    """Rank architectures by training on a proxy set; compare with the ranking from real data."""

    Config = NASConfig
    needs_real = True

    def __init__(self, config: NASConfig | None = None, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__(config, device=device, seed=seed)
        self._real_cache: dict[tuple, dict[str, float]] = {}

    def architectures(self) -> list[dict[str, Any]]:
        space = enumerate_space(self.config.space or SEARCH_SPACE)
        n = self.config.num_architectures
        if n <= 0 or n >= len(space):
            return space
        rng = np.random.default_rng(derive_seed(self.seed, 31))
        return [space[i] for i in sorted(rng.choice(len(space), size=n, replace=False))]

    def split_real(self, real: RealData) -> tuple[torch.Tensor, torch.Tensor]:
        """(train indices, validation indices) into ``real``; validation is fixed by the seed."""
        gen = make_generator(derive_seed(self.seed, 32))
        perm = torch.randperm(len(real), generator=gen).to(real.device)
        val = perm[: self.config.val_size]
        train = perm[self.config.val_size :]
        if self.config.real_train_size > 0:
            train = train[: self.config.real_train_size]
        return train, val

    def evaluate(self, synset: SyntheticSet, test: ImageData, *, real: RealData | None = None) -> EvalResult:
        if real is None:
            raise ValueError("the NAS evaluator needs the real training data (real=...) for the real-data ranking")
        cfg = self.config
        dev = self.device
        meta = synset.meta
        encoding = Encoding.from_meta(meta["encoding"], synset.tensors)
        if encoding.to_meta() != real.encoding.to_meta():
            raise ValueError("the proxy set and the real data are encoded differently; load the real data with the "
                             f"set's encoding {meta['encoding']}")
        x_proxy, y_proxy = synset.x.to(dev), synset.y.to(dev)
        x_test, y_test = encoding.encode(test.x).to(dev), test.y.to(dev)
        train_idx, val_idx = self.split_real(real)
        x_val, y_val = real.x[val_idx], real.y[val_idx]
        perf = cfg.perf.resolve(dev)
        augment = build_augment(cfg.augment, meta.get("dataset", ""))
        archs = self.architectures()
        shape = dict(in_channels=x_proxy.shape[1], num_classes=real.num_classes, image_size=tuple(x_proxy.shape[2:]))

        def fit(i: int, arch: dict[str, Any], x, y, epochs: int, aug, stream: int) -> torch.nn.Module:
            with seeded_rng(derive_seed(self.seed, 33, i)):  # same init for proxy and real runs of arch i
                net = create_model("convnet", **shape, **arch).to(dev)
            net = perf.prepare_model(net)
            train_classifier(net, x, y, TrainSchedule(epochs, cfg.lr, batch_size=cfg.batch_size), augment=aug,
                             generator=make_generator(derive_seed(self.seed, stream, i)), perf=perf)
            return net

        proxy_acc, real_acc, proxy_seconds, real_seconds = [], [], 0.0, 0.0
        real_nets: dict[int, dict[str, Any]] = {}
        for i, arch in enumerate(tqdm(archs, desc="nas", disable=not cfg.progress, leave=False)):
            t = time.perf_counter()
            net = fit(i, arch, x_proxy, y_proxy, cfg.proxy_epochs, augment, 34)
            proxy_acc.append(100.0 * accuracy(net, x_val, y_val, perf=perf))
            proxy_seconds += time.perf_counter() - t
            key = (id(real), len(real), id(test), i)
            if key not in self._real_cache:
                # The real-data ranking does not depend on the proxy: compute it once per evaluator and real set,
                # so scoring several proxies with one evaluator trains each architecture on real data once.
                t = time.perf_counter()
                net = fit(i, arch, real.x[train_idx], real.y[train_idx], cfg.real_epochs, None, 35)
                self._real_cache[key] = {"val": 100.0 * accuracy(net, x_val, y_val, perf=perf),
                                         "test": 100.0 * accuracy(net, x_test, y_test, perf=perf),
                                         "seconds": time.perf_counter() - t}
            cached = self._real_cache[key]
            real_acc.append(cached["val"])
            real_nets[i] = {"test": cached["test"]}
            real_seconds += cached["seconds"]
        chosen = int(np.argmax(proxy_acc))
        best = int(np.argmax(real_acc))
        rho = spearman(proxy_acc, real_acc)
        return EvalResult("spearman", [rho], {
            "num_architectures": len(archs), "architectures": archs, "proxy_val_accuracy": proxy_acc,
            "real_val_accuracy": real_acc, "real_test_accuracy": [real_nets[i]["test"] for i in range(len(archs))],
            "selected": archs[chosen], "selected_real_test_accuracy": real_nets[chosen]["test"],
            "best_by_real_val": archs[best], "best_real_test_accuracy": real_nets[best]["test"],
            "proxy_search_seconds": proxy_seconds, "real_search_seconds": real_seconds,
            "proxy_size": int(x_proxy.shape[0]), "real_train_size": int(train_idx.numel()),
            "val_size": int(val_idx.numel()), "proxy_epochs": cfg.proxy_epochs, "real_epochs": cfg.real_epochs,
            "seed": self.seed,
        })
