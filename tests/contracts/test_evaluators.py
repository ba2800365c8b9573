"""The evaluator contract, generated from the registry: every registered evaluator states the real data it reads,
gets exactly that from the one core loader (``load_eval_data``, as both command-line paths do), beats chance on a set
that carries the signal, and is a function of its seed."""
from __future__ import annotations

import importlib.util
import math

import pytest

from ddistill.config import from_dict
from ddistill.data import DataSpec, Encoding, EvalData, EvalNeeds, load_eval_data
from evaluators import EVALUATORS, EvalResult

from ._cases import EVAL_CASES

NAMES = EVALUATORS.names()


def _setup(name: str, seed: int = 0):
    case = EVAL_CASES[name]
    for module in case.requires:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name} needs {module}")
    cls = EVALUATORS.get(name)
    evaluator = cls(cls.config_from_preset(None, **case.config), seed=seed)
    synset = case.synset()
    needs = evaluator.needs(synset.meta)
    assert isinstance(needs, EvalNeeds)
    if synset.meta["kind"] == "graph":
        from tests._helpers import toy_graphs

        data = EvalData(graphs=toy_graphs())
    else:
        spec = from_dict(DataSpec, synset.meta["data"], where="meta.data")
        data = load_eval_data(spec, needs, encoding=Encoding.from_meta(synset.meta["encoding"], synset.tensors))
    return evaluator, synset, data


def test_every_registered_evaluator_has_a_case():
    assert sorted(EVAL_CASES) == NAMES, "add a case to tests/contracts/_cases.py"


@pytest.mark.parametrize("name", NAMES)
def test_scores_above_chance_and_reproducibly(name):
    evaluator, synset, data = _setup(name)
    res = evaluator.evaluate(synset, data)
    assert isinstance(res, EvalResult) and res.values and all(math.isfinite(v) for v in res.values)
    assert {"metric", "mean", "std", "values"} <= set(res.to_dict())
    if EVAL_CASES[name].chance is not None:
        assert res.mean > EVAL_CASES[name].chance, f"{name}: {res}"
    again, synset2, data2 = _setup(name)
    assert again.evaluate(synset2, data2).values == res.values


@pytest.mark.parametrize("name", NAMES)
def test_missing_data_is_named(name):
    evaluator, synset, _ = _setup(name)
    with pytest.raises(ValueError, match="needs"):
        evaluator.evaluate(synset, EvalData())
