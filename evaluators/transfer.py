"""Transfer-learning evaluation of a distilled set (KRR-ST, Lee et al., ICLR 2024; ``selfsup_dd`` ``test.py``).

For each of ``num_runs`` runs:

1. **Pre-train** a fresh network on the synthetic set. The recipe follows the set's label kind (``pretrain="auto"``):

   - ``regression`` (KRR-ST targets, ``algorithms/pretrain_krr_st.py``): head of size D, ``MSE(model(x), y)``, no
     augmentation, SGD lr 0.1, momentum 0.9, wd 1e-3, batch 256, E epochs, constant rate;
   - ``hard`` (random / coreset / DC-family sets, ``algorithms/pretrain_dc.py``): cross-entropy with DSA, SGD lr
     0.01, momentum 0.9, wd 5e-4, batch 256, E epochs, x0.1 at epoch E // 2 (MultiStepLR: momentum is kept);
   - ``soft``: the ``hard`` recipe with soft cross-entropy (not the official KIP/FRePo recipe, which uses AdamW);
   - ``none``: no pre-training (the ``test_scratch.py`` baseline).

   ``pretrain_recipe`` overrides fields of the chosen recipe (e.g. ``{epochs: 400}``). ``pretrain_precision``
   (default "auto") runs regression pre-training in float32 whatever ``perf.bf16`` says, and records the precision
   each row pre-trained in (``details["pretrain_precision"]``).

2. **Fine-tune** the whole network on each downstream dataset: the pre-trained head is dropped and a fresh classifier
   added (``algorithms/finetune.py``), SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, cosine schedule over
   ``finetune.iterations`` (10,000 for CIFAR/TinyImageNet targets, 5,000 for the fine-grained ones), RandomCrop(pad 4)
   + horizontal flip. Downstream images are resized to the source resolution and normalised with their own
   mean/std (``downstream_encoding="own"``, as the official data pipeline).

3. Report top-1 downstream test accuracy (%), mean ± std over the runs (the official code: 3 runs, ``np.std``).
   Optionally also a linear probe on the frozen pre-trained features (``linear_probe: true``).

**Controls** (``controls``), on the same runs, fine-tuning seeds and budget (each fine-tuning is paired with the set's:
same head initialisation, same data order):

- ``no_pretraining``: the same network fine-tuned from its random initialisation (``test_scratch.py``);
- ``random_subset``: as many random real *source* images as the set holds (class-balanced), pre-trained with their
  *source* labels by the DC recipe for the set's number of epochs;
- ``random_teacher_targets``: the same random images with the teacher's representations as regression targets (KRR-ST's
  initialisation, i.e. what the distillation started from);
- ``teacher_probe``: a linear probe of the teacher's own features on the target (the ceiling a set distilled from that
  teacher approaches).

The **pre-training fit** is always measured: for regression targets MSE and R² on the set and on held-out real source
images labelled by the teacher; for labels, accuracy on the set and on the source test split. A pre-training that did
not fit (R² below ``min_fit_r2`` / accuracy below ``min_fit_accuracy`` on the set itself) is flagged in
``details["warnings"]``: its transfer score measures an under-trained network.

**Leak-free targets.** The downstream datasets are ``config.downstream`` (dataset blocks like a run config's). When
unset, a set distilled from a class subset (``dataset.classes``, e.g. CIFAR-10 classes 0-4) transfers to the *other*
classes of the same dataset (5-9), so source and target never share a label; a set made from a whole dataset
transfers to that dataset. Every result records, per row, whether its pre-training saw the target's labels
(``label_leak``), and warns when it did.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.augment import build_augment
from ddistill.config import ConfigError, from_dict, merge
from ddistill.data import DataSpec, Encoding, EvalData, EvalNeeds, ImageData, RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.compile_rule import Workload, compiled_graphs, training_steps
from ddistill.utils.perf import PerfConfig
from ddistill.utils.probe import LinearProbeConfig, linear_probe
from ddistill.utils.progress import progress_bar
from ddistill.utils.seed import derive_seed, make_generator
from ddistill.utils.train import TrainRecipe, accuracy, criterion_for, predict, train_classifier

from .base import EVALUATORS, EvalResult, Evaluator, resolve_model

__all__ = ["CONTROLS", "LABEL_SPACES", "PRETRAIN_PRECISIONS", "PRETRAIN_RECIPES", "PretrainRecipe", "TransferConfig",
           "TransferEvaluator", "default_targets", "label_space", "prepare_downstream", "pretrain_perf",
           "shares_labels", "transplant_backbone"]

#: ``derive_seed`` streams: pre-training networks, fine-tuning networks (per target), fine-tuning order, probes,
#: pre-training order.
PRETRAIN_MODEL_STREAM, FINETUNE_MODEL_STREAM, FINETUNE_STREAM, PROBE_STREAM, PRETRAIN_STREAM = 40, 41, 42, 43, 44
#: ... the random-subset controls' draws.
SUBSET_STREAM = 45
CONTROLS = ("no_pretraining", "random_subset", "random_teacher_targets", "teacher_probe")
#: Controls that pre-train a network (a row of fine-tuning results like the set's).
_PRETRAINED_CONTROLS = ("no_pretraining", "random_subset", "random_teacher_targets")


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
#: ``pretrain_precision`` choices: "auto" = float32 for regression targets, ``perf.bf16`` for labels.
PRETRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def pretrain_perf(perf: PerfConfig, criterion: str, precision: str = "auto") -> PerfConfig:
    """The (resolved) speed settings a pre-training on ``criterion`` targets runs with.

    "auto": float32 for "regression" -- bf16 autocast keeps 8 mantissa bits (about 3 significant digits), so the
    network's outputs cannot match continuous targets closer than that, which is why KRR-ST turns bf16 off when it makes
    the targets -- and ``perf.bf16`` for label recipes ("hard", "soft"), where argmax-based accuracy does not need the
    digits. "fp32" / "bf16" force it. Everything else in ``perf`` is kept.
    """
    if precision not in PRETRAIN_PRECISIONS:
        raise ValueError(f"unknown pretrain_precision '{precision}'; choose from {list(PRETRAIN_PRECISIONS)}")
    if precision == "auto":
        bf16 = bool(perf.bf16) and criterion != "regression"
    else:
        bf16 = precision == "bf16"
    return dataclasses.replace(perf, bf16=bf16)
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
        pretrain_precision: "auto" (float32 for regression targets, the set's and ``random_teacher_targets``', even when
            ``perf.bf16`` is on: bf16 rounds the outputs to ~3 significant digits; ``perf.bf16`` for label
            pre-training), "fp32" or "bf16". Fine-tuning always follows ``perf``. Recorded per row as
            ``pretrain_precision`` ("fp32" / "bf16").
        finetune: the fine-tuning recipe (official: 10,000 SGD steps for CIFAR/TinyImageNet targets, 5,000 for the
            fine-grained ones, cosine, pad-4 crop + flip; ``augment: {name: pad_crop_flip, flip: false}`` for SVHN).
        downstream_encoding: "own" (downstream mean/std, official) or "source" (the set's encoding).
        linear_probe: also report a linear probe on the frozen pre-trained features (``details["linear_probe"]``).
        probe: linear-probe settings.
        downstream: datasets to transfer to; empty = the other classes of the set's source dataset when the set was
            distilled from a class subset (leak-free), else the set's own source data (``meta["data"]``).
        controls: rows computed beside the set's (see the module docstring); [] = none. Teacher-based controls are
            skipped, with the reason recorded, when no teacher is known.
        teacher: a ``ddistill.teacher`` file for the teacher-based controls and the held-out fit; None = the set's
            recorded teacher (``meta["teacher"]["path"]``), if any.
        min_fit_r2: below this R² of the pre-trained network on the set's regression targets, the pre-training is
            flagged as not fitted.
        min_fit_accuracy: the same for label pre-training: accuracy (%) on the set's own (unaugmented) images.
        fit_heldout: real source test images used for the held-out fit.
        test_batch_size: batch size for testing.
        perf: speed settings (channels_last / bf16 autocast / compile); None fields = auto.
        progress: progress bars (drawn only on a terminal).
    """

    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    num_runs: int = 3
    pretrain: str = "auto"
    pretrain_recipe: dict[str, Any] = field(default_factory=dict)
    pretrain_precision: str = "auto"
    finetune: TrainRecipe = field(default_factory=_finetune_recipe)
    downstream_encoding: str = "own"
    linear_probe: bool = False
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    downstream: list[DataSpec] = field(default_factory=list)
    controls: list[str] = field(default_factory=lambda: ["no_pretraining", "random_subset", "teacher_probe"])
    teacher: str | None = None
    min_fit_r2: float = 0.5
    min_fit_accuracy: float = 90.0
    fit_heldout: int = 1000
    test_batch_size: int = 1024
    perf: PerfConfig = field(default_factory=PerfConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.pretrain not in _PRETRAIN_CHOICES:
            raise ValueError(f"unknown pretrain '{self.pretrain}'; choose from {_PRETRAIN_CHOICES}")
        if self.pretrain_precision not in PRETRAIN_PRECISIONS:
            raise ValueError(f"unknown pretrain_precision '{self.pretrain_precision}'; choose from "
                             f"{list(PRETRAIN_PRECISIONS)}")
        if self.downstream_encoding not in _DOWNSTREAM_ENCODINGS:
            raise ValueError(f"unknown downstream_encoding '{self.downstream_encoding}'; choose from "
                             f"{list(_DOWNSTREAM_ENCODINGS)}")
        if self.num_runs < 1:
            raise ValueError(f"num_runs must be >= 1, got {self.num_runs}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ValueError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")
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


def default_targets(source: DataSpec, num_classes: int | None = None) -> tuple[DataSpec, ...]:
    """The leak-free default target of a set distilled from ``source``: its dataset's other classes when ``source``
    is a class subset, else ``source`` itself (whose labels a label-free set never saw)."""
    if source.classes is None:
        return (source,)
    if num_classes is None:
        from ddistill.data import load_split

        num_classes = load_split(DataSpec(source.name, source.root, kwargs=dict(source.kwargs)), "test").info.num_classes
    rest = [c for c in range(num_classes) if c not in source.classes]
    if not rest:
        raise ValueError(f"dataset.classes {source.classes} covers every class of '{source.name}': no class is left "
                         f"for a leak-free target; set evaluator.downstream")
    return (dataclasses.replace(source, classes=rest, zca=False),)


#: Datasets whose class k is the same concept, so a class split has to hold across them: the CIFAR-10 JPEG mirror is
#: CIFAR-10; scikit-learn's digits, MNIST and SVHN (torchvision relabels SVHN's "10" as 0) all label the digits 0-9.
#: Any other registered dataset is a label space of its own.
LABEL_SPACES = {"cifar10": "cifar10", "cifar10_jpeg": "cifar10",
                "digits": "digits 0-9", "mnist": "digits 0-9", "svhn": "digits 0-9"}


def label_space(spec: DataSpec) -> str | None:
    """The label space of ``spec``'s classes (see :data:`LABEL_SPACES`); an image folder's classes are its root's
    sub-folders, so two folders share one only when they are the same folder. None when unknown (a folder without
    a root)."""
    if spec.name == "imagefolder":
        return f"imagefolder:{Path(spec.root).expanduser().resolve()}" if spec.root else None
    return LABEL_SPACES.get(spec.name, spec.name)


def shares_labels(source: DataSpec | None, target: DataSpec | None) -> bool | None:
    """Whether ``target``'s classes are (some of) ``source``'s: the same label space (:func:`label_space`, so the
    JPEG mirror of CIFAR-10 counts as CIFAR-10) with overlapping classes. None when either side is unknown, or when
    one is an image folder and the other is not the same folder (its classes could be anything)."""
    if source is None or target is None:
        return None
    spaces = label_space(source), label_space(target)
    if None in spaces:
        return None
    if spaces[0] != spaces[1]:
        folder = any(s.startswith("imagefolder:") for s in spaces)  # type: ignore[union-attr]
        return None if folder else False
    if source.classes is None or target.classes is None:
        return True
    return bool(set(source.classes) & set(target.classes))


@dataclass
class _Row:
    """One pre-training source (the set, or a control): ``pretrain(run) -> module | None``, whether it reads labels."""

    name: str
    pretrain: Callable[[int], nn.Module | None]
    uses_labels: bool
    fit: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    precision: str | None = None  # "fp32" / "bf16" of its pre-training (None: none)


@EVALUATORS.register("transfer")
class TransferEvaluator(Evaluator):
    """Pre-train on the set, fine-tune on downstream data, report downstream test accuracy (%) over runs, with the
    controls beside it."""

    Config = TransferConfig

    def _targets(self, meta: Mapping[str, Any]) -> tuple[DataSpec, ...]:
        if self.config.downstream:
            return tuple(self.config.downstream)
        if not meta.get("data"):
            raise ValueError("the transfer evaluator needs downstream data: set evaluator.downstream (e.g. "
                             "[{name: cifar10, root: data}]); this set records no source data (meta['data'])")
        return default_targets(from_dict(DataSpec, meta["data"], where="meta.data"))

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        """Both splits of every downstream dataset; the source's training split for the random-subset controls and
        its test split for the held-out pre-training fit."""
        source = bool(meta.get("data"))
        random = any(c in self.config.controls for c in ("random_subset", "random_teacher_targets"))
        return EvalNeeds(test=source, train=source and random, downstream=self._targets(meta))

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        """Scores ``synset`` by transfer to the first downstream dataset of ``data`` (all of them:
        :meth:`evaluate_many`)."""
        targets = data.require("downstream", self.name)
        specs = {t.label(): t for t in self._targets(synset.meta)} if synset.meta.get("data") else {}
        return next(iter(self.evaluate_many(synset, targets, real=data.train, source_test=data.test,
                                            source=data.spec, target_specs=specs).values()))

    def evaluate_many(self, synset: SyntheticSet, targets: Mapping[str, tuple[ImageData, ImageData]], *,
                      real: RealData | None = None, source_test: ImageData | None = None,
                      source: DataSpec | None = None,
                      target_specs: Mapping[str, DataSpec] | None = None) -> dict[str, EvalResult]:
        """The official protocol over several downstream datasets: each run pre-trains once and fine-tunes a copy
        on every target (``test.py``), and the same for every control row.

        Args:
            synset: the distilled set.
            targets: ``{name: (train, test)}`` uint8 splits.
            real: the source's encoded training split (random-subset controls); None skips them, saying why.
            source_test: the source's uint8 test split (held-out pre-training fit).
            source, target_specs: the data specs, to tell whether a pre-training saw a target's labels.
        """
        cfg, dev = self.config, self.device
        meta = synset.meta
        model, model_kwargs = resolve_model(cfg.model, cfg.model_kwargs, meta)
        x_syn = synset.x.to(dev)
        channels, size = int(x_syn.shape[1]), (int(x_syn.shape[2]), int(x_syn.shape[3]))
        recipe_name, pre = self._recipe(meta)
        # Pre-training (the set and the pre-training controls, each run): weighed by the compile rule as a whole.
        pre_work = None
        if pre is not None:
            n, r = int(x_syn.shape[0]), pre[1]
            rows_pretraining = 1 + sum(1 for c in cfg.controls if c in ("random_subset", "random_teacher_targets"))
            pre_work = Workload(model, min(n, r.batch_size), cfg.num_runs * rows_pretraining * training_steps(
                n, r.epochs, r.batch_size, r.iterations), size, compiled_graphs(n, r.batch_size))
        perf = cfg.perf.resolve(dev, pre_work)
        perf.apply_threads()
        set_encoding = Encoding.from_meta(meta["encoding"], synset.tensors)
        source_encoding = set_encoding if cfg.downstream_encoding == "source" else None
        if source is None and meta.get("data"):
            source = from_dict(DataSpec, meta["data"], where="meta.data")

        data: dict[str, tuple[Tensor, Tensor, Tensor, Tensor, int, nn.Module]] = {}
        encodings: dict[str, Encoding] = {}
        for name, (train, test) in targets.items():
            if train.info.in_channels != channels:
                raise ValueError(f"downstream '{name}' has {train.info.in_channels} channels, the set has {channels}")
            enc = source_encoding or Encoding(train.info.mean, train.info.std, (channels, *size))
            x_tr, y_tr = prepare_downstream(train, size, enc)
            x_te, y_te = prepare_downstream(test, size, enc)
            k = int(train.info.num_classes)
            augment = build_augment(cfg.finetune.augment, train.info.name, encoding=enc)
            data[name] = (x_tr.to(dev), y_tr.to(dev), x_te.to(dev), y_te.to(dev), k, augment)
            encodings[name] = enc

        teacher, teacher_why = self._teacher(meta, set_encoding)
        skipped: dict[str, str] = {}
        rows = [_Row("set", (lambda r: self._pretrain(synset.x, synset.y, pre, model, model_kwargs, perf, r))
                     if pre is not None else (lambda r: None), uses_labels=recipe_name in ("hard", "soft"))]
        for control in cfg.controls:
            if control == "no_pretraining":
                if pre is not None:
                    rows.append(_Row(control, lambda r: None, uses_labels=False))
            elif control in ("random_subset", "random_teacher_targets"):
                why = None if real is not None else "the source's training split was not loaded"
                if control == "random_teacher_targets" and teacher is None:
                    why = teacher_why
                if why:
                    skipped[control] = why
                    continue
                rows.append(self._random_row(control, real, len(synset), teacher, model, model_kwargs, perf))
            elif control == "teacher_probe" and teacher is None:
                skipped[control] = teacher_why

        self._dataset = meta.get("dataset", "")
        heldout = self._heldout(source_test, set_encoding, teacher)
        values = {row.name: {name: [] for name in targets} for row in rows}
        probes = {row.name: {name: [] for name in targets} for row in rows}
        seconds: dict[str, list[float]] = {name: [] for name in targets}
        teacher_probe: dict[str, list[float]] = {name: [] for name in targets}
        probe_teacher = "teacher_probe" in cfg.controls and teacher is not None
        # The work comes in units: (run, row) pre-trains one row and fine-tunes it on every target; (run, None) is the
        # teacher's probe. Every unit's randomness depends only on the seed, its run and its row, so under torchrun
        # each rank computes its share (Distributed.map, results gathered as JSON) and the numbers are one process's.
        units = [(r, i) for r in range(cfg.num_runs) for i in [*range(len(rows)), *([None] if probe_teacher else [])]]
        bar = progress_bar(total=len(self.dist.owned(len(units))), desc="transfer", enabled=cfg.progress, leave=False)

        def finetune_workload(x_tr: Tensor, x_te: Tensor) -> Workload:
            """Every fine-tuning of the evaluation on one target (all ranks' share: every rank decides alike), for the
            compile rule."""
            ft, n = cfg.finetune, int(x_tr.shape[0])
            runs = sum(1 for _, i in units if i is not None)
            return Workload(model, min(n, ft.batch_size), runs * training_steps(n, ft.epochs, ft.batch_size,
                                                                                  ft.iterations), size,
                            compiled_graphs(n, ft.batch_size, int(x_te.shape[0]), cfg.test_batch_size))

        def run_unit(_: int, unit: tuple[int, int | None]) -> dict[str, Any]:
            r, i = unit
            if i is None:
                probed = {}
                for t, (name, (x_tr, y_tr, x_te, y_te, k, _aug)) in enumerate(data.items()):
                    # The teacher reads its own encoding; the target images are in the target's.
                    features = _Reencode(teacher, encodings[name], self._teacher_encoding)
                    gen = make_generator(derive_seed(self.seed, PROBE_STREAM, t, r, 1))
                    probed[name] = linear_probe(features, (x_tr, y_tr), (x_te, y_te), config=cfg.probe,
                                                num_classes=k, generator=gen, device=dev)
                bar.update(1)
                return {"teacher_probe": probed}
            row = rows[i]
            done: dict[str, Any] = {"values": {}, "probes": {}, "finetune_seconds": {}}
            start = time.perf_counter()
            pretrained = row.pretrain(r)
            if pretrained is not None:
                done["pretrain_seconds"] = time.perf_counter() - start
                done["fit"] = self._fit(pretrained, row, synset, heldout, perf)
                done["precision"] = getattr(pretrained, "_precision", None)
            for t, (name, (x_tr, y_tr, x_te, y_te, k, augment)) in enumerate(data.items()):
                # Every row fine-tunes with the set's seeds: same head initialisation, same data order (paired).
                family = ModelFamily(model, in_channels=channels, num_classes=k, image_size=size,
                                     seed=derive_seed(self.seed, FINETUNE_MODEL_STREAM, t), **model_kwargs)
                net = family.build(r, dev)
                if pretrained is not None:
                    transplant_backbone(pretrained, net)
                if cfg.linear_probe:
                    gen = make_generator(derive_seed(self.seed, PROBE_STREAM, t, r))
                    done["probes"][name] = linear_probe(net.embed, (x_tr, y_tr), (x_te, y_te), config=cfg.probe,
                                                        num_classes=k, generator=gen, device=dev)
                start = time.perf_counter()
                ft_perf = cfg.perf.resolve(dev, finetune_workload(x_tr, x_te))
                fast = ft_perf.prepare_model(net)
                label = f"fine-tune {name} {r + 1}/{cfg.num_runs}" + ("" if row.name == "set" else f" ({row.name})")
                train_classifier(fast, x_tr, y_tr, cfg.finetune, augment=augment,
                                 generator=make_generator(derive_seed(self.seed, FINETUNE_STREAM, t, r)),
                                 perf=ft_perf, progress=label if cfg.progress else False)
                done["finetune_seconds"][name] = time.perf_counter() - start
                done["values"][name] = 100.0 * accuracy(fast, x_te, y_te, batch_size=cfg.test_batch_size,
                                                        perf=ft_perf)
            bar.update(1)
            return done

        for (r, i), done in zip(units, self.dist.map(units, run_unit)):
            if i is None:
                for name, v in done["teacher_probe"].items():
                    teacher_probe[name].append(v)
                continue
            row = rows[i]
            if "fit" in done:
                row.seconds.append(done["pretrain_seconds"])
                row.fit.append(done["fit"])
                row.precision = done["precision"]
            for name in targets:
                values[row.name][name].append(done["values"][name])
                if cfg.linear_probe:
                    probes[row.name][name].append(done["probes"][name])
                if row.name == "set":
                    seconds[name].append(done["finetune_seconds"][name])
        bar.close()

        out = {}
        set_row = rows[0]
        for name in targets:
            spec = (target_specs or {}).get(name)
            details: dict[str, Any] = {
                "downstream": name, "model": model, "model_kwargs": model_kwargs, "pretrain": recipe_name,
                "pretrain_epochs": pre[1].epochs if pre is not None else 0,
                "finetune_iterations": cfg.finetune.iterations, "resolution": list(size),
                "downstream_encoding": cfg.downstream_encoding, "train_size": int(x_syn.shape[0]), "seed": self.seed,
                "pretrain_seconds": set_row.seconds, "finetune_seconds": seconds[name],
                "pretrain_precision": set_row.precision, "pretrain_precision_rule": cfg.pretrain_precision,
                "finetune_precision": "bf16" if perf.bf16 else "fp32",
                "finetune_compile_rule": cfg.perf.compile_rule(dev, finetune_workload(data[name][0], data[name][2])),
                "pretrain_compile_rule": cfg.perf.compile_rule(dev, pre_work) if pre_work is not None else None,
            }
            warnings: list[str] = []
            if cfg.linear_probe:
                details["linear_probe"] = probes["set"][name]
            leak = shares_labels(source, spec)
            details["label_leak"] = bool(set_row.uses_labels and leak) if leak is not None else None
            if details["label_leak"]:
                warnings.append(f"the set's pre-training used labels of {source.label()}, which the target {name} "
                                f"shares: not a transfer measurement (use a class split, e.g. dataset.classes)")
            if set_row.fit:
                details["pretrain_fit"] = self._summarise_fit(set_row.fit)
                if not details["pretrain_fit"]["fitted"]:
                    warnings.append(f"pre-training did not fit the set's targets ({details['pretrain_fit']['what']}):"
                                    f" this score measures an under-trained network")
            controls: dict[str, Any] = {}
            for row in rows[1:]:
                res = EvalResult("accuracy", values[row.name][name])
                entry: dict[str, Any] = {**res.to_dict(), "what": _CONTROL_WHAT[row.name]}
                entry["label_leak"] = bool(row.uses_labels and leak) if leak is not None else None
                if cfg.linear_probe:
                    entry["linear_probe"] = probes[row.name][name]
                if row.fit:
                    entry["pretrain_fit"] = self._summarise_fit(row.fit)
                    if not entry["pretrain_fit"]["fitted"]:
                        warnings.append(f"control {row.name}'s pre-training did not fit its targets "
                                        f"({entry['pretrain_fit']['what']})")
                    entry["pretrain_seconds"] = row.seconds
                    entry["pretrain_precision"] = row.precision
                if entry["label_leak"]:
                    warnings.append(f"control {row.name} pre-trained with labels the target {name} shares")
                controls[row.name] = entry
            if probe_teacher:
                res = EvalResult("accuracy", teacher_probe[name])
                controls["teacher_probe"] = {**res.to_dict(), "what": _CONTROL_WHAT["teacher_probe"],
                                             "teacher": self._teacher_path}
            for control, why in skipped.items():
                controls[control] = {"skipped": why}
            if controls:
                details["controls"] = controls
                mean = sum(values["set"][name]) / len(values["set"][name])
                details["gain_over_controls"] = {c: mean - v["mean"] for c, v in controls.items() if "mean" in v}
            if warnings:
                details["warnings"] = warnings
            out[name] = EvalResult("accuracy", values["set"][name], details)
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

    def _teacher(self, meta: Mapping[str, Any], set_encoding: Encoding) -> tuple[nn.Module | None, str]:
        """The teacher for the teacher-based controls: ``config.teacher``, else the set's recorded one."""
        path = self.config.teacher or (meta.get("teacher") or {}).get("path")
        self._teacher_path = path
        if not path:
            return None, "no teacher: the set records none (meta['teacher']) and evaluator.teacher is unset"
        # The teacher file format is KRR-ST's (ddistill.teacher); imported lazily so other sets never need it.
        from synthesizers.krr_st.teacher import load_teacher

        try:
            teacher, info = load_teacher(path, device=self.device)
        except FileNotFoundError:
            return None, f"the teacher file {path} does not exist"
        self._teacher_encoding = info.encoding
        return teacher, ""

    def _random_row(self, control: str, real: RealData, n: int, teacher: nn.Module | None, model: str,
                    model_kwargs: dict[str, Any], perf: PerfConfig) -> _Row:
        """``n`` class-balanced random real source images, drawn afresh per run, pre-trained with their source labels
        (DC recipe) or the teacher's representations (KRR-ST's recipe), for the set's number of epochs."""
        k = real.num_classes
        counts = [n // k + (1 if c < n % k else 0) for c in range(k)]
        kind = "hard" if control == "random_subset" else "regression"
        base = PRETRAIN_RECIPES[kind]
        recipe = (base, base.recipe(self.config.pretrain_recipe))  # the same overrides (epochs) as the set's
        stream = CONTROLS.index(control)

        def pretrain(r: int) -> nn.Module:
            gen = make_generator(derive_seed(self.seed, SUBSET_STREAM, r))  # both controls share each run's draw
            idx = torch.cat([real.sample_indices(c, m, gen, strict=True) for c, m in enumerate(counts) if m])
            x = real.x[idx]
            if kind == "hard":
                y = real.y[idx]
            else:
                to_teacher = _Reencode(teacher, real.encoding, self._teacher_encoding)
                y = predict(to_teacher, x, device=self.device)
            return self._pretrain(x, y, recipe, model, model_kwargs, perf, r, stream=stream)

        return _Row(control, pretrain, uses_labels=kind == "hard")

    def _heldout(self, source_test: ImageData | None, encoding: Encoding,
                 teacher: nn.Module | None) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """``(x, hard labels, teacher targets or None)`` of the first ``fit_heldout`` source test images."""
        if source_test is None:
            return None
        m = min(self.config.fit_heldout, len(source_test))
        x = encoding.encode(source_test.x[:m]).to(self.device)
        targets = None
        if teacher is not None:
            targets = predict(_Reencode(teacher, encoding, self._teacher_encoding), x, device=self.device)
        return x, source_test.y[:m].to(self.device), targets

    def _fit(self, net: nn.Module, row: _Row, synset: SyntheticSet, heldout: Any, perf: PerfConfig) -> dict[str, Any]:
        """How well the pre-trained ``net`` fits its own training targets, and held-out ones of the same kind."""
        x, y = getattr(net, "_fit_data")
        out: dict[str, Any] = {}
        if y.dim() == 2 and not getattr(net, "_fit_classes", False):
            pred = predict(net, x, device=self.device)
            out.update(_regression_fit(pred, y.to(pred.device), "train"))
            if heldout is not None and heldout[2] is not None and heldout[2].shape[1] == y.shape[1]:
                out.update(_regression_fit(predict(net, heldout[0], device=self.device), heldout[2], "heldout"))
        else:
            labels = y if y.dim() == 1 else y.argmax(1)
            out["train_accuracy"] = 100.0 * accuracy(net, x, labels.to(x.device), perf=perf)
            if heldout is not None and int(heldout[1].max()) < net.classifier.out_features:
                out["heldout_accuracy"] = 100.0 * accuracy(net, heldout[0], heldout[1], perf=perf)
        return out

    def _summarise_fit(self, fits: list[dict[str, Any]]) -> dict[str, Any]:
        """The mean of each fit number over runs, and whether the pre-training fitted its own training targets:
        R² >= ``min_fit_r2`` (regression) or accuracy >= ``min_fit_accuracy`` (labels), in the mean over runs."""
        keys = sorted({k for f in fits for k in f})
        out: dict[str, Any] = {k: sum(f[k] for f in fits if k in f) / sum(1 for f in fits if k in f) for k in keys}
        if "train_r2" in out:
            out["fitted"] = out["train_r2"] >= self.config.min_fit_r2
            out["what"] = f"train R² {out['train_r2']:.3f}, threshold {self.config.min_fit_r2}"
        else:
            out["fitted"] = out["train_accuracy"] >= self.config.min_fit_accuracy
            out["what"] = f"train accuracy {out['train_accuracy']:.1f} %, threshold {self.config.min_fit_accuracy} %"
        out["runs"] = fits
        return out

    def _pretrain(self, x: Tensor, y: Tensor, pre: tuple[PretrainRecipe, TrainRecipe], model: str,
                  model_kwargs: dict[str, Any], perf: PerfConfig, run: int, *, stream: int = 0) -> nn.Module:
        """A fresh network trained on ``(x, y)`` with ``recipe``; returns the un-compiled module. ``stream`` 0 is the
        set (the seeds every earlier result used); controls pass their own."""
        cfg, dev = self.config, self.device
        kind, recipe = pre
        x, y = x.to(dev), y.to(dev)
        if kind.criterion == "hard":
            if y.dim() != 1:
                raise ValueError(f"pretrain recipe 'hard' needs (N,) class labels, the set's y has shape "
                                 f"{tuple(y.shape)}")
            out_dim = int(max(int(y.max()) + 1, 1))
        else:
            if y.dim() != 2:
                raise ValueError(f"pretrain recipe '{kind.criterion}' needs (N, D) float targets, the set's y has "
                                 f"shape {tuple(y.shape)}")
            out_dim, y = int(y.shape[1]), y.float()
        extra = (stream,) if stream else ()
        family = ModelFamily(model, in_channels=int(x.shape[1]), num_classes=out_dim, image_size=tuple(x.shape[2:]),
                             seed=derive_seed(self.seed, PRETRAIN_MODEL_STREAM, *extra), **model_kwargs)
        net = family.build(run, dev)
        augment = build_augment(recipe.augment, self._dataset)
        generator = make_generator(derive_seed(self.seed, PRETRAIN_STREAM, run, *extra))
        # Regression targets are not fitted under bf16 unless asked for (pretrain_precision).
        pre_perf = pretrain_perf(perf, kind.criterion, cfg.pretrain_precision)
        train_classifier(pre_perf.prepare_model(net), x, y, recipe, augment=augment,
                         criterion=criterion_for(kind.criterion), generator=generator, perf=pre_perf,
                         progress=f"pre-train {run + 1}/{cfg.num_runs}" if cfg.progress else False)
        net._fit_data = (x, y)  # read by _fit, dropped with the network
        net._fit_classes = kind.criterion != "regression"
        net._precision = "bf16" if pre_perf.bf16 else "fp32"
        return net


_CONTROL_WHAT = {
    "no_pretraining": "the same network fine-tuned from its random initialisation, same fine-tuning seeds",
    "random_subset": "as many random real source images (class-balanced, new draw per run) pre-trained with their "
                     "source labels (DC recipe, the set's epochs), same fine-tuning seeds",
    "random_teacher_targets": "the same random real source images with the teacher's representations as regression "
                              "targets (KRR-ST's initialisation), same fine-tuning seeds",
    "teacher_probe": "linear probe of the teacher's frozen features on the target (the ceiling)",
}


def _regression_fit(pred: Tensor, target: Tensor, split: str) -> dict[str, float]:
    """MSE (elementwise mean, the training loss) and R² = 1 - MSE / Var(target) (per-dimension variance, pooled)."""
    mse = float(F.mse_loss(pred.float(), target.float()))
    var = float(((target.float() - target.float().mean(0)) ** 2).mean())
    return {f"{split}_mse": mse, f"{split}_r2": 1.0 - mse / var if var > 0 else float("nan")}




class _Reencode(nn.Module):
    """Feeds a network trained on another encoding: ``net(to.encode(frm.decode(x)))`` (identity when equal)."""

    def __init__(self, net: nn.Module, frm: Encoding, to: Encoding) -> None:
        super().__init__()
        self.net, self.frm, self.to_enc = net, frm, to
        self.same = frm.to_meta() == to.to_meta()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x if self.same else self.to_enc.encode(self.frm.decode(x)))
