"""Evaluators: score synthetic sets by training fresh models on them (registration only here)."""
from __future__ import annotations

from .base import EVALUATORS, EvalResult, Evaluator
from .classifier import ClassifierConfig, ClassifierEvaluator, evaluate_pool
from .continual import ContinualConfig, ContinualEvaluator
from .graph import GraphEvalConfig, GraphEvaluator
from .nas import NASConfig, NASEvaluator
from .transfer import TransferConfig, TransferEvaluator

__all__ = ["EVALUATORS", "EvalResult", "Evaluator", "ClassifierConfig", "ClassifierEvaluator", "evaluate_pool",
           "ContinualConfig", "ContinualEvaluator", "GraphEvalConfig", "GraphEvaluator", "NASConfig", "NASEvaluator",
           "TransferConfig", "TransferEvaluator"]
