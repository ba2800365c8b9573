"""The memory-mapped image store (ddistill.data.store): building, loading, refusing bad input, and giving exactly the
tensors and synthetic sets of the in-RAM path for the same pixels."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ddistill.cli import main as cli_main
from ddistill.data import DataSpec, ImageData, MemmapRealData, RealData, build_store, load_data
from ddistill.data.store import IMAGES_FILE, LABELS_FILE, META_FILE, ImageStore, StoreWriter, resize_image
from synthesizers import SYNTHESIZERS

from tests._helpers import FAST, one_torch_thread

MEAN, STD = [0.3], [0.4]  # fixed, so the in-RAM and store paths share one encoding


def _digits_tree(root, train_per_class=12, test_per_class=3):
    """sklearn digits as an ImageFolder of 8x8 grayscale PNGs: root/{train,test}/<digit>/NNNN.png (lossless)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.round(data.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    for c in range(10):
        idx = np.flatnonzero(data.target == c)
        for split, chosen in (("train", idx[:train_per_class]),
                              ("test", idx[train_per_class : train_per_class + test_per_class])):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
            for i, k in enumerate(chosen):
                Image.fromarray(pixels[k], mode="L").save(root / split / str(c) / f"{i:04d}.png")
    return root


def _spec(root, **kw):
    return DataSpec("imagefolder", str(root), kwargs={"channels": 1, "mean": MEAN, "std": STD}, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _digits_tree(tmp_path_factory.mktemp("digits") / "tree")


def test_store_and_in_ram_paths_give_identical_tensors_and_batches(tree, tmp_path):
    ram, ram_test = load_data(_spec(tree))
    mm, mm_test = load_data(_spec(tree, store=str(tmp_path / "store"), resolution=8))
    assert isinstance(mm, MemmapRealData) and isinstance(ram, RealData) and not isinstance(ram, MemmapRealData)
    assert (tmp_path / "store" / "train" / IMAGES_FILE).stat().st_size == 120 * 64
    # Same pixels -> same encoded tensors, bit for bit; same class index, info and encoding.
    assert torch.equal(mm.x[:], ram.x) and torch.equal(mm.y, ram.y)
    assert mm.x.shape == ram.x.shape and tuple(mm.x.shape[1:]) == (1, 8, 8) and len(mm) == len(ram) == 120
    assert mm.info == ram.info and mm.encoding.to_meta() == ram.encoding.to_meta()
    assert torch.equal(mm_test.x, ram_test.x) and torch.equal(mm_test.y, ram_test.y)
    for c in range(10):
        assert torch.equal(mm.class_indices(c), ram.class_indices(c)) and mm.class_count(c) == ram.class_count(c)
    # The same generator seed draws the same batches.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for c in (0, 4, 9):
        assert torch.equal(mm.sample(c, 5, g1), ram.sample(c, 5, g2))
        assert torch.equal(mm.sample(c, 50, g1), ram.sample(c, 50, g2))  # clipped to the whole class
        assert torch.equal(mm.sample(c, 7, g1, replace=True), ram.sample(c, 7, g2, replace=True))
        assert torch.equal(mm.sample_indices(c, 3, g1, strict=True), ram.sample_indices(c, 3, g2, strict=True))
    # Indexing forms: int, negative, mask, list, unsorted tensor.
    assert torch.equal(mm.x[5], ram.x[5]) and torch.equal(mm.x[-1], ram.x[-1])
    idx = torch.tensor([119, 3, 3, 40])
    assert torch.equal(mm.x[idx], ram.x[idx]) and torch.equal(mm.x[[2, 1]], ram.x[[2, 1]])
    mask = ram.y == 2
    assert torch.equal(mm.x[mask], ram.x[mask])
    # Subsets and class selections are views with their own class index.
    sub = torch.tensor([100, 5, 60, 61])
    assert torch.equal(mm.subset(sub).x[:], ram.subset(sub).x) and mm.subset(sub).class_count(0) == 1
    sel, sel_ram = (load_data(_spec(tree, store=str(tmp_path / "store"), classes=[9, 2]))[0],
                    load_data(_spec(tree, classes=[9, 2]))[0])
    assert torch.equal(sel.x[:], sel_ram.x) and sel.info.class_names == ("9", "2") and sel.num_classes == 2
    assert torch.equal(mm.materialize().x, ram.x)


def test_processes_starting_together_build_the_store_once(tree, tmp_path, capsys):
    """Two loaders of the same new store (e.g. the ranks of a torchrun job): one builds it, the other waits and opens
    it (threads here; the lock is an flock, which also separates threads' descriptors)."""
    import threading

    spec = _spec(tree, store=str(tmp_path / "store"), resolution=8)
    start, results, errors = threading.Barrier(2), [], []

    def load():
        start.wait()
        try:
            results.append(load_data(spec)[0])
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [len(r) for r in results] == [120, 120]
    assert capsys.readouterr().out.count("building the train store") == 1


def test_uses_that_need_the_whole_split_say_so(tree, tmp_path):
    mm, _ = load_data(_spec(tree, store=str(tmp_path / "store"), resolution=8))
    with pytest.raises(TypeError, match="whole split as one tensor.*materialize"):
        torch.nn.functional.conv2d(mm.x, torch.zeros(1, 1, 3, 3))
    with pytest.raises(AttributeError, match="materialize"):
        mm.x.to("cpu")
    with pytest.raises(TypeError, match="materialize"):
        np.asarray(mm.x)
    with pytest.raises(IndexError, match="out of range"):
        mm.x[torch.tensor([120])]


@pytest.mark.parametrize("method", ["dm", "datadam"])
def test_distilled_sets_are_identical_from_ram_and_from_the_store(tree, tmp_path, method):
    ram, _ = load_data(_spec(tree))
    mm, _ = load_data(_spec(tree, store=str(tmp_path / "store"), resolution=8))
    cls = SYNTHESIZERS.get(method)
    cfg = cls.Config(ipc=2, iterations=3, batch_real=6, model="convnet", model_kwargs={"depth": 2, "width": 8},
                     perf=FAST)
    with one_torch_thread():
        a = cls(cfg, seed=1).fit(ram)
        b = cls(cfg, seed=1).fit(mm)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, cls(cls.Config(**{**vars(cfg), "iterations": 0}), seed=1).fit(ram).x)
    assert b.meta["data"]["store"] == str(tmp_path / "store") and b.meta["data"]["resolution"] == 8


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise OSError("no RssFile")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status (Linux)")
def test_a_class_batch_maps_only_its_rows(tmp_path):
    """Sampling class batches leaves no store pages mapped: resident memory does not grow with the store's size or
    with what was read. (Touching the raw map does map pages, whole large folios on recent kernels, until released.)"""
    from ddistill.data import Encoding
    from ddistill.data.info import DatasetInfo

    rows, side = 8000, 32  # 24 MiB of pixels, 3 KiB a row
    with StoreWriter(tmp_path / "big", class_names=["a", "b"], counts=[rows // 2] * 2, channels=3,
                     resolution=side) as w:
        rng = np.random.default_rng(0)
        for _ in range(rows // 1000):
            w.append(rng.integers(0, 256, (1000, 3, side, side), dtype=np.uint8))
        w.commit()
    store = ImageStore.open(tmp_path / "big")
    info = DatasetInfo("big", 2, 3, (side, side), (0.5,) * 3, (0.25,) * 3, ("a", "b"))
    real = MemmapRealData.from_store(store, info, Encoding(info.mean, info.std, (3, side, side)))
    g = torch.Generator().manual_seed(0)
    before = _rss_file_kib()
    for _ in range(4):
        assert real.sample(1, 16, g).shape == (16, 3, side, side)
    real.x[:]  # the whole split, encoded, in 64-row reads
    growth = _rss_file_kib() - before
    assert growth < 1024, growth  # not the 24 MiB store
    int(store.images.sum())  # the raw map, read directly, is mapped ...
    assert _rss_file_kib() - before > 16 * 1024
    store.release()  # ... until released
    assert _rss_file_kib() - before < 1024


def test_minibatch_training_reads_batches_from_the_store(tree, tmp_path):
    """Training that only indexes ``x`` batch by batch (``train_classifier``: MTT experts, the random-subset control)
    runs on the store and gives the in-RAM result exactly."""
    from synthesizers.mtt.experts import expert_config_from_preset, train_expert

    ram, _ = load_data(_spec(tree))
    mm, _ = load_data(_spec(tree, store=str(tmp_path / "store"), resolution=8))
    cfg = expert_config_from_preset(None, model="convnet", model_kwargs={"depth": 2, "width": 8},
                                    train={"epochs": 2, "batch_size": 32})
    with one_torch_thread():
        a = train_expert(ram, cfg, index=0, seed=0)
        b = train_expert(mm, cfg, index=0, seed=0)
    assert len(a) == 3 and all(torch.equal(u, v) for u, v in zip(a, b))


def test_center_crop_matches_torchvision_and_rgb_rows_are_class_major(tmp_path):
    from torchvision import transforms

    rng = np.random.default_rng(0)
    sizes = {"b_wide": (5, 9), "a_tall": (11, 6), "c_square": (7, 7)}  # (H, W) per class; classes sort a, b, c
    for name, (h, w) in sizes.items():
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "src" / name / f"{i}.png")
    out = build_store(tmp_path / "src", tmp_path / "s", 4, progress=False)
    store = ImageStore.open(out)
    assert store.meta.class_names == ("a_tall", "b_wide", "c_square") and store.meta.shape == (6, 3, 4, 4)
    assert store.labels.tolist() == [0, 0, 1, 1, 2, 2] and list(store.class_range(1)) == [2, 3]
    reference = transforms.Compose([transforms.Resize(4), transforms.CenterCrop(4)])
    for row, path in enumerate(sorted((tmp_path / "src").glob("*/*.png"))):
        expect = np.asarray(reference(Image.open(path).convert("RGB"))).transpose(2, 0, 1)
        assert np.array_equal(store.images[row], expect), path
    meta = json.loads((out / META_FILE).read_text())
    pixels = np.asarray(store.images, dtype=np.float64) / 255
    assert meta["format"] == "ddistill.image_store" and meta["version"] == 1 and meta["resize"] == "center_crop"
    assert meta["offsets"] == [0, 2, 4, 6] and meta["counts"] == [2, 2, 2] and meta["resolution"] == 4
    np.testing.assert_allclose(meta["mean"], pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(meta["std"], pixels.transpose(1, 0, 2, 3).reshape(3, -1).std(1, ddof=1), rtol=1e-12)
    stretched = resize_image(Image.open(tmp_path / "src" / "b_wide" / "0.png"), 4, "stretch")
    assert stretched.size == (4, 4)
    # Several decoding processes write the same bytes.
    again = build_store(tmp_path / "src", tmp_path / "s2", 4, workers=2, progress=False)
    assert (again / IMAGES_FILE).read_bytes() == (out / IMAGES_FILE).read_bytes()


def test_bad_input_is_one_clear_error(tmp_path):
    src = tmp_path / "src"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{src} does not exist")):
        build_store(src, tmp_path / "out", 8)
    (src / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "cat" / "0.png")
    (src / "dog").mkdir()
    (src / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(f"{src / 'dog'} are missing or hold no images")):
        build_store(src, tmp_path / "out", 8)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "dog" / "0.png")
    (src / "dog" / "1.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image {src / 'dog' / '1.png'}")):
        build_store(src, tmp_path / "out", 8)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # nothing half-written is left
    (src / "dog" / "1.png").unlink()
    out = build_store(src, tmp_path / "out", 8, progress=False)
    with pytest.raises(ValueError, match=re.escape(f"{out} already exists; pass overwrite=True")):
        build_store(src, out, 8)
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(src / "dog" / "1.png")
    assert len(ImageStore.open(build_store(src, out, 8, overwrite=True, progress=False))) == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not an image store.*overwrite replaces stores only"):
        build_store(src, tmp_path / "mine", 8, overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"{tmp_path / 'mine'} is not an image store: {META_FILE} is missing")):
        ImageStore.open(tmp_path / "mine")


