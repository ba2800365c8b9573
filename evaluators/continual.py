"""Class-incremental continual learning with a distilled memory (the DM ``CL_DM.py`` protocol used by
DataDAM; GDumb-style, Prabhu et al. 2020).

Classes arrive in stages (e.g. CIFAR-10 in 5 stages of 2 classes). The memory of a class is its part of
a synthetic set (or of a baseline set: ``random``, ``herding``). After every stage a network is trained
*from scratch* on the memory of all classes seen so far and tested on the real test images of those
classes; the curve of accuracy per stage is the result. Several class orders x networks give mean ± std.

Controls: ``random_subset`` (the default): the same protocol with a random real memory of the set's per-class counts,
drawn afresh for every (order, network) run, trained with the same networks, initialisations and data-order seeds
(paired), so the gain of the distilled memory over random exemplars is measured per stage. ``whole_set`` (opt-in):
the bound, a memory holding every real training image of the seen classes, trained with the ``whole_set`` recipe on
the same networks, per stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from ddistill.augment import build_augment
from ddistill.data import EvalData, EvalNeeds
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.compile_rule import Workload, compiled_graphs, training_steps
from ddistill.utils.perf import PerfConfig
from ddistill.utils.progress import progress_bar
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainRecipe, accuracy, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, random_subset_warnings, resolve_model

#: ``derive_seed`` streams: class orders, per-(order, model) network families, per-stage training order.
ORDER_STREAM, FAMILY_STREAM, TRAIN_STREAM = 21, 22, 23
#: ... the random-memory control's draws.
SUBSET_STREAM = 24
CONTROLS = ("random_subset", "whole_set")


def stage_splits(num_classes: int, stages: int, order: list[int]) -> list[list[int]]:
    """Splits a class order into ``stages`` consecutive groups of equal size.

    Raises ValueError when ``num_classes`` is not divisible by ``stages`` (e.g. 10 classes in 3 stages).
    """
    if stages < 1 or num_classes % stages:
        raise ValueError(f"{num_classes} classes cannot be split into {stages} equal stages; choose a divisor of "
                         f"{num_classes}: {[d for d in range(1, num_classes + 1) if num_classes % d == 0]}")
    per = num_classes // stages
    return [order[i * per : (i + 1) * per] for i in range(stages)]


def class_orders(num_classes: int, count: int, seed: int) -> list[list[int]]:
    """``count`` class orders; the first is the natural order 0..K-1 (as in DM's code), the rest random."""
    rng = np.random.default_rng(seed)
    orders = [list(range(num_classes))]
    while len(orders) < count:
        orders.append(rng.permutation(num_classes).tolist())
    return orders


@dataclass
class ContinualConfig:
    """Args:
        stages: number of stages (classes per stage = num_classes / stages).
        num_orders: class orders (the first is 0..K-1).
        models_per_order: fresh networks per order and stage.
        model, model_kwargs: network (None = the set's recorded evaluation net).
        train: the training recipe run from scratch after every stage (default: DC's, 1000 epochs, DSA).
        controls: ``random_subset`` and/or ``whole_set`` (see the module docstring); [] = none.
        whole_set: the recipe of the whole-set bound (every real image of the seen classes; 20 epochs, no
            augmentation by default, as the classifier evaluator's bound).
        perf: speed settings.
        progress: progress bars (drawn only on a terminal).
    """

    stages: int = 5
    num_orders: int = 5
    models_per_order: int = 3
    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    train: TrainRecipe = field(default_factory=TrainRecipe)
    controls: list[str] = field(default_factory=lambda: ["random_subset"])
    whole_set: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=20, augment="none"))
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ValueError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")
        if self.num_orders < 1 or self.models_per_order < 1:
            raise ValueError(f"num_orders and models_per_order must be >= 1, got {self.num_orders} and "
                             f"{self.models_per_order}")
        if isinstance(self.train.lr, str) or isinstance(self.whole_set.lr, str):
            raise ValueError("the continual evaluator needs a numeric train.lr and whole_set.lr")


