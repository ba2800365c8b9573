"""The evaluator contract: train fresh models on a synthetic set, score them on real data, report the papers' metric.

An evaluator declares what real data it reads (:meth:`Evaluator.needs`, an :class:`~ddistill.data.EvalNeeds`) and
implements :meth:`Evaluator.run`. Callers build the data once with :func:`ddistill.data.load_eval_data` and call
:meth:`Evaluator.evaluate`, which checks the set before running.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch

from ddistill.config import config_from_preset
from ddistill.data import Encoding, EvalData, EvalNeeds, ImageData
from ddistill.distributed import Distributed
from ddistill.registry import Registry
from ddistill.synset import SyntheticSet

EVALUATORS = Registry("evaluator")


@dataclass
class EvalResult:
    """Per-model scores of one evaluation.

    Args:
        metric: what ``values`` measure ("accuracy" in %, "roc_auc", ...).
        values: one score per freshly trained model.
        details: anything else worth keeping (model name, epochs, seconds, per-stage curves, ...).
    """

    metric: str
    values: list[float]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Population std (ddof = 0), as ``np.std`` in the DC/DM/MTT/DataDAM code."""
        if not self.values:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / len(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "mean": self.mean, "std": self.std, "values": self.values, **self.details}

    def __str__(self) -> str:
        # What one value is: a freshly trained model, unless details say otherwise (a NAS ranking, a DD-Ranking run).
        n, unit = len(self.values), self.details.get("value_unit", "model")
        return f"{self.metric} {self.mean:.2f} ± {self.std:.2f} over {n} {unit}{'' if n == 1 else 's'}"

    def report(self) -> str:
        """The score, then one indented line per component of a composite score (``details["components"]``), per
        control (``details["controls"]``: ``{name: {"mean", "std"?, "unit"?, "what"?}}``), per reported-as habit and
        per warning, so a score is never printed without its controls."""
        lines = [str(self)]

        def value(c: Mapping[str, Any]) -> str:
            spread = f" ± {c['std']:.2f}" if isinstance(c.get("std"), (int, float)) else ""
            return f"{c['mean']:.2f}{spread}" + (f" {c['unit']}" if c.get("unit") else "")

        # The parts a composite score is made of (DD-Ranking's LRS: accuracies, HLR, IOR), in their own units.
        for name, c in self.details.get("components", {}).items():
            if isinstance(c, Mapping) and isinstance(c.get("mean"), (int, float)):
                lines.append(f"  {name}: {value(c)}")
        for name, c in self.details.get("controls", {}).items():
            if isinstance(c, Mapping) and isinstance(c.get("mean"), (int, float)):
                lines.append(f"  control {name}: {value(c)}")
        for name, r in self.details.get("reported_as", {}).items():
            number = r.get("mean", r.get("value"))
            if isinstance(number, (int, float)):
                lines.append(f"  reported as {name} (not the honest score): {number:.2f}")
        for warning in self.details.get("warnings", []):
            lines.append(f"  warning: {warning}")
        return "\n".join(lines)


def close_or_below(mean: float, std: float, control: Mapping[str, Any]) -> str | None:
    """"below" / "within one std of" when ``mean`` does not exceed the control's mean by more than one std (the larger
    of the set's std and the control's), else None."""
    c_mean = control.get("mean")
    if not isinstance(c_mean, (int, float)) or math.isnan(c_mean) or math.isnan(mean):
        return None
    c_std = control.get("std") if isinstance(control.get("std"), (int, float)) else 0.0
    tol = max(std if not math.isnan(std) else 0.0, c_std if not math.isnan(c_std) else 0.0)
    if mean < c_mean - tol:
        return "below"
    if mean <= c_mean + tol:
        return "within one std of"
    return None


