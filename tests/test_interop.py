"""``ddistill import`` / ``ddistill export``: foreign files written as the official code writes them (torch.save in
tmp_path), imported and checked; round trips through DD-Ranking tensors (bit-identical) and PNG folders (8-bit
quantisation); the command line; the errors."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ddistill.cli import main
from ddistill.data import MEAN_STD, ZCA, DatasetInfo, Encoding
from ddistill.interop import EXPORT_MARKER, EXPORTERS, IMPORTERS, InteropError, Target, export_set, import_set, \
    load_target
from ddistill.synset import SyntheticSet
from ddistill.utils.train import TrainRecipe
from tests._helpers import FAST

K, IPC = 10, 3


@pytest.fixture(scope="module")
def digits_target():
    return load_target("digits")


@pytest.fixture(scope="module")
def digits_zca_target():
    return load_target("digits", zca=True)


def _class_major(real, ipc=IPC, *, noise=0.0, seed=0):
    """``ipc`` encoded real images per class, class-major (as the official code initialises and saves them), plus a
    little noise so that values are not on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([real.class_indices(c)[:ipc] for c in range(real.num_classes)])
    x = real.x[idx].clone()
    if noise:
        x = x + noise * torch.randn(x.shape, generator=g)
    return x, torch.arange(real.num_classes).repeat_interleave(ipc)


def _native_set(real, *, lr=None, soft=False, noise=0.05, ipc=IPC, meta=None):
    """A set as a ddistill synthesizer would save it (encoding meta and tensors from ``real``)."""
    x, y = _class_major(real, ipc, noise=noise)
    tensors = {"x": x, "y": y, **real.encoding.tensors()}
    labels = "hard"
    if soft:
        noise = torch.randn(len(y), real.num_classes, generator=torch.Generator().manual_seed(1))
        tensors["y"] = torch.softmax(noise + 10 * torch.nn.functional.one_hot(y, real.num_classes), 1)  # argmax = y
        labels = "soft"
    if lr is not None:
        tensors["lr"] = torch.tensor(lr)
    m = {"synthesizer": "test", "dataset": real.info.name, "num_classes": real.num_classes,
         "class_names": list(real.info.class_names), "ipc": ipc, "encoding": real.encoding.to_meta(),
         "labels": labels, "data": {"name": real.info.name}}
    m.update(meta or {})
    synset = SyntheticSet(tensors, m)
    synset.validate()
    return synset


def _cifar_target(zca: bool) -> Target:
    """A CIFAR-10-shaped target without the CIFAR-10 files: its constants, and (with ``zca``) a stand-in whitening
    transform (a scaled identity: fitting a real 3072-d ZCA is not needed to test the plumbing)."""
    mean, std = MEAN_STD["cifar10"]
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    info = DatasetInfo("cifar10", 10, 3, (32, 32), mean, std, names)
    enc = Encoding(mean, std, (3, 32, 32), normalize=not zca)
    if zca:
        enc.zca = ZCA(torch.full((3072,), 0.45), torch.eye(3072) * 2.0, 0.1)
    return Target(info, enc, None)


# ------------------------------------------------------------------------------------------------------------------
def test_registries_document_their_encoding():
    assert IMPORTERS.names() == ["dc_res", "ddranking", "mtt", "png"]
    assert EXPORTERS.names() == ["ddranking", "png"]
    for name in IMPORTERS.names():
        cls = IMPORTERS.get(name)
        assert cls.name == name and cls.reads and cls.encoding
    for name in EXPORTERS.names():
        cls = EXPORTERS.get(name)
        assert cls.name == name and cls.writes and cls.encoding
    with pytest.raises(KeyError, match=r"unknown importer 'nope'; choose from \['dc_res', 'ddranking', 'mtt', 'png'\]"):
        import_set("nope", ["x"], dataset="digits")