def test_damaged_stores_are_refused_without_running_code(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "a" / "0.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "a" / "1.png")

    def fresh(name):
        return build_store(src, tmp_path / name, 4, channels=1, progress=False)

    short = fresh("short")
    with open(short / IMAGES_FILE, "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match=re.escape(f"{short / IMAGES_FILE} holds 20 bytes but {META_FILE} says 32")):
        ImageStore.open(short)
    pickled = fresh("pickled")
    np.save(pickled / LABELS_FILE, np.array([os.system, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=re.escape(f"{pickled / LABELS_FILE} is not a readable plain .npy")):
        ImageStore.open(pickled)
    bad_meta = fresh("bad_meta")
    (bad_meta / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"{bad_meta / META_FILE} is not readable JSON")):
        ImageStore.open(bad_meta)
    newer = fresh("newer")
    meta = json.loads((newer / META_FILE).read_text())
    (newer / META_FILE).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="version 99.*upgrade ddistill"):
        ImageStore.open(newer)
    (newer / META_FILE).write_text(json.dumps({**meta, "counts": [1]}))
    with pytest.raises(ValueError, match="inconsistent"):
        ImageStore.open(newer)
    relabelled = fresh("relabelled")
    np.save(relabelled / LABELS_FILE, np.array([0, 1]))
    with pytest.raises(ValueError, match="does not match the class ranges"):
        ImageStore.open(relabelled)


def test_dataset_spec_errors_and_writer_checks(tree, tmp_path):
    with pytest.raises(ValueError, match="dataset.resolution is the side of a store"):
        DataSpec("imagefolder", str(tree), resolution=8)
    with pytest.raises(FileNotFoundError, match="no train store.*dataset.root is not set"):
        load_data(DataSpec("imagefolder", store=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="dataset.resolution is needed"):
        load_data(_spec(tree, store=str(tmp_path / "s")))
    with pytest.raises(ValueError, match="zca"):
        load_data(_spec(tree, store=str(tmp_path / "s"), resolution=8, zca=True))
    with pytest.raises(ValueError, match="image_size does not apply"):
        load_data(DataSpec("imagefolder", str(tree), kwargs={"image_size": [8, 8]}, store=str(tmp_path / "s"),
                           resolution=8))
    with pytest.raises(ValueError, match="serves folder datasets"):
        load_data(DataSpec("digits", store=str(tmp_path / "s"), resolution=8))
    # cifar10_jpeg keeps its loader's CIFAR-10 constants on the store path too (RGB from the grayscale PNGs here).
    from ddistill.data import MEAN_STD

    real, test = load_data(DataSpec("cifar10_jpeg", str(tree), store=str(tmp_path / "c10"), resolution=8))
    assert (real.info.mean, real.info.std) == MEAN_STD["cifar10"] and tuple(real.x.shape[1:]) == (3, 8, 8)
    assert real.info.name == "cifar10_jpeg" and test.x.shape == (30, 3, 8, 8)
    load_data(_spec(tree, store=str(tmp_path / "s"), resolution=8))
    with pytest.raises(ValueError, match="holds 8 px images but dataset.resolution is 16"):
        load_data(_spec(tree, store=str(tmp_path / "s"), resolution=16))
    with pytest.raises(ValueError, match="only 1 of 2 rows|but only 1 were appended"):
        with StoreWriter(tmp_path / "w", class_names=["a"], counts=[2], channels=1, resolution=2) as w:
            w.append(np.zeros((1, 1, 2, 2), np.uint8))
            w.commit()
    assert not (tmp_path / "w").exists() and not list(tmp_path.glob(".w.*"))


def test_cli_build_store(tree, tmp_path, capsys):
    out = tmp_path / "cli_store"
    assert cli_main(["build-store", str(tree), str(out), "--resolution", "8", "--channels", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'train'}: 120 images of 1x8x8" in printed and f"wrote {out / 'test'}: 30 images" in printed
    assert cli_main(["build-store", str(tree), str(out), "--resolution", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddistill: error: ") and "already exists" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert cli_main(["build-store", str(tmp_path / "nope"), str(tmp_path / "x"), "--resolution", "8"]) == 2
    assert "does not exist" in capsys.readouterr().err
    one = tmp_path / "one"
    assert cli_main(["build-store", str(tree / "train"), str(one), "--resolution", "4", "--channels", "1",
                     "--max-per-class", "2"]) == 0
    assert ImageStore.open(one).meta.shape == (20, 1, 4, 4)
    # The dataset layout the CLI writes is what dataset.store reads.
    real, test = load_data(_spec(tree, store=str(out)))
    assert len(real) == 120 and len(test) == 30 and isinstance(test, ImageData)

    # A whole run from the CLI on the store: distillation, the evaluation's random-subset control (read from the
    # store) and a later `ddistill evaluate`, which re-opens the store the set records.
    import yaml

    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({
        "name": "s", "out_dir": str(tmp_path / "runs"), "dataset": {**_spec(tree, store=str(out)).to_dict()},
        "synthesizer": {"name": "dm", "ipc": 2, "iterations": 2, "batch_real": 8, "checkpoint_every": 2,
                        "model_kwargs": {"depth": 2, "width": 8}, "perf": {"compile": False}},
        "evaluator": {"name": "classifier", "num_models": 1, "train": {"epochs": 2}, "progress": False,
                      "model_kwargs": {"depth": 2, "width": 8}, "perf": {"compile": False}}}))
    assert cli_main(["distill", str(run_yaml)]) == 0
    assert "control random_subset" in capsys.readouterr().out
    synset = tmp_path / "runs" / "s" / "synset.pt"
    assert cli_main(["evaluate", str(synset), "evaluator.num_models=1", "evaluator.train.epochs=1",
                     "evaluator.model=mlp", "evaluator.progress=false", "evaluator.perf.compile=false"]) == 0


LARGE_CONFIGS = {"mtt/imagenette_ipc1.yaml": 128, "mtt/imagenette_ipc10.yaml": 128, "mtt/imagewoof_ipc1.yaml": 128,
                 "mtt/imagewoof_ipc10.yaml": 128, "experts/imagenette_mtt.yaml": 128, "experts/imagewoof_mtt.yaml": 128,
                 "datadam/imagenet1k_ipc1.yaml": 64, "datadam/imagenet1k_ipc10.yaml": 64,
                 "datadam/imagenet1k_ipc50.yaml": 64}


@pytest.mark.parametrize("name", sorted(LARGE_CONFIGS))
def test_large_dataset_configs_use_a_store_and_name_a_missing_root(name, tmp_path):
    """The ImageNette / ImageWoof (128 px) and ImageNet-1K (64 px) configs parse (the run configs are also checked
    by tests/test_configs.py and tests/synthesizers/mtt/test_trajectory_configs.py), read a store at the papers'
    resolution, and say which root to set when it is missing."""
    from pathlib import Path

    from ddistill import config
    from ddistill.cli import RunConfig
    from ddistill.config import build_component
    from synthesizers.mtt.experts import ExpertRunConfig

    path = Path(__file__).resolve().parents[2] / "scripts" / "configs" / name
    if name.startswith("experts/"):
        spec = ExpertRunConfig.load(path).dataset
    else:
        run = config.from_dict(RunConfig, config.load(path), where=str(path))
        cls, cfg = build_component(SYNTHESIZERS, run.synthesizer, "synthesizer")
        assert cls.name == ("mtt" if name.startswith("mtt/") else "datadam")
        spec = run.dataset
    assert spec.resolution == LARGE_CONFIGS[name] and spec.store.startswith("runs/stores/")
    assert spec.root.startswith("/path/to/") and not spec.zca
    spec.store = str(tmp_path / "store")  # never build into the checkout's runs/ from a test
    with pytest.raises(FileNotFoundError, match=re.escape(f"dataset.root {spec.root} does not exist: set it")):
        load_data(spec)


def test_evaluation_controls_read_the_training_split_from_the_store(tree, tmp_path):
    from ddistill.data import EvalNeeds, load_eval_data

    spec = _spec(tree, store=str(tmp_path / "store"), resolution=8)
    real, _ = load_data(spec)
    data = load_eval_data(spec, EvalNeeds(test=True, train=True), encoding=real.encoding)
    assert isinstance(data.train, MemmapRealData)  # never decoded whole into RAM
    ram = load_eval_data(_spec(tree), EvalNeeds(test=True, train=True), encoding=real.encoding)
    assert torch.equal(data.train.x[:], ram.train.x) and torch.equal(data.train.y, ram.train.y)
