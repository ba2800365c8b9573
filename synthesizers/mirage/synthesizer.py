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

No model is trained and nothing is random: the result depends only on the data and the config. The paper's "Random"
rows are :mod:`synthesizers.random_graphs`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddistill.data.graph import GraphDataset, GraphPack, build_discretiser, pack_graph_bytes
from ddistill.synset import SyntheticSet

from ..base import SYNTHESIZERS, Synthesizer
from .._graph import graph_meta
from .mining import mine_per_class
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
        drop_single_node_trees: remove one-node trees from tree-sets, as the official ``disjointed_union`` does.
        miner: frequent-itemset backend (``auto``, ``mlxtend``, ``pattern_growth``).
        progress: tqdm bars (shown only on a terminal).
    """

    hops: int = 2
    support: float | list[float] = 0.1
    discretiser: str | None = None
    discretiser_kwargs: dict[str, Any] = field(default_factory=dict)
    use_edge_labels: bool = True
    drop_shared: bool = False
    max_len: int | None = None
    max_itemsets_per_class: int | None = None
    drop_single_node_trees: bool = False
    miner: str = "auto"
    progress: bool = True


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
    plain graphs (``full_graph_bytes``), and ``distill_seconds``.

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
    }

    def synthesize(self, real: GraphDataset) -> SyntheticSet:
        """Mines the tree-sets of ``real.train`` (val / test are not looked at)."""
        cfg = self.config
        start = time.perf_counter()
        info = real.info
        train = GraphPack.from_data_list(real.train)
        disc = build_discretiser(cfg.discretiser or info.discretiser, use_edge_labels=cfg.use_edge_labels,
                                 **cfg.discretiser_kwargs).fit(train)

        table = TreeTable()
        ids = computation_tree_ids(disc.node_labels(train), train.edge_index, disc.edge_labels(train), cfg.hops,
                                   table, progress=cfg.progress)
        transactions = graph_transactions(ids[cfg.hops], train.ptr)
        y = train.y.numpy()
        classes = list(range(info.num_classes))
        absent = [c for c in classes if not (y == c).any()]
        if absent:
            raise ValueError(f"classes {absent} have no training graphs; Mirage mines every class separately")
        by_class = {c: [transactions[i] for i in np.flatnonzero(y == c)] for c in classes}
        patterns = mine_per_class(by_class, cfg.support, drop_shared=cfg.drop_shared, max_len=cfg.max_len,
                                  max_itemsets=cfg.max_itemsets_per_class, backend=cfg.miner)
        empty = [c for c in classes if not patterns[c].itemsets]
        if empty:
            hints = []
            for c in empty:
                counts = np.bincount(np.concatenate(by_class[c])) if by_class[c] else np.zeros(1)
                hints.append(f"class {c}: threshold {patterns[c].threshold} of {len(by_class[c])} graphs, most "
                             f"frequent tree in {int(counts.max())}")
            raise ValueError(f"no frequent tree-set for classes {empty} ({'; '.join(hints)}); lower `support`"
                             + (" or disable drop_shared" if cfg.drop_shared else ""))

        tree_sets = [TreeSet(s, k, c) for c in classes for s, k in patterns[c].itemsets]
        if cfg.drop_single_node_trees:
            tree_sets = drop_single_node_trees(table, tree_sets)
            if not tree_sets:
                raise ValueError("every tree-set consisted of single-node trees; set drop_single_node_trees=False")
        pack = materialise_tree_sets(table, tree_sets, disc)
        tensors = pack.to_tensors()
        tensors.update(encode_tree_sets(table, tree_sets))
        seconds = time.perf_counter() - start

        distilled = tree_set_bytes(table, [ts.trees for ts in tree_sets])
        full_tree = tree_set_bytes(table, [t.tolist() for t in transactions])
        full_graph = sum(pack_graph_bytes(train))
        meta = graph_meta(self, real, disc, readout="roots", hops=cfg.hops)
        meta.update({
            "support": cfg.support if isinstance(cfg.support, (int, float)) else list(cfg.support),
            "thresholds": [patterns[c].threshold for c in classes],
            "class_graphs": [patterns[c].num_transactions for c in classes],
            "tree_sets_per_class": [sum(1 for ts in tree_sets if ts.label == c) for c in classes],
            "dropped_shared_per_class": [patterns[c].dropped_shared for c in classes],
            "truncated_per_class": [patterns[c].truncated for c in classes],
            "unique_trees_per_class": [int(np.unique(np.concatenate(by_class[c])).size) for c in classes],
            "unique_trees": int(np.unique(ids[cfg.hops]).size),
            "distinct_trees_distilled": len({t for ts in tree_sets for t in ts.trees}),
            "bytes_definition": "int32 canonical tree-set encoding: 4*(3*sum_{distinct trees} nodes + "
                                "sum_{tree-sets} (3 + |set|)); see ddistill.graph.trees.tree_set_bytes",
            "distilled_bytes": distilled,
            "full_tree_bytes": full_tree,
            "full_graph_bytes": full_graph,
            "tensor_bytes": int(sum(t.numel() * t.element_size() for t in tensors.values())),
            "distill_seconds": seconds,
            "train_graphs": train.num_graphs,
        })
        self.log_step(1, {"tree_sets": float(len(tree_sets)), "distilled_bytes": float(distilled), "seconds": seconds})
        return SyntheticSet(tensors, meta)