# -- MTT / AST / DATM -----------------------------------------------------------------------------------------------
def test_mtt_run_folder_hard_labels(tmp_path, digits, digits_target):
    real, _ = digits
    image_syn, label_syn = _class_major(real, noise=0.1)
    run = tmp_path / "logged_files" / "digits" / "run"
    run.mkdir(parents=True)
    # MTT distill.py: torch.save(image_save.cpu(), ...images_best.pt); torch.save(label_syn.cpu(), ...labels_best.pt)
    torch.save(image_syn.detach().requires_grad_(True).cpu(), run / "images_best.pt")
    torch.save(label_syn.cpu(), run / "labels_best.pt")
    torch.save(image_syn.cpu() * 0, run / "images_1000.pt")  # another iteration: not read by default
    synset = import_set("mtt", [run], target=digits_target, lr=0.02)
    assert torch.equal(synset.x, image_syn) and torch.equal(synset.y, label_syn) and not synset.x.requires_grad
    assert float(synset.tensors["lr"]) == pytest.approx(0.02)
    meta = synset.meta
    assert meta["labels"] == "hard" and meta["ipc"] == IPC and meta["dataset"] == "digits"
    assert meta["encoding"] == real.encoding.to_meta() and meta["synthesizer"] == "imported:mtt"
    imp = meta["imported"]
    assert imp["format"] == "mtt" and imp["lr"] == "--lr" and imp["labels"] == "hard (from file)"
    assert imp["files"] == {"images": str(run / "images_best.pt"), "labels": str(run / "labels_best.pt")}
    assert "mean/std" in imp["assumed"][0] or "normalised" in imp["assumed"][0]
    # An explicit file of another iteration picks its own siblings.
    torch.save(label_syn.cpu(), run / "labels_1000.pt")
    other = import_set("mtt", [run / "images_1000.pt"], target=digits_target)
    assert other.x.abs().max() == 0 and "lr" not in other.tensors
    assert other.meta["imported"]["files"]["labels"].endswith("labels_1000.pt")
    assert any("--lr" in a for a in other.meta["imported"]["assumed"])


def test_ast_without_labels_is_class_major(tmp_path, digits, digits_target):
    real, _ = digits
    image_syn, label_syn = _class_major(real)
    torch.save(image_syn.cpu(), tmp_path / "images_best.pt")  # AST saves images only
    synset = import_set("mtt", [tmp_path / "images_best.pt"], target=digits_target)
    assert torch.equal(synset.y, label_syn) and synset.meta["imported"]["labels"] == "class-major default"
    assert any("class-major" in a for a in synset.meta["imported"]["assumed"])
    torch.save(image_syn[:-1].cpu(), tmp_path / "images_best.pt")
    with pytest.raises(InteropError, match="holds 29 images and there is no labels file"):
        import_set("mtt", [tmp_path], target=digits_target)


def test_datm_soft_labels_and_saved_lr(tmp_path, digits, digits_target):
    real, _ = digits
    image_syn, _ = _class_major(real, noise=0.1)
    logits = torch.randn(len(image_syn), K, generator=torch.Generator().manual_seed(3)) * 3
    label_syn = logits.clone().requires_grad_(True)
    syn_lr = torch.tensor(0.0123).requires_grad_(True)
    run = tmp_path / "run" / "Normal"  # DATM: logged_files/<dataset>/<ipc>/<model>/<run>/Normal/
    run.mkdir(parents=True)
    torch.save(image_syn.cpu(), run / "images_best.pt")
    torch.save(label_syn.cpu(), run / "labels_best.pt")
    torch.save(syn_lr.detach().cpu(), run / "lr_best.pt")
    synset = import_set("mtt", [run], target=digits_target)
    assert synset.meta["labels"] == "soft" and synset.y.shape == (30, K)
    assert torch.equal(synset.tensors["y_logits"], logits)
    assert torch.allclose(synset.y, torch.softmax(logits, 1)) and torch.allclose(synset.y.sum(1), torch.ones(30))
    assert torch.equal(synset.tensors["lr"], torch.tensor(0.0123)) and synset.meta["learned"] == ["lr", "x", "y"]
    assert synset.meta["imported"]["lr"] == "lr_best.pt"
    assert any("logits" in a for a in synset.meta["imported"]["assumed"])
    # --lr replaces a saved rate, and says so.
    over = import_set("mtt", [run], target=digits_target, lr=0.5)
    assert float(over.tensors["lr"]) == 0.5 and any("replaces" in a for a in over.meta["imported"]["assumed"])


