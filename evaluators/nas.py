"""Neural architecture search with a distilled set as the training proxy (DC Sec. 4.4, DM, DataDAM Table 5).

Every architecture of a ConvNet search space (the DC/DM/DataDAM space: width x depth x activation x
normalisation x pooling = 4 x 4 x 3 x 5 x 3 = 720 ConvNets) is trained briefly on the proxy set and, for
the correlation, on real training data. Both are scored on a validation split held out from the real
training set (the test split is never used for selection). Reported: the Spearman rank correlation of
proxy vs real validation accuracy, the test accuracy of the architecture the proxy selects when trained
on real data (next to the best architecture by real validation accuracy), and the search time.

Controls (``controls``), on the same architectures, validation split and budget:

- ``real_repeat``: the real-data ranking computed a second time with other initialisations and data orders; the
  Spearman correlation between the two real rankings is the ceiling for any proxy (a proxy cannot agree with a ground
  truth better than the ground truth agrees with itself);
- ``random_subset``: a random real subset with the proxy's per-class counts (drawn from the real training part, never
  the validation split), trained with the proxy's recipe and the proxy's initialisations: the proxy a distilled set
  must beat. ``random_subset_draws`` subsets are drawn (other images each time, the same initialisations): the
  control is their mean Spearman, with their std as its spread (one ranking of a few architectures moves by whole
  swaps, so a single draw says little).

The cost is reported beside them: seconds of the proxy search, of the real search, and their ratio.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from scipy.stats import spearmanr

from ddistill.augment import build_augment
from ddistill.data import Encoding, EvalData, EvalNeeds, RealData
from ddistill.distributed import Distributed
from ddistill.models import FeatureMapCollapsed, create_model
from ddistill.synset import SyntheticSet
from ddistill.utils.compile_rule import Workload, compiled_graphs, training_steps
from ddistill.utils.perf import PerfConfig
from ddistill.utils.progress import progress_bar
from ddistill.utils.seed import derive_seed, make_generator, seeded_rng
from ddistill.utils.train import TrainRecipe, accuracy, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, random_subset_warnings

#: ``derive_seed`` streams: architecture sample, validation split, architecture init, proxy runs, real runs.
SAMPLE_STREAM, SPLIT_STREAM, INIT_STREAM, PROXY_STREAM, REAL_STREAM = 31, 32, 33, 34, 35
#: ... the random-subset control's draw, and the stream id of the second real ranking.
SUBSET_STREAM, REPEAT = 36, 1
CONTROLS = ("real_repeat", "random_subset")

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


def check_architectures_fit(archs: list[dict[str, Any]], shape: dict[str, Any]) -> None:
    """Raises a ValueError naming the first architecture whose feature map collapses on these images (e.g. depth 4
    with pooling on 8 px digits), with the fix, before any network is trained. Built once per (depth, pool, norm) at
    width 8: the width does not change the map's size."""
    seen: set[tuple] = set()
    for arch in archs:
        key = (arch.get("depth"), arch.get("pool"), arch.get("norm"))
        if key in seen:
            continue
        seen.add(key)
        try:
            create_model("convnet", **shape, **{**arch, "width": 8})
        except FeatureMapCollapsed as err:
            h, w = shape["image_size"]
            raise ValueError(f"NAS architecture {arch} does not fit {h}x{w} images ({err}); give evaluator.space "
                             f"with depths that fit (with pooling, depth d halves the map d times), e.g. "
                             f"evaluator.space='{{width: [32, 64], depth: [1, 2], act: [relu], norm: [instancenorm], "
                             f"pool: [avgpooling]}}'") from None
        except ValueError as err:  # another problem (a misspelled norm): its own message
            raise ValueError(f"NAS architecture {arch} cannot be built: {err}") from None


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (ties get average ranks), via scipy; NaN when either list ranks everything equal
    (undefined: the evaluator says so in its warnings)."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


