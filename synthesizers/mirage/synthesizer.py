"""Mirage: model-agnostic graph distillation by frequent computation trees (Gupta, Manchanda, Kodamana, Ranu,
"Mirage: Model-Agnostic Graph Distillation for Graph Classification", ICLR 2024; official code idea-iitd/Mirage).

The method, as the official code runs it (the step numbers used across ``ddistill.graph``):

1. unroll every training node's L-hop computation tree;
2. label nodes / edges discretely (:mod:`ddistill.graph.trees` discretisers);
3. hash every tree to a canonical id;
4. turn every graph into the set of its tree ids (a transaction);
5. per class, mine all itemsets (tree-sets) whose support reaches the class threshold (FP-growth);
6. the distilled set is the list of (tree-set, support, class); each tree-set is one training graph, the
   disjoint union of its trees with child -> parent edges and a root mask;
7. train any GNN on it with a sum readout over the roots (:mod:`evaluators.graph`);
8. test on the real graphs, readout over all nodes.

With one ``support`` no model is trained and nothing is random: the result depends only on the data and the config.
The official TU scripts instead walk a schedule of thresholds and keep the one whose GNNs validate best
(``support_schedule``, :mod:`synthesizers.mirage.selection`); that trains GNNs, seeded from the synthesizer's seed.
Their other choices are options too: ``drop_isolated_nodes`` (isolated nodes' trees removed before mining),
the split (``dataset: {kwargs: {split_protocol: official}}``), the OGB-style GCN (``gcn_ogb``) and the evaluation
loop (``eval_timing``, ``calibration`` in :mod:`evaluators.graph`). The paper's "Random" rows are
:mod:`synthesizers.random_graphs`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddistill.data.graph import Discretiser, GraphDataset, GraphPack, build_discretiser, pack_graph_bytes
from ddistill.synset import SyntheticSet

from ..base import SYNTHESIZERS, Synthesizer
from .._graph import graph_meta, graph_size_meta
from .mining import ClassPatterns, mine_per_class
from .selection import SELECTION_SPLITS, SupportSelection, get_scorer, pick_best, subset_thresholds
from .trees import (
    TreeSet,
    TreeTable,
    computation_tree_ids,
    drop_single_node_trees,
    encode_tree_sets,
    graph_transactions,
    materialise_tree_sets,
    tree_set_bytes,
)

Support = float | list[float]


@dataclass
class MirageConfig:
    """Hyper-parameters of Mirage.

    Args:
        hops: L, the depth of the computation trees; train the evaluation GNN with L layers.
        support: per-class support threshold theta_c: one value for all classes or one per class; values >= 1 are
            absolute counts (the official configs), values < 1 fractions of the class's training graphs.
        discretiser: label discretiser (``onehot_argmax``, ``ogb_atom_tuple``, ``degree``); None = the dataset's.
        discretiser_kwargs: extra arguments of the discretiser (e.g. ``{max_degree: 50}`` for ``degree``).
        use_edge_labels: hash on edge labels and give the GNN edge features.
        drop_shared: drop tree-sets frequent in more than one class (official NCI1 script).
        max_len: largest tree-set size mined (None: unbounded, as the official code).
        max_itemsets_per_class: keep the best (highest-support, then largest) tree-sets only (None: all).
        drop_single_node_trees: remove one-node trees from tree-sets *after* mining, as the official ogbg
            ``disjointed_union`` does.
        drop_isolated_nodes: remove isolated nodes' (one-node) trees from every graph's transaction *before* mining,
            as the official TU scripts do (``if len(MPTree) <= 1: continue``): they are then no item at all, so they
            neither count towards a tree-set's support nor appear in one. Off: every node's tree is an item.
        support_schedule: candidate thresholds, each a ``support`` value (e.g. ``[[440, 570], [420, 550]]``, the
            official NCI1 steps); when given it replaces ``support``: every candidate is mined and scored, and the
            best-validating one is kept (:class:`~synthesizers.mirage.selection.SupportSelection`). Every candidate
            tried, its bytes and its validation score are in ``meta["support_schedule"]``. None: ``support`` alone.
        selection: how a schedule picks its threshold (split, hold-out share, scorer and its GNN settings).
        miner: frequent-itemset backend (``auto``, ``mlxtend``, ``pattern_growth``).
        progress: tqdm bars (shown only on a terminal).
    """

    hops: int = 2
    support: Support = 0.1
    discretiser: str | None = None
    discretiser_kwargs: dict[str, Any] = field(default_factory=dict)
    use_edge_labels: bool = True
    drop_shared: bool = False
    max_len: int | None = None
    max_itemsets_per_class: int | None = None
    drop_single_node_trees: bool = False
    drop_isolated_nodes: bool = False
    support_schedule: list[Support] | None = None
    selection: SupportSelection = field(default_factory=SupportSelection)
    miner: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.support_schedule is not None and len(self.support_schedule) == 0:
            raise ValueError("support_schedule is empty; give at least one threshold, or None to use `support`")


@dataclass
class _Prepared:
    """Everything mining needs that does not depend on the threshold: the discretised training graphs' trees."""

    train: GraphPack
    disc: Discretiser
    table: TreeTable
    unique_trees: int
    transactions: list[np.ndarray]  # items mined (isolated nodes' trees removed when drop_isolated_nodes)
    all_transactions: list[np.ndarray]  # every node's tree: the whole training set, for its size
    y: np.ndarray
    classes: list[int]


