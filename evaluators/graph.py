"""Evaluation of distilled graph sets (Mirage, Gupta et al., ICLR 2024, and its official
``optimization/train_and_test.py``).

Fresh GNNs are trained on the distilled set only, messages flowing along its edges (tree edges child -> parent for
Mirage tree-sets) and the readout summing over root nodes; every epoch they are scored on the real validation and
test graphs (undirected edges, readout over all nodes). Each run reports its test score at its best validation
score (ties: the later epoch, as the official code); the result is over ``num_runs`` runs, or over the ``top_k``
runs with the best validation scores (the official scripts: 10 runs, top 5). Accuracy for TU datasets, ROC-AUC for
OGB / MoleculeNet, both in percent as in the paper's tables.

Decision threshold: a model trained on Mirage tree-sets sums node embeddings over a few roots, while a real graph
sums over all its nodes, so its logits shift and its accuracy can sit at the majority-class rate while its ROC-AUC
is high. By default (``calibration="val_bias"``) every scored model gets a per-class logit bias fitted on the
validation graphs (:data:`CALIBRATIONS`) before its validation and test predictions are scored; ``"none"`` is the
official behaviour. The majority-class rate of the validation and test graphs is reported beside every score
(``details["majority_rate"]``), and the set's size record (unit, bytes, N, E, F, D, compression ratio) in
``details["size"]``.

Tree-sets are drawn uniformly each epoch by default, which is what the official code does (its
support-proportional sampling is computed and then discarded); ``sampling="support"`` samples proportionally
to support, as the paper describes.

Beside the score, ``details["controls"]`` holds what it must beat (``controls``; see :mod:`evaluators.graph_controls`),
on the same splits and metric: one-number size features (nodes, edges, density) and a label-histogram linear model
fitted on the real training graphs, the same GNNs untrained (epoch 0, the set's own model seeds), random real training
graphs of the set's bytes trained with the set's recipe (opt-in), and the set's ROC-AUC within node-count bins.
``details["warnings"]`` says when the score does not beat them by more than one std. Controls run after the set's own
runs and draw from other seed streams, so they never change the set's numbers.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from ddistill.config import from_dict
from ddistill.data import EvalData, EvalNeeds
from ddistill.data.graph import (Discretiser, GraphDataset, GraphPack, build_discretiser, discretiser_from_state,
                                 graph_size_meta, pack_graph_bytes)
from ddistill.models.gnn import create_gnn
from ddistill.registry import Registry
from ddistill.synset import SyntheticSet
from ddistill.utils.seed import derive_seed, make_generator, seeded_rng
from ddistill.utils.train import TrainRecipe
from synthesizers.mirage.selection import SUPPORT_SCORERS

from .base import EVALUATORS, EvalResult, Evaluator, as_eval_data
from .graph_controls import (CONTROLS, TRIVIAL_CONTROLS, class_auc, control_warnings,
                             draw_random_graphs, label_histogram, size_binned_auc, size_features, summarise_binned,
                             trivial_controls)

#: ``derive_seed`` streams: each run's model initialisation / dropout, its sampling order, and the random-graphs
#: control's draw. The set itself uses (seed, stream, run); the random-graphs control's networks add a trailing 1.
MODEL_STREAM, TRAIN_STREAM, SUBSET_STREAM = 1, 2, 3
RANDOM_GRAPHS_RUN_STREAM = 1
#: Controls that read the real training graphs.
TRAIN_READING_CONTROLS = (*TRIVIAL_CONTROLS, "random_graphs")

SAMPLERS = Registry("graph sampler")
GRAPH_METRICS = Registry("graph metric")
#: ``calibration(val_logits (G, K), val_y (G,)) -> bias (K,)`` added to every logit before scoring.
CALIBRATIONS = Registry("graph calibration")
#: ``timing(epochs, eval_every) -> [(epoch, "before" | "after"), ...]``: when a run's model is scored.
EVAL_TIMINGS = Registry("graph evaluation timing")

#: Layers of the GNN when neither the config nor the set says (the full-data baseline).
DEFAULT_LAYERS = 2


@SAMPLERS.register("uniform")
def _uniform(weight: Tensor | None, n: int, generator: torch.Generator) -> Tensor:
    """A random permutation: every training graph once per epoch (the official code's behaviour)."""
    return torch.randperm(n, generator=generator)


@SAMPLERS.register("support")
def _support(weight: Tensor | None, n: int, generator: torch.Generator) -> Tensor:
    """n draws with replacement, probability proportional to ``weight`` (support), as the paper describes."""
    if weight is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weight.float().cpu(), n, replacement=True, generator=generator)


@GRAPH_METRICS.register("accuracy")
def _accuracy(probs: Tensor, y: Tensor) -> float:
    """Top-1 accuracy in percent. Shape: probs (G, K), y (G,)."""
    return 100.0 * float((probs.argmax(1) == y).float().mean())