@EVALUATORS.register("continual")
class ContinualEvaluator(Evaluator):
    """GDumb-style class-incremental evaluation of a memory given as a synthetic set."""

    Config = ContinualConfig

    @classmethod
    def key_config(cls, config: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
        """As the base, without the ``whole_set`` recipe unless that control runs (it came after records existed)."""
        out = super().key_config(config, meta)
        if "whole_set" not in (out.get("controls") or []):
            out.pop("whole_set", None)
        return out

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        """The test split, and the real training split for the controls."""
        return EvalNeeds(test=True, train=bool(self.config.controls))

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        cfg = self.config
        meta = synset.meta
        k = int(meta["num_classes"])
        x_test, y_test, _ = self.encoded_test(synset, data)
        x_mem, y_mem = synset.x.to(self.device), synset.y.to(self.device)
        if y_mem.dim() != 1:
            raise ValueError("the continual evaluator needs hard labels (y of shape (N,))")
        real = None
        if cfg.controls:
            try:
                real = data.require("train", self.name)
            except ValueError as err:
                raise ValueError(f"{err} (the {' and '.join(cfg.controls)} control reads it; set controls: [] to "
                                 f"score the set without it)") from None
        model, model_kwargs = resolve_model(cfg.model, cfg.model_kwargs, meta)
        orders = class_orders(k, cfg.num_orders, derive_seed(self.seed, ORDER_STREAM))
        curves, memory_sizes = self._curves(lambda o, m: (x_mem, y_mem), x_test, y_test, k, orders, model,
                                            model_kwargs, meta.get("dataset", ""), "continual", cfg.train)
        arr = np.array(curves)
        details: dict[str, Any] = {
            "stages": cfg.stages, "classes_per_stage": k // cfg.stages, "class_orders": orders,
            "memory_size_per_stage": memory_sizes, "ipc": meta.get("ipc"),
            "curve_mean": arr.mean(0).tolist(), "curve_std": arr.std(0).tolist(), "curves": curves,
            "model": model, "model_kwargs": model_kwargs, "epochs": cfg.train.epochs, "seed": self.seed,
        }
        controls: dict[str, Any] = {}
        if "random_subset" in cfg.controls:
            counts = torch.bincount(y_mem.cpu(), minlength=k).tolist()

            def random_memory(o: int, m: int) -> tuple[Tensor, Tensor]:
                gen = make_generator(derive_seed(self.seed, SUBSET_STREAM, o, m))
                idx = torch.cat([real.sample_indices(c, n, gen, strict=True) for c, n in enumerate(counts) if n])
                return real.x[idx].to(self.device), real.y[idx].to(self.device)

            rc, _ = self._curves(random_memory, x_test, y_test, k, orders, model, model_kwargs,
                                 meta.get("dataset", ""), "continual (random memory)", cfg.train)
            rarr = np.array(rc)
            res = EvalResult("accuracy", rarr[:, -1].tolist())
            controls["random_subset"] = {
                **res.to_dict(), "curve_mean": rarr.mean(0).tolist(), "curve_std": rarr.std(0).tolist(),
                "what": "random real memory with the set's per-class counts, new draw per run, same networks and "
                        "seeds"}
            details["gain_over_random_subset_per_stage"] = (arr.mean(0) - rarr.mean(0)).tolist()
        if "whole_set" in cfg.controls:
            whole = (real.x.to(self.device), real.y.to(self.device))
            wc, wsizes = self._curves(lambda o, m: whole, x_test, y_test, k, orders, model, model_kwargs,
                                      meta.get("dataset", ""), "continual (whole set)", cfg.whole_set)
            warr = np.array(wc)
            controls["whole_set"] = {
                **EvalResult("accuracy", warr[:, -1].tolist()).to_dict(), "curve_mean": warr.mean(0).tolist(),
                "curve_std": warr.std(0).tolist(), "memory_size_per_stage": wsizes,
                "epochs": cfg.whole_set.epochs, "augment": cfg.whole_set.augment,
                "what": "the bound: every real training image of the seen classes, same networks, whole_set recipe"}
        if controls:
            details["controls"] = controls
        result = EvalResult("accuracy", arr[:, -1].tolist(), details)
        found = random_subset_warnings("final accuracy", result.mean, result.std, details.get("controls", {}))
        if found:
            result.details["warnings"] = found
        return result

    def _curves(self, memory: Callable[[int, int], tuple[Tensor, Tensor]], x_test: Tensor, y_test: Tensor, k: int,
                orders: list[list[int]], model: str, model_kwargs: dict[str, Any], dataset: str,
                desc: str, recipe: TrainRecipe) -> tuple[list[list[float]], list[int]]:
        """``curves[r][s]``: accuracy (%) of run r (order x model) after stage s, trained on ``memory(o, m)`` with
        ``recipe``; and the memory size per stage of the first run. Every memory uses the same networks and seeds
        (paired)."""
        cfg = self.config
        augment = build_augment(recipe.augment, dataset)
        runs = [(o, m) for o in range(len(orders)) for m in range(cfg.models_per_order)]

        def train_run(_: int, run: tuple[int, int]) -> list[Any]:
            """Run (order o, model m): every stage's network and data order depend only on (seed, o, m, s), so the
            runs can be trained in any order, on any rank. Returns [curve, memory size per stage]."""
            o, m = run
            splits = stage_splits(k, cfg.stages, orders[o])
            x_mem, y_mem = memory(o, m)
            family = ModelFamily(model, in_channels=x_mem.shape[1], num_classes=k, image_size=tuple(x_mem.shape[2:]),
                                 seed=derive_seed(self.seed, FAMILY_STREAM, o, m), **model_kwargs)
            curve, sizes = [], []
            seen: list[int] = []
            for s, classes in enumerate(splits):
                seen += classes
                mem_mask = _member(y_mem, seen)
                test_mask = _member(y_test, seen)
                sizes.append(int(mem_mask.sum()))
                # The compile rule weighs this stage over every run (not this rank's share: all ranks decide alike);
                # a stage whose memory is smaller than a batch is a shape of its own.
                n = sizes[-1]
                stage_perf = cfg.perf.resolve(self.device, Workload(model, min(n, recipe.batch_size), len(runs) * (
                    training_steps(n, recipe.epochs, recipe.batch_size, recipe.iterations)),
                    tuple(x_mem.shape[2:]), compiled_graphs(n, recipe.batch_size)))
                net = stage_perf.prepare_model(family.build(s, self.device))  # from scratch at every stage
                gen = make_generator(derive_seed(self.seed, TRAIN_STREAM, o, m, s))
                train_classifier(net, x_mem[mem_mask], y_mem[mem_mask], recipe, augment=augment,
                                 generator=gen, perf=stage_perf)
                curve.append(100.0 * accuracy(net, x_test[test_mask], y_test[test_mask], perf=stage_perf))
                bar.update(1)
            return [curve, sizes]

        total = len(self.dist.owned(len(runs))) * cfg.stages
        bar = progress_bar(total=total, desc=desc, enabled=cfg.progress, leave=False)
        # Under torchrun each rank trains its share of the (order, model) runs (the numbers are one process's).
        done = self.dist.map(runs, train_run)
        bar.close()
        return [[float(a) for a in curve] for curve, _ in done], [int(n) for n in done[0][1]]


def _member(y: Tensor, classes: list[int]) -> Tensor:
    return torch.isin(y, torch.tensor(classes, device=y.device))