@dataclass
class _Mined:
    """One mining result: the tree-sets of every class at one threshold, over some of the training graphs."""

    patterns: dict[int, ClassPatterns]
    tree_sets: list[TreeSet]
    by_class: dict[int, list[np.ndarray]]


@SYNTHESIZERS.register("mirage")
class Mirage(Synthesizer):
    """Distils a graph-classification training set into frequent computation-tree sets (Mirage).

    The output :class:`SyntheticSet` holds one training "graph" per tree-set, in PyG field names:

    - ``x`` (N, ...) model-input node features, ``node_label`` (N,) discrete labels, ``root_mask`` (N,) bool;
    - ``edge_index`` (2, E) child -> parent (global node indices), ``edge_attr`` (E, D) when edges have features,
      ``edge_label`` (E,);
    - ``ptr`` / ``edge_ptr`` (G+1,) node / edge offsets of every tree-set; ``y`` (G,) class; ``weight`` (G,) support;
    - the canonical encoding ``tree_nodes``, ``tree_ptr``, ``set_trees``, ``set_ptr``, ``set_info`` (int32; see
      :func:`ddistill.graph.trees.encode_tree_sets`), whose size is ``meta["distilled_bytes"]``.

    ``meta`` records hops, discretiser (name + state, to featurise test graphs identically), thresholds, sizes in
    bytes of the distilled set and of the full training set under the same encoding (``full_tree_bytes``) and as
    plain graphs (``full_graph_bytes``), ``size`` (unit, N, E, F, D, N*F, E*D, compression ratio; see
    :func:`synthesizers._graph.graph_size_meta`), ``distill_seconds`` and, with a ``support_schedule``, every
    candidate tried (``support_schedule``).

    Without a schedule nothing is random: the result depends only on the data and the config. A schedule's
    ``train_holdout`` split is drawn with the synthesizer's seed, and its GNNs are seeded from it.

    Example:
        >>> data = load_graph_dataset("mutag", "/path/to/tu")
        >>> synset = Mirage(MirageConfig(hops=2, support=0.3)).fit(data)
    """

    Config = MirageConfig
    # Absolute thresholds of the official configs (methods notes 3.2); they assume OGB's / the official splits.
    presets = {
        "official_molhiv": {"hops": 3, "support": [1800, 115]},
        "official_molbace": {"hops": 3, "support": [150, 104]},
        "official_molbbbp": {"hops": 3, "support": [11, 50]},
        "official_dd": {"hops": 1, "support": [15, 9]},
        "official_nci1": {"hops": 2, "support": [440, 570], "drop_shared": True},
        # The NCI1 script's two steps ({460, 590} lowered by 20 per step), selected on the validation split.
        "official_nci1_schedule": {"hops": 2, "support_schedule": [[440, 570], [420, 550]], "drop_shared": True,
                                   "drop_isolated_nodes": True, "selection": {"split": "val"}},
    }

    def synthesize(self, real: GraphDataset) -> SyntheticSet:
        """Mines the tree-sets of ``real.train``. The test split is never read; the validation split only by a
        ``support_schedule`` with ``selection.split: val``."""
        cfg = self.config
        start = time.perf_counter()
        prep = self._prepare(real)
        everything = np.arange(prep.y.size)
        schedule = None
        if cfg.support_schedule is None:
            support = cfg.support
            mined = self._mine(prep, support, everything)
            self._require_every_class(prep, mined, support)
        else:
            support, mined, schedule = self._select(real, prep)
        synset = self._assemble(real, prep, mined, support, time.perf_counter() - start, schedule)
        meta = synset.meta
        step = 1 + (len(schedule["entries"]) if schedule else 0)  # a schedule logs one step per candidate first
        self.log_step(step, {"tree_sets": float(len(synset)), "distilled_bytes": float(meta["distilled_bytes"]),
                             "seconds": meta["distill_seconds"]})
        return synset

    # -- steps --------------------------------------------------------------------------------------------------
    def _prepare(self, real: GraphDataset) -> _Prepared:
        cfg = self.config
        info = real.info
        train = GraphPack.from_data_list(real.train)
        disc = build_discretiser(cfg.discretiser or info.discretiser, use_edge_labels=cfg.use_edge_labels,
                                 **cfg.discretiser_kwargs).fit(train)
        table = TreeTable()
        ids = computation_tree_ids(disc.node_labels(train), train.edge_index, disc.edge_labels(train), cfg.hops,
                                   table, progress=cfg.progress)
        all_transactions = graph_transactions(ids[cfg.hops], train.ptr)
        transactions = all_transactions
        if cfg.drop_isolated_nodes:
            # A depth-L computation tree has one node iff its root has no neighbour: an isolated node.
            single = {t for t in np.unique(ids[cfg.hops]).tolist() if table.size(t) == 1}
            transactions = [t[~np.isin(t, list(single))] if single else t for t in all_transactions]
        y = train.y.numpy()
        classes = list(range(info.num_classes))
        absent = [c for c in classes if not (y == c).any()]
        if absent:
            raise ValueError(f"classes {absent} have no training graphs; Mirage mines every class separately")
        return _Prepared(train, disc, table, int(np.unique(ids[cfg.hops]).size), transactions, all_transactions, y,
                         classes)

    def _mine(self, prep: _Prepared, support: Any, index: np.ndarray) -> _Mined:
        """Tree-sets of the training graphs ``index`` at ``support`` (a ``support`` value or a class -> count map)."""
        cfg = self.config
        y = prep.y[index]
        by_class = {c: [prep.transactions[i] for i in index[y == c]] for c in prep.classes}
        patterns = mine_per_class(by_class, support, drop_shared=cfg.drop_shared, max_len=cfg.max_len,
                                  max_itemsets=cfg.max_itemsets_per_class, backend=cfg.miner)
        tree_sets = [TreeSet(s, k, c) for c in prep.classes for s, k in patterns[c].itemsets]
        if cfg.drop_single_node_trees:
            tree_sets = drop_single_node_trees(prep.table, tree_sets)
        return _Mined(patterns, tree_sets, by_class)

    def _require_every_class(self, prep: _Prepared, mined: _Mined, support: Any) -> None:
        """Raises (naming the fix) when a class got no tree-set at this threshold."""
        cfg = self.config
        empty = [c for c in prep.classes if not mined.patterns[c].itemsets]
        if empty:
            hints = []
            for c in empty:
                db = mined.by_class[c]
                counts = np.bincount(np.concatenate(db)) if db and sum(t.size for t in db) else np.zeros(1)
                hints.append(f"class {c}: threshold {mined.patterns[c].threshold} of {len(db)} graphs, most "
                             f"frequent tree in {int(counts.max())}")
            raise ValueError(f"no frequent tree-set for classes {empty} ({'; '.join(hints)}); lower `support`"
                             + (" or disable drop_shared" if cfg.drop_shared else ""))
        if not mined.tree_sets:
            raise ValueError("every tree-set consisted of single-node trees; set drop_single_node_trees=False")

    def _select(self, real: GraphDataset, prep: _Prepared) -> tuple[Any, _Mined, dict[str, Any]]:
        """Mines every ``support_schedule`` entry, scores it on the selection graphs, keeps the best (see
        :mod:`synthesizers.mirage.selection`). Returns the chosen entry, its tree-sets over all training graphs and
        the record of every entry tried."""
        cfg = self.config
        sel = cfg.selection
        scorer = get_scorer(sel.scorer)
        mine_index, selection_graphs, how = SELECTION_SPLITS.get(sel.split)(real, prep.y, sel.holdout_fraction,
                                                                             self.seed)
        everything = np.arange(prep.y.size)
        holdout = mine_index.size < everything.size
        # The selection graphs play val and test: the scorer never sees the dataset's test split.
        scoring_data = GraphDataset([real.train[i] for i in mine_index.tolist()], selection_graphs,
                                    selection_graphs, real.info, spec=real.spec)
        full_sizes = {c: int((prep.y == c).sum()) for c in prep.classes}
        subset_sizes = {c: int((prep.y[mine_index] == c).sum()) for c in prep.classes}
        entries: list[dict[str, Any]] = []
        scores: list[float | None] = []
        kept: list[_Mined | None] = []
        for i, support in enumerate(cfg.support_schedule or []):
            record: dict[str, Any] = {"support": _plain(support)}
            try:
                full = self._mine(prep, support, everything)
                self._require_every_class(prep, full, support)
                record.update(self._size_record(prep, full))
                candidate, scored = full, full
                if holdout:
                    counts = {c: full.patterns[c].threshold for c in prep.classes}
                    scored = self._mine(prep, subset_thresholds(counts, full_sizes, subset_sizes), mine_index)
                    self._require_every_class(prep, scored, support)
                    record["selection_thresholds"] = [scored.patterns[c].threshold for c in prep.classes]
                    record["selection_tree_sets_per_class"] = [
                        sum(1 for ts in scored.tree_sets if ts.label == c) for c in prep.classes]
                synset = self._assemble(real, prep, scored, support, 0.0, None)
                result = scorer(synset, scoring_data, dict(sel.scorer_kwargs), self.seed)
                record["validation_score"] = float(result["score"])
                record["validation"] = {k: v for k, v in result.items() if k != "score"}
                scores.append(float(result["score"]))
                kept.append(candidate)
            except ValueError as e:
                # An infeasible threshold (a class without tree-sets) is recorded and skipped, as the official
                # schedules simply move on.
                record["error"] = str(e)
                scores.append(None)
                kept.append(None)
            entries.append(record)
            self.log_step(i + 1, {"candidate": float(i), **({"validation_score": scores[-1]}
                                                          if scores[-1] is not None else {})})
        best = pick_best(scores)
        chosen = kept[best]
        assert chosen is not None
        schedule = {
            "entries": entries, "selected": best, "selected_support": _plain(cfg.support_schedule[best]),
            "split": sel.split, "split_description": how, "holdout_fraction": sel.holdout_fraction if holdout else None,
            "mining_graphs": int(mine_index.size), "selection_graphs": len(selection_graphs),
            "scorer": sel.scorer, "scorer_kwargs": dict(sel.scorer_kwargs),
            "rule": "highest validation_score (the scorer's mean best-epoch validation score over its reported runs); "
                    "ties keep the earlier entry; entries with an error are skipped",
        }
        return cfg.support_schedule[best], chosen, schedule

    def _size_record(self, prep: _Prepared, mined: _Mined) -> dict[str, Any]:
        """Thresholds, tree-sets and bytes of a mining over all training graphs (a schedule entry's record)."""
        distilled = tree_set_bytes(prep.table, [ts.trees for ts in mined.tree_sets])
        full = self._full_tree_bytes(prep)
        return {"thresholds": [mined.patterns[c].threshold for c in prep.classes],
                "tree_sets_per_class": [sum(1 for ts in mined.tree_sets if ts.label == c) for c in prep.classes],
                "distilled_bytes": distilled, "full_tree_bytes": full, "compression_ratio": distilled / full}

    def _full_tree_bytes(self, prep: _Prepared) -> int:
        return tree_set_bytes(prep.table, [t.tolist() for t in prep.all_transactions])

    def _assemble(self, real: GraphDataset, prep: _Prepared, mined: _Mined, support: Any, seconds: float,
                  schedule: dict[str, Any] | None) -> SyntheticSet:
        cfg = self.config
        classes, tree_sets, patterns = prep.classes, mined.tree_sets, mined.patterns
        pack = materialise_tree_sets(prep.table, tree_sets, prep.disc)
        tensors = pack.to_tensors()
        tensors.update(encode_tree_sets(prep.table, tree_sets))

        distilled = tree_set_bytes(prep.table, [ts.trees for ts in tree_sets])
        full_tree = self._full_tree_bytes(prep)
        full_graph = sum(pack_graph_bytes(prep.train))
        meta = graph_meta(self, real, prep.disc, readout="roots", hops=cfg.hops)
        meta.update({
            "support": _plain(support),
            "thresholds": [patterns[c].threshold for c in classes],
            "class_graphs": [patterns[c].num_transactions for c in classes],
            "tree_sets_per_class": [sum(1 for ts in tree_sets if ts.label == c) for c in classes],
            "dropped_shared_per_class": [patterns[c].dropped_shared for c in classes],
            "truncated_per_class": [patterns[c].truncated for c in classes],
            "unique_trees_per_class": [int(np.unique(np.concatenate(mined.by_class[c])).size)
                                       if mined.by_class[c] else 0 for c in classes],
            "unique_trees": prep.unique_trees,
            "distinct_trees_distilled": len({t for ts in tree_sets for t in ts.trees}),
            "bytes_definition": "int32 canonical tree-set encoding: 4*(3*sum_{distinct trees} nodes + "
                                "sum_{tree-sets} (3 + |set|)); see ddistill.graph.trees.tree_set_bytes",
            "distilled_bytes": distilled,
            "full_tree_bytes": full_tree,
            "full_graph_bytes": full_graph,
            "size": graph_size_meta(pack, prep.disc.node_spec(), prep.disc.edge_spec(), distilled_bytes=distilled,
                                    full_bytes=full_tree, full=prep.train,
                                    encoding="canonical tree-set encoding (full training set: every graph as the "
                                             "set of its L-hop trees, same encoding)"),
            "tensor_bytes": int(sum(t.numel() * t.element_size() for t in tensors.values())),
            "distill_seconds": seconds,
            "train_graphs": prep.train.num_graphs,
        })
        if schedule is not None:
            meta["support_schedule"] = schedule
        return SyntheticSet(tensors, meta)


def _plain(support: Any) -> Any:
    """A support value as plain JSON (a number or a list)."""
    return support if isinstance(support, (int, float)) else list(support)


__all__ = ["Mirage", "MirageConfig"]
