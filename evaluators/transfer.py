"""Transfer-learning evaluation of a distilled set (KRR-ST, Lee et al., ICLR 2024; ``selfsup_dd`` ``test.py``).

For each of ``num_runs`` runs:

1. **Pre-train** a fresh network on the synthetic set. The recipe follows the set's label kind (``pretrain="auto"``):

   - ``regression`` (KRR-ST targets, ``algorithms/pretrain_krr_st.py``): head of size D, ``MSE(model(x), y)``, no
     augmentation, SGD lr 0.1, momentum 0.9, wd 1e-3, batch 256, E epochs, constant rate;
   - ``hard`` (random / coreset / DC-family sets, ``algorithms/pretrain_dc.py``): cross-entropy with DSA, SGD lr
     0.01, momentum 0.9, wd 5e-4, batch 256, E epochs, x0.1 at epoch E // 2 (MultiStepLR: momentum is kept);
   - ``soft``: the ``hard`` recipe with soft cross-entropy (not the official KIP/FRePo recipe, which uses AdamW);
   - ``none``: no pre-training (the ``test_scratch.py`` baseline).

2. **Fine-tune** the whole network on each downstream dataset: the pre-trained head is dropped and a fresh classifier
   added (``algorithms/finetune.py``), SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, cosine schedule over
   ``finetune_iterations`` (10,000 for CIFAR/TinyImageNet targets, 5,000 for the fine-grained ones), RandomCrop(pad 4)
   + horizontal flip. Downstream images are resized to the source resolution and normalised with their own
   mean/std (``downstream_encoding="own"``, as the official data pipeline).

3. Report top-1 downstream test accuracy (%), mean ± std over the runs (the official code: 3 runs, ``np.std``).
   Optionally also a linear probe on the frozen pre-trained features (``linear_probe: true``).

Where the downstream data come from: ``evaluate(synset, test, downstream_train=train)`` uses the passed splits
(``test`` is then the downstream *test* split). Without ``downstream_train`` the evaluator loads both splits of
``config.downstream`` itself (a dataset block like the run config's), or, when that is unset, the set's own source
data (``meta["data"]``, recorded by the CLI). So the CLI, which calls ``evaluate(synset, source_test)``, needs
nothing extra: set ``evaluator.downstream`` for another target. The class attribute
``needs_downstream`` marks this; ``needs_real`` is not set (it means "pass the source training set", for NAS).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddistill.augment import AUGMENTS, default_strategy
from ddistill.cli import DataConfig
from ddistill.config import from_dict
from ddistill.data import Encoding, ImageData, get_dataset
from ddistill.models import ModelFamily
from ddistill.ssl import LinearProbeConfig, RandomPadCropFlip, black_level, linear_probe
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainSchedule, accuracy, criterion_for, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, resolve_model

__all__ = ["PRETRAIN_RECIPES", "PretrainRecipe", "TransferConfig", "TransferEvaluator", "prepare_downstream",
           "transplant_backbone"]


@dataclass(frozen=True)
class PretrainRecipe:
    """How a network is pre-trained on a distilled set.

    Args:
        criterion: label kind passed to :func:`~ddistill.utils.train.criterion_for`.
        lr: SGD learning rate.
        weight_decay: SGD weight decay.
        decay_at_half: x0.1 learning rate from epoch E // 2 on.
        dsa: DSA augmentation on every batch.
        source: where the recipe comes from.
    """

    criterion: str
    lr: float
    weight_decay: float
    decay_at_half: bool
    dsa: bool
    source: str


#: Pre-training recipes by name; ``pretrain="auto"`` picks the set's ``meta["labels"]``.
PRETRAIN_RECIPES: dict[str, PretrainRecipe] = {
    "regression": PretrainRecipe("regression", 0.1, 1e-3, False, False, "selfsup_dd algorithms/pretrain_krr_st.py"),
    "hard": PretrainRecipe("hard", 0.01, 5e-4, True, True, "selfsup_dd algorithms/pretrain_dc.py"),
    "soft": PretrainRecipe("soft", 0.01, 5e-4, True, True, "DC recipe with soft cross-entropy (not official)"),
}
_PRETRAIN_CHOICES = ["auto", "none", *PRETRAIN_RECIPES]
_DOWNSTREAM_ENCODINGS = ("own", "source")


@dataclass
class TransferConfig:
    """Hyper-parameters of the transfer evaluation (defaults: ``selfsup_dd`` ``test.py`` for a CIFAR target).

    Args:
        model: network; None = the set's distillation network (``meta["eval_model"]``), else convnet.
        model_kwargs: overrides for the network; None = recorded in the set.
        num_runs: independent pre-train + fine-tune runs (official ``num_test=3``).
        pretrain: "auto" (from the set's label kind), "regression", "hard", "soft" or "none".
        pretrain_epochs: E, epochs on the synthetic set (official 1000).
        pretrain_lr, pretrain_weight_decay: None = the recipe's value.
        pretrain_momentum, pretrain_batch_size: SGD settings of pre-training.
        dsa_strategy: DSA strategy for recipes with DSA; None = the source dataset's default.
        finetune_iterations: SGD steps on the downstream data (official: 10,000 CIFAR/TinyImageNet, 5,000 others).
        finetune_lr, finetune_momentum, finetune_weight_decay, finetune_batch_size: fine-tuning SGD (cosine).
        finetune_augment: RandomCrop + flip during fine-tuning.
        crop_padding: padding of the random crop.
        flip: horizontal flips during fine-tuning (the official code skips them for SVHN).
        downstream_encoding: "own" (downstream mean/std, official) or "source" (the set's encoding).
        linear_probe: also report a linear probe on the frozen pre-trained features (``details["linear_probe"]``).
        probe: linear-probe settings.
        downstream: dataset the evaluator loads when ``evaluate`` gets no ``downstream_train``.
        test_batch_size: batch size for testing.
        perf: speed settings (channels_last / bf16 autocast / compile); None fields = auto.
        progress: tqdm bars.
    """

    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    num_runs: int = 3
    pretrain: str = "auto"
    pretrain_epochs: int = 1000
    pretrain_lr: float | None = None
    pretrain_weight_decay: float | None = None
    pretrain_momentum: float = 0.9
    pretrain_batch_size: int = 256
    dsa_strategy: str | None = None
    finetune_iterations: int = 10000
    finetune_lr: float = 0.01
    finetune_momentum: float = 0.9
    finetune_weight_decay: float = 5e-4
    finetune_batch_size: int = 256
    finetune_augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    downstream_encoding: str = "own"
    linear_probe: bool = False
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    downstream: DataConfig | None = None
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
    #: The downstream splits come from ``evaluate(..., downstream_train=...)`` or ``config.downstream``.
    needs_downstream = True

    def evaluate(self, synset: SyntheticSet, test: ImageData | None = None, *,
                 downstream_train: ImageData | None = None) -> EvalResult:
        """Scores ``synset`` by transfer to one downstream dataset.

        Args:
            synset: the distilled set.
            test: the downstream test split when ``downstream_train`` is given; otherwise unused (both splits are
                loaded from ``config.downstream``, else from the set's source data block ``meta["data"]``, which
                the CLI records; the CLI passes the source test split here).
            downstream_train: the downstream training split (uint8 :class:`ImageData`).
        """
        if downstream_train is not None:
            if test is None:
                raise ValueError("evaluate(..., downstream_train=...) also needs the downstream test split as `test`")
            targets = {downstream_train.info.name: (downstream_train, test)}
        elif self.config.downstream is not None:
            targets = dict([self.load_downstream(self.config.downstream)])
        elif synset.meta.get("data"):
            # The CLI records the source data block in the set: transfer back to the source (e.g. CIFAR-100 ->
            # CIFAR-100, the first column of the paper's tables).
            targets = dict([self.load_downstream(from_dict(DataConfig, synset.meta["data"], where="meta.data"))])
        else:
            raise ValueError("the transfer evaluator needs downstream data: pass evaluate(synset, test, "
                             "downstream_train=train) or set evaluator.downstream (e.g. {name: cifar10, root: data})")
        return next(iter(self.evaluate_many(synset, targets).values()))

    @staticmethod
    def load_downstream(data: DataConfig) -> tuple[str, tuple[ImageData, ImageData]]:
        """Both splits of a dataset block, as ``(name, (train, test))``."""
        if data.zca:
            raise ValueError("downstream data are mean/std normalised; zca is not supported for evaluator.downstream")
        train = get_dataset(data.name, root=data.root, split="train", download=data.download, **data.kwargs)
        test = get_dataset(data.name, root=data.root, split="test", download=data.download, **data.kwargs)
        return train.info.name, (train, test)

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
        recipe_name, recipe = self._recipe(meta)
        source_encoding = Encoding.from_meta(meta["encoding"], synset.tensors) \
            if cfg.downstream_encoding == "source" else None

        data: dict[str, tuple[Tensor, Tensor, Tensor, Tensor, int, Tensor]] = {}
        for name, (train, test) in targets.items():
            if train.info.in_channels != channels:
                raise ValueError(f"downstream '{name}' has {train.info.in_channels} channels, the set has {channels}")
            enc = source_encoding or Encoding(train.info.mean, train.info.std, (channels, *size))
            x_tr, y_tr = prepare_downstream(train, size, enc)
            x_te, y_te = prepare_downstream(test, size, enc)
            k = int(train.info.num_classes)
            data[name] = (x_tr.to(dev), y_tr.to(dev), x_te.to(dev), y_te.to(dev), k, black_level(enc))

        values: dict[str, list[float]] = {name: [] for name in targets}
        probes: dict[str, list[float]] = {name: [] for name in targets}
        seconds: dict[str, list[float]] = {name: [] for name in targets}
        pre_seconds: list[float] = []
        for r in tqdm(range(cfg.num_runs), desc="transfer runs", disable=not cfg.progress, leave=False):
            pretrained = None
            if recipe is not None:
                start = time.perf_counter()
                pretrained = self._pretrain(synset, recipe, model, model_kwargs, perf, r)
                pre_seconds.append(time.perf_counter() - start)
            for t, (name, (x_tr, y_tr, x_te, y_te, k, fill)) in enumerate(data.items()):
                family = ModelFamily(model, in_channels=channels, num_classes=k, image_size=size,
                                     seed=derive_seed(self.seed, 41, t), **model_kwargs)
                net = family.build(r, dev)
                if pretrained is not None:
                    transplant_backbone(pretrained, net)
                if cfg.linear_probe:
                    gen = make_generator(derive_seed(self.seed, 43, t, r))
                    probes[name].append(linear_probe(net.embed, (x_tr, y_tr), (x_te, y_te), config=cfg.probe,
                                                     num_classes=k, generator=gen, device=dev))
                start = time.perf_counter()
                fast = perf.prepare_model(net)
                self._finetune(fast, x_tr, y_tr, fill, make_generator(derive_seed(self.seed, 42, t, r)), perf,
                               desc=f"fine-tune {name} {r + 1}/{cfg.num_runs}")
                seconds[name].append(time.perf_counter() - start)
                values[name].append(100.0 * accuracy(fast, x_te, y_te, batch_size=cfg.test_batch_size, perf=perf))

        out = {}
        for name in targets:
            details: dict[str, Any] = {
                "downstream": name, "model": model, "model_kwargs": model_kwargs, "pretrain": recipe_name,
                "pretrain_epochs": cfg.pretrain_epochs if recipe is not None else 0,
                "finetune_iterations": cfg.finetune_iterations, "resolution": list(size),
                "downstream_encoding": cfg.downstream_encoding, "train_size": int(x_syn.shape[0]), "seed": self.seed,
                "pretrain_seconds": pre_seconds, "finetune_seconds": seconds[name],
            }
            if cfg.linear_probe:
                details["linear_probe"] = probes[name]
            out[name] = EvalResult("accuracy", values[name], details)
        return out

    # ------------------------------------------------------------------------------------------------
    def _recipe(self, meta: Mapping[str, Any]) -> tuple[str, PretrainRecipe | None]:
        name = self.config.pretrain
        if name == "none":
            return "none", None
        if name == "auto":
            name = meta.get("labels", "hard")
            if name not in PRETRAIN_RECIPES:
                raise ValueError(f"no pre-training recipe for label kind '{name}'; set evaluator.pretrain to one of "
                                 f"{_PRETRAIN_CHOICES}")
        return name, PRETRAIN_RECIPES[name]

    def _pretrain(self, synset: SyntheticSet, recipe: PretrainRecipe, model: str, model_kwargs: dict[str, Any],
                  perf: PerfConfig, run: int) -> nn.Module:
        """A fresh network trained on the set with ``recipe``; returns the un-compiled module."""
        cfg, dev = self.config, self.device
        x, y = synset.x.to(dev), synset.y.to(dev)
        if recipe.criterion == "hard":
            out_dim = int(synset.meta.get("num_classes") or int(y.max()) + 1)
        else:
            if y.dim() != 2:
                raise ValueError(f"pretrain recipe '{recipe.criterion}' needs (N, D) float targets, the set's y has "
                                 f"shape {tuple(y.shape)}")
            out_dim, y = int(y.shape[1]), y.float()
        family = ModelFamily(model, in_channels=int(x.shape[1]), num_classes=out_dim, image_size=tuple(x.shape[2:]),
                             seed=derive_seed(self.seed, 40), **model_kwargs)
        net = family.build(run, dev)
        epochs = cfg.pretrain_epochs
        schedule = TrainSchedule(
            epochs=epochs,
            lr=recipe.lr if cfg.pretrain_lr is None else cfg.pretrain_lr,
            momentum=cfg.pretrain_momentum,
            weight_decay=recipe.weight_decay if cfg.pretrain_weight_decay is None else cfg.pretrain_weight_decay,
            batch_size=cfg.pretrain_batch_size,
            lr_decay_epoch=epochs // 2 if recipe.decay_at_half else -1,
            rebuild_optimizer_at_decay=False,  # MultiStepLR keeps the momentum buffers
        )
        augment = None
        if recipe.dsa:
            augment = AUGMENTS.get("dsa")(strategy=cfg.dsa_strategy or default_strategy(synset.meta.get("dataset", "")))
        generator = make_generator(derive_seed(self.seed, 44, run))
        train_classifier(perf.prepare_model(net), x, y, schedule, augment=augment,
                         criterion=criterion_for(recipe.criterion), generator=generator, perf=perf,
                         progress=f"pre-train {run + 1}/{cfg.num_runs}" if cfg.progress else False)
        return net

    def _finetune(self, net: nn.Module, x: Tensor, y: Tensor, fill: Tensor, generator: torch.Generator,
                  perf: PerfConfig, desc: str) -> None:
        """Full fine-tuning (``finetune.py``): SGD + cosine over iterations, batches from per-epoch shuffles (the last
        batch of an epoch may be smaller, like a DataLoader without ``drop_last``)."""
        cfg = self.config
        augment = RandomPadCropFlip(cfg.crop_padding, cfg.flip, fill) if cfg.finetune_augment else None
        opt = torch.optim.SGD(net.parameters(), lr=cfg.finetune_lr, momentum=cfg.finetune_momentum,
                              weight_decay=cfg.finetune_weight_decay)
        total = cfg.finetune_iterations
        n = x.shape[0]
        order, cursor = torch.randperm(n, generator=generator), 0
        net.train()
        for it in tqdm(range(total), desc=desc, disable=not cfg.progress, leave=False, mininterval=1.0):
            for group in opt.param_groups:  # CosineAnnealingLR(T_max=total), stepped after every iteration
                group["lr"] = 0.5 * cfg.finetune_lr * (1 + math.cos(math.pi * it / max(total, 1)))
            if cursor >= n:
                order, cursor = torch.randperm(n, generator=generator), 0
            idx = order[cursor : cursor + cfg.finetune_batch_size].to(x.device)
            cursor += cfg.finetune_batch_size
            xb = x[idx]
            if augment is not None:
                xb = augment(xb, generator=generator)
            with perf.autocast(x.device):
                out = net(perf.prepare_input(xb))
            loss = F.cross_entropy(out.float(), y[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {loss.item()} at iteration {it}; lower "
                                         f"evaluator.finetune_lr (now {cfg.finetune_lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