def test_mtt_zca_cifar_shaped(tmp_path):
    target = _cifar_target(zca=True)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(20, 3, 32, 32, generator=g)
    image_syn = target.encoding.encode(pixels)  # whitened [0, 1] pixels, as MTT --zca trains and saves them
    torch.save(image_syn, tmp_path / "images_best.pt")
    torch.save(torch.arange(10).repeat_interleave(2), tmp_path / "labels_best.pt")
    synset = import_set("mtt", [tmp_path], target=target, lr=0.01)
    enc = synset.meta["encoding"]
    assert enc["zca"] is True and enc["normalize"] is False and enc["zca_eps"] == 0.1 and enc["shape"] == [3, 32, 32]
    assert torch.equal(synset.tensors["zca_w"], target.encoding.zca.w)
    assert torch.allclose(synset.x, (pixels.reshape(20, -1) - 0.45).mul(2.0).reshape(pixels.shape))
    assert "ZCA-whitened" in synset.meta["imported"]["assumed"][0]
    assert synset.meta["class_names"][0] == "airplane" and "data" not in synset.meta
    # The display copy MTT also writes is refused with the way out.
    torch.save(pixels, tmp_path / "images_zca_100.pt")
    with pytest.raises(InteropError, match=r"images_zca_100.pt holds inverse-whitened pixels.*images_100.pt"):
        import_set("mtt", [tmp_path / "images_zca_100.pt"], target=target)
    # Wrong image shape names both shapes.
    torch.save(torch.zeros(20, 3, 28, 28), tmp_path / "images_best.pt")
    with pytest.raises(InteropError, match=r"images_best.pt holds \(20, 3, 28, 28\) images but cifar10 images are "
                                           r"\(3, 32, 32\)"):
        import_set("mtt", [tmp_path], target=target)


def test_mtt_zca_fits_the_datasets_zca(tmp_path, digits_zca_target):
    real_zca_enc = digits_zca_target.encoding
    pixels = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.save(real_zca_enc.encode(pixels), tmp_path / "images_best.pt")
    synset = import_set("mtt", [tmp_path], dataset="digits", zca=True)
    assert synset.meta["encoding"]["zca"] and not synset.meta["encoding"]["normalize"]
    assert synset.meta["data"]["zca"] is True and synset.meta["data"]["name"] == "digits"
    assert torch.equal(synset.tensors["zca_w"], real_zca_enc.zca.w)  # the transform ddistill fits on digits
    assert torch.allclose(synset.decode_images(), pixels, atol=1e-4)


# -- DC / DSA / DM / DataDAM res_*.pt -------------------------------------------------------------------------------
def _dc_res(path: Path, pairs, accs):
    torch.save({"data": pairs, "accs_all_exps": accs}, path)


def test_dc_res_experiments(tmp_path, digits, digits_target):
    real, _ = digits
    pairs = []
    for exp in range(3):
        image_syn, label_syn = _class_major(real, noise=0.1, seed=exp)
        pairs.append([image_syn.detach().cpu(), label_syn.cpu()])
    # The official code's accuracies are numpy floats (acc_avg /= num_exp on numpy sums).
    accs = {"ConvNet": [np.float64(0.25) + np.int64(0), np.sum(np.array([1, 2])) / np.float64(4.0)]}
    path = tmp_path / "res_DM_digits_ConvNet_3ipc.pt"
    _dc_res(path, pairs, accs)
    first = import_set("dc_res", [path], target=digits_target)
    assert torch.equal(first.x, pairs[0][0]) and torch.equal(first.y, pairs[0][1])
    imp = first.meta["imported"]
    assert imp["experiment"] == 0 and imp["pairs_in_file"] == 3 and imp["accs_all_exps"] == {"ConvNet": [0.25, 0.75]}
    assert imp["files"] == {"result": str(path)} and "default" in imp["assumed"][1]
    # DM's ConvNet is DC's instance-norm one: recorded, so an evaluation without evaluator.model trains it.
    assert (first.meta["eval_model"], first.meta["eval_model_kwargs"]) == ("convnet", {"depth": 3})
    last = import_set("dc_res", [path], target=digits_target, experiment=-1)
    assert torch.equal(last.x, pairs[2][0]) and last.meta["imported"]["experiment"] == 2
    with pytest.raises(InteropError, match=r"holds 3 \[images, labels\] pair\(s\).*--experiment 5 is out of range"):
        import_set("dc_res", [path], target=digits_target, experiment=5)
    with pytest.raises(InteropError, match="--experiment applies to result files holding several sets"):
        import_set("mtt", [tmp_path], target=digits_target, experiment=1)
    # Mismatched counts inside a pair name the entry.
    _dc_res(path, [[pairs[0][0], pairs[0][1][:-2]]], {})
    with pytest.raises(InteropError, match=r"data\[0\]\[0\] holds \(30, 1, 8, 8\) images but .*data\[0\]\[1\] holds "
                                           r"28 labels"):
        import_set("dc_res", [path], target=digits_target)
    torch.save({"images": pairs[0][0]}, path)
    with pytest.raises(InteropError, match=r"not an official DC/DSA/DM/DataDAM result file.*found \['images'\]"):
        import_set("dc_res", [path], target=digits_target)


