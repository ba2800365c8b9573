"""Mirage (Gupta et al., ICLR 2024): graph distillation by frequent computation trees. One home: the synthesizer
(:mod:`.synthesizer`), computation-tree hashing and materialisation (:mod:`.trees`), frequent tree-set mining
(:mod:`.mining`) and support-threshold schedules (:mod:`.selection`). The discretisers it hashes on are core
graph-data tools (:mod:`ddistill.data.graph.discretise`)."""
from __future__ import annotations

from .mining import MINERS, ClassPatterns, mine_frequent_itemsets, mine_per_class, pattern_growth, resolve_support
from .selection import SELECTION_SPLITS, SUPPORT_SCORERS, SupportSelection
from .synthesizer import Mirage, MirageConfig
from .trees import (TreeSet, TreeTable, computation_tree_ids, drop_single_node_trees, encode_tree_sets,
                    graph_transactions, materialise_tree_sets, tree_set_bytes)

__all__ = [
    "MINERS", "SELECTION_SPLITS", "SUPPORT_SCORERS", "ClassPatterns", "Mirage", "MirageConfig", "SupportSelection",
    "TreeSet", "TreeTable", "computation_tree_ids",
    "drop_single_node_trees", "encode_tree_sets", "graph_transactions", "materialise_tree_sets",
    "mine_frequent_itemsets", "mine_per_class", "pattern_growth", "resolve_support", "tree_set_bytes",
]
