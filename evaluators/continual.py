"""Class-incremental continual learning with a distilled memory (the DM ``CL_DM.py`` protocol used by
DataDAM; GDumb-style, Prabhu et al. 2020).

Classes arrive in stages (e.g. CIFAR-10 in 5 stages of 2 classes). The memory of a class is its part of
a synthetic set (or of a baseline set: ``random``, ``herding``). After every stage a network is trained
*from scratch* on the memory of all classes seen so far and tested on the real test images of those
classes; the curve of accuracy per stage is the result. Several class orders x networks give mean ± std.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddistill.augment import build_augment
from ddistill.data import Encoding, ImageData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainSchedule, accuracy, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, resolve_model


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
        epochs, lr, batch_size, momentum, weight_decay: the training recipe run after every stage.
        augment: "dsa" or "none".
        perf: speed settings.
        progress: tqdm bars.
    """

    stages: int = 5
    num_orders: int = 5
    models_per_order: int = 3
    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    epochs: int = 1000
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "dsa"
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True


@EVALUATORS.register("continual")
class ContinualEvaluator(Evaluator):
    """GDumb-style class-incremental evaluation of a memory given as a synthetic set."""

    Config = ContinualConfig

    def evaluate(self, synset: SyntheticSet, test: ImageData) -> EvalResult:
        cfg = self.config
        meta = synset.meta
        k = int(meta["num_classes"])
        encoding = Encoding.from_meta(meta["encoding"], synset.tensors)
        x_test, y_test = encoding.encode(test.x).to(self.device), test.y.to(self.device)
        x_mem, y_mem = synset.x.to(self.device), synset.y.to(self.device)
        if y_mem.dim() != 1:
            raise ValueError("the continual evaluator needs hard labels (y of shape (N,))")
        model, model_kwargs = resolve_model(cfg.model, cfg.model_kwargs, meta)
        perf = cfg.perf.resolve(self.device)
        augment = build_augment(cfg.augment, meta.get("dataset", ""))
        schedule = TrainSchedule(cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size)
        orders = class_orders(k, cfg.num_orders, derive_seed(self.seed, 21))
        # curves[r][s]: accuracy (%) of run r (order x model) after stage s
        curves: list[list[float]] = []
        memory_sizes: list[int] = []
        total = cfg.num_orders * cfg.models_per_order * cfg.stages
        bar = tqdm(total=total, desc="continual", disable=not cfg.progress, leave=False)
        for o, order in enumerate(orders):
            splits = stage_splits(k, cfg.stages, order)
            for m in range(cfg.models_per_order):
                family = ModelFamily(model, in_channels=x_mem.shape[1], num_classes=k,
                                     image_size=tuple(x_mem.shape[2:]), seed=derive_seed(self.seed, 22, o, m),
                                     **model_kwargs)
                curve = []
                seen: list[int] = []
                for s, classes in enumerate(splits):
                    seen += classes
                    mem_mask = _member(y_mem, seen)
                    test_mask = _member(y_test, seen)
                    if o == 0 and m == 0:
                        memory_sizes.append(int(mem_mask.sum()))
                    net = perf.prepare_model(family.build(s, self.device))  # from scratch at every stage
                    gen = make_generator(derive_seed(self.seed, 23, o, m, s))
                    train_classifier(net, x_mem[mem_mask], y_mem[mem_mask], schedule, augment=augment,
                                     generator=gen, perf=perf)
                    curve.append(100.0 * accuracy(net, x_test[test_mask], y_test[test_mask], perf=perf))
                    bar.update(1)
                curves.append(curve)
        bar.close()
        arr = np.array(curves)
        return EvalResult("accuracy", arr[:, -1].tolist(), {
            "stages": cfg.stages, "classes_per_stage": k // cfg.stages, "class_orders": orders,
            "memory_size_per_stage": memory_sizes, "ipc": meta.get("ipc"),
            "curve_mean": arr.mean(0).tolist(), "curve_std": arr.std(0).tolist(), "curves": curves,
            "model": model, "model_kwargs": model_kwargs, "epochs": cfg.epochs, "seed": self.seed,
        })


def _member(y: Tensor, classes: list[int]) -> Tensor:
    return torch.isin(y, torch.tensor(classes, device=y.device))


def plot_curves(results: dict[str, EvalResult], path: str, *, title: str = "") -> None:
    """Accuracy-per-stage curves (mean ± std) of several memories into one PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, res in results.items():
        mean, std = np.array(res.details["curve_mean"]), np.array(res.details["curve_std"])
        classes = [(i + 1) * res.details["classes_per_stage"] for i in range(len(mean))]
        ax.errorbar(classes, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xlabel("classes seen")
    ax.set_ylabel("test accuracy on seen classes (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
