"""Support-threshold schedules for Mirage: try several thresholds, keep the one whose GNN validates best.

The official TU scripts (``NCI1/graph-nci-finalize-reduce-curr.py``, ``IMDB-B/graph-TUD_finalize-curr.py``) walk a
schedule of per-class support thresholds (NCI1: {460, 590} lowered by 20 per step, 2 steps; IMDB-B: {14, 15} lowered
by 1, 10 steps); at every step they mine, train 10 GNNs, and keep the step whose top-5 mean *validation* ROC-AUC is
the highest (a strict ``>``: ties keep the earlier step). Here the schedule is an explicit list
(``MirageConfig.support_schedule``) and the selection is configured by :class:`SupportSelection`:

- **where it validates** (:data:`SELECTION_SPLITS`): ``train_holdout`` (default) holds a stratified fraction of the
  *training* graphs out, mines every candidate on the rest and scores it on the held-out graphs, so nothing outside
  the training split is read; the shipped set is then mined on all training graphs at the chosen threshold.
  ``val`` is the official behaviour: candidates are mined on all training graphs and scored on the dataset's
  validation split. The test split is never read by either.
- **how it scores** (:data:`SUPPORT_SCORERS`): a scorer trains GNNs on a candidate and returns a validation score.
  The ``gnn`` scorer is registered by :mod:`evaluators.graph` (the graph evaluator's protocol; importing
  ``evaluators`` registers it), which keeps this package free of evaluator imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ddistill.data.graph import GraphDataset, stratified_split
from ddistill.registry import Registry

#: ``split(real, y, fraction, seed) -> (indices of the training graphs to mine, graphs to validate on, description)``
SELECTION_SPLITS = Registry("support selection split")
#: ``scorer(candidate SyntheticSet, GraphDataset(val = test = the selection graphs), kwargs, seed) -> {"score", ...}``
SUPPORT_SCORERS = Registry("support scorer")


@dataclass
class SupportSelection:
    """How a ``support_schedule`` is resolved to one threshold.

    Args:
        split: where candidates are validated (:data:`SELECTION_SPLITS`): ``train_holdout`` (a stratified
            ``holdout_fraction`` of the training graphs, drawn with the synthesizer's seed; candidates are mined on
            the other training graphs) or ``val`` (the dataset's validation split, as the official scripts).
        holdout_fraction: share of every class's training graphs held out by ``train_holdout``.
        scorer: registry name in :data:`SUPPORT_SCORERS` (``gnn``: the graph evaluator, registered by
            :mod:`evaluators.graph`).
        scorer_kwargs: the scorer's settings; for ``gnn`` a graph-evaluator config (``model``, ``train``,
            ``num_runs``, ``top_k``, ``metric``, ...; controls are always off). Its score is the mean best-epoch
            validation score of the reported runs (official: top 5 of 10 runs).
    """

    split: str = "train_holdout"
    holdout_fraction: float = 0.1
    scorer: str = "gnn"
    scorer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SELECTION_SPLITS:
            raise ValueError(f"selection.split {self.split!r} is unknown; choose from {SELECTION_SPLITS.names()}")
        if not 0.0 < float(self.holdout_fraction) < 1.0:
            raise ValueError(f"selection.holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")


@SELECTION_SPLITS.register("train_holdout")
def _train_holdout(real: GraphDataset, y: np.ndarray, fraction: float, seed: int
                   ) -> tuple[np.ndarray, list[Any], str]:
    """A stratified share of the training graphs (``stratified_split``'s numpy generator seeded with ``seed``)."""
    mine, held, _ = stratified_split(y, (1.0 - fraction, fraction, 0.0), seed)
    if held.size == 0:
        raise ValueError(f"selection.holdout_fraction {fraction} holds out no training graph of {y.size}; raise it")
    short = [int(c) for c in np.unique(y) if not (y[mine] == c).any()]
    if short:
        raise ValueError(f"selection.holdout_fraction {fraction} leaves classes {short} no graph to mine; lower it")
    return mine, [real.train[i] for i in held.tolist()], (f"stratified {fraction:g} of the training graphs held out "
                                                          f"(numpy seed {seed}); candidates mined on the rest")


@SELECTION_SPLITS.register("val")
def _val(real: GraphDataset, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, list[Any], str]:
    """The dataset's validation split; candidates are mined on every training graph (the official scripts)."""
    del fraction, seed
    if not real.val:
        raise ValueError("selection.split 'val' needs a validation split; this dataset has none (use train_holdout)")
    return np.arange(y.size), list(real.val), "the dataset's validation split; candidates mined on all training graphs"


def subset_thresholds(full_counts: Mapping[int, int], full_sizes: Mapping[int, int],
                      subset_sizes: Mapping[int, int]) -> dict[int, int]:
    """Absolute per-class thresholds for mining a subset of the training graphs: the same share of each class,
    ``ceil(theta_c * m_c / n_c)`` (at least 1), so a count meant for n_c graphs asks as much of m_c graphs."""
    return {c: max(1, math.ceil(full_counts[c] * subset_sizes[c] / full_sizes[c] - 1e-9)) for c in full_counts}


def get_scorer(name: str) -> Callable[..., dict[str, Any]]:
    """The registered scorer; a missing one names the choices and where ``gnn`` comes from."""
    if name not in SUPPORT_SCORERS:
        raise ValueError(f"selection.scorer {name!r} is not registered; choose from {SUPPORT_SCORERS.names()} "
                         f"(import evaluators to register 'gnn')")
    return SUPPORT_SCORERS.get(name)


def pick_best(scores: Sequence[float | None]) -> int:
    """Index of the highest finite score; ties keep the earlier entry (the official strict ``>``)."""
    best, best_score = -1, -math.inf
    for i, s in enumerate(scores):
        if s is not None and math.isfinite(s) and s > best_score:
            best, best_score = i, s
    if best < 0:
        raise ValueError("no support_schedule entry could be scored (every one failed or scored NaN)")
    return best


def describe_tried(entries: Sequence[Mapping[str, Any]]) -> str:
    """One line of every threshold a schedule tried (``meta["support_schedule"]["entries"]``): its bytes and
    validation score, or that it was infeasible."""
    return "; ".join(f"{e['support']}: " + (f"{e['distilled_bytes']:,} B, validation {e['validation_score']:.2f}"
                                             if "validation_score" in e else "infeasible") for e in entries)


__all__ = ["SELECTION_SPLITS", "SUPPORT_SCORERS", "SupportSelection", "describe_tried", "get_scorer", "pick_best",
           "subset_thresholds"]
