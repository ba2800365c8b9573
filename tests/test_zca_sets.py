"""``benchmarks/zca_sets.py``: a ZCA set committed without its whitening matrix comes back bit-identical by fitting the
matrix again, and a refit with other bits (here: another ZCA eps recorded) is refused, never used. On digits."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from ddistill.data import DataSpec, Encoding, load_data
from ddistill.synset import SyntheticSet
from synthesizers import SYNTHESIZERS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zca_sets.py"
zca_sets = runpy.run_path(str(SCRIPT))  # the module's functions, without putting benchmarks/ on sys.path


@pytest.fixture
def zca_set(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count strip() records (its default)
    try:
        real, _ = load_data(DataSpec("digits", None, zca=True))
    finally:
        torch.set_num_threads(threads)
    cls = SYNTHESIZERS.get("random")
    return cls(cls.Config(ipc=2), seed=0).fit(real)


def test_strip_and_restore_is_bit_identical(tmp_path, zca_set):
    stripped = zca_sets["strip"](zca_set)
    assert "zca_w" not in stripped.tensors and stripped.meta["zca_refit"]["threads"] == 1
    stripped.save(tmp_path / "s.pt")
    back = zca_sets["restore"](SyntheticSet.load(tmp_path / "s.pt"), None)
    assert sorted(back.tensors) == sorted(zca_set.tensors) and back.meta == zca_set.meta
    for k, t in zca_set.tensors.items():
        assert torch.equal(back.tensors[k], t), k
    # the restored set is usable as the original: its encoding is rebuilt from the attached tensors
    Encoding.from_meta(back.meta["encoding"], back.tensors)
    assert zca_sets["restore"](zca_set, None) is zca_set  # a set that was never stripped passes through


def test_a_refit_with_other_bits_is_refused(zca_set):
    stripped = zca_sets["strip"](zca_set)
    stripped.meta["zca_refit"]["zca_eps"] = 0.2  # the fit now gives another matrix
    with pytest.raises(SystemExit, match=r"the ZCA fitted here \(sha256 \w+\) is not the set's"):
        zca_sets["restore"](stripped, None)


def test_strip_refuses_a_set_without_zca(zca_set):
    plain = SyntheticSet({"x": zca_set.x, "y": zca_set.y}, {**zca_set.meta, "encoding": {
        **zca_set.meta["encoding"], "zca": False}})
    with pytest.raises(SystemExit, match="not ZCA-whitened"):
        zca_sets["strip"](plain)


def test_a_refit_with_other_bits_is_used_only_when_accepted_and_then_recorded(zca_set):
    stripped = zca_sets["strip"](zca_set)
    stripped.meta["zca_refit"]["zca_eps"] = 0.2  # another matrix, as another CPU's last bits would give
    back = zca_sets["restore"](stripped, None, accept_other_bits=True)
    m = back.meta["zca_refit_mismatch"]
    assert m["set_zca_w_sha256"] == zca_sets["tensor_digest"](zca_set.tensors["zca_w"])
    assert m["refit_zca_w_sha256"] == zca_sets["tensor_digest"](back.tensors["zca_w"]) != m["set_zca_w_sha256"]
    assert torch.equal(back.x, zca_set.x) and torch.equal(back.tensors["zca_mean"], zca_set.tensors["zca_mean"])
    assert "zca_refit" not in back.meta
    # a refit that matches records nothing, with or without the flag
    same = zca_sets["restore"](zca_sets["strip"](zca_set), None, accept_other_bits=True)
    assert "zca_refit_mismatch" not in same.meta and torch.equal(same.tensors["zca_w"], zca_set.tensors["zca_w"])


def test_the_evaluation_table_names_every_cell_scored_with_a_mismatched_refit():
    ev = runpy.run_path(str(SCRIPT.parent / "evaluation_cifar10.py"))
    m = {"set_zca_w_sha256": "a" * 64, "refit_zca_w_sha256": "b" * 64, "refit_cpu": "Some CPU"}
    results = {"common": {"s_ipc1": {}}, "dd_ranking_soft": {"s_ipc10": {"zca_refit_mismatch": m}}}
    lines = ev["zca_refit_lines"](results)
    named = [line for line in lines if line.startswith("- ")]
    assert len(named) == 1 and "`s_ipc10` / `dd_ranking_soft`" in named[0]
    assert "aaaaaaaaaaaa" in named[0] and "bbbbbbbbbbbb" in named[0] and "Some CPU" in named[0]
    assert ev["zca_refit_lines"]({"common": {"s_ipc1": {}}}) == []