@dataclass
class NASConfig:
    """Args:
        space: the search space as ``{ConvNet argument: [values]}`` (None = the DC space of 720 ConvNets).
        num_architectures: architectures sampled from the space (0 = all of it).
        proxy: how every architecture is trained on the proxy (distilled) set (default: 200 epochs of DC's recipe
            with DSA).
        real: how every architecture is trained on the real training set minus validation (default: 20 epochs, no
            augmentation: real data are plentiful).
        real_train_size: real training images used for the real runs (0 = all but validation).
        val_size: real training images held out for validation.
        controls: ``real_repeat`` and/or ``random_subset`` (see the module docstring); [] = none.
        random_subset_draws: random subsets the ``random_subset`` control draws (each a full proxy search).
        perf: speed settings.
        progress: progress bars (drawn only on a terminal).
    """

    space: dict[str, list[Any]] | None = None
    num_architectures: int = 0
    proxy: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=200))
    real: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=20, augment="none"))
    real_train_size: int = 0
    val_size: int = 5000
    controls: list[str] = field(default_factory=lambda: list(CONTROLS))
    random_subset_draws: int = 1
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.random_subset_draws, bool) or not isinstance(self.random_subset_draws, int) \
                or self.random_subset_draws < 1:
            raise ValueError(f"random_subset_draws must be an integer >= 1, got {self.random_subset_draws!r}")
        if isinstance(self.proxy.lr, str) or isinstance(self.real.lr, str):
            raise ValueError("the NAS evaluator needs numeric proxy.lr and real.lr")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ValueError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")


