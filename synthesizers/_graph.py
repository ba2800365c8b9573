"""Metadata shared by the graph synthesizers (Mirage and its random-graph baseline): what a set is, and its size."""
from __future__ import annotations

from typing import Any

from ddistill import __version__
from ddistill.config import to_dict
from ddistill.data.graph import Discretiser, GraphDataset, graph_size_meta

from .base import Synthesizer

__all__ = ["graph_meta", "graph_size_meta"]


def graph_meta(synth: Synthesizer, data: GraphDataset, disc: Discretiser, *, readout: str,
               hops: int) -> dict[str, Any]:
    """The keys every graph set records: what it is, how its graphs are featurised (the discretiser's state, so the
    evaluator featurises the real test graphs identically), its readout and the GNN depth it was made for."""
    info = data.info
    meta: dict[str, Any] = {
        "synthesizer": synth.name,
        "dataset": info.name,
        "num_classes": info.num_classes,
        "kind": "graph",
        "readout": readout,
        "labels": "hard",
        "hops": hops,
        "metric": info.metric,
        "discretiser": disc.name,
        "discretiser_state": disc.state_dict(),
        "node_spec": disc.node_spec(),
        "edge_spec": disc.edge_spec(),
        "seed": synth.seed,
        "config": to_dict(synth.config),
        "ddistill_version": __version__,
    }
    if getattr(data, "spec", None) is not None:
        meta["data"] = to_dict(data.spec)
    return meta

