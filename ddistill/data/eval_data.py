"""The real data an evaluation reads, gathered into one object by one loader.

An evaluator states what it reads (:class:`EvalNeeds`: the test split, the real training split encoded like the set,
downstream datasets); :func:`load_eval_data` loads exactly that; the evaluator receives an :class:`EvalData`. Both
command-line paths (``ddistill distill`` with an evaluator, and ``ddistill evaluate``) go through it, so an evaluator
that works in one works in the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .encoding import Encoding
from .info import ImageData
from .real import RealData
from .spec import DataSpec, is_graph_dataset, load_data, load_split

__all__ = ["EvalData", "EvalNeeds", "load_eval_data"]


@dataclass(frozen=True)
class EvalNeeds:
    """What real data an evaluation reads.

    Args:
        test: the held-out split scored (images: the test split; graphs: the dataset with its val/test splits).
        train: the real training split, encoded exactly like the set (e.g. NAS's real-data ranking, the
            random-subset control).
        downstream: datasets to transfer to, each loaded with both splits as uint8 pixels.
    """

    test: bool = True
    train: bool = False
    downstream: tuple[DataSpec, ...] = ()


@dataclass
class EvalData:
    """The real data of one evaluation.

    Args:
        spec: the set's source data (``meta["data"]``), or None for hand-made data.
        test: the image test split as uint8 pixels (None for graph data or when not needed).
        train: the encoded real training split (None when not needed).
        graphs: for graph datasets, the whole dataset (train / val / test) the set was distilled from.
        downstream: ``{label: (train, test)}`` uint8 splits of the transfer targets, keyed by
            :meth:`DataSpec.label` (``cifar10``, ``cifar10[5,6,7,8,9]``).
    """

    spec: DataSpec | None = None
    test: ImageData | None = None
    train: RealData | None = None
    graphs: Any = None
    downstream: dict[str, tuple[ImageData, ImageData]] = field(default_factory=dict)

    def require(self, part: str, evaluator: str) -> Any:
        """``getattr(self, part)``, or a ValueError naming what the evaluator is missing and how to provide it."""
        value = getattr(self, part)
        if value is None or (isinstance(value, dict) and not value):
            raise ValueError(f"the {evaluator} evaluator needs {_DESCRIBE[part]}, which this EvalData lacks; build it "
                             f"with ddistill.data.load_eval_data(spec, evaluator.needs(synset), ...)")
        return value


_DESCRIBE = {"test": "the real test split (EvalData.test)", "train": "the real training split (EvalData.train)",
             "graphs": "the graph dataset (EvalData.graphs)", "downstream": "downstream datasets (EvalData.downstream)"}


def load_eval_data(spec: DataSpec | None, needs: EvalNeeds, *, encoding: Encoding | None = None,
                   device: torch.device | str = "cpu", loaded: tuple[Any, Any] | None = None) -> EvalData:
    """Loads what ``needs`` asks for.

    Args:
        spec: the set's source data (required unless ``needs`` asks only for downstream data).
        needs: what the evaluator reads (``evaluator.needs(synset)``).
        encoding: the set's encoding; the real training split is encoded with it (required for ``needs.train``).
        device: where the encoded training split lives.
        loaded: ``(train, test)`` already in memory from :func:`~ddistill.data.spec.load_data` of the same ``spec``
            (a distillation run), reused instead of read again. Its training split is used only when its encoding
            equals ``encoding``.
    """
    data = EvalData(spec=spec)
    if (needs.test or needs.train) and spec is None:
        raise ValueError("the set records no source data (meta['data']); pass dataset.name=... (and dataset.root=...) "
                         "to say which real data to evaluate on")
    if spec is not None and is_graph_dataset(spec.name):
        graphs = loaded[1] if loaded is not None else load_data(spec, device)[1]
        data.graphs = graphs
    elif spec is not None:
        if needs.test:
            data.test = loaded[1] if loaded is not None else load_split(spec, "test")
        if needs.train:
            if encoding is None:
                raise ValueError("load_eval_data: encoding= is required to load the real training split")
            real = loaded[0] if loaded is not None else None
            if real is None or real.encoding.to_meta() != encoding.to_meta():
                if spec.store is not None:  # read batch by batch from the store, never decoded whole into RAM
                    from .store import load_store_real

                    real = load_store_real(spec, encoding, device)
                else:
                    real = RealData.from_images(load_split(spec, "train"), encoding, device, spec=spec)
            data.train = real
    for target in needs.downstream:
        if target.zca:
            raise ValueError(f"downstream dataset {target.name!r}: downstream data are mean/std normalised with their "
                             f"own statistics; zca is not supported there")
        train, test = load_split(target, "train"), load_split(target, "test")
        data.downstream[target.label()] = (train, test)
    return data