@GRAPH_METRICS.register("roc_auc")
def _roc_auc(probs: Tensor, y: Tensor) -> float:
    """ROC-AUC in percent: of class 1's probability for two classes, one-vs-rest macro otherwise; NaN when ``y``
    holds a single class (undefined)."""
    from sklearn.metrics import roc_auc_score

    y_np, p_np = y.cpu().numpy(), probs.detach().cpu().double().numpy()
    if np.unique(y_np).size < 2:
        return math.nan
    if p_np.shape[1] == 2:
        return 100.0 * float(roc_auc_score(y_np, p_np[:, 1]))
    p_np = p_np / p_np.sum(1, keepdims=True)
    return 100.0 * float(roc_auc_score(y_np, p_np, multi_class="ovr", labels=np.arange(p_np.shape[1])))


@CALIBRATIONS.register("none")
def _no_calibration(logits: Tensor, y: Tensor) -> Tensor:
    """No bias: the logits as the model gives them (the official behaviour). Shape: -> (K,) zeros."""
    return torch.zeros(logits.shape[1], dtype=torch.float64)


#: L2 weight on the calibration bias: keeps it finite when a class is missing from the validation graphs.
CALIBRATION_L2 = 1e-4


@CALIBRATIONS.register("val_bias")
def _val_bias(logits: Tensor, y: Tensor) -> Tensor:
    """The per-class logit bias that best fits the validation graphs, fitted after the network, which is frozen::

        b* = argmin_b  1/G sum_i  -log softmax(z_i + b)[y_i]  +  CALIBRATION_L2 / 2 * ||b||^2

    z_i (K,) are graph i's logits. Convex in b (K numbers), solved by L-BFGS in float64 from b = 0. Only the decision
    threshold moves: for two classes it shifts the logit difference z_1 - z_0 by b_1 - b_0, so ROC-AUC is unchanged
    and accuracy stops sitting at the majority rate when real graphs' logits are shifted (sum readout over all nodes
    vs over the few roots of a tree-set).

    Shape: logits (G, K), y (G,) -> (K,) float64.
    """
    z = logits.detach().double().cpu()
    target = y.detach().long().cpu()
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    if z.shape[0] == 0:
        return bias.detach()
    opt = torch.optim.LBFGS([bias], lr=1.0, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z + bias, target) + 0.5 * CALIBRATION_L2 * bias.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # Only differences between classes matter; centring makes the recorded bias comparable across runs.
    out = bias.detach()
    return out - out.mean()


@EVAL_TIMINGS.register("after_epoch")
def _after_epoch(epochs: int, every: int) -> list[tuple[int, str]]:
    """After every ``every``-th training pass and after the last one (the model after epoch + 1 passes)."""
    return [(e, "after") for e in range(epochs) if (e + 1) % every == 0 or e == epochs - 1]


@EVAL_TIMINGS.register("before_epoch")
def _before_epoch(epochs: int, every: int) -> list[tuple[int, str]]:
    """Before the training pass of every ``every``-th epoch, as the official loop (``for epoch: test(); train()``):
    the untrained model (0 passes) is scored and the last pass never is."""
    return [(e, "before") for e in range(epochs) if e % every == 0]


def majority_rate(y: Tensor, num_classes: int) -> float:
    """Share of the most frequent class in percent: the accuracy of always predicting it. Shape: y (G,)."""
    if y.numel() == 0:
        return math.nan
    return 100.0 * float(torch.bincount(y.long().cpu(), minlength=num_classes).max()) / y.numel()


