"""Evaluators: score synthetic sets by training fresh models on them. Importing this package registers every
evaluator in :data:`EVALUATORS` (one import line per evaluator, nothing else happens here)."""
from __future__ import annotations

from . import classifier, continual, dd_ranking, graph, nas, transfer  # noqa: F401  (registers)
from .base import EVALUATORS, EvalResult, Evaluator, as_eval_data, resolve_model
from .classifier import ClassifierConfig, ClassifierEvaluator, evaluate_pool
from .continual import ContinualConfig, ContinualEvaluator
from .dd_ranking import DDRankingConfig, DDRankingEvaluator
from .graph import GraphEvalConfig, GraphEvaluator
from .nas import NASConfig, NASEvaluator
from .transfer import TransferConfig, TransferEvaluator

__all__ = ["EVALUATORS", "EvalResult", "Evaluator", "as_eval_data", "resolve_model", "ClassifierConfig",
           "ClassifierEvaluator", "evaluate_pool", "ContinualConfig", "ContinualEvaluator", "GraphEvalConfig",
           "GraphEvaluator", "NASConfig", "NASEvaluator", "TransferConfig", "TransferEvaluator"]
