"""Synthesizers: turn a real training set into a SyntheticSet. Importing this package registers every method in
:data:`SYNTHESIZERS` (one import line per method, nothing else happens here)."""
from __future__ import annotations

from . import datadam, dm, full, herding, kcenter, krr_st, mirage, mtt, random, random_graphs  # noqa: F401
from ._selection import selection_set
from .base import SYNTHESIZERS, GradientConfig, GradientSynthesizer, LoopConfig, Synthesizer
from .callbacks import Callback, Checkpoint, JSONLLog, PeriodicEval, ProgressBar, StopAfter

__all__ = ["SYNTHESIZERS", "Callback", "Checkpoint", "GradientConfig", "GradientSynthesizer", "JSONLLog",
           "LoopConfig", "PeriodicEval", "ProgressBar", "StopAfter", "Synthesizer", "selection_set"]