@dataclass
class GraphEvalConfig:
    """Hyper-parameters of the graph evaluation (defaults: the official Mirage training loop, except the decision
    threshold, calibrated on the validation graphs by default; ``calibration: none`` and ``eval_timing: before_epoch``
    give the official loop exactly).

    Args:
        model: GNN registry name (``gcn``, ``gin``, ``gat``, ``gcn_ogb``: the official OGB-style GCN); several:
            ``GraphEvaluator.across`` / ``--pool gnn``.
        hidden: width of every layer.
        layers: message-passing layers; None = the set's hops L (exact computation trees). A mismatch warns.
        dropout: dropout after every layer and before the classifier.
        batch_norm: BatchNorm1d after every convolution.
        jk: ``last`` or ``sum`` jumping knowledge.
        train: the training recipe: passes over the distilled set (``epochs``), graphs (tree-sets) per step
            (``batch_size``) and the optimiser (official: Adam, lr 1e-3, weight decay 1e-2, the default of
            ``train_and_test.py``; constant rate; no augmentation).
        num_runs: fresh models trained.
        top_k: report the ``top_k`` runs with the best validation score (official: 5 of 10); None = all runs.
        sampling: ``uniform`` (official code) or ``support`` (paper: probability proportional to support).
        metric: ``accuracy`` or ``roc_auc``; None = the dataset's (TU: accuracy, OGB: roc_auc).
        extra_metrics: further :data:`GRAPH_METRICS` scored on the test predictions of the epoch that ``metric``
            selects (no extra training; e.g. ``("roc_auc",)`` on TU datasets, which the paper's tables use), in
            ``details["test_extra"]``.
        eval_every: score the validation set every this many epochs (and after the last one); the best-validation
            test score is taken among those epochs. 1 (every epoch) is the official protocol; larger values make
            long runs on tiny distilled sets cheap, where scoring the real graphs costs far more than training.
        eval_timing: when a run's model is scored (:data:`EVAL_TIMINGS`): ``after_epoch`` (after every
            ``eval_every``-th training pass and the last) or ``before_epoch`` (before the pass of every
            ``eval_every``-th epoch, as the official loop: the untrained model is a candidate, the last pass is not).
        calibration: the per-class logit bias fitted on the validation graphs before scoring (:data:`CALIBRATIONS`):
            ``val_bias`` (default: the decision threshold of the root-sum readout moved to where the real
            validation graphs put it) or ``none`` (the official behaviour: accuracy can sit at the majority rate).
        eval_batch_size: graphs per forward pass when scoring.
        controls: what the score is shown beside (:mod:`evaluators.graph_controls`), in ``details["controls"]``:
            ``num_nodes``, ``num_edges``, ``edge_density``, ``label_histogram`` (no training), ``untrained`` (the
            set's GNNs at epoch 0), ``size_binned`` (the set's ROC-AUC within node-count bins), ``random_graphs``
            (random real training graphs of the set's bytes, trained like the set: it doubles the cost of an
            evaluation, and is the one control that says whether distilling beat picking). Default: all; [] = none.
        size_bins: node-count quantile bins of the test split for the size-binned ROC-AUC.
        threads: ``torch.set_num_threads`` during the evaluation (restored afterwards); None leaves it. Small
            graph batches are often fastest with 1 thread, and far faster on a CPU shared with other jobs.
        progress: progress bars (drawn only on a terminal).
    """

    model: str = "gcn"
    hidden: int = 128
    layers: int | None = None
    dropout: float = 0.5
    batch_norm: bool = False
    jk: str = "last"
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        epochs=100, lr=1e-3, weight_decay=1e-2, batch_size=32, optimizer="adam", schedule="constant", augment="none"))
    num_runs: int = 5
    top_k: int | None = None
    sampling: str = "uniform"
    metric: str | None = None
    extra_metrics: tuple[str, ...] = ()
    eval_every: int = 1
    eval_timing: str = "after_epoch"
    calibration: str = "val_bias"
    eval_batch_size: int = 1024
    controls: list[str] = field(default_factory=lambda: list(CONTROLS))
    size_bins: int = 4
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        controls = list(self.controls)
        bad = [c for c in controls if c not in CONTROLS]
        if bad:
            raise ValueError(f"unknown graph control(s) {bad}; choose from {list(CONTROLS)}")
        if len(set(controls)) != len(controls):
            raise ValueError(f"graph controls listed twice: {controls}")
        if isinstance(self.size_bins, bool) or not isinstance(self.size_bins, int) or self.size_bins < 1:
            raise ValueError(f"size_bins must be an integer >= 1, got {self.size_bins!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration {self.calibration!r} is unknown; choose from {CALIBRATIONS.names()}")
        if self.eval_timing not in EVAL_TIMINGS:
            raise ValueError(f"eval_timing {self.eval_timing!r} is unknown; choose from {EVAL_TIMINGS.names()}")


