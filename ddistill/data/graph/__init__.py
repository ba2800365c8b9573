"""Graph-classification data: TU and molecule datasets (:data:`GRAPH_DATASETS`), the split container
(:class:`GraphDataset`), the packed many-graph container (:class:`GraphPack`) and the feature discretisers.

Heavy libraries (torch_geometric, ogb, rdkit) are imported inside functions, so ``import ddistill`` never needs them.
"""
from __future__ import annotations

from . import molecules as _molecules  # noqa: F401  (registers the molecule datasets)
from . import tu as _tu  # noqa: F401  (registers the TU datasets)
from .dataset import (GRAPH_DATASETS, GraphDataset, GraphDatasetInfo, list_graph_datasets, load_graph_dataset,
                      stratified_split)
from .discretise import DISCRETISERS, Discretiser, build_discretiser, discretiser_from_state
from .molecules import import_ogb, scaffold_split
from .pack import GraphPack, graph_bytes, pack_graph_bytes

__all__ = [
    "DISCRETISERS", "Discretiser", "GRAPH_DATASETS", "GraphDataset", "GraphDatasetInfo", "GraphPack",
    "build_discretiser", "discretiser_from_state", "graph_bytes", "import_ogb", "list_graph_datasets",
    "load_graph_dataset", "pack_graph_bytes", "scaffold_split", "stratified_split",
]
