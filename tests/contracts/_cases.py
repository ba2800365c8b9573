"""One tiny, fast case per registered synthesizer and evaluator, for the contract tests.

A new method adds its case here (or an explicit opt-out with a reason): the contract tests fail for a registry name
that has neither, so no method ships without the generic tests (fit, round trip, determinism, metadata, resume).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ddistill.data import load_real
from tests._helpers import FAST

#: Image data every image case runs on (scikit-learn's digits, bundled).
_DIGITS: dict[str, Any] = {}


def digits():
    if "real" not in _DIGITS:
        _DIGITS["real"], _DIGITS["test"] = load_real("digits")
    return _DIGITS["real"], _DIGITS["test"]


@dataclass
class SynthCase:
    """How to run one synthesizer on tiny data.

    Args:
        config: the synthesizer's config fields.
        data: ``() -> training data`` (RealData or a GraphDataset).
        kwargs: extra constructor arguments (e.g. a teacher module).
        resumable: it has intermediate state to resume (iterative methods); otherwise the reason it has none.
        requires: importable packages the case needs (skipped without them).
    """

    config: dict[str, Any]
    data: Callable[[], Any] = lambda: digits()[0]
    kwargs: Callable[[], dict[str, Any]] = dict
    resumable: bool | str = True
    requires: tuple[str, ...] = ()


_NET = {"model": "convnet", "model_kwargs": {"depth": 2, "width": 8}}


def _toy_graphs():
    from tests._helpers import toy_graphs

    return toy_graphs()


def _experts() -> dict[str, Any]:
    """A one-expert file (ConvNet d1 w8, 3 epochs on digits), made once per session."""
    if "experts" not in _DIGITS:
        import tempfile
        from pathlib import Path

        from synthesizers.mtt import expert_config_from_preset, new_expert_file, train_expert

        real, _ = digits()
        cfg = expert_config_from_preset("mtt", model="convnet", model_kwargs={"width": 8, "depth": 1},
                                        train={"epochs": 3})
        f = new_expert_file(real, cfg, seed=0)
        f.add(0, train_expert(real, cfg, index=0, seed=0))
        path = Path(tempfile.mkdtemp(prefix="ddistill-contract-")) / "experts.pt"
        f.save(path)
        _DIGITS["experts"] = str(path)
    return {"experts": _DIGITS["experts"]}


def _teacher() -> dict[str, Any]:
    class Teacher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))

        def forward(self, x):
            return self.net(x)

    return {"teacher": Teacher()}


SYNTH_CASES: dict[str, SynthCase] = {
    "dm": SynthCase({"ipc": 2, "iterations": 4, "batch_real": 16, "checkpoint_every": 2, "perf": FAST, **_NET}),
    "datadam": SynthCase({"ipc": 2, "iterations": 4, "batch_real": 16, "checkpoint_every": 2, "perf": FAST, **_NET}),
    "mtt": SynthCase({"ipc": 2, "iterations": 4, "syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 2,
                      "lr_images": 100.0, "checkpoint_every": 2}),
    "krr_st": SynthCase({"num_images": 20, "iterations": 4, "num_models": 2, "online_iteration": 2, "batch_real": 32,
                         "lr": 1e-2, "checkpoint_every": 2, "perf": FAST, **_NET}, kwargs=_teacher),
    "random": SynthCase({"ipc": 2}, resumable="one-shot: draws the subset in a single step"),
    "herding": SynthCase({"ipc": 2, "embedding": {**_NET, "train": {"epochs": 1, "augment": "none"}}},
                         resumable="one-shot: embeds once, then selects"),
    "kcenter": SynthCase({"ipc": 2, "embedding": {**_NET, "train": {"epochs": 1, "augment": "none"}}},
                         resumable="one-shot: embeds once, then selects"),
    "full": SynthCase({}, resumable="one-shot: copies the training set"),
    "mirage": SynthCase({"hops": 1, "support": 0.5, "progress": False}, data=_toy_graphs,
                        resumable="one-shot: mines the tree-sets in one pass", requires=("torch_geometric",)),
    "random_graphs": SynthCase({"graphs_per_class": 2}, data=_toy_graphs,
                               resumable="one-shot: draws the graphs in one pass", requires=("torch_geometric",)),
}


def synth_config(name: str) -> dict[str, Any]:
    case = SYNTH_CASES[name]
    config = dict(case.config)
    if name == "mtt":
        config.update(_experts())
    return config


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EvalCase:
    """How to run one evaluator quickly.

    Args:
        config: the evaluator's config fields.
        synset: ``() -> SyntheticSet`` to score (a set good enough to beat chance).
        chance: a score every sensible result beats (None: no chance level, e.g. a rank correlation).
        requires: importable packages the case needs.
    """

    config: dict[str, Any]
    synset: Callable[[], Any]
    chance: float | None = None
    requires: tuple[str, ...] = ()


def _random_set(ipc: int = 5):
    from synthesizers import SYNTHESIZERS

    real, _ = digits()
    cls = SYNTHESIZERS.get("random")
    synset = cls(cls.Config(ipc=ipc), seed=0).fit(real)
    return synset


def _mirage_set():
    from synthesizers import SYNTHESIZERS

    cls = SYNTHESIZERS.get("mirage")
    return cls(cls.Config(hops=1, support=0.5, progress=False)).fit(_toy_graphs())


_RECIPE = {"epochs": 30, "augment": "none"}
EVAL_CASES: dict[str, EvalCase] = {
    "classifier": EvalCase({"num_models": 2, "train": _RECIPE, "perf": FAST, "progress": False, **_NET},
                           _random_set, chance=10.0),
    "continual": EvalCase({"stages": 2, "num_orders": 1, "models_per_order": 1, "train": _RECIPE, "perf": FAST,
                           "progress": False, **_NET}, _random_set, chance=10.0),
    "nas": EvalCase({"num_architectures": 2, "proxy": {"epochs": 3, "augment": "none"},
                     "real": {"epochs": 1, "augment": "none"}, "val_size": 200, "perf": FAST, "progress": False,
                     "space": {"width": [8], "depth": [1, 2], "act": ["relu"], "norm": ["instancenorm"],
                               "pool": ["avgpooling"]}}, _random_set),
    "transfer": EvalCase({"num_runs": 1, "pretrain_recipe": {"epochs": 5, "batch_size": 32},
                          "finetune": {"iterations": 60, "batch_size": 64}, "perf": FAST, "progress": False, **_NET},
                         _random_set, chance=10.0),
    "dd_ranking": EvalCase({"classifier": {"num_models": 2, "train": {"epochs": 10, "augment": "none", "lr_decay_at": 5},
                                           "test_every": 5,
                                           "lr_search": {"grid": [0.01, 0.05], "val_size": 100},
                                           "whole_set": {"epochs": 2, "augment": "none"}, "perf": FAST,
                                           "progress": False, **_NET}}, _random_set),
    "graph": EvalCase({"num_runs": 2, "train": {"epochs": 15, "batch_size": 4}, "threads": 1, "progress": False},
                      _mirage_set, chance=50.0, requires=("torch_geometric",)),
}