def test_datadam_snapshots_and_zca_after_normalisation(tmp_path, digits):
    real, _ = digits
    target = load_target("digits", zca=True, zca_after_normalize=True)  # DataDAM: Normalize, then kornia ZCA
    assert target.encoding.normalize and target.encoding.zca is not None
    pixels = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    snapshots = [[target.encoding.encode(pixels * s), torch.arange(10).repeat_interleave(3)] for s in (0.5, 1.0)]
    path = tmp_path / "res_DataDAM_digits_ConvNet_3ipc_.pt"
    _dc_res(path, snapshots, {"ConvNet": []})
    with pytest.raises(InteropError, match="holds 2 DataDAM snapshots.*--experiment -1"):
        import_set("dc_res", [path], dataset="digits", zca=True)
    synset = import_set("dc_res", [path], dataset="digits", zca=True, experiment=-1)
    enc = synset.meta["encoding"]
    assert enc["zca"] and enc["normalize"] and torch.equal(synset.x, snapshots[1][0])
    assert torch.allclose(synset.decode_images(), pixels, atol=1e-4)
    assert "normalised with the digits mean" in synset.meta["imported"]["assumed"][0]
    # DataDAM's get_network('ConvNet') is batch norm; a file of one snapshot says it cannot tell which iteration.
    assert synset.meta["eval_model"] == "convnet"
    assert synset.meta["eval_model_kwargs"] == {"norm": "batchnorm", "depth": 3}
    _dc_res(path, snapshots[:1], {"ConvNet": []})
    one = import_set("dc_res", [path], dataset="digits", zca=True)
    assert any("only DataDAM snapshot" in a for a in one.meta["imported"]["assumed"])
    # A network the name does not identify is not guessed.
    other = tmp_path / "res_DC_digits_MLP_3ipc.pt"
    _dc_res(other, snapshots[:1], {})
    unknown = import_set("dc_res", [other], dataset="digits", zca=True)
    assert "eval_model" not in unknown.meta
    assert any("evaluation network unknown" in a for a in unknown.meta["imported"]["assumed"])


def test_dc_res_evaluation_network_from_the_file_name():
    from ddistill.interop.dc_res import evaluation_network

    # DC's ConvNet is depth 3 at any size (ddistill's convnet would pick 4 at 64 px): the depth is stated.
    assert evaluation_network("res_DataDAM_CIFAR10_ConvNet_10ipc_.pt") == ("convnet", {"norm": "batchnorm", "depth": 3})
    assert evaluation_network("res_DSA_CIFAR10_ConvNet_50ipc.pt") == ("convnet", {"depth": 3})
    assert evaluation_network("res_DM_TinyImageNet_ConvNetD4_1ipc.pt") == ("convnet", {"depth": 4})
    assert evaluation_network("res_DM_Tiny_Image_ConvNetBN_1ipc.pt") == ("convnet", {"norm": "batchnorm", "depth": 3})
    assert evaluation_network("res_DC_CIFAR10_ResNet18_10ipc.pt") is None
    assert evaluation_network("my_set.pt") is None


# -- DD-Ranking -----------------------------------------------------------------------------------------------------
def test_ddranking_inputs(tmp_path, digits, digits_target):
    real, _ = digits
    images, _ = _class_major(real, noise=0.1)
    soft = torch.randn(30, K, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "images.pt")
    torch.save(soft, tmp_path / "labels.pt")
    torch.save(torch.tensor(0.01), tmp_path / "lr.pt")
    synset = import_set("ddranking", [tmp_path], target=digits_target)
    assert synset.meta["labels"] == "soft" and torch.equal(synset.tensors["y_logits"], soft)
    assert torch.equal(synset.tensors["lr"], torch.tensor(0.01)) and torch.equal(synset.x, images)
    # Hard labels, given as explicit files (lr as a plain float, as compute_metrics also accepts).
    hard = torch.arange(10).repeat_interleave(3)
    torch.save(hard, tmp_path / "labels_hard.pt")
    torch.save(0.02, tmp_path / "lr_hard.pt")
    synset = import_set("ddranking", [tmp_path / "images.pt", tmp_path / "labels_hard.pt", tmp_path / "lr_hard.pt"],
                        target=digits_target)
    assert synset.meta["labels"] == "hard" and torch.equal(synset.y, hard)
    assert float(synset.tensors["lr"]) == pytest.approx(0.02)
    torch.save(torch.zeros(30, 7), tmp_path / "labels.pt")
    with pytest.raises(InteropError, match="labels.pt holds soft labels over 7 classes but digits has 10"):
        import_set("ddranking", [tmp_path], target=digits_target)
    torch.save(hard + 3, tmp_path / "labels.pt")
    with pytest.raises(InteropError, match=r"labels.pt holds labels in \[3, 12\] but digits has 10 classes"):
        import_set("ddranking", [tmp_path], target=digits_target)
    torch.save((images * 255).to(torch.uint8), tmp_path / "images.pt")
    with pytest.raises(InteropError, match="images.pt holds uint8 images; expected float tensors"):
        import_set("ddranking", [tmp_path], target=digits_target)
    torch.save(torch.tensor(-1.0), tmp_path / "lr.pt")
    torch.save(images, tmp_path / "images.pt")
    torch.save(hard, tmp_path / "labels.pt")
    with pytest.raises(InteropError, match="lr.pt gives the learning rate -1.0"):
        import_set("ddranking", [tmp_path], target=digits_target)


