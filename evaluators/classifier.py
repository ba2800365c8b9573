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

from ddistill.augment import build_augment
from ddistill.data import EvalData, RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.progress import progress_bar
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainRecipe, accuracy, criterion_for, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, resolve_model

#: ``derive_seed`` streams: the evaluation networks' initialisation and each network's data order / augmentation.
MODEL_STREAM, TRAIN_STREAM = 1, 2


@dataclass
class ClassifierConfig:
    """Hyper-parameters of the classifier evaluation (defaults: the DC/DM/DataDAM protocol).

    Args:
        model: evaluation network; None = the one recorded in the set (``meta["eval_model"]``), else convnet.
        model_kwargs: overrides for the network (e.g. ``{norm: batchnorm}``); None = recorded in the set.
        num_models: K fresh networks (5 in the papers' tables).
        train: the training recipe (papers: 1000 epochs, DC's code runs Epoch + 1; SGD 0.01, momentum 0.9, wd 5e-4,
            batch 256, x0.1 at half with a fresh optimiser, DSA). ``train.lr: learned`` uses the learned rate stored
            in the set (trajectory matching). DSA's strategy defaults to the dataset's (no flip for digits).
        test_batch_size: batch size for testing.
        perf: speed settings (channels_last / bf16 autocast / compile / threads); None fields = auto.
        progress: progress bars (drawn only on a terminal).
    """

    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    num_models: int = 5
    train: TrainRecipe = field(default_factory=TrainRecipe)
    test_batch_size: int = 1024
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_models < 1:
            raise ValueError(f"num_models must be >= 1, got {self.num_models}")


@EVALUATORS.register("classifier")
class ClassifierEvaluator(Evaluator):
    """Train ``num_models`` fresh networks on the set; report real test accuracy (%)."""

    Config = ClassifierConfig

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        """Shape: synset.x (N, C, H, W) in the set's encoding; data.test.x (M, C, H, W) uint8 pixels."""
        cfg = self.config
        meta = synset.meta
        x_test, y_test, _ = self.encoded_test(synset, data)
        lr = self._resolve_lr(synset)
        model, model_kwargs = resolve_model(cfg.model, cfg.model_kwargs, meta)
        return self._run(synset.x, synset.y, x_test, y_test, data.test.info.num_classes,
                         labels=meta.get("labels", "hard"), lr=lr, dataset=meta.get("dataset", ""), model=model,
                         model_kwargs=model_kwargs)

    def evaluate_real(self, real: RealData, data: Any) -> EvalResult:
        """Upper bound: the same protocol trained on the whole real training set."""
        from .base import as_eval_data

        cfg = self.config
        test = as_eval_data(data).require("test", self.name)
        lr = cfg.train.lr
        if isinstance(lr, str):
            raise ValueError("evaluate_real needs a numeric train.lr (a real training set has no learned rate)")
        return self._run(real.x, real.y, real.encoding.encode(test.x), test.y, real.num_classes, labels="hard",
                         lr=float(lr), dataset=real.info.name, model=cfg.model or "convnet",
                         model_kwargs=dict(cfg.model_kwargs or {}))

    # ------------------------------------------------------------------------------------------
    def _resolve_lr(self, synset: SyntheticSet) -> float:
        lr = self.config.train.lr
        if lr == "learned":
            if "lr" not in synset.tensors:
                raise ValueError("evaluator.train.lr=learned but the set stores no learned lr (tensors: "
                                 f"{sorted(synset.tensors)}); use a number")
            return float(synset.tensors["lr"])
        return float(lr)

    def _run(self, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int, *, labels: str,
             lr: float, dataset: str, model: str, model_kwargs: dict[str, Any]) -> EvalResult:
        cfg = self.config
        dev = self.device
        perf = cfg.perf.resolve(dev)
        perf.apply_threads()
        x, y = x.to(dev), y.to(dev)
        x_test, y_test = x_test.to(dev), y_test.to(dev)
        recipe = cfg.train.with_lr(lr)
        augment = build_augment(recipe.augment, dataset)
        family = ModelFamily(model, in_channels=x.shape[1], num_classes=num_classes,
                             image_size=tuple(x.shape[2:]), seed=derive_seed(self.seed, MODEL_STREAM), **model_kwargs)
        criterion = criterion_for(labels)
        values, seconds = [], []
        for i in progress_bar(range(cfg.num_models), desc=f"evaluate {model}", enabled=cfg.progress, leave=False):
            net = perf.prepare_model(family.build(i, dev))
            gen = make_generator(derive_seed(self.seed, TRAIN_STREAM, i))
            start = time.perf_counter()
            train_classifier(net, x, y, recipe, augment=augment, criterion=criterion, generator=gen, perf=perf,
                             progress=f"model {i + 1}/{cfg.num_models}" if cfg.progress else False)
            seconds.append(time.perf_counter() - start)
            values.append(100.0 * accuracy(net, x_test, y_test, batch_size=cfg.test_batch_size, perf=perf))
        return EvalResult("accuracy", values, {
            "model": model, "model_kwargs": model_kwargs, "epochs": recipe.epochs, "lr": lr,
            "augment": recipe.augment, "train_size": int(x.shape[0]), "train_seconds": seconds, "seed": self.seed,
            "perf": {"channels_last": perf.channels_last, "bf16": perf.bf16, "compile": perf.compile},
        })


def evaluate_pool(synset: SyntheticSet, data: Any, models: list[str], config: ClassifierConfig | None = None,
                  *, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, EvalResult]:
    """Cross-architecture evaluation: the same set scored with each network in ``models``
    (:meth:`Evaluator.across` of a :class:`ClassifierEvaluator`)."""
    return ClassifierEvaluator(config, device=device, seed=seed).across(models, synset, data)
