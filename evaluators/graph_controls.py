"""Controls of the graph evaluator: what a graph set's score must beat before it means anything.

A GNN trained with a sum readout (and, on NCI1, the official weight decay of 1e2) can score well above chance from the
number of nodes alone: a bigger graph sums more node embeddings. These controls are scored on the same real splits and
with the same metric as the set, so that a table never shows a graph set's score without them:

- **trivial features** (``num_nodes``, ``num_edges``, ``edge_density``): one number per graph. ROC-AUC of two
  classes ranks the test graphs by the raw feature, its sign chosen on the real *training* graphs; other metrics
  (accuracy, multi-class ROC-AUC) use a logistic regression on that one standardised feature, fitted on the real
  training graphs. Deterministic: no seed.
- **label histogram** (``label_histogram``): a logistic regression on the counts of every node feature value (and edge
  feature value) of a graph, plus its node and edge counts, fitted on the real training graphs.
- **size-binned ROC-AUC**: a model's test ROC-AUC within node-count quantile bins of the test split (mean of the
  within-bin AUCs weighted by the graphs of each bin; bins holding one class are skipped and counted), so a model
  that only learned "bigger graph = class 1" drops to 50.

The untrained network and the random-graphs control train GNNs and live in :mod:`evaluators.graph`; this module holds
the features, the tiny logistic regression, the AUCs, the random draw and the warnings. Everything here is numpy /
torch (float64, zero initialisation, full-batch L-BFGS), so a control is a function of the data alone.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from ddistill.data.graph import GraphPack, pack_graph_bytes
from ddistill.data.graph.discretise import simple_undirected

from .base import close_or_below

#: One-number-per-graph controls (see :func:`size_features`).
SIZE_FEATURES = ("num_nodes", "num_edges", "edge_density")
#: Controls that train no network.
TRIVIAL_CONTROLS = (*SIZE_FEATURES, "label_histogram")
#: Every control of the graph evaluator (all run by default), and those that need no extra training.
CONTROLS = (*TRIVIAL_CONTROLS, "untrained", "size_binned", "random_graphs")
CHEAP_CONTROLS = (*TRIVIAL_CONTROLS, "untrained", "size_binned")

#: L2 penalty of the control's logistic regression (on the mean loss, standardised features).
LOGISTIC_L2 = 1e-3

WHAT = {
    "num_nodes": "number of nodes as the only feature",
    "num_edges": "number of undirected edges (self-loops and duplicates dropped) as the only feature",
    "edge_density": "edge density 2m / (n (n - 1)) as the only feature (0 for graphs of one node)",
    "label_histogram": "logistic regression on the counts of every node (and edge) feature value plus node and edge "
                       "counts, fitted on the real training graphs",
}
ONE_FEATURE_HOW = ("ROC-AUC of two classes: the raw feature ranks the test graphs, its sign chosen on the real "
                   "training graphs; other metrics: logistic regression on the standardised feature, fitted on the "
                   "real training graphs")


# --------------------------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------------------------
def undirected_edge_counts(pack: GraphPack) -> np.ndarray:
    """(G,) distinct undirected edges {u, v}, u != v, of every graph (one direction or both may be stored)."""
    a, _, _ = simple_undirected(pack.edge_index, pack.num_nodes)
    graph_of = pack.batch().cpu().numpy()
    return np.bincount(graph_of[a], minlength=pack.num_graphs).astype(np.float64)


def size_features(pack: GraphPack) -> dict[str, np.ndarray]:
    """``{num_nodes, num_edges, edge_density}``, each (G,) float64."""
    n = (pack.ptr[1:] - pack.ptr[:-1]).cpu().numpy().astype(np.float64)
    m = undirected_edge_counts(pack)
    pairs = n * (n - 1) / 2
    density = np.divide(m, pairs, out=np.zeros_like(m), where=pairs > 0)
    return {"num_nodes": n, "num_edges": m, "edge_density": density}


def _value_counts(values: Tensor | None, owner: Tensor, num_graphs: int,
                  cardinalities: Sequence[int] | None) -> np.ndarray:
    """Per-graph sums of float features, or per-graph counts of every value of every integer column.

    Shape: values (R, F), owner (R,) graph index -> (G, F) or (G, sum(cardinalities)).
    """
    if values is None:
        return np.zeros((num_graphs, 0))
    owner = owner.cpu()
    values = values.cpu().reshape(values.shape[0], -1)
    if values.is_floating_point():
        out = torch.zeros(num_graphs, values.shape[1], dtype=torch.float64)
        out.index_add_(0, owner, values.double())
        return out.numpy()
    cards = list(cardinalities or [])
    if len(cards) != values.shape[1]:
        raise ValueError(f"integer features with {values.shape[1]} columns but {len(cards)} cardinalities")
    blocks = []
    for j, card in enumerate(cards):
        # Values outside the vocabulary share the last bin, as the GNN's categorical encoder clamps them.
        col = values[:, j].long().clamp(0, int(card) - 1)
        counts = torch.zeros(num_graphs * int(card), dtype=torch.float64)
        counts.index_add_(0, owner * int(card) + col, torch.ones(col.numel(), dtype=torch.float64))
        blocks.append(counts.reshape(num_graphs, int(card)).numpy())
    return np.concatenate(blocks, 1) if blocks else np.zeros((num_graphs, 0))


def _cards(spec: Mapping[str, Any] | None) -> list[int] | None:
    return list(spec["cardinalities"]) if spec and spec.get("kind") == "categorical" else None


def label_histogram(pack: GraphPack, node_spec: Mapping[str, Any] | None,
                    edge_spec: Mapping[str, Any] | None) -> np.ndarray:
    """Bag-of-labels features of featurised graphs (the GNN's own inputs): node feature sums (one-hot labels: label
    counts) or per-column value counts (categorical features), the same for edge features (both directions of an edge
    counted), then the node and undirected edge counts. Shape: (G, D) float64."""
    g = pack.num_graphs
    nodes = _value_counts(pack.x, pack.batch(), g, _cards(node_spec))
    edges = _value_counts(pack.edge_attr, pack.edge_batch(), g, _cards(edge_spec))
    size = size_features(pack)
    return np.concatenate([nodes, edges, size["num_nodes"][:, None], size["num_edges"][:, None]], 1)


# --------------------------------------------------------------------------------------------------------------
# a small deterministic logistic regression
# --------------------------------------------------------------------------------------------------------------
def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, *, l2: float = LOGISTIC_L2,
                 max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression (float64, zero start, full-batch L-BFGS, L2 on the weights): deterministic.

    Shape: x (G, D) standardised, y (G,) -> weight (D, K), bias (K,).
    """
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(xt.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def logistic_probs(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int) -> Tensor:
    """Class probabilities of the test rows under a logistic regression fitted on the training rows (features
    standardised with training statistics). Shape: (G_test, K) float64."""
    tr, te = _standardise(train_x, test_x)
    w, b = fit_logistic(tr, train_y, num_classes)
    return torch.softmax(torch.as_tensor(te, dtype=torch.float64) @ w + b, 1)


# --------------------------------------------------------------------------------------------------------------
# ROC-AUC without scikit-learn
# --------------------------------------------------------------------------------------------------------------
def binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC (0..1) of ``score`` for the boolean ``positive`` (Mann-Whitney U, ties count one half); NaN when one
    side is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def class_auc(probs: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC (0..1) of class probabilities: class 1's probability for two classes, the macro mean of one-vs-rest
    AUCs over the classes with both positives and negatives otherwise; NaN when none has."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if probs.shape[1] == 2:
        return binary_auc(probs[:, 1], y == 1)
    aucs = [binary_auc(probs[:, c], y == c) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def size_bins(sizes: np.ndarray, bins: int) -> tuple[np.ndarray, list[float]]:
    """Bin index of every graph by node-count quantiles (interior edges deduplicated; a graph on an edge goes to the
    upper bin) and the interior edges. Shape: sizes (G,) -> (G,) int."""
    qs = np.quantile(np.asarray(sizes, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else []
    edges = np.unique(np.asarray(qs, dtype=np.float64))
    return np.searchsorted(edges, sizes, side="right"), [float(e) for e in edges]


def size_binned_auc(probs: np.ndarray, y: np.ndarray, sizes: np.ndarray, bins: int) -> dict[str, Any]:
    """ROC-AUC (percent) within node-count quantile bins: the mean of the within-bin AUCs weighted by each bin's
    graphs, over the bins holding at least two classes (others skipped and counted). NaN when every bin is skipped."""
    index, edges = size_bins(sizes, bins)
    total, weight, used, skipped, skipped_graphs = 0.0, 0, 0, 0, 0
    for k in np.unique(index):
        member = index == k
        auc = class_auc(probs[member], y[member]) if np.unique(y[member]).size >= 2 else math.nan
        if math.isnan(auc):
            skipped += 1
            skipped_graphs += int(member.sum())
            continue
        used += 1
        total += auc * int(member.sum())
        weight += int(member.sum())
    return {"value": 100.0 * total / weight if weight else math.nan, "edges": edges, "bins_used": used,
            "bins_skipped": skipped, "graphs_skipped": skipped_graphs}


def summarise_binned(per_run: list[dict[str, Any]], overall: list[float], what: str) -> dict[str, Any]:
    """A control entry from per-run :func:`size_binned_auc` results (mean / std over runs whose value is defined)."""
    values = [r["value"] for r in per_run]
    finite = [v for v in values if not math.isnan(v)]
    mean = float(np.mean(finite)) if finite else math.nan
    std = float(np.std(finite)) if finite else math.nan
    first = per_run[0] if per_run else {}
    return {"mean": mean, "std": std, "values": values, "overall_roc_auc": overall,
            "edges": first.get("edges", []), "bins_used": first.get("bins_used", 0),
            "bins_skipped": first.get("bins_skipped", 0), "graphs_skipped": first.get("graphs_skipped", 0),
            "what": what}


# --------------------------------------------------------------------------------------------------------------
# trivial-feature controls
# --------------------------------------------------------------------------------------------------------------
def one_feature_probs(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, num_classes: int,
                      metric: str) -> tuple[Tensor, dict[str, Any]]:
    """Test "probabilities" of a one-feature control under ``metric``, and how they were made.

    ROC-AUC of two classes: class 1's score is the raw (standardised) feature times the sign that gives a training
    AUC >= 0.5 (a monotone squash keeps the ranking); otherwise a logistic regression on the feature.
    """
    if metric == "roc_auc" and num_classes == 2:
        train_auc = binary_auc(f_train, y_train == 1)
        sign = -1.0 if (not math.isnan(train_auc) and train_auc < 0.5) else 1.0
        _, te = _standardise(f_train[:, None], f_test[:, None])
        p1 = torch.sigmoid(torch.as_tensor(sign * te[:, 0], dtype=torch.float64))
        return torch.stack([1 - p1, p1], 1), {"sign": sign, "train_roc_auc": 100.0 * train_auc}
    return logistic_probs(f_train[:, None], y_train, f_test[:, None], num_classes), {"model": "logistic"}


def trivial_controls(names: Sequence[str], train: dict[str, np.ndarray], test: dict[str, np.ndarray],
                     y_train: np.ndarray, y_test: Tensor, num_classes: int,
                     metrics: Mapping[str, Callable[[Tensor, Tensor], float]], main: str) -> dict[str, Any]:
    """Control entries of the trivial features ``names`` (keys of ``train`` / ``test``: (G,) one-feature arrays, or
    (G, D) for ``label_histogram``) under ``metrics`` (name -> metric function; ``main`` is the reported one, the others
    go to ``test_extra``)."""
    out: dict[str, Any] = {}
    for name in names:
        scores: dict[str, float] = {}
        how: dict[str, Any] = {}
        for metric_name, metric in metrics.items():
            if name == "label_histogram":
                probs = logistic_probs(train[name], y_train, test[name], num_classes)
                info: dict[str, Any] = {"model": "logistic", "features": int(train[name].shape[1])}
            else:
                probs, info = one_feature_probs(train[name], y_train, test[name], num_classes, metric_name)
            scores[metric_name] = float(metric(probs.float(), y_test))
            how[metric_name] = info
        value = scores[main]
        out[name] = {"mean": value, "std": 0.0, "values": [value],
                     "test_extra": {k: v for k, v in scores.items() if k != main}, "fit": how,
                     "what": WHAT[name] + ("" if name == "label_histogram" else f"; {ONE_FEATURE_HOW}")
                     + "; deterministic (no seed)"}
    return out


# --------------------------------------------------------------------------------------------------------------
# the random-graphs control's draw
# --------------------------------------------------------------------------------------------------------------
def draw_random_graphs(train: GraphPack, num_classes: int, generator: torch.Generator, *,
                       budget_bytes: int | None = None, per_class: Sequence[int] | None = None) -> Tensor:
    """Indices of random real training graphs: per class, a random order cut at ``budget_bytes // K`` plain-encoding
    bytes (at least one graph; as the ``random_graphs`` synthesizer), or the first ``per_class[c]`` of it."""
    sizes = torch.tensor(pack_graph_bytes(train))
    y = train.y.cpu()
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(y == c).flatten()
        if members.numel() == 0:
            raise ValueError(f"random_graphs control: class {c} has no real training graphs")
        order = members[torch.randperm(members.numel(), generator=generator)]
        if budget_bytes is not None:
            within = torch.nonzero(sizes[order].cumsum(0) <= budget_bytes // num_classes).flatten()
            chosen.append(order[: max(1, within.numel())])
        else:
            chosen.append(order[: max(1, int(per_class[c]))])
    return torch.cat(chosen)


# --------------------------------------------------------------------------------------------------------------
# warnings
# --------------------------------------------------------------------------------------------------------------
def control_warnings(metric: str, mean: float, std: float, controls: Mapping[str, Any]) -> list[str]:
    """Warnings when the set's score does not beat its controls by more than one std: the best size feature (number
    of nodes / edges, edge density), the label-histogram model, the untrained network; and when the set's own models
    rank the test graphs at chance within node-count bins."""
    out = []
    sizes = {n: controls[n] for n in SIZE_FEATURES if isinstance(controls.get(n), Mapping)
             and isinstance(controls[n].get("mean"), (int, float)) and not math.isnan(controls[n]["mean"])}
    if sizes:
        best = max(sizes, key=lambda n: sizes[n]["mean"])
        verdict = close_or_below(mean, std, sizes[best])
        if verdict:
            out.append(f"the set's {metric} {mean:.2f} is {verdict} the {best} score {sizes[best]['mean']:.2f} "
                       f"(no better than a one-number {best} classifier)")
    for name, words in (("label_histogram", "a linear model on node-label counts and size"),
                        ("untrained", "the untrained network (same seeds, epoch 0)")):
        if isinstance(controls.get(name), Mapping):
            verdict = close_or_below(mean, std, controls[name])
            if verdict:
                out.append(f"the set's {metric} {mean:.2f} is {verdict} {words}: {controls[name]['mean']:.2f}")
    binned = controls.get("size_binned")
    if isinstance(binned, Mapping):
        verdict = close_or_below(binned["mean"], binned.get("std", 0.0), {"mean": 50.0, "std": 0.0})
        if verdict:
            out.append(f"within node-count bins the set's models rank the test graphs at or below chance (size-binned "
                       f"ROC-AUC {binned['mean']:.2f} ± {binned.get('std', 0.0):.2f}): the score may come from graph "
                       f"size")
    return out


__all__ = ["CHEAP_CONTROLS", "CONTROLS", "SIZE_FEATURES", "TRIVIAL_CONTROLS", "binary_auc", "class_auc",
           "control_warnings", "draw_random_graphs", "label_histogram", "logistic_probs", "size_binned_auc",
           "size_features", "trivial_controls"]