@pytest.mark.parametrize("zca", [False, True])
def test_ddranking_round_trip_is_bit_identical(tmp_path, digits, zca):
    from ddistill.data import load_real

    real = load_real("digits", zca=True)[0] if zca else digits[0]
    synset = _native_set(real, lr=0.03)
    report = export_set(synset, "ddranking", tmp_path / "ddr")
    assert sorted(report.files) == sorted(["images.pt", "labels.pt", "lr.pt", "README.txt", EXPORT_MARKER])
    for name in ("images.pt", "labels.pt", "lr.pt"):
        torch.load(tmp_path / "ddr" / name, weights_only=True)  # what DD-Ranking loads
    record = json.loads((tmp_path / "ddr" / EXPORT_MARKER).read_text())
    assert record["use_zca"] is zca and record["ipc"] == IPC and record["encoding"] == synset.meta["encoding"]
    back = import_set("ddranking", [tmp_path / "ddr"], dataset="digits", zca=zca)
    for key in ("x", "y", "lr") + (("zca_w", "zca_mean") if zca else ()):
        assert torch.equal(back.tensors[key], synset.tensors[key]), key
        assert back.tensors[key].dtype == synset.tensors[key].dtype
    assert back.meta["encoding"] == synset.meta["encoding"]
    with pytest.raises(InteropError, match="drop --zca" if not zca else "pass --zca"):
        import_set("ddranking", [tmp_path / "ddr"], dataset="digits", zca=not zca)


def test_ddranking_round_trip_of_soft_labels(tmp_path, digits, digits_target):
    real, _ = digits
    images, _ = _class_major(real, noise=0.1)
    # Soft labels whose argmax is the class (the export orders images class-major by argmax).
    logits = torch.randn(30, K, generator=torch.Generator().manual_seed(0)) + 10 * torch.eye(K).repeat_interleave(3, 0)
    torch.save(images, tmp_path / "images.pt")
    torch.save(logits, tmp_path / "labels.pt")
    imported = import_set("ddranking", [tmp_path], target=digits_target)
    export_set(imported, "ddranking", tmp_path / "again")
    back = import_set("ddranking", [tmp_path / "again"], target=digits_target)
    for key in ("x", "y", "y_logits"):
        assert torch.equal(back.tensors[key], imported.tensors[key]), key
    # A ddistill soft set (probabilities) exports log-probabilities: softmax gives them back.
    native = _native_set(real, soft=True)
    report = export_set(native, "ddranking", tmp_path / "native")
    assert any("log-probabilities" in n for n in report.notes)
    back = import_set("ddranking", [tmp_path / "native"], target=digits_target)
    assert torch.allclose(back.y, native.y, atol=1e-6)


