"""The ``random_graphs`` baseline of the Mirage paper (its "Random" rows): random real training graphs per class within
a byte budget (give Mirage's ``meta["distilled_bytes"]`` for a same-size comparison) or a fixed count, evaluated with
a sum readout over all nodes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ddistill.data.graph import GraphDataset, GraphPack, build_discretiser, pack_graph_bytes
from ddistill.synset import SyntheticSet
from ddistill.utils.seed import make_generator

from ._graph import graph_meta, graph_size_meta
from .base import SYNTHESIZERS, Synthesizer


@dataclass
class RandomGraphsConfig:
    """The "Random" baseline of the Mirage paper: random real training graphs, evaluated with sum pooling.

    Args:
        budget_bytes: total size of the selected graphs (split evenly over classes) under the plain graph
            encoding (:func:`ddistill.data.graph.graph_bytes`); give Mirage's ``meta["distilled_bytes"]`` for a
            same-size comparison. Every class gets at least one graph.
        graphs_per_class: alternatively, a fixed number of graphs per class.
        discretiser: how graphs are featurised for the GNN (None: the dataset's default, as Mirage).
        discretiser_kwargs: extra discretiser arguments.
        use_edge_labels: give the GNN edge features.
        hops: recorded as the default number of GNN layers for evaluation.
    """

    budget_bytes: int | None = None
    graphs_per_class: int | None = None
    discretiser: str | None = None
    discretiser_kwargs: dict[str, Any] = field(default_factory=dict)
    use_edge_labels: bool = True
    hops: int = 2


@SYNTHESIZERS.register("random_graphs")
class RandomGraphs(Synthesizer):
    """Random real training graphs per class within a byte budget (or a fixed count), drawn with the seed.

    The set uses the same tensor layout as Mirage's, without ``root_mask``: the readout sums over all nodes
    ("Random(sum)" in the paper).
    """

    Config = RandomGraphsConfig

    def synthesize(self, real: GraphDataset) -> SyntheticSet:
        cfg = self.config
        if (cfg.budget_bytes is None) == (cfg.graphs_per_class is None):
            raise ValueError("random_graphs needs exactly one of budget_bytes or graphs_per_class")
        start = time.perf_counter()
        info = real.info
        train = GraphPack.from_data_list(real.train)
        disc = build_discretiser(cfg.discretiser or info.discretiser, use_edge_labels=cfg.use_edge_labels,
                                 **cfg.discretiser_kwargs).fit(train)
        sizes = torch.tensor(pack_graph_bytes(train))
        gen = make_generator(self.seed)
        chosen = []
        per_class_budget = None if cfg.budget_bytes is None else cfg.budget_bytes // info.num_classes
        for c in range(info.num_classes):
            members = torch.nonzero(train.y == c).flatten()
            if members.numel() == 0:
                raise ValueError(f"class {c} has no training graphs")
            order = members[torch.randperm(members.numel(), generator=gen)]
            if per_class_budget is None:
                take = order[: cfg.graphs_per_class]
            else:
                within = torch.nonzero(sizes[order].cumsum(0) <= per_class_budget).flatten()
                take = order[: max(1, within.numel())]
            chosen.append(take)
        index = torch.cat(chosen)
        pack = disc.featurise(train.select(index))
        pack.weight = torch.ones(pack.num_graphs)
        meta = graph_meta(self, real, disc, readout="all", hops=cfg.hops)
        meta.update({
            "graphs_per_class": [int(t.numel()) for t in chosen],
            "train_index": index.tolist(),
            "distilled_bytes": int(sizes[index].sum()),
            "full_graph_bytes": int(sizes.sum()),
            "size": graph_size_meta(pack, disc.node_spec(), disc.edge_spec(), distilled_bytes=int(sizes[index].sum()),
                                    full_bytes=int(sizes.sum()), full=train,
                                    encoding="plain graph encoding, 4*(2 + nodes + 3*undirected edges) per graph "
                                             "(ddistill.data.graph.graph_bytes)"),
            "distill_seconds": time.perf_counter() - start,
        })
        return SyntheticSet(pack.to_tensors(), meta)


__all__ = ["RandomGraphs", "RandomGraphsConfig"]