@EVALUATORS.register("nas")
class NASEvaluator(Evaluator):
    """Rank architectures by training on a proxy set; compare with the ranking from real data."""

    Config = NASConfig

    def __init__(self, config: NASConfig | None = None, *, device: torch.device | str = "cpu", seed: int = 0,
                 dist: Distributed | None = None) -> None:
        super().__init__(config, device=device, seed=seed, dist=dist)
        self._real_cache: dict[tuple, dict[str, float]] = {}

    def architectures(self) -> list[dict[str, Any]]:
        space = enumerate_space(self.config.space or SEARCH_SPACE)
        n = self.config.num_architectures
        if n <= 0 or n >= len(space):
            return space
        rng = np.random.default_rng(derive_seed(self.seed, SAMPLE_STREAM))
        return [space[i] for i in sorted(rng.choice(len(space), size=n, replace=False))]

    def split_real(self, real: RealData) -> tuple[torch.Tensor, torch.Tensor]:
        """(train indices, validation indices) into ``real``; validation is fixed by the seed."""
        gen = make_generator(derive_seed(self.seed, SPLIT_STREAM))
        perm = torch.randperm(len(real), generator=gen).to(real.device)
        val = perm[: self.config.val_size]
        train = perm[self.config.val_size :]
        if self.config.real_train_size > 0:
            train = train[: self.config.real_train_size]
        return train, val

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        """The test split and the real training split (for the real-data ranking and the validation split)."""
        return EvalNeeds(test=True, train=True)

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        real = data.require("train", self.name)
        cfg = self.config
        dev = self.device
        meta = synset.meta
        encoding = Encoding.from_meta(meta["encoding"], synset.tensors)
        if encoding.to_meta() != real.encoding.to_meta():
            raise ValueError("the proxy set and the real data are encoded differently; load the real data with the "
                             f"set's encoding {meta['encoding']}")
        x_proxy, y_proxy = synset.x.to(dev), synset.y.to(dev)
        x_test, y_test, _ = self.encoded_test(synset, data)
        test = data.test
        train_idx, val_idx = self.split_real(real)
        x_val, y_val = real.x[val_idx], real.y[val_idx]
        perf = cfg.perf.resolve(dev)
        augment = build_augment(cfg.proxy.augment, meta.get("dataset", ""))
        real_augment = build_augment(cfg.real.augment, meta.get("dataset", ""))
        archs = self.architectures()
        shape = dict(in_channels=x_proxy.shape[1], num_classes=real.num_classes, image_size=tuple(x_proxy.shape[2:]))
        check_architectures_fit(archs, shape)

        def fit(i: int, arch: dict[str, Any], x, y, recipe: TrainRecipe, aug, stream: int,
                repeat: tuple[int, ...] = ()) -> torch.nn.Module:
            # Same init for proxy and real runs of arch i; ``repeat`` gives the second real ranking its own seeds.
            with seeded_rng(derive_seed(self.seed, INIT_STREAM, i, *repeat)):
                net = create_model("convnet", **shape, **arch).to(dev)
            # Every architecture is its own graph (one compile each), trained once: the compile rule weighs one run.
            n = int(x.shape[0])
            run_perf = cfg.perf.resolve(dev, Workload("convnet", min(n, recipe.batch_size), training_steps(
                n, recipe.epochs, recipe.batch_size, recipe.iterations), tuple(x.shape[2:]),
                compiled_graphs(n, recipe.batch_size)))
            net = run_perf.prepare_model(net)
            train_classifier(net, x, y, recipe, augment=aug,
                             generator=make_generator(derive_seed(self.seed, stream, i, *repeat)), perf=run_perf)
            return net

        def real_run(i: int, arch: dict[str, Any], repeat: tuple[int, ...] = ()) -> dict[str, float]:
            key = (id(real), len(real), id(test), i, repeat)
            if key not in self._real_cache:
                # The real-data ranking does not depend on the proxy: compute it once per evaluator and real set,
                # so scoring several proxies with one evaluator trains each architecture on real data once.
                t = time.perf_counter()
                net = fit(i, arch, real.x[train_idx], real.y[train_idx], cfg.real, real_augment, REAL_STREAM, repeat)
                self._real_cache[key] = {"val": 100.0 * accuracy(net, x_val, y_val, perf=perf),
                                         "test": 100.0 * accuracy(net, x_test, y_test, perf=perf),
                                         "seconds": time.perf_counter() - t}
            return self._real_cache[key]

        def real_runs(repeat: tuple[int, ...] = ()) -> list[dict[str, float]]:
            """Every architecture's real run (each rank trains its share; every rank caches all of them)."""
            done = self.dist.map(archs, lambda i, arch: real_run(i, arch, repeat))
            for i, r in enumerate(done):
                self._real_cache.setdefault((id(real), len(real), id(test), i, repeat), r)
            return done

        bar = progress_bar(total=len(self.dist.owned(len(archs))), desc="nas", enabled=cfg.progress, leave=False)

        def proxy_run(i: int, arch: dict[str, Any]) -> list[float]:
            t = time.perf_counter()
            net = fit(i, arch, x_proxy, y_proxy, cfg.proxy, augment, PROXY_STREAM)
            bar.update(1)
            return [100.0 * accuracy(net, x_val, y_val, perf=perf), time.perf_counter() - t]

        # Under torchrun each rank trains its share of the architectures (every run's seeds depend only on its
        # index, so the rankings are one process's).
        proxies = self.dist.map(archs, proxy_run)
        bar.close()
        proxy_acc = [float(a) for a, _ in proxies]
        proxy_seconds = sum(float(t) for _, t in proxies)
        reals = real_runs()
        real_acc = [r["val"] for r in reals]
        real_nets: dict[int, dict[str, Any]] = {i: {"test": r["test"]} for i, r in enumerate(reals)}
        real_seconds = sum(r["seconds"] for r in reals)
        chosen = int(np.argmax(proxy_acc))
        best = int(np.argmax(real_acc))
        rho = spearman(proxy_acc, real_acc)
        controls: dict[str, Any] = {}
        if "real_repeat" in cfg.controls:
            again = real_runs((REPEAT,))
            controls["real_repeat"] = {
                "mean": spearman([a["val"] for a in again], real_acc), "real_val_accuracy": [a["val"] for a in again],
                "seconds": sum(a["seconds"] for a in again),
                "what": "Spearman between two real-data rankings with different seeds: the ceiling for any proxy"}
        if "random_subset" in cfg.controls:
            controls["random_subset"] = self._random_subset(synset, real, train_idx, archs, fit, x_val, y_val,
                                                            augment, perf, real_acc)
        details: dict[str, Any] = {}
        if controls:
            details["controls"] = controls
            details["gain_over_random_subset"] = rho - controls["random_subset"]["mean"] \
                if "random_subset" in controls else None
        # One ranking has no spread of its own; its resolution is the standard error of a Spearman correlation over
        # n architectures under no correlation, 1 / sqrt(n - 1) (0.45 for 6): a smaller gain is one swap's worth.
        found = random_subset_warnings("Spearman", rho, 1.0 / max(len(archs) - 1, 1) ** 0.5, controls)
        if math.isnan(rho):
            found.append("the proxy (or the real data) gives every architecture the same validation accuracy: no "
                         "ranking, the Spearman is undefined (NaN)")
        # A ranking of networks that all stayed near chance ranks noise, however high its Spearman.
        chance = 100.0 / real.num_classes
        for what, acc in (("proxy", proxy_acc), ("real", real_acc)):
            if max(acc) < 1.5 * chance:
                found.append(f"every {what}-trained architecture is near chance on the validation split (best "
                             f"{max(acc):.1f} %, chance {chance:.1f} %): its ranking is noise; train longer "
                             f"(evaluator.{what}.epochs)")
        if found:
            details["warnings"] = found
        details["cost"] = {"proxy_seconds": proxy_seconds, "real_seconds": real_seconds,
                           "real_over_proxy": real_seconds / proxy_seconds if proxy_seconds > 0 else None}
        return EvalResult("spearman", [rho], {**details,
            "num_architectures": len(archs), "architectures": archs, "proxy_val_accuracy": proxy_acc,
            "real_val_accuracy": real_acc, "real_test_accuracy": [real_nets[i]["test"] for i in range(len(archs))],
            "selected": archs[chosen], "selected_real_test_accuracy": real_nets[chosen]["test"],
            "best_by_real_val": archs[best], "best_real_test_accuracy": real_nets[best]["test"],
            "proxy_search_seconds": proxy_seconds, "real_search_seconds": real_seconds,
            "proxy_size": int(x_proxy.shape[0]), "real_train_size": int(train_idx.numel()),
            "val_size": int(val_idx.numel()), "proxy_epochs": cfg.proxy.epochs, "real_epochs": cfg.real.epochs,
            "seed": self.seed, "value_unit": "ranking",
        })

    def _random_subset(self, synset: SyntheticSet, real: RealData, train_idx: torch.Tensor, archs: list[dict[str, Any]],
                       fit: Any, x_val: torch.Tensor, y_val: torch.Tensor, augment: Any, perf: PerfConfig,
                       real_acc: list[float]) -> dict[str, Any]:
        """The proxy a distilled set must beat: random real training images with the set's per-class counts (drawn
        from the training part only, ``random_subset_draws`` times), each architecture trained with the proxy recipe
        and the proxy's init. ``mean``: the mean Spearman over the draws; ``std`` (several draws): their population
        std; ``proxy_val_accuracy``: the first draw's accuracies (one list per draw in ``draws``)."""
        y = synset.y if synset.y.dim() == 1 else synset.y.argmax(1)
        counts = torch.bincount(y.cpu(), minlength=real.num_classes).tolist()
        pool = real.subset(train_idx)
        start = time.perf_counter()
        draws: list[dict[str, Any]] = []
        for k in range(self.config.random_subset_draws):
            # Draw 0 keeps the stream of the one-draw control (its earlier results stay reproducible).
            gen = make_generator(derive_seed(self.seed, SUBSET_STREAM, *((k,) if k else ())))
            idx = torch.cat([pool.sample_indices(c, n, gen, strict=True) for c, n in enumerate(counts) if n])
            x, labels = pool.x[idx], pool.y[idx]
            acc = self.dist.map(archs, lambda i, arch: 100.0 * accuracy(
                fit(i, arch, x, labels, self.config.proxy, augment, PROXY_STREAM), x_val, y_val, perf=perf))
            draws.append({"spearman": spearman(acc, real_acc), "proxy_val_accuracy": acc})
        rhos = np.array([d["spearman"] for d in draws])
        out: dict[str, Any] = {"mean": float(rhos.mean()), "proxy_val_accuracy": draws[0]["proxy_val_accuracy"],
                               "seconds": time.perf_counter() - start, "size": int(idx.numel()),
                               "what": "random real subset with the set's per-class counts, proxy recipe and inits"}
        if len(draws) > 1:
            out.update(std=float(rhos.std()), draws=draws)
        return out
