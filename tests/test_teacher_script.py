"""``benchmarks/teacher_cifar10.py --encoding-from SET``: the soft-label teacher of a ZCA-whitened set is trained on
inputs whitened with that set's own ZCA, so ``load_classifier(..., encoding=<the set's>)`` accepts it, and the default
(mean/std normalised) teacher is refused for that set. On digits, 1 epoch."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

from ddistill.classifier_file import ClassifierFileError, load_classifier
from ddistill.data import DataSpec, Encoding, load_data
from synthesizers import SYNTHESIZERS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "teacher_cifar10.py"


def run_script(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--dataset", "digits", "--epochs", "1", "--threads", "1", *args])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # the script sets the process's threads: leave later tests theirs


def test_teacher_takes_the_sets_zca(tmp_path, monkeypatch):
    # The set's ZCA is fitted at the script's thread count (1): the eigendecomposition's last bits depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        real, _ = load_data(DataSpec("digits", None, zca=True))
    finally:
        torch.set_num_threads(threads)
    cls = SYNTHESIZERS.get("random")
    synset = cls(cls.Config(ipc=2), seed=0).fit(real)
    synset.save(tmp_path / "zca_set.pt")
    enc = Encoding.from_meta(synset.meta["encoding"], synset.tensors)

    run_script(monkeypatch, "--encoding-from", str(tmp_path / "zca_set.pt"), "--teacher-out",
               str(tmp_path / "zca.pt"), "--out", str(tmp_path / "zca"))
    _, header = load_classifier(tmp_path / "zca.pt", encoding=enc)
    assert header["encoding"]["zca"] and "ZCA-whitened" in header["recipe"]["what"]
    assert (tmp_path / "zca.md").exists() and (tmp_path / "zca.json").exists()

    # --zca fits the whitening as the sets' data loader does (the whole training split): the same tensors, so a
    # teacher can be trained before (or without) the set it will label.
    run_script(monkeypatch, "--zca", "--teacher-out", str(tmp_path / "fitted.pt"), "--out", str(tmp_path / "fitted"))
    _, header = load_classifier(tmp_path / "fitted.pt", encoding=enc)
    assert "ZCA-whitened, eps 0.1, fitted on the whole training split" in header["recipe"]["what"]

    run_script(monkeypatch, "--teacher-out", str(tmp_path / "plain.pt"), "--out", str(tmp_path / "plain"))
    with pytest.raises(ClassifierFileError):
        load_classifier(tmp_path / "plain.pt", encoding=enc)
    # A result already written is never replaced without --overwrite, even for another --teacher-out.
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        run_script(monkeypatch, "--teacher-out", str(tmp_path / "other.pt"), "--out", str(tmp_path / "plain"))


def test_encoding_from_a_file_that_is_not_a_set_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("not a set")
    with pytest.raises(SystemExit) as e:
        run_script(monkeypatch, "--encoding-from", str(tmp_path / "notes.txt"), "--teacher-out",
                   str(tmp_path / "t.pt"), "--out", str(tmp_path / "t"))
    assert str(e.value).startswith("--encoding-from:") and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        run_script(monkeypatch, "--encoding-from", str(tmp_path / "missing.pt"), "--teacher-out",
                   str(tmp_path / "t.pt"), "--out", str(tmp_path / "t"))
    assert "does not exist" in str(e.value)
