"""Transfer-learning evaluation of a distilled set (KRR-ST, Lee et al., ICLR 2024; ``selfsup_dd`` ``test.py``).

For each of ``num_runs`` runs:

1. **Pre-train** a fresh network on the synthetic set. The recipe follows the set's label kind (``pretrain="auto"``):

   - ``regression`` (KRR-ST targets, ``algorithms/pretrain_krr_st.py``): head of size D, ``MSE(model(x), y)``, no
     augmentation, SGD lr 0.1, momentum 0.9, wd 1e-3, batch 256, E epochs, constant rate;
   - ``hard`` (random / coreset / DC-family sets, ``algorithms/pretrain_dc.py``): cross-entropy with DSA, SGD lr
     0.01, momentum 0.9, wd 5e-4, batch 256, E epochs, x0.1 at epoch E // 2 (MultiStepLR: momentum is kept);
   - ``soft``: the ``hard`` recipe with soft cross-entropy (not the official KIP/FRePo recipe, which uses AdamW);
   - ``none``: no pre-training (the ``test_scratch.py`` baseline).

   ``pretrain_recipe`` overrides fields of the chosen recipe (e.g. ``{epochs: 400}``).

2. **Fine-tune** the whole network on each downstream dataset: the pre-trained head is dropped and a fresh classifier
   added (``algorithms/finetune.py``), SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, cosine schedule over
   ``finetune.iterations`` (10,000 for CIFAR/TinyImageNet targets, 5,000 for the fine-grained ones), RandomCrop(pad 4)
   + horizontal flip. Downstream images are resized to the source resolution and normalised with their own
   mean/std (``downstream_encoding="own"``, as the official data pipeline).

3. Report top-1 downstream test accuracy (%), mean ± std over the runs (the official code: 3 runs, ``np.std``).
   Optionally also a linear probe on the frozen pre-trained features (``linear_probe: true``).

The downstream datasets are ``config.downstream`` (dataset blocks like a run config's), or, when unset, the set's own
source data (``meta["data"]``); :meth:`TransferEvaluator.needs` asks :func:`ddistill.data.load_eval_data` for them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.augment import build_augment
from ddistill.config import ConfigError, from_dict, merge
from ddistill.data import DataSpec, Encoding, EvalData, EvalNeeds, ImageData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.probe import LinearProbeConfig, linear_probe
from ddistill.utils.progress import progress_bar
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainRecipe, accuracy, criterion_for, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, resolve_model

__all__ = ["PRETRAIN_RECIPES", "PretrainRecipe", "TransferConfig", "TransferEvaluator", "prepare_downstream",
           "transplant_backbone"]

#: ``derive_seed`` streams: pre-training networks, fine-tuning networks (per target), fine-tuning order, probes,
#: pre-training order.
PRETRAIN_MODEL_STREAM, FINETUNE_MODEL_STREAM, FINETUNE_STREAM, PROBE_STREAM, PRETRAIN_STREAM = 40, 41, 42, 43, 44


@dataclass(frozen=True)
class PretrainRecipe:
    """How a network is pre-trained on a distilled set of one label kind.

    Args:
        criterion: label kind passed to :func:`~ddistill.utils.train.criterion_for`.
        train: the :class:`TrainRecipe` fields (``TrainRecipe(**train)``).
        source: where the recipe comes from.
    """

    criterion: str
    train: dict[str, Any]
    source: str

    def recipe(self, overrides: Mapping[str, Any] | None = None) -> TrainRecipe:
        return from_dict(TrainRecipe, merge(TrainRecipe, self.train, overrides or {}), where="evaluator.pretrain_recipe")


_DC_PRETRAIN = {"epochs": 1000, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256,
                "schedule": "step", "lr_decay_at": "half", "rebuild_optimizer_at_decay": False, "augment": "dsa"}
#: Pre-training recipes by name; ``pretrain="auto"`` picks the set's ``meta["labels"]``.
PRETRAIN_RECIPES: dict[str, PretrainRecipe] = {
    "regression": PretrainRecipe("regression", {"epochs": 1000, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3,
                                                "batch_size": 256, "schedule": "constant", "augment": "none"},
                                 "selfsup_dd algorithms/pretrain_krr_st.py"),
    # MultiStepLR keeps the momentum buffers at the drop (rebuild_optimizer_at_decay false).
    "hard": PretrainRecipe("hard", dict(_DC_PRETRAIN), "selfsup_dd algorithms/pretrain_dc.py"),
    "soft": PretrainRecipe("soft", dict(_DC_PRETRAIN), "DC recipe with soft cross-entropy (not official)"),
}
_PRETRAIN_CHOICES = ["auto", "none", *PRETRAIN_RECIPES]
_DOWNSTREAM_ENCODINGS = ("own", "source")


def _finetune_recipe() -> TrainRecipe:
    """``selfsup_dd`` ``algorithms/finetune.py``: SGD 0.01, momentum 0.9, wd 5e-4, batch 256, cosine over 10,000 steps,
    RandomCrop(pad 4) + horizontal flip."""
    return TrainRecipe(iterations=10000, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, schedule="cosine",
                       augment={"name": "pad_crop_flip", "padding": 4, "flip": True})


@dataclass
class TransferConfig:
    """Hyper-parameters of the transfer evaluation (defaults: ``selfsup_dd`` ``test.py`` for a CIFAR target).

    Args:
        model: network; None = the set's distillation network (``meta["eval_model"]``), else convnet.
        model_kwargs: overrides for the network; None = recorded in the set.
        num_runs: independent pre-train + fine-tune runs (official ``num_test=3``).
        pretrain: "auto" (from the set's label kind), "regression", "hard", "soft" or "none".
        pretrain_recipe: :class:`TrainRecipe` fields overriding the chosen pre-training recipe (e.g. ``{epochs: 400}``;
            official 1000 epochs).
        finetune: the fine-tuning recipe (official: 10,000 SGD steps for CIFAR/TinyImageNet targets, 5,000 for the
            fine-grained ones, cosine, pad-4 crop + flip; ``augment: {name: pad_crop_flip, flip: false}`` for SVHN).
        downstream_encoding: "own" (downstream mean/std, official) or "source" (the set's encoding).
        linear_probe: also report a linear probe on the frozen pre-trained features (``details["linear_probe"]``).
        probe: linear-probe settings.
        downstream: datasets to transfer to; empty = the set's own source data (``meta["data"]``).
        test_batch_size: batch size for testing.
        perf: speed settings (channels_last / bf16 autocast / compile); None fields = auto.
        progress: progress bars (drawn only on a terminal).
    """

    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    num_runs: int = 3
    pretrain: str = "auto"
    pretrain_recipe: dict[str, Any] = field(default_factory=dict)
    finetune: TrainRecipe = field(default_factory=_finetune_recipe)
    downstream_encoding: str = "own"
    linear_probe: bool = False
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    downstream: list[DataSpec] = field(default_factory=list)
    test_batch_size: int = 1024
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.pretrain not in _PRETRAIN_CHOICES:
            raise ValueError(f"unknown pretrain '{self.pretrain}'; choose from {_PRETRAIN_CHOICES}")
        if self.downstream_encoding not in _DOWNSTREAM_ENCODINGS:
            raise ValueError(f"unknown downstream_encoding '{self.downstream_encoding}'; choose from "
                             f"{list(_DOWNSTREAM_ENCODINGS)}")
        if self.num_runs < 1:
            raise ValueError(f"num_runs must be >= 1, got {self.num_runs}")
        try:  # unknown recipe keys fail here, at config time, naming the valid ones
            from_dict(TrainRecipe, self.pretrain_recipe, where="evaluator.pretrain_recipe")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if isinstance(self.finetune.lr, str):
            raise ValueError("finetune.lr must be a number")


def prepare_downstream(data: ImageData, size: tuple[int, int], encoding: Encoding | None = None,
                       *, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Resizes downstream images to the source resolution and encodes them.

    Args:
        data: uint8 images.
        size: (H, W) of the source (synthetic) images.
        encoding: None = the downstream's own mean/std (the official pipeline).
        chunk: images resized at a time (bounds memory).

    Shape:
        data.x (M, C, H0, W0) uint8 -> x (M, C, H, W) float32, y (M,) int64.
    """
    c = int(data.x.shape[1])
    encoding = encoding or Encoding(data.info.mean, data.info.std, (c, *size))
    out = torch.empty(data.x.shape[0], c, *size)
    for i in range(0, data.x.shape[0], chunk):
        x = data.x[i : i + chunk].float() / 255.0
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        out[i : i + chunk] = encoding.encode(x)
    return out, data.y.clone()


def _head_name(net: nn.Module) -> str:
    head = getattr(net, "classifier", None)
    for name, module in net.named_modules():
        if module is head and name:
            return name
    raise ValueError(f"{type(net).__name__} has no `classifier` head module; transfer needs one to replace")


def transplant_backbone(pretrained: nn.Module, net: nn.Module) -> None:
    """Copies every weight of ``pretrained`` except its head into ``net`` (``finetune.py``: ``del init_model.fc``,
    then ``load_state_dict(strict=False)``); ``net`` keeps its freshly initialised classifier."""
    head = _head_name(net) + "."
    state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(head)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    stray = [k for k in missing if not k.startswith(head)]
    if unexpected or stray:
        raise ValueError(f"pre-trained and fine-tuned networks differ outside the head: missing {stray}, "
                         f"unexpected {list(unexpected)}")


@EVALUATORS.register("transfer")
class TransferEvaluator(Evaluator):
    """Pre-train on the set, fine-tune on downstream data, report downstream test accuracy (%) over runs."""

    Config = TransferConfig

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        """Both splits of every downstream dataset: ``config.downstream``, else the set's source (``meta["data"]``)."""
        targets = tuple(self.config.downstream)
        if not targets:
            if not meta.get("data"):
                raise ValueError("the transfer evaluator needs downstream data: set evaluator.downstream (e.g. "
                                 "[{name: cifar10, root: data}]); this set records no source data (meta['data'])")
            targets = (from_dict(DataSpec, meta["data"], where="meta.data"),)
        return EvalNeeds(test=False, downstream=targets)

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        """Scores ``synset`` by transfer to the first downstream dataset of ``data`` (all of them:
        :meth:`evaluate_many`)."""
        targets = data.require("downstream", self.name)
        return next(iter(self.evaluate_many(synset, targets).values()))

    def evaluate_many(self, synset: SyntheticSet,
                      targets: Mapping[str, tuple[ImageData, ImageData]]) -> dict[str, EvalResult]:
        """The official protocol over several downstream datasets: each run pre-trains once and fine-tunes a copy
        on every target (``test.py``).

        Args:
            synset: the distilled set.
            targets: ``{name: (train, test)}`` uint8 splits.
        """
        cfg, dev = self.config, self.device
        meta = synset.meta
        perf = cfg.perf.resolve(dev)
        perf.apply_threads()
        model, model_kwargs = resolve_model(cfg.model, cfg.model_kwargs, meta)
        x_syn = synset.x.to(dev)
        channels, size = int(x_syn.shape[1]), (int(x_syn.shape[2]), int(x_syn.shape[3]))
        recipe_name, pre = self._recipe(meta)
        source_encoding = Encoding.from_meta(meta["encoding"], synset.tensors) \
            if cfg.downstream_encoding == "source" else None

        data: dict[str, tuple[Tensor, Tensor, Tensor, Tensor, int, nn.Module]] = {}
        for name, (train, test) in targets.items():
            if train.info.in_channels != channels:
                raise ValueError(f"downstream '{name}' has {train.info.in_channels} channels, the set has {channels}")
            enc = source_encoding or Encoding(train.info.mean, train.info.std, (channels, *size))
            x_tr, y_tr = prepare_downstream(train, size, enc)
            x_te, y_te = prepare_downstream(test, size, enc)
            k = int(train.info.num_classes)
            augment = build_augment(cfg.finetune.augment, train.info.name, encoding=enc)
            data[name] = (x_tr.to(dev), y_tr.to(dev), x_te.to(dev), y_te.to(dev), k, augment)

        values: dict[str, list[float]] = {name: [] for name in targets}
        probes: dict[str, list[float]] = {name: [] for name in targets}
        seconds: dict[str, list[float]] = {name: [] for name in targets}
        pre_seconds: list[float] = []
        for r in progress_bar(range(cfg.num_runs), desc="transfer runs", enabled=cfg.progress, leave=False):
            pretrained = None
            if pre is not None:
                start = time.perf_counter()
                pretrained = self._pretrain(synset, pre, model, model_kwargs, perf, r)
                pre_seconds.append(time.perf_counter() - start)
            for t, (name, (x_tr, y_tr, x_te, y_te, k, augment)) in enumerate(data.items()):
                family = ModelFamily(model, in_channels=channels, num_classes=k, image_size=size,
                                     seed=derive_seed(self.seed, FINETUNE_MODEL_STREAM, t), **model_kwargs)
                net = family.build(r, dev)
                if pretrained is not None:
                    transplant_backbone(pretrained, net)
                if cfg.linear_probe:
                    gen = make_generator(derive_seed(self.seed, PROBE_STREAM, t, r))
                    probes[name].append(linear_probe(net.embed, (x_tr, y_tr), (x_te, y_te), config=cfg.probe,
                                                     num_classes=k, generator=gen, device=dev))
                start = time.perf_counter()
                fast = perf.prepare_model(net)
                train_classifier(fast, x_tr, y_tr, cfg.finetune, augment=augment,
                                 generator=make_generator(derive_seed(self.seed, FINETUNE_STREAM, t, r)), perf=perf,
                                 progress=f"fine-tune {name} {r + 1}/{cfg.num_runs}" if cfg.progress else False)
                seconds[name].append(time.perf_counter() - start)
                values[name].append(100.0 * accuracy(fast, x_te, y_te, batch_size=cfg.test_batch_size, perf=perf))

        out = {}
        for name in targets:
            details: dict[str, Any] = {
                "downstream": name, "model": model, "model_kwargs": model_kwargs, "pretrain": recipe_name,
                "pretrain_epochs": pre[1].epochs if pre is not None else 0,
                "finetune_iterations": cfg.finetune.iterations, "resolution": list(size),
                "downstream_encoding": cfg.downstream_encoding, "train_size": int(x_syn.shape[0]), "seed": self.seed,
                "pretrain_seconds": pre_seconds, "finetune_seconds": seconds[name],
            }
            if cfg.linear_probe:
                details["linear_probe"] = probes[name]
            out[name] = EvalResult("accuracy", values[name], details)
        return out

    # ------------------------------------------------------------------------------------------------
    def _recipe(self, meta: Mapping[str, Any]) -> tuple[str, tuple[PretrainRecipe, TrainRecipe] | None]:
        name = self.config.pretrain
        if name == "none":
            return "none", None
        if name == "auto":
            name = meta.get("labels", "hard")
            if name not in PRETRAIN_RECIPES:
                raise ValueError(f"no pre-training recipe for label kind '{name}'; set evaluator.pretrain to one of "
                                 f"{_PRETRAIN_CHOICES}")
        pre = PRETRAIN_RECIPES[name]
        return name, (pre, pre.recipe(self.config.pretrain_recipe))

    def _pretrain(self, synset: SyntheticSet, pre: tuple[PretrainRecipe, TrainRecipe], model: str,
                  model_kwargs: dict[str, Any], perf: PerfConfig, run: int) -> nn.Module:
        """A fresh network trained on the set with ``recipe``; returns the un-compiled module."""
        cfg, dev = self.config, self.device
        kind, recipe = pre
        x, y = synset.x.to(dev), synset.y.to(dev)
        if kind.criterion == "hard":
            out_dim = int(synset.meta.get("num_classes") or int(y.max()) + 1)
        else:
            if y.dim() != 2:
                raise ValueError(f"pretrain recipe '{kind.criterion}' needs (N, D) float targets, the set's y has "
                                 f"shape {tuple(y.shape)}")
            out_dim, y = int(y.shape[1]), y.float()
        family = ModelFamily(model, in_channels=int(x.shape[1]), num_classes=out_dim, image_size=tuple(x.shape[2:]),
                             seed=derive_seed(self.seed, PRETRAIN_MODEL_STREAM), **model_kwargs)
        net = family.build(run, dev)
        augment = build_augment(recipe.augment, synset.meta.get("dataset", ""))
        generator = make_generator(derive_seed(self.seed, PRETRAIN_STREAM, run))
        train_classifier(perf.prepare_model(net), x, y, recipe, augment=augment,
                         criterion=criterion_for(kind.criterion), generator=generator, perf=perf,
                         progress=f"pre-train {run + 1}/{cfg.num_runs}" if cfg.progress else False)
        return net