@EVALUATORS.register("graph")
class GraphEvaluator(Evaluator):
    """Trains ``num_runs`` fresh GNNs on a distilled graph set; reports the real test score at the best
    validation score of each run (percent)."""

    Config = GraphEvalConfig

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        """The dataset's val / test graphs; and its real training graphs when a control reads them (the trivial
        features, the label histogram, random graphs). A graph dataset arrives whole in ``EvalData.graphs``."""
        return EvalNeeds(test=True, train=any(c in TRAIN_READING_CONTROLS for c in self.config.controls))

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        """Scores a graph set (``mirage`` or ``random_graphs``) on the val / test splits of ``data.graphs``.

        Shape: synset tensors as written by :class:`synthesizers.mirage.Mirage` (x, edge_index, ptr, edge_ptr, y,
        optional edge_attr / root_mask / weight).
        """
        test = data.require("graphs", self.name)
        meta = synset.meta
        if meta.get("kind") != "graph" or "discretiser_state" not in meta:
            raise ValueError(f"the graph evaluator needs a graph set (kind=graph with a discretiser state), got one "
                             f"from synthesizer {meta.get('synthesizer')!r}")
        if meta.get("dataset") not in (None, test.info.name):
            warnings.warn(f"the set was distilled from {meta['dataset']!r} but is evaluated on {test.info.name!r}")
        if int(meta["num_classes"]) != int(test.info.num_classes):
            raise ValueError(f"the set has {meta['num_classes']} classes but {test.info.name!r} has "
                             f"{test.info.num_classes}: wrong dataset for this set?")
        disc = discretiser_from_state(meta["discretiser_state"])
        train = GraphPack.from_tensors(synset.tensors)
        hops = meta.get("hops")
        layers = self.config.layers or hops or DEFAULT_LAYERS
        tree_hops = hops if meta.get("readout") == "roots" else None  # the GNN warns when layers != L
        budget = meta.get("distilled_bytes")
        per_class = torch.bincount(train.y.cpu().long(), minlength=int(meta["num_classes"])).tolist()
        size = meta.get("size") or graph_size_meta(
            train, meta["node_spec"], meta.get("edge_spec"), distilled_bytes=budget,
            full_bytes=meta.get("full_tree_bytes", meta.get("full_graph_bytes")),
            encoding=str(meta.get("bytes_definition", "as recorded by the set (no size record)")))
        result = self._run(train, test, disc, meta["node_spec"], meta.get("edge_spec"), int(meta["num_classes"]),
                           layers, source=str(meta.get("synthesizer")), hops=tree_hops,
                           budget=(int(budget) if budget is not None else None, per_class))
        result.details["size"] = dict(size)
        return result

    def evaluate_real(self, data: GraphDataset | EvalData, *, discretiser: str | None = None, hops: int | None = None,
                      **discretiser_kwargs: Any) -> EvalResult:
        """Upper bound: the same protocol trained on the whole real training set (readout over all nodes).

        Args:
            discretiser: how graphs are featurised (None: the dataset's default, as for Mirage).
            hops: GNN layers when the config gives none.
        """
        data = as_eval_data(data).require("graphs", self.name)
        raw = GraphPack.from_data_list(data.train)
        disc = build_discretiser(discretiser or data.info.discretiser, **discretiser_kwargs).fit(raw)
        train = disc.featurise(raw)
        layers = self.config.layers or hops or DEFAULT_LAYERS
        result = self._run(train, data, disc, disc.node_spec(), disc.edge_spec(), data.info.num_classes, layers,
                           source="full")
        full_bytes = sum(pack_graph_bytes(raw))
        result.details["size"] = graph_size_meta(
            train, disc.node_spec(), disc.edge_spec(), distilled_bytes=full_bytes, full_bytes=full_bytes, full=train,
            encoding="plain graph encoding, 4*(2 + nodes + 3*undirected edges) per graph "
                     "(ddistill.data.graph.graph_bytes): the whole training set")
        return result

    # ------------------------------------------------------------------------------------------------------
    def _run(self, train: GraphPack, data: GraphDataset, disc: Discretiser, node_spec: dict[str, Any],
             edge_spec: dict[str, Any] | None, num_classes: int, layers: int, *, source: str,
             hops: int | None = None, budget: tuple[int | None, list[int]] | None = None) -> EvalResult:
        """The set's runs, then its controls. ``budget``: (the set's bytes or None, its graphs per class), what the
        random-graphs control matches (None: the set is the real training split itself)."""
        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            if self.config.eval_every < 1:
                raise ValueError(f"eval_every must be >= 1, got {self.config.eval_every}")
            if self.config.controls and any(c in TRAIN_READING_CONTROLS for c in self.config.controls) \
                    and not data.train:
                raise ValueError(f"the graph evaluator's controls {self.config.controls} read the real training "
                                 f"graphs, which this dataset lacks; set controls: [] to score the set without them")
            chunks = (self._chunks(disc.featurise(GraphPack.from_data_list(data.val))),
                      self._chunks(disc.featurise(GraphPack.from_data_list(data.test))))
            result, best_probs = self._train_runs(train, data, disc, node_spec, edge_spec, num_classes, layers,
                                                  source=source, hops=hops, chunks=chunks)
            result.details["majority_rate"] = {
                split: majority_rate(torch.cat([c.y.cpu() for c in part]) if part else torch.zeros(0), num_classes)
                for split, part in (("val", chunks[0]), ("test", chunks[1]))}
            result.details["majority_rate"]["what"] = ("percent of the split's graphs in its most frequent class: "
                                                       "the accuracy of always predicting that class")
            if self.config.controls:
                self._add_controls(result, best_probs, data, disc, node_spec, edge_spec, num_classes, layers,
                                   chunks=chunks, budget=budget)
            return result
        finally:
            torch.set_num_threads(threads)

    def _train_runs(self, train: GraphPack | None, data: GraphDataset, disc: Discretiser, node_spec: dict[str, Any],
                    edge_spec: dict[str, Any] | None, num_classes: int, layers: int, *, source: str,
                    hops: int | None, chunks: tuple[list[GraphPack], list[GraphPack]], stream: int = 0,
                    train_for_run: Callable[[int], GraphPack] | None = None) -> tuple[EvalResult, list[Tensor]]:
        """``num_runs`` fresh GNNs trained on ``train`` (or ``train_for_run(run)``); the result, and every run's
        test probabilities at its selected epoch (G_test, K).

        ``stream`` 0 is the set itself (the seeds every earlier result was made with); controls use other streams so
        they never change the set's own numbers.
        """
        cfg = self.config
        dev = self.device
        metric_name = cfg.metric or data.info.metric
        metric = GRAPH_METRICS.get(metric_name)
        extras = {name: GRAPH_METRICS.get(name) for name in cfg.extra_metrics}
        sampler = SAMPLERS.get(cfg.sampling)
        calibrate = CALIBRATIONS.get(cfg.calibration)
        timing = EVAL_TIMINGS.get(cfg.eval_timing)
        tail = (stream,) if stream else ()
        model_kwargs = dict(hidden=cfg.hidden, layers=layers, dropout=cfg.dropout, batch_norm=cfg.batch_norm,
                            jk=cfg.jk)
        recipe = cfg.train
        if isinstance(recipe.lr, str) or recipe.iterations is not None:
            raise ValueError("the graph evaluator trains whole epochs at a numeric train.lr")

        def train_run(run: int, _: Any) -> dict[str, Any]:
            """Run ``run``: its model, dropout and batch order depend only on (seed, run, stream), so the runs can be
            trained in any order, on any rank (JSON values only: they are gathered across ranks)."""
            start = time.perf_counter()
            run_train = (train if train_for_run is None else train_for_run(run)).to(dev)
            n = run_train.num_graphs
            # Model init and dropout draw from the global RNG; a forked, seeded copy keeps every run reproducible
            # and leaves the caller's random stream untouched.
            with seeded_rng(derive_seed(self.seed, MODEL_STREAM, run, *tail), dev):
                # hops only for the first run: the GNN warns once when layers != L
                model = create_gnn(cfg.model, node_spec=node_spec, edge_spec=edge_spec, num_classes=num_classes,
                                   hops=hops if run == 0 else None, **model_kwargs).to(dev)
                opt = recipe.make_optimizer(model.parameters())
                gen = make_generator(derive_seed(self.seed, TRAIN_STREAM, run, *tail))
                points = timing(recipe.epochs, cfg.eval_every)
                wanted, last = set(points), (points[-1] if points else None)
                best: dict[str, Any] = {"val": -math.inf, "test": math.nan, "epoch": -1, "passes": -1,
                                        "extra": {name: math.nan for name in extras}, "bias": None,
                                        "test_uncalibrated": math.nan, "probs": None}

                def score(epoch: int, phase: str) -> None:
                    nonlocal best
                    # The last scoring point counts when no earlier one did (e.g. every validation score was NaN).
                    force = best["epoch"] < 0 and (epoch, phase) == last
                    best = self._score(model, chunks, metric, extras, calibrate, best, epoch,
                                       epoch + (phase == "after"), force)

                for epoch in range(recipe.epochs):
                    if (epoch, "before") in wanted:
                        score(epoch, "before")
                    model.train()
                    order = sampler(run_train.weight, n, gen).to(dev)
                    for i in range(0, n, recipe.batch_size):
                        b = run_train.select(order[i:i + recipe.batch_size])
                        logits = model(b.x, b.edge_index, b.batch(), b.num_graphs, b.edge_attr, b.root_mask)
                        loss = torch.nn.functional.cross_entropy(logits, b.y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    if (epoch, "after") in wanted:
                        score(epoch, "after")
            probs = best["probs"]
            return {**{k: v for k, v in best.items() if k != "probs"}, "size": n,
                    "probs": None if probs is None else probs.cpu().tolist(), "seconds": time.perf_counter() - start}

        # Under torchrun each rank trains its share of the runs (the numbers are those of one process).
        done = self.dist.map(range(cfg.num_runs), train_run)
        best_vals = [d["val"] for d in done]
        best_tests = [d["test"] for d in done]
        best_epochs = [d["epoch"] for d in done]
        best_passes = [d["passes"] for d in done]
        best_extras = [d["extra"] for d in done]
        biases = [d["bias"] for d in done]
        uncalibrated = [d["test_uncalibrated"] for d in done]
        seconds = [d["seconds"] for d in done]
        sizes = [d["size"] for d in done]
        best_probs = [None if d["probs"] is None else torch.tensor(d["probs"], dtype=torch.float32) for d in done]
        ranked = sorted(range(cfg.num_runs), key=lambda r: -best_vals[r] if math.isfinite(best_vals[r]) else math.inf)
        chosen = ranked[: cfg.top_k] if cfg.top_k else list(range(cfg.num_runs))
        return EvalResult(metric_name, [best_tests[r] for r in chosen], {
            "scale": "percent", "model": cfg.model, "layers": layers, "hidden": cfg.hidden, "epochs": recipe.epochs,
            "lr": recipe.lr, "weight_decay": recipe.weight_decay, "batch_size": recipe.batch_size,
            "optimizer": recipe.optimizer, "sampling": cfg.sampling,
            "eval_every": cfg.eval_every, "eval_timing": cfg.eval_timing, "best_passes": best_passes,
            "calibration": cfg.calibration, "calibration_bias": biases,
            "test_uncalibrated": [uncalibrated[r] for r in chosen],
            "source": source, "train_graphs": sizes[0] if len(set(sizes)) == 1 else sizes, "val": best_vals,
            "test_all_runs": best_tests,
            "best_epoch": best_epochs, "test_extra": {name: [best_extras[r][name] for r in chosen] for name in extras},
            "runs_reported": chosen, "train_seconds": seconds, "seed": self.seed,
        }), best_probs

    # -- controls ------------------------------------------------------------------------------------------
    def _add_controls(self, result: EvalResult, best_probs: list[Tensor], data: GraphDataset, disc: Discretiser,
                      node_spec: dict[str, Any], edge_spec: dict[str, Any] | None, num_classes: int, layers: int, *,
                      chunks: tuple[list[GraphPack], list[GraphPack]],
                      budget: tuple[int | None, list[int]] | None) -> None:
        """Fills ``details["controls"]`` (and ``details["warnings"]``) in the order of ``config.controls``."""
        cfg = self.config
        wanted = list(cfg.controls)
        main = result.metric
        metrics = {main: GRAPH_METRICS.get(main), **{n: GRAPH_METRICS.get(n) for n in cfg.extra_metrics if n != main}}
        test_chunks = chunks[1]
        y_test = torch.cat([c.y.cpu() for c in test_chunks])
        test_sizes = torch.cat([(c.ptr[1:] - c.ptr[:-1]).cpu() for c in test_chunks]).numpy()
        controls: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        raw_train = feat_train = None
        if any(c in TRAIN_READING_CONTROLS for c in wanted):
            raw_train = GraphPack.from_data_list(data.train)
            feat_train = disc.featurise(raw_train)

        trivial = [c for c in wanted if c in TRIVIAL_CONTROLS]
        if trivial:
            start = time.perf_counter()
            raw_test = GraphPack.from_data_list(data.test)
            f_train, f_test = size_features(raw_train), size_features(raw_test)
            if "label_histogram" in trivial:
                f_train["label_histogram"] = label_histogram(feat_train, node_spec, edge_spec)
                f_test["label_histogram"] = label_histogram(disc.featurise(raw_test), node_spec, edge_spec)
            controls.update(trivial_controls(trivial, f_train, f_test, raw_train.y.cpu().numpy(), raw_test.y.cpu(),
                                             num_classes, metrics, main))
            seconds["trivial"] = time.perf_counter() - start

        if "untrained" in wanted:
            start = time.perf_counter()
            controls["untrained"] = self._untrained(node_spec, edge_spec, num_classes, layers, chunks, metrics, main)
            seconds["untrained"] = time.perf_counter() - start

        chosen = result.details["runs_reported"]
        if "size_binned" in wanted:
            controls["size_binned"] = self._binned([best_probs[r] for r in chosen], y_test, test_sizes,
                                                   "the set's own models (reported runs, selected epochs) scored by "
                                                   "ROC-AUC within node-count quantile bins of the test split")

        if "random_graphs" in wanted:
            start = time.perf_counter()
            if budget is None:
                controls["random_graphs"] = {"what": "random real training graphs of the set's bytes",
                                             "skipped": "the set is the whole real training split"}
            else:
                controls["random_graphs"], rg_probs, rg_chosen = self._random_graphs(
                    raw_train, feat_train, data, disc, node_spec, edge_spec, num_classes, layers, chunks, budget)
                controls["random_graphs_size_binned"] = self._binned(
                    [rg_probs[r] for r in rg_chosen], y_test, test_sizes, "the random_graphs control's models "
                    "(reported runs, selected epochs) scored by ROC-AUC within node-count quantile bins of the test "
                    "split")
            seconds["random_graphs"] = time.perf_counter() - start

        rate = result.details.get("majority_rate", {}).get("test")
        if main == "accuracy" and rate is not None:
            # An accuracy means little without the rate of always predicting the most frequent class beside it.
            controls["majority_class"] = {"mean": rate, "std": 0.0, "values": [rate],
                                          "what": "always predicting the test split's most frequent class (the "
                                                  "majority-class rate); no training"}
        result.details["controls"] = controls
        result.details["control_seconds"] = seconds
        found = control_warnings(main, result.mean, result.std, controls)
        if "majority_class" in controls and not result.mean > rate + result.std:
            found.append(f"the set's accuracy {result.mean:.2f} is not above the majority-class rate {rate:.2f} by "
                         f"more than one std: the models may predict one class")
        if found:
            result.details["warnings"] = list(result.details.get("warnings", [])) + found

    def _untrained(self, node_spec: dict[str, Any], edge_spec: dict[str, Any] | None, num_classes: int,
                   layers: int, chunks: tuple[list[GraphPack], list[GraphPack]], metrics: dict[str, Callable],
                   main: str) -> dict[str, Any]:
        """The set's GNNs before their first step: every run's model seed, no training, calibrated on the validation
        graphs as the set's models are, scored on the test split."""
        calibrate = CALIBRATIONS.get(self.config.calibration)
        cfg = self.config
        values: list[float] = []
        extra: dict[str, list[float]] = {name: [] for name in metrics if name != main}
        for run in range(cfg.num_runs):
            with seeded_rng(derive_seed(self.seed, MODEL_STREAM, run), self.device):
                model = create_gnn(cfg.model, node_spec=node_spec, edge_spec=edge_spec, num_classes=num_classes,
                                   hidden=cfg.hidden, layers=layers, dropout=cfg.dropout, batch_norm=cfg.batch_norm,
                                   jk=cfg.jk).to(self.device)
            probs, ys = self._predict(model, chunks[1], calibrate(*self._logits(model, chunks[0])))
            values.append(float(metrics[main](probs, ys)))
            for name in extra:
                extra[name].append(float(metrics[name](probs, ys)))
        res = EvalResult(main, values)
        return {"mean": res.mean, "std": res.std, "values": values, "test_extra": extra,
                "what": "the same GNN at epoch 0 (fresh initialisation with the set's model seeds, no training), "
                        f"calibrated as the set's ({cfg.calibration}), scored on the test split; every run"}

    def _binned(self, probs: list[Tensor | None], y: Tensor, sizes: Any, what: str) -> dict[str, Any]:
        """Size-binned and plain ROC-AUC of every run's test probabilities (None: a run never scored, NaN)."""
        y_np = y.numpy()
        nothing = {"value": math.nan, "edges": [], "bins_used": 0, "bins_skipped": 0, "graphs_skipped": 0}
        per_run = [nothing if p is None else size_binned_auc(p.double().numpy(), y_np, sizes, self.config.size_bins)
                   for p in probs]
        overall = [math.nan if p is None else 100.0 * class_auc(p.double().numpy(), y_np) for p in probs]
        out = summarise_binned(per_run, overall, what)
        out["bins"] = self.config.size_bins
        return out

    def _random_graphs(self, raw_train: GraphPack, feat_train: GraphPack, data: GraphDataset, disc: Discretiser,
                       node_spec: dict[str, Any], edge_spec: dict[str, Any] | None, num_classes: int, layers: int,
                       chunks: tuple[list[GraphPack], list[GraphPack]], budget: tuple[int | None, list[int]]
                       ) -> tuple[dict[str, Any], list[Tensor], list[int]]:
        """Random real training graphs of the set's bytes (or, when the set records none, its graphs per class),
        drawn afresh for every run and trained with the set's recipe on other seed streams."""
        budget_bytes, per_class = budget
        drawn: list[dict[str, Any]] = []
        graph_bytes = torch.tensor(pack_graph_bytes(raw_train))

        def train_for_run(run: int) -> GraphPack:
            gen = make_generator(derive_seed(self.seed, SUBSET_STREAM, run))
            index = draw_random_graphs(raw_train, num_classes, gen, budget_bytes=budget_bytes, per_class=per_class)
            pack = feat_train.select(index)
            pack.weight = torch.ones(pack.num_graphs)
            drawn.append({"bytes": int(graph_bytes[index].sum()),
                          "graphs_per_class": torch.bincount(pack.y.cpu(), minlength=num_classes).tolist()})
            return pack

        res, probs = self._train_runs(None, data, disc, node_spec, edge_spec, num_classes, layers,
                                      source="random_graphs control", hops=None, chunks=chunks,
                                      stream=RANDOM_GRAPHS_RUN_STREAM, train_for_run=train_for_run)
        out = res.to_dict()
        matched = "bytes" if budget_bytes is not None else "count"
        out.update({
            "what": ("random real training graphs of the set's bytes (per class: a random order cut at bytes / K, "
                     "at least one graph)" if matched == "bytes" else
                     "random real training graphs, as many per class as the set has (the set records no bytes)")
                    + ", drawn afresh per run, trained with the set's recipe on other seeds",
            "matched": matched, "budget_bytes": budget_bytes, "set_graphs_per_class": per_class, "drawn": drawn,
        })
        return out, probs, res.details["runs_reported"]

    def _chunks(self, pack: GraphPack) -> list[GraphPack]:
        size = max(1, self.config.eval_batch_size)
        return [pack.select(torch.arange(i, min(i + size, pack.num_graphs))).to(self.device)
                for i in range(0, pack.num_graphs, size)]

    def _score(self, model: torch.nn.Module, chunks: tuple[list[GraphPack], list[GraphPack]], metric: Callable,
               extras: dict[str, Callable], calibrate: Callable, best: dict[str, Any], epoch: int, passes: int,
               force: bool) -> dict[str, Any]:
        """Scores the model on the validation graphs (after fitting the calibration bias on them); when that
        matches or beats ``best`` (or ``force``), on the test graphs too, and returns the new best."""
        val_logits, val_y = self._logits(model, chunks[0])
        bias = calibrate(val_logits, val_y)
        v = metric(_softmax(val_logits, bias), val_y)
        # Ties go to the later epoch, as the official ``best_val <= val``: with a strict ``>`` a validation score that
        # stays flat (accuracy stuck at the majority rate while the model still learns to rank) would pin the
        # selection to the first, barely trained epoch.
        if not (v >= best["val"] or force):
            return best
        test_logits, ys = self._logits(model, chunks[1])
        probs = _softmax(test_logits, bias)
        return {"val": v, "test": metric(probs, ys), "epoch": epoch, "passes": passes,
                "extra": {name: f(probs, ys) for name, f in extras.items()}, "bias": bias.tolist(),
                "test_uncalibrated": metric(_softmax(test_logits, None), ys), "probs": probs}

    @torch.no_grad()
    def _logits(self, model: torch.nn.Module, chunks: list[GraphPack]) -> tuple[Tensor, Tensor]:
        """Logits and labels of real graphs (readout over all nodes), on the CPU. Shape: (G, K) float, (G,)."""
        model.eval()
        out, ys = [], []
        for c in chunks:
            out.append(model(c.x, c.edge_index, c.batch(), c.num_graphs, c.edge_attr, None).float().cpu())
            ys.append(c.y.cpu())
        if not out:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return torch.cat(out), torch.cat(ys)

    def _predict(self, model: torch.nn.Module, chunks: list[GraphPack], bias: Tensor | None = None
                 ) -> tuple[Tensor, Tensor]:
        """Class probabilities (logits + ``bias``, softmax) and labels of real graphs. Shape: (G, K), (G,)."""
        logits, ys = self._logits(model, chunks)
        return _softmax(logits, bias), ys


def _softmax(logits: Tensor, bias: Tensor | None) -> Tensor:
    """softmax(logits + bias) in float32. Shape: (G, K), (K,) -> (G, K)."""
    z = logits.float() if bias is None else logits.float() + bias.to(torch.float32)
    return torch.softmax(z, 1)


@SUPPORT_SCORERS.register("gnn")
def score_support_candidate(candidate: SyntheticSet, selection: GraphDataset, settings: dict[str, Any],
                            seed: int) -> dict[str, Any]:
    """The ``gnn`` scorer of Mirage's ``support_schedule`` (:mod:`synthesizers.mirage.selection`): the graph evaluator
    (``settings`` = its config; controls off) trained on a candidate set and scored on ``selection.val``. The score is
    the mean best-epoch validation score of the reported runs (``top_k`` by validation; official: top 5 of 10 runs).
    ``selection.test`` is the same selection graphs: the dataset's test split is never passed in."""
    cfg = from_dict(GraphEvalConfig, {"progress": False, **settings, "controls": []},
                    where="mirage selection.scorer_kwargs")
    res = GraphEvaluator(cfg, seed=seed).evaluate(candidate, EvalData(graphs=selection))
    vals = res.details["val"]
    reported = [vals[r] for r in res.details["runs_reported"] if math.isfinite(vals[r])]
    return {"score": sum(reported) / len(reported) if reported else math.nan, "metric": res.metric,
            "val_all_runs": vals, "runs_reported": res.details["runs_reported"],
            "best_epoch": res.details["best_epoch"], "model": cfg.model, "epochs": cfg.train.epochs,
            "num_runs": cfg.num_runs, "top_k": cfg.top_k}


__all__ = ["CALIBRATIONS", "EVAL_TIMINGS", "GRAPH_METRICS", "SAMPLERS", "GraphEvalConfig", "GraphEvaluator",
           "majority_rate", "score_support_candidate"]
