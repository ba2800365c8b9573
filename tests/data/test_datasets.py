import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from ddistill.data import Encoding, ZCA, get_dataset, list_datasets, load_real


def test_registry_lists_required_datasets():
    for name in ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagefolder", "tinyimagenet"]:
        assert name in list_datasets()
    with pytest.raises(KeyError, match="unknown dataset 'imagenet9'; choose from"):
        get_dataset("imagenet9")


def test_digits_split_is_fixed_and_disjoint():
    train, test = get_dataset("digits"), get_dataset("digits", split="test")
    assert train.x.dtype == torch.uint8 and train.x.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert torch.equal(get_dataset("digits").y, train.y)  # same seed, same split
    assert set(torch.bincount(test.y).tolist()) <= {44, 45, 46}  # stratified 25 %
    with pytest.raises(ValueError, match="unknown split"):
        get_dataset("digits", split="val")


def _write_tree(root, classes=("cat", "dog"), per_class=3, size=(6, 5), splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i:04d}.png")


def test_imagefolder_decodes_caches_and_reads_archives(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root / "mydata")
    data = get_dataset("imagefolder", root=str(root), alias="mine")  # descends into the single wrapper folder
    assert data.x.shape == (6, 3, 6, 5) and data.info.class_names == ("cat", "dog") and data.info.name == "mine"
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    first = Image.open(root / "mydata/train/cat/0000.png")
    assert torch.equal(data.x[0], torch.from_numpy(np.array(first)).permute(2, 0, 1))  # lossless PNG
    again = get_dataset("imagefolder", root=str(root))  # from the tensor cache
    assert torch.equal(again.x, data.x)
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "mydata", arcname="mydata")
    packed = get_dataset("imagefolder", root=str(archive), split="test")
    assert packed.x.shape == (6, 3, 6, 5)
    resized = get_dataset("imagefolder", root=str(root), image_size=[4, 4])
    assert resized.x.shape == (6, 3, 4, 4)


def test_imagefolder_missing_root_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*tar.gz"):
        get_dataset("imagefolder", root=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs a root"):
        get_dataset("imagefolder")


def _write_cifar10_pickles(base, n_train=20, n_test=10):
    """Writes the CIFAR-10 python format (cifar-10-batches-py) exactly as the official archive lays it out."""
    folder = base / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        # The official pickles were written by Python 2, whose str keys load as str under latin1.
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [int(v) for v in rng.integers(0, 10, n)],
                "batch_label": name, "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(blob, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n_train, "num_vis": 3072}, f)
    return folder


def test_cifar10_through_torchvision_from_pickles(tmp_path):
    folder = _write_cifar10_pickles(tmp_path)
    data = get_dataset("cifar10", root=str(tmp_path), verify_md5=False)
    assert data.x.shape == (100, 3, 32, 32) and data.x.dtype == torch.uint8
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert torch.equal(data.x[0].flatten(), torch.from_numpy(raw["data"][0]))  # CHW order kept
    assert data.y[:20].tolist() == raw["labels"]
    assert data.info.class_names == tuple(f"class{i}" for i in range(10))
    assert data.info.mean == (0.4914, 0.4822, 0.4465)
    assert len(get_dataset("cifar10", root=str(tmp_path), split="test", verify_md5=False)) == 10
    # torchvision checks MD5s by default: a rebuilt copy is refused with a message naming the files.
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        get_dataset("cifar10", root=str(tmp_path))


def test_torchvision_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw.*download=true"):
        get_dataset("mnist", root=str(tmp_path))


def test_tinyimagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids))
    rng = np.random.default_rng(0)
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "train" / w / "images" / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(["n02", "n01", "n02"]):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    train = get_dataset("tinyimagenet", root=str(root))
    test = get_dataset("tinyimagenet", root=str(root), split="test")
    assert train.x.shape == (4, 3, 64, 64) and train.y.tolist() == [0, 0, 1, 1]
    assert test.y.tolist() == [1, 0, 1] and train.info.num_classes == 2


def test_real_data_sampling(digits, generator):
    real, _ = digits
    assert real.x.dtype == torch.float32 and abs(real.x.mean().item()) < 1e-3
    idx = real.sample_indices(3, 5, generator)
    assert (real.y[idx] == 3).all() and idx.unique().numel() == 5
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(real.sample(2, 7, g1), real.sample(2, 7, g2))
    assert real.sample(0, 10_000, generator).shape[0] == real.class_count(0)  # clipped like DC's get_images
    with pytest.raises(ValueError, match="only .* real images"):
        real.sample_indices(0, 10_000, generator, strict=True)


def test_zca_whitens():
    x = torch.rand(400, 1, 4, 4) * torch.linspace(0.2, 1.0, 16).view(1, 1, 4, 4)
    zca = ZCA.fit(x, eps=1e-6)
    white = zca.apply(x).reshape(400, -1)
    cov = torch.cov(white.T)
    torch.testing.assert_close(cov, torch.eye(16), atol=0.05, rtol=0)
    # The ZCA matrix is symmetric (zero-phase), unlike PCA whitening.
    torch.testing.assert_close(zca.w, zca.w.T, atol=1e-4, rtol=0)
    torch.testing.assert_close(zca.invert(zca.apply(x)), x, atol=1e-3, rtol=0)


def test_make_encoding_and_load_real_zca():
    real, test = load_real("digits", zca=True)
    assert real.encoding.zca is not None and real.encoding.normalize is False
    meta = real.encoding.to_meta()
    again = Encoding.from_meta(meta, real.encoding.tensors())
    torch.testing.assert_close(again.encode(test.x[:5]), real.encoding.encode(test.x[:5]))
    with pytest.raises(ValueError, match="no zca_w"):
        Encoding.from_meta(meta, {})
