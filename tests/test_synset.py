import json

import pytest
import torch

from ddistill.data import Encoding, ZCA
from ddistill.synset import SyntheticSet, SyntheticSetError


def _set(**extra_tensors):
    enc = Encoding((0.5,), (0.25,), (1, 4, 4))
    x = torch.randn(6, 1, 4, 4)
    tensors = {"x": x, "y": torch.tensor([0, 0, 1, 1, 2, 2]), **extra_tensors}
    meta = {"synthesizer": "random", "dataset": "toy", "num_classes": 3, "ipc": 2, "encoding": enc.to_meta(),
            "labels": "hard", "config": {"ipc": 2, "nested": {"a": [1, 2]}}, "maybe": None}
    return SyntheticSet(tensors, meta)


def test_round_trip_weights_only(tmp_path):
    s = _set(lr=torch.tensor(0.01))
    path = s.save(tmp_path / "synset.pt")
    blob = torch.load(path, weights_only=True)  # the file itself is weights_only-safe
    assert blob["format"] == "ddistill.synset" and blob["version"] == 1
    back = SyntheticSet.load(path)
    assert back.meta == s.meta
    for k in s.tensors:
        assert torch.equal(back.tensors[k], s.tensors[k])


def test_zca_round_trip_and_decode(tmp_path):
    x = torch.rand(50, 1, 4, 4)
    zca = ZCA.fit(x, eps=0.1)
    enc = Encoding((0.0,), (1.0,), (1, 4, 4), normalize=False, zca=zca)
    s = SyntheticSet({"x": enc.encode(x[:6]), "y": torch.arange(6) % 3, **enc.tensors()},
                     {"synthesizer": "random", "dataset": "toy", "num_classes": 3, "ipc": 2, "encoding": enc.to_meta()})
    back = SyntheticSet.load(s.save(tmp_path / "z.pt"))
    assert back.meta["encoding"]["zca"] is True
    torch.testing.assert_close(back.decode_images(), x[:6].clamp(0, 1), atol=1e-4, rtol=1e-4)


def test_foreign_file(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"images": torch.zeros(2)}, path)
    with pytest.raises(SyntheticSetError, match="not a ddistill synthetic set"):
        SyntheticSet.load(path)


def test_truncated_file(tmp_path):
    path = _set().save(tmp_path / "s.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SyntheticSetError, match="truncated"):
        SyntheticSet.load(path)


def test_a_text_file_an_empty_file_and_a_folder_are_named_plainly(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(SyntheticSetError, match=r"notes.txt is not a ddistill synthetic set: not a torch file \("):
        SyntheticSet.load(tmp_path / "notes.txt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(SyntheticSetError, match="empty.pt is not a ddistill synthetic set: the file is empty"):
        SyntheticSet.load(tmp_path / "empty.pt")
    run = tmp_path / "run"
    run.mkdir()
    _set().save(run / "synset.pt")
    with pytest.raises(FileNotFoundError, match=r"run is a folder; a synthetic set is a file \(.pt files in it: "
                                                r"synset.pt\)"):
        SyntheticSet.load(run)


def test_newer_version(tmp_path):
    s = _set()
    path = tmp_path / "new.pt"
    torch.save({"format": "ddistill.synset", "version": 99, "tensors": s.tensors, "meta": s.meta}, path)
    with pytest.raises(SyntheticSetError, match="version 99"):
        SyntheticSet.load(path)


def test_not_a_file_and_text_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        SyntheticSet.load(tmp_path / "missing.pt")
    (tmp_path / "t.pt").write_text("hello")
    with pytest.raises(SyntheticSetError):
        SyntheticSet.load(tmp_path / "t.pt")


def test_invalid_sets_rejected(tmp_path):
    s = _set()
    del s.meta["dataset"]
    with pytest.raises(SyntheticSetError, match="lacks"):
        s.save(tmp_path / "a.pt")
    s = _set()
    s.tensors["x"][0, 0, 0, 0] = float("nan")
    with pytest.raises(SyntheticSetError, match="NaN"):
        s.save(tmp_path / "b.pt")
    s = _set()
    s.meta["bad"] = object()
    with pytest.raises(SyntheticSetError, match="JSON"):
        s.save(tmp_path / "c.pt")


def test_grid_png(tmp_path):
    from PIL import Image

    path = _set().save_grid(tmp_path / "grid.png", scale=2)
    with Image.open(path) as im:
        assert im.size[0] > 8 and im.size[1] > 8
    json.dumps(_set().meta)
