"""Evaluator interface: train fresh models on a synthetic set, report the papers' metric."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

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
        return f"{self.metric} {self.mean:.2f} ± {self.std:.2f} over {len(self.values)} models"


def resolve_model(model: str | None, model_kwargs: dict[str, Any] | None, meta: dict[str, Any]) -> tuple[str, dict]:
    """The evaluation network: the configured one, else the one the set was distilled with (``eval_model``),
    else ``convnet``. Recorded kwargs apply only to the recorded network (not to a cross-architecture one)."""
    recorded = meta.get("eval_model") or "convnet"
    name = model or recorded
    if model_kwargs is not None:
        return name, dict(model_kwargs)
    return name, dict(meta.get("eval_model_kwargs") or {}) if name == recorded else {}


class Evaluator(ABC):
    """Trains fresh models on a :class:`SyntheticSet` and tests them on real data.

    Subclasses declare ``Config`` (a dataclass of their hyper-parameters) and implement :meth:`evaluate`.
    """

    Config: ClassVar[type]

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.device = torch.device(device)
        self.seed = int(seed)

    @abstractmethod
    def evaluate(self, synset: SyntheticSet, test: Any) -> EvalResult:
        """Scores ``synset`` against the real test data ``test``."""
