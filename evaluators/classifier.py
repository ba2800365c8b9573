"""The standard evaluation of a distilled image set (DC ``evaluate_synset``; Zhao et al. 2021).

K freshly initialised networks are trained on the synthetic set only and tested on the real test split;
the result is mean ± std of their test accuracy (%). The same code trains on the whole real set for the
upper-bound row (:func:`evaluate_real`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddistill.augment import build_augment
from ddistill.data import Encoding, ImageData, RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainSchedule, accuracy, criterion_for, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, resolve_model


@dataclass
class ClassifierConfig:
    """Hyper-parameters of the classifier evaluation (defaults: the DC/DM/DataDAM protocol).

    Args:
        model: evaluation network; None = the one recorded in the set (``meta["eval_model"]``), else convnet.
        model_kwargs: overrides for the network (e.g. ``{norm: batchnorm}``); None = recorded in the set.
        num_models: K fresh networks (5 in the papers' tables).
        epochs: epochs actually trained (papers: 1000; DC's code runs Epoch + 1).
        lr: learning rate, or "learned" to use the learned rate stored in the set (trajectory matching).
        momentum, weight_decay, batch_size: SGD recipe.
        lr_decay_epoch: epoch index of the single x0.1 drop; None = epochs // 2.
        rebuild_optimizer_at_decay: DC re-creates SGD (dropping momentum) at the drop.
        augment: "dsa" (differentiable siamese augmentation with fresh per-sample params) or "none".
        dsa_strategy: None = the dataset's default (no flip for digit datasets, as the DC authors do).
        test_batch_size: batch size for testing.
        perf: speed settings (channels_last / bf16 autocast / compile / threads); None fields = auto.
        progress: tqdm bars.
    """

    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    num_models: int = 5
    epochs: int = 1000
    lr: float | str = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    lr_decay_epoch: int | None = None
    rebuild_optimizer_at_decay: bool = True
    augment: str = "dsa"
    dsa_strategy: str | None = None
    test_batch_size: int = 1024
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True


@EVALUATORS.register("classifier")
class ClassifierEvaluator(Evaluator):
    """Train ``num_models`` fresh networks on the set; report real test accuracy (%)."""

    Config = ClassifierConfig

    def evaluate(self, synset: SyntheticSet, test: ImageData) -> EvalResult:
        """Shape: synset.x (N, C, H, W) in the set's encoding; test.x (M, C, H, W) uint8 pixels."""
        cfg = self.config
        meta = synset.meta
        encoding = Encoding.from_meta(meta["encoding"], synset.tensors)
        if tuple(encoding.shape) != (test.info.in_channels, *test.info.image_size):
            raise ValueError(f"the set's images are {tuple(encoding.shape)} but the test data is "
                             f"{(test.info.in_channels, *test.info.image_size)}: wrong dataset for this set?")
        lr = self._resolve_lr(synset)
        model, model_kwargs = resolve_model(cfg.model, cfg.model_kwargs, meta)
        return self._run(synset.x, synset.y, encoding.encode(test.x), test.y, test.info.num_classes,
                         labels=meta.get("labels", "hard"), lr=lr, dataset=meta.get("dataset", ""), model=model,
                         model_kwargs=model_kwargs)

    def evaluate_real(self, real: RealData, test: ImageData) -> EvalResult:
        """Upper bound: the same protocol trained on the whole real training set."""
        cfg = self.config
        return self._run(real.x, real.y, real.encoding.encode(test.x), test.y, real.num_classes, labels="hard",
                         lr=float(cfg.lr), dataset=real.info.name, model=cfg.model or "convnet",
                         model_kwargs=dict(cfg.model_kwargs or {}))

    # ------------------------------------------------------------------------------------------
    def _resolve_lr(self, synset: SyntheticSet) -> float:
        lr = self.config.lr
        if lr == "learned":
            if "lr" not in synset.tensors:
                raise ValueError("evaluator.lr=learned but the set stores no learned lr (tensors: "
                                 f"{sorted(synset.tensors)}); use a number")
            return float(synset.tensors["lr"])
        if isinstance(lr, str):
            raise ValueError(f"evaluator.lr must be a number or 'learned', not {lr!r}")
        return float(lr)

    def _run(self, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int, *, labels: str,
             lr: float, dataset: str, model: str, model_kwargs: dict[str, Any]) -> EvalResult:
        cfg = self.config
        dev = self.device
        perf = cfg.perf.resolve(dev)
        perf.apply_threads()
        x, y = x.to(dev), y.to(dev)
        x_test, y_test = x_test.to(dev), y_test.to(dev)
        schedule = TrainSchedule(cfg.epochs, lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.lr_decay_epoch,
                                 rebuild_optimizer_at_decay=cfg.rebuild_optimizer_at_decay)
        augment = build_augment(cfg.augment, dataset, cfg.dsa_strategy)
        family = ModelFamily(model, in_channels=x.shape[1], num_classes=num_classes,
                             image_size=tuple(x.shape[2:]), seed=derive_seed(self.seed, 1), **model_kwargs)
        criterion = criterion_for(labels)
        values, seconds = [], []
        for i in tqdm(range(cfg.num_models), desc=f"evaluate {model}", disable=not cfg.progress, leave=False):
            net = perf.prepare_model(family.build(i, dev))
            gen = make_generator(derive_seed(self.seed, 2, i))
            start = time.perf_counter()
            train_classifier(net, x, y, schedule, augment=augment, criterion=criterion, generator=gen, perf=perf,
                             progress=f"model {i + 1}/{cfg.num_models}" if cfg.progress else False)
            seconds.append(time.perf_counter() - start)
            values.append(100.0 * accuracy(net, x_test, y_test, batch_size=cfg.test_batch_size, perf=perf))
        return EvalResult("accuracy", values, {
            "model": model, "model_kwargs": model_kwargs, "epochs": cfg.epochs, "lr": lr, "augment": cfg.augment,
            "train_size": int(x.shape[0]), "train_seconds": seconds, "seed": self.seed,
            "perf": {"channels_last": perf.channels_last, "bf16": perf.bf16, "compile": perf.compile},
        })


def evaluate_pool(synset: SyntheticSet, test: ImageData, models: list[str], config: ClassifierConfig | None = None,
                  *, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, EvalResult]:
    """Cross-architecture evaluation: the same set scored with each network in ``models``."""
    base = config or ClassifierConfig()
    out = {}
    for name in models:
        cfg = ClassifierConfig(**{**base.__dict__, "model": name, "model_kwargs": None})
        out[name] = ClassifierEvaluator(cfg, device=device, seed=seed).evaluate(synset, test)
    return out
