"""Graph-classification data: TU and molecule datasets (:data:`GRAPH_DATASETS`), the split container
(:class:`GraphDataset`), the packed many-graph container (:class:`GraphPack`) and the feature discretisers.

Heavy libraries (torch_geometric, ogb, rdkit) are imported inside functions, so ``import ddistill`` never needs them.
"""
from __future__ import annotations

from . import molecules as _molecules  # noqa: F401  (registers the molecule datasets)
from . import tu as _tu  # noqa: F401  (registers the TU datasets)
from .dataset import (GRAPH_DATASETS, GRAPH_SPLITS, GraphDataset, GraphDatasetInfo, list_graph_datasets,
                      load_graph_dataset, official_split, stratified_split)
from .discretise import DISCRETISERS, Discretiser, build_discretiser, discretiser_from_state
from .molecules import import_ogb, scaffold_split
from .pack import BYTES_UNIT, GraphPack, graph_bytes, graph_size_meta, pack_graph_bytes

__all__ = [
    "BYTES_UNIT", "DISCRETISERS", "Discretiser", "GRAPH_DATASETS", "GRAPH_SPLITS", "GraphDataset", "GraphDatasetInfo",
    "GraphPack", "build_discretiser", "discretiser_from_state", "graph_bytes", "graph_size_meta", "import_ogb",
    "list_graph_datasets", "load_graph_dataset", "official_split", "pack_graph_bytes", "scaffold_split",
    "stratified_split",
]