# -- PNG folders ----------------------------------------------------------------------------------------------------
def test_png_round_trip_of_an_rgb_set(tmp_path):
    # Three channels (the digits tests are grayscale): an RGB ImageFolder written here in the real format, a set in
    # its encoding (per-channel mean/std), exported as RGB PNGs and imported back within 8-bit rounding.
    from PIL import Image

    from ddistill.data import load_real

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("ant", "bee", "cow"):
            (tmp_path / "rgb" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(
                    tmp_path / "rgb" / split / c / f"{i}.png")
    real, _ = load_real("imagefolder", root=str(tmp_path / "rgb"))
    assert real.x.shape[1:] == (3, 6, 6) and real.num_classes == 3
    synset = _native_set(real, noise=0.05, ipc=2)
    export_set(synset, "png", tmp_path / "png")
    with Image.open(next((tmp_path / "png").glob("00001_*/*.png"))) as img:
        assert img.mode == "RGB" and img.size == (6, 6)
    back = import_set("png", [tmp_path / "png"], dataset="imagefolder", root=str(tmp_path / "rgb"))
    assert torch.equal(back.y, synset.y) and back.meta["encoding"] == synset.meta["encoding"]
    error = (back.decode_images() - synset.decode_images()).abs().max()
    assert error <= 0.5 / 255 + 1e-5, float(error) * 255


@pytest.mark.parametrize("zca", [False, True])
def test_png_round_trip_within_8bit_quantisation(tmp_path, digits, zca):
    from ddistill.data import load_real

    real = load_real("digits", zca=True)[0] if zca else digits[0]
    synset = _native_set(real, noise=0.05)
    report = export_set(synset, "png", tmp_path / "png")
    folders = sorted(p.name for p in (tmp_path / "png").iterdir() if p.is_dir())
    assert folders == [f"{c:05d}_{c}" for c in range(10)]
    assert len(list((tmp_path / "png" / "00003_3").glob("*.png"))) == IPC and len(report.files) == 32
    from PIL import Image

    with Image.open(tmp_path / "png" / "00000_0" / "00000.png") as img:
        assert img.mode == "L" and img.size == (8, 8)
    back = import_set("png", [tmp_path / "png"], dataset="digits", zca=zca)
    assert torch.equal(back.y, synset.y) and back.meta["imported"]["class_folders"] == folders
    assert back.meta["encoding"] == synset.meta["encoding"]
    error = (back.decode_images() - synset.decode_images()).abs().max()  # decode_images clamps to [0, 1]
    assert error <= 0.5 / 255 + 1e-5, float(error) * 255


def test_png_class_order_follows_sorted_folders(tmp_path, digits, digits_target):
    real, _ = digits
    # Class names whose alphabetical order is not the class order: the numbered prefix keeps the order.
    names = ("nine", "eight", "seven", "six", "five", "four", "three", "two", "one", "zero")
    target = dataclasses.replace(digits_target, info=dataclasses.replace(digits_target.info, class_names=names))
    synset = _native_set(real, meta={"class_names": list(names)})
    perm = torch.randperm(len(synset), generator=torch.Generator().manual_seed(0))
    shuffled = SyntheticSet({**synset.tensors, "x": synset.x[perm], "y": synset.y[perm]}, dict(synset.meta))
    export_set(shuffled, "png", tmp_path / "png")
    assert sorted(p.name for p in (tmp_path / "png").iterdir() if p.is_dir())[:2] == ["00000_nine", "00001_eight"]
    back = import_set("png", [tmp_path / "png"], target=target)
    assert torch.equal(back.y, synset.y)  # class-major again, classes in the dataset's order
    order = torch.argsort(shuffled.y, stable=True)  # within a class, the set's order
    assert (back.decode_images() - shuffled.decode_images()[order]).abs().max() <= 0.5 / 255 + 1e-5
    # The wrong dataset is caught by the folder names.
    with pytest.raises(InteropError, match="00000_nine in .* is class 0, which digits calls '0'"):
        import_set("png", [tmp_path / "png"], target=digits_target)
    # Folders named after the classes alone would sort into another order: refused, not mislabelled.
    plain = tmp_path / "plain"
    for c, name in enumerate(names):
        (tmp_path / "png" / f"{c:05d}_{name}").rename(tmp_path / "png" / name)
    (tmp_path / "png").rename(plain)
    (plain / EXPORT_MARKER).unlink()
    with pytest.raises(InteropError, match="named after the digits classes but their sorted order is not the class"):
        import_set("png", [plain], target=target)
    shutil.rmtree(plain / "nine")
    with pytest.raises(InteropError, match="has 9 class folders but digits has 10 classes"):
        import_set("png", [plain], target=target)


def test_png_import_checks_image_size(tmp_path, digits_target):
    from PIL import Image

    for c in range(10):
        (tmp_path / f"{c:05d}").mkdir()
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / f"{c:05d}" / "a.png")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "00004" / "b.png")
    with pytest.raises(InteropError, match="00004/b.png is 9x8 but digits images are 8x8"):
        import_set("png", [tmp_path], target=digits_target)