def random_subset_warnings(metric: str, mean: float, std: float, controls: Mapping[str, Any]) -> list[str]:
    """A warning when the set's score does not beat its ``random_subset`` control (real data of the set's size, same
    networks, seeds and budget) by more than one std: what the set adds over picking real images at random is then
    not measured. [] when it does, or when there is no such control."""
    control = controls.get("random_subset")
    verdict = close_or_below(mean, std, control) if isinstance(control, Mapping) else None
    if verdict is None:
        return []
    return [f"the set's {metric} {mean:.2f} is {verdict} its random real subset of the same size "
            f"({control['mean']:.2f}): it does not beat picking real images at random"]


def resolve_model(model: str | None, model_kwargs: dict[str, Any] | None, meta: dict[str, Any]) -> tuple[str, dict]:
    """The evaluation network: the configured one, else the one the set was distilled with (``eval_model``),
    else ``convnet``. Recorded kwargs apply only to the recorded network (not to a cross-architecture one)."""
    recorded = meta.get("eval_model") or "convnet"
    name = model or recorded
    if model_kwargs is not None:
        return name, dict(model_kwargs)
    return name, dict(meta.get("eval_model_kwargs") or {}) if name == recorded else {}


def record_config(config: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (an evaluator config as a dict) as an evaluation record's key hashes it: in every (nested) block that
    names ``model`` and ``model_kwargs``, a pair that resolves to the set's own network (what :func:`resolve_model`
    gives with neither set) is hashed as ``None, None``, "the set's own network". An evaluation that names that
    network and one that leaves it to the set train the same networks, so they are one record (``ddistill distill``'s
    final evaluation names it; a later ``ddistill evaluate`` need not)."""
    own = resolve_model(None, None, dict(meta))

    def walk(block: Any) -> Any:
        if isinstance(block, Mapping):
            out = {k: walk(v) for k, v in block.items()}
            if "model" in out and "model_kwargs" in out and (out["model"] is None or isinstance(out["model"], str)):
                kwargs = out["model_kwargs"]
                if (kwargs is None or isinstance(kwargs, Mapping)) and resolve_model(
                        out["model"], None if kwargs is None else dict(kwargs), dict(meta)) == own:
                    out["model"], out["model_kwargs"] = None, None
            return out
        if isinstance(block, list):
            return [walk(v) for v in block]
        return block

    return walk(config)


def check_same_classes(synset: SyntheticSet, test: ImageData) -> None:
    """Raises a ValueError when the test split is not a test of the set's classes: another class count or other
    class names, labels outside [0, K), or classes with no test image (an accuracy would be reported over the wrong
    task)."""
    k_set, k_test = int(synset.meta["num_classes"]), int(test.info.num_classes)
    name = test.info.name
    if k_set != k_test:
        raise ValueError(f"the set has {k_set} classes but the test split of '{name}' has {k_test}: wrong dataset "
                         f"for this set?")
    names = list(synset.meta.get("class_names") or [])
    if names and test.info.class_names and names != list(test.info.class_names):
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(names, test.info.class_names)) if a != b][:3]
        raise ValueError(f"the set's class names differ from the test split of '{name}' (index, set, test: {diff}); "
                         f"the classes are not the same or not in the same order")
    y = test.y
    if y.numel() == 0:
        raise ValueError(f"the test split of '{name}' is empty")
    if int(y.min()) < 0 or int(y.max()) >= k_test:
        raise ValueError(f"test labels of '{name}' lie in [{int(y.min())}, {int(y.max())}], outside [0, {k_test})")
    missing = sorted(set(range(k_test)) - set(y.unique().tolist()))
    if missing:
        raise ValueError(f"the test split of '{name}' has no images of classes {missing[:10]}"
                         + ("..." if len(missing) > 10 else ""))


def as_eval_data(data: Any) -> EvalData:
    """``data`` as an :class:`EvalData`: an EvalData is returned as is; a bare image test split or graph dataset is
    wrapped (a convenience for library use: ``evaluate(synset, test)``)."""
    if isinstance(data, EvalData):
        return data
    if isinstance(data, ImageData):
        return EvalData(test=data)
    if data is not None and hasattr(data, "train") and hasattr(data, "val") and hasattr(data, "info"):
        return EvalData(graphs=data)
    raise TypeError(f"evaluate() takes an EvalData (ddistill.data.load_eval_data), an image test split or a graph "
                    f"dataset, not {type(data).__name__}")


class Evaluator(ABC):
    """Trains fresh models on a :class:`SyntheticSet` and tests them on real data.

    Subclasses declare ``Config`` (a dataclass of their hyper-parameters), implement :meth:`run`, and override
    :meth:`needs` when they read more than the test split.
    """

    Config: ClassVar[type]
    #: The registry key (set by the ``@EVALUATORS.register(...)`` decorator).
    name: ClassVar[str] = ""
    #: Named configs (e.g. an official per-method evaluation recipe), see :meth:`config_from_preset`.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", seed: int = 0,
                 dist: Distributed | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self.device = torch.device(device)
        self.seed = int(seed)
        #: Under ``torchrun``: evaluators that train several models spread them over the ranks (each model's
        #: randomness depends only on the seed and its index, so the numbers are those of one process).
        self.dist = dist if dist is not None else Distributed.current()

    @classmethod
    def config_from_preset(cls, preset: str | None = None, **overrides: Any) -> Any:
        """``Config`` filled from the named preset, then ``overrides`` (strict: unknown keys raise)."""
        return config_from_preset(cls.Config, cls.presets, preset, overrides, where=f"{cls.name} evaluator config")

    @classmethod
    def key_config(cls, config: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
        """The config (as a dict) that an evaluation record's key hashes: :func:`record_config`. An evaluator whose
        config gained a field after records existed leaves it out here while it is unused, so older records keep
        their keys."""
        return record_config(config, meta)

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        """The real data :meth:`run` reads for a set with metadata ``meta`` (default: the test split). Only
        ``meta["data"]`` (the set's source data) may be read: during a distillation the set does not exist yet."""
        return EvalNeeds(test=True)

    def evaluate(self, synset: SyntheticSet, data: Any) -> EvalResult:
        """Scores ``synset`` against the real data ``data`` (an :class:`EvalData`; a bare test split is accepted).

        The set is validated first (a malformed or empty set is an error, never a score)."""
        data = as_eval_data(data)
        synset.validate()
        if len(synset) == 0:
            raise ValueError("the set holds no samples: there is nothing to train on")
        return self.run(synset, data)

    @abstractmethod
    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        """The evaluation itself."""

    # -- helpers ---------------------------------------------------------------------------------
    def encoded_test(self, synset: SyntheticSet, data: EvalData) -> tuple[torch.Tensor, torch.Tensor, Encoding]:
        """The test split encoded exactly like the set (mean/std, ZCA), on the evaluator's device.

        Shape: (M, C, H, W) float32, (M,) int64.
        """
        test = data.require("test", self.name)
        encoding = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
        if tuple(encoding.shape) != (test.info.in_channels, *test.info.image_size):
            raise ValueError(f"the set's images are {tuple(encoding.shape)} but the test data is "
                             f"{(test.info.in_channels, *test.info.image_size)}: wrong dataset for this set?")
        check_same_classes(synset, test)
        return encoding.encode(test.x).to(self.device), test.y.to(self.device), encoding

    def across(self, models: Sequence[str], synset: SyntheticSet, data: Any) -> dict[str, EvalResult]:
        """Cross-architecture evaluation: the same set scored with each network in ``models`` (each with its own
        defaults), for evaluators whose config has a ``model`` field."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        if "model" not in fields:
            raise ValueError(f"the {self.name} evaluator has no 'model' setting; cross-architecture pools need one")
        out = {}
        for name in models:
            changes: dict[str, Any] = {"model": name}
            if "model_kwargs" in fields:
                changes["model_kwargs"] = None
            out[name] = type(self)(dataclasses.replace(self.config, **changes), device=self.device,
                                   seed=self.seed, dist=self.dist).evaluate(synset, data)
        return out
