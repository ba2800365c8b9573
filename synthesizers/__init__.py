"""Synthesizers: turn a real training set into a SyntheticSet (registration only here)."""
from __future__ import annotations

from . import datadam, dm, full, herding, kcenter, krr_st, mirage, mtt, random  # noqa: F401  (registers)
from .base import SYNTHESIZERS, GradientConfig, GradientSynthesizer, Synthesizer

__all__ = ["SYNTHESIZERS", "GradientConfig", "GradientSynthesizer", "Synthesizer"]