# -- exports: refusals ----------------------------------------------------------------------------------------------
def test_export_never_overwrites_what_a_user_made(tmp_path, digits):
    synset = _native_set(digits[0])
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InteropError, match="already exists and is not empty; pass --overwrite"):
        export_set(synset, "png", out)
    with pytest.raises(InteropError, match="not a folder ddistill exported"):
        export_set(synset, "png", out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    # A previous export is replaced whole (no stale class folders), atomically, with --overwrite.
    first = tmp_path / "export"
    export_set(synset, "png", first)
    with pytest.raises(InteropError, match="already exists"):
        export_set(synset, "ddranking", first)
    export_set(synset, "ddranking", first, overwrite=True)
    assert sorted(p.name for p in first.iterdir()) == sorted(["images.pt", "labels.pt", "README.txt", EXPORT_MARKER])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    export_set(synset, "png", tmp_path / "empty_ok")  # an empty or new folder needs no flag
    (tmp_path / "empty").mkdir()
    export_set(synset, "png", tmp_path / "empty")


def test_export_refuses_what_a_format_cannot_hold(tmp_path, digits):
    synset = _native_set(digits[0])
    regression = SyntheticSet({"x": synset.x, "y": torch.randn(30, 4)}, {**synset.meta, "labels": "regression"})
    with pytest.raises(InteropError, match="needs class labels; this set has regression targets"):
        export_set(regression, "ddranking", tmp_path / "r")
    soft = _native_set(digits[0], soft=True, lr=0.01)
    report = export_set(soft, "png", tmp_path / "soft")
    assert any("argmax" in n for n in report.notes) and any("--lr" in n for n in report.notes)
    with pytest.raises(KeyError, match=r"unknown exporter 'jpeg'; choose from \['ddranking', 'png'\]"):
        export_set(soft, "jpeg", tmp_path / "j")


# -- safety ---------------------------------------------------------------------------------------------------------
def _touch(path):  # what a malicious pickle would run on load
    Path(path).write_text("ran")


class _Payload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (_touch, (self.sentinel,))


def test_pickle_bearing_files_are_refused(tmp_path, digits, digits_target):
    real, _ = digits
    images, _ = _class_major(real)
    sentinel = tmp_path / "sentinel"
    torch.save({"data": [[images, _Payload(str(sentinel))]], "accs_all_exps": {}}, tmp_path / "res_DC_x.pt")
    with pytest.raises(InteropError, match=r"res_DC_x.pt holds Python objects other than tensors and numbers.*"
                                           r"refused"):
        import_set("dc_res", [tmp_path / "res_DC_x.pt"], target=digits_target)
    torch.save(_Payload(str(sentinel)), tmp_path / "images_best.pt")
    with pytest.raises(InteropError, match="holds Python objects"):
        import_set("mtt", [tmp_path], target=digits_target)
    assert not sentinel.exists()
    (tmp_path / "images_best.pt").write_bytes(b"not a torch file")
    with pytest.raises(InteropError, match="images_best.pt is not a readable torch file"):
        import_set("mtt", [tmp_path], target=digits_target)


# -- mismatches -----------------------------------------------------------------------------------------------------
def test_mismatched_counts_name_both_files(tmp_path, digits, digits_target):
    real, _ = digits
    images, labels = _class_major(real)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(labels[:27], tmp_path / "labels_best.pt")
    with pytest.raises(InteropError, match=r"^images_best.pt holds \(30, 1, 8, 8\) images but labels_best.pt holds "
                                           r"27 labels$"):
        import_set("mtt", [tmp_path], target=digits_target)
    torch.save(images.float().fill_(float("nan")), tmp_path / "images_best.pt")
    with pytest.raises(InteropError, match="images_best.pt holds NaN or Inf values"):
        import_set("mtt", [tmp_path], target=digits_target)
    with pytest.raises(InteropError, match="no images file among labels_best.pt"):
        import_set("mtt", [tmp_path / "labels_best.pt"], target=digits_target)
    (tmp_path / "images_best.pt").rename(tmp_path / "images_2000.pt")
    with pytest.raises(InteropError, match="no images_best.pt in .*; it has images_2000.pt: name the file"):
        import_set("mtt", [tmp_path], target=digits_target)


# -- the imported encoding is usable ---------------------------------------------------------------------------------
def test_imported_set_scores_like_a_native_one(tmp_path, digits, digits_target):
    from evaluators import ClassifierConfig, ClassifierEvaluator

    real, test = digits
    images, labels = _class_major(real, ipc=10)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(labels, tmp_path / "labels_best.pt")
    synset = import_set("mtt", [tmp_path], target=digits_target)
    cfg = ClassifierConfig(model="convnet", model_kwargs={"depth": 1, "width": 16}, controls=[], num_models=1,
                           train=TrainRecipe(epochs=20), perf=FAST, progress=False)
    res = ClassifierEvaluator(cfg, seed=0).evaluate(synset, test)
    assert res.mean > 50.0  # chance is 10 %: the real images, encoded as the evaluator encodes the test split
    # Soft labels train too (the soft criterion reads the softmaxed logits).
    torch.save(torch.nn.functional.one_hot(labels, K).float() * 5, tmp_path / "labels_best.pt")
    soft = import_set("mtt", [tmp_path], target=digits_target)
    quick = dataclasses.replace(cfg, train=TrainRecipe(epochs=2))
    assert 0.0 <= ClassifierEvaluator(quick, seed=0).evaluate(soft, test).mean <= 100.0


# -- the command line -----------------------------------------------------------------------------------------------
def test_cli_import_export_round_trip(tmp_path, digits, capsys):
    real, _ = digits
    images, labels = _class_major(real, noise=0.1)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(images, run / "images_best.pt")
    torch.save(labels, run / "labels_best.pt")
    out = tmp_path / "imported.pt"
    assert main(["import", "mtt", str(run), "--dataset", "digits", "--out", str(out), "--lr", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert "imported 30 images (10 classes, ipc 3, hard labels, lr 0.02) from mtt" in printed and "assumed:" in printed
    synset = SyntheticSet.load(out)
    assert torch.equal(synset.x, images) and synset.meta["imported"]["format"] == "mtt"

    assert main(["export", str(out), "--format", "ddranking", "--out", str(tmp_path / "ddr")]) == 0
    assert main(["export", str(out), "--format", "png", "--out", str(tmp_path / "png")]) == 0
    assert "note: the learned lr" in capsys.readouterr().out
    again = tmp_path / "again.pt"
    assert main(["import", "ddranking", str(tmp_path / "ddr"), "--dataset", "digits", "--out", str(again)]) == 0
    back = SyntheticSet.load(again)
    assert torch.equal(back.x, synset.x) and torch.equal(back.y, synset.y) and torch.equal(back.tensors["lr"],
                                                                                           synset.tensors["lr"])
    assert main(["import", "png", str(tmp_path / "png"), "--dataset", "digits", "--out", str(tmp_path / "p.pt")]) == 0
    assert torch.equal(SyntheticSet.load(tmp_path / "p.pt").y, synset.y)

    capsys.readouterr()
    assert main(["list", "importers"]) == 0
    assert capsys.readouterr().out.split() == ["dc_res", "ddranking", "mtt", "png"]
    assert main(["list", "exporters"]) == 0
    assert capsys.readouterr().out.split() == ["ddranking", "png"]


def test_cli_errors_are_one_line(tmp_path, digits, capsys):
    real, _ = digits
    images, labels = _class_major(real)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(labels[:20], tmp_path / "labels_best.pt")
    out = tmp_path / "s.pt"

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("ddistill: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        return err

    assert "choose from ['dc_res', 'ddranking', 'mtt', 'png']" in error(
        ["import", "hdf5", str(tmp_path), "--dataset", "digits", "--out", str(out)])
    assert "holds (30, 1, 8, 8) images but labels_best.pt holds 20 labels" in error(
        ["import", "mtt", str(tmp_path), "--dataset", "digits", "--out", str(out)])
    assert not out.exists()
    torch.save(labels, tmp_path / "labels_best.pt")
    out.write_bytes(b"user's file")
    assert "already exists; pass --overwrite" in error(
        ["import", "mtt", str(tmp_path), "--dataset", "digits", "--out", str(out)])
    assert out.read_bytes() == b"user's file"
    assert main(["import", "mtt", str(tmp_path), "--dataset", "digits", "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert "choose from ['ddranking', 'png']" in error(["export", str(out), "--format", "tfrecord", "--out",
                                                        str(tmp_path / "e")])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    assert "pass --overwrite" in error(["export", str(out), "--format", "png", "--out", str(tmp_path / "busy")])
    assert "not a folder ddistill exported" in error(["export", str(out), "--format", "png", "--out",
                                                      str(tmp_path / "busy"), "--overwrite"])
    assert "unknown dataset 'nope'" in error(["import", "mtt", str(tmp_path), "--dataset", "nope", "--out",
                                              str(tmp_path / "n.pt")])
    assert "cifar10 training split" in error(["import", "mtt", str(tmp_path), "--dataset", "cifar10", "--out",
                                              str(tmp_path / "n.pt")])
    # Files missing under --root: the data layer's problem, import's own remedy (dataset.download is not an
    # option of import, so it is not offered).
    (tmp_path / "empty").mkdir()
    missing = error(["import", "mtt", str(tmp_path), "--dataset", "cifar10", "--root", str(tmp_path / "empty"),
                     "--out", str(tmp_path / "n.pt")])
    assert "not found under" in missing and "cifar-10-batches-py" in missing and "does not hold it" in missing
    assert "download" not in missing
    assert "no such file or folder" in error(["import", "mtt", str(tmp_path / "missing"), "--dataset", "digits",
                                              "--out", str(tmp_path / "n.pt")])
