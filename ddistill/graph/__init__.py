"""Graph-distillation building blocks for Mirage (Gupta et al., ICLR 2024): discrete labels, computation-tree
hashing (:mod:`.trees`) and per-class frequent tree-set mining (:mod:`.mining`)."""
from __future__ import annotations

from .mining import MINERS, ClassPatterns, mine_frequent_itemsets, mine_per_class, pattern_growth, resolve_support
from .trees import (
    DISCRETISERS,
    Discretiser,
    TreeSet,
    TreeTable,
    build_discretiser,
    computation_tree_ids,
    discretiser_from_state,
    encode_tree_sets,
    graph_transactions,
    materialise_tree_sets,
    tree_set_bytes,
)

__all__ = [
    "DISCRETISERS", "MINERS", "ClassPatterns", "Discretiser", "TreeSet", "TreeTable", "build_discretiser",
    "computation_tree_ids", "discretiser_from_state", "encode_tree_sets", "graph_transactions",
    "materialise_tree_sets", "mine_frequent_itemsets", "mine_per_class", "pattern_growth", "resolve_support",
    "tree_set_bytes",
]
