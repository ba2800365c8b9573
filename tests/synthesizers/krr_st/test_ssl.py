"""The KRR-ST teacher (synthesizers.krr_st.teacher) and the core pieces it uses: Barlow Twins loss, augmentations, LARS, teacher training/resume, teacher files, linear probe, and
the train_teacher script."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ddistill.data import Encoding
from ddistill.models import create_model
from ddistill.augment import RandomPadCropFlip, black_level
from ddistill.io import atomic_torch_save
from ddistill.utils.probe import LinearProbeConfig, linear_probe
from synthesizers.krr_st.teacher import (LARS, BarlowTwinsAugment, BarlowTwinsConfig, TeacherFileError,
                                         barlow_twins_loss, load_teacher, save_teacher, train_teacher)

from tests._helpers import FAST
from .conftest import without_labels

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train_teacher.py"


def _tiny_bt(**kw) -> BarlowTwinsConfig:
    base = dict(model="convnet_bn", model_kwargs={"width": 4, "depth": 1}, projector_dims=[16, 16], epochs=3,
                batch_size=64, max_images=256, warmup_epochs=1, perf=FAST, probe=LinearProbeConfig(iterations=50))
    base.update(kw)
    return BarlowTwinsConfig(**base)


# ---------------------------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------------------------
def test_barlow_twins_loss_known_answers():
    # Two orthogonal, already standardised columns: C = I / (1 + eps) for identical views, -I/(1+eps) for negated.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    eps = 1e-5
    assert barlow_twins_loss(z, z, 0.5).item() == pytest.approx(2 * (1 - 1 / (1 + eps)) ** 2, abs=1e-9)
    assert barlow_twins_loss(z, -z, 0.5).item() == pytest.approx(2 * (1 + 1 / (1 + eps)) ** 2, rel=1e-6)
    # Swapped columns: diagonal 0 (on-diagonal term 2), off-diagonal 1 (twice) weighted by lambda.
    assert barlow_twins_loss(z, z.flip(1), 0.5).item() == pytest.approx(2 + 0.5 * 2 / (1 + eps) ** 2, rel=1e-6)


def test_barlow_twins_loss_matches_numpy():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)

    def std(z):
        z = z.numpy()
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    c = std(z1).T @ std(z2) / 9
    expected = ((1 - np.diag(c)) ** 2).sum() + 5e-3 * (c ** 2 - np.diag(np.diag(c)) ** 2).sum()
    assert barlow_twins_loss(z1, z2).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="same shape|one shape"):
        barlow_twins_loss(z1, z2[:, :3])


# ---------------------------------------------------------------------------------------------------------------
# augmentations and optimiser
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_barlow_augment_is_reproducible_and_in_range(channels):
    aug = BarlowTwinsAugment(BarlowTwinsConfig(blur_p=(1.0, 0.5), solarize_p=(0.0, 1.0)))
    x = torch.rand(6, channels, 16, 16, generator=torch.Generator().manual_seed(0))
    a = aug(x, 0, torch.Generator().manual_seed(1))
    b = aug(x, 0, torch.Generator().manual_seed(1))
    c = aug(x, 1, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    before = torch.random.get_rng_state()
    aug(x, 1, torch.Generator().manual_seed(3))
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is never consumed


def test_resized_crop_with_full_scale_is_identity():
    cfg = BarlowTwinsConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(BarlowTwinsAugment(cfg).resized_crop(x, torch.Generator()), x)


def test_pad_crop_flip_matches_a_loop():
    x = torch.randn(5, 3, 6, 7)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = RandomPadCropFlip(2, True, fill)(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    top, left = torch.randint(0, 5, (5,), generator=g), torch.randint(0, 5, (5,), generator=g)
    flip = torch.rand(5, generator=g) < 0.5
    for i in range(5):
        padded = F.pad(x[i : i + 1] - fill.view(1, 3, 1, 1), (2, 2, 2, 2))[0] + fill.view(3, 1, 1)
        ref = padded[:, top[i] : top[i] + 6, left[i] : left[i] + 7]
        torch.testing.assert_close(out[i], ref.flip(2) if flip[i] else ref)


def test_black_level_is_the_encoded_zero():
    enc = Encoding((0.5, 0.25, 0.0), (0.5, 0.25, 1.0), (3, 4, 4))
    torch.testing.assert_close(black_level(enc), torch.tensor([-1.0, -1.0, 0.0]))


def test_lars_step_known_answer():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])  # ||g|| = 1
    LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02, clip_lr=True).step()
    trust = min(0.02 * 5 / (1 + 0.1 * 5 + 1e-8) / 0.5, 1.0)
    w0, g0 = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]])
    expected = w0 - 0.5 * trust * (g0 + 0.1 * w0)
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))  # bias: no decay, no adaptation: 1 - 0.5 * 2


def test_unknown_optimizer_lists_choices():
    with pytest.raises(KeyError, match="adamw"):
        BarlowTwinsConfig(optimizer="lamb")


# ---------------------------------------------------------------------------------------------------------------
# training, resume, probe
# ---------------------------------------------------------------------------------------------------------------
def test_train_teacher_resume_is_exact_and_labels_unread(digits, tmp_path):
    real = without_labels(digits[0])
    full = train_teacher(real, _tiny_bt(), seed=0)

    class Interrupt(Exception):
        pass

    def stop(epoch, loss):
        assert np.isfinite(loss)
        if epoch == 0:
            raise Interrupt

    ckpt = tmp_path / "teacher.ckpt"
    with pytest.raises(Interrupt):
        train_teacher(real, _tiny_bt(), seed=0, checkpoint=ckpt, progress=False, on_epoch_end=stop)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = train_teacher(real, _tiny_bt(), seed=0, checkpoint=ckpt, resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="another seed or config"):
        train_teacher(real, _tiny_bt(), seed=1, checkpoint=ckpt, resume=True)
    out = resumed(real.x[:4])
    assert out.shape == (4, 4 * 6 * 6) and not resumed.training


def test_linear_probe_beats_chance(digits):
    real, test = digits
    net = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=8, depth=1)
    acc = linear_probe(net, (real.x, real.y), (real.encoding.encode(test.x), test.y),
                       config=LinearProbeConfig(iterations=200), generator=torch.Generator().manual_seed(0))
    assert 50 < acc <= 100


# ---------------------------------------------------------------------------------------------------------------
# teacher files
# ---------------------------------------------------------------------------------------------------------------
def _teacher(tmp_path, **kw):
    net = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=4, depth=1)
    enc = Encoding((0.3,), (0.2,), (1, 8, 8))
    path = save_teacher(tmp_path / "teacher.pt", net, model="convnet_bn", model_kwargs={"width": 4, "depth": 1},
                        encoding=enc, dataset="digits", config={"epochs": 3}, linear_probe_accuracy=91.5, **kw)
    return net, enc, path


def test_teacher_file_round_trip(tmp_path):
    net, enc, path = _teacher(tmp_path)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "ddistill.teacher" and blob["version"] == 1
    keys = {"model", "model_kwargs", "state_dict", "encoding", "dataset", "config", "linear_probe_accuracy"}
    assert keys <= set(blob)
    loaded, info = load_teacher(path)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert info.model == "convnet_bn" and info.dataset == "digits" and info.linear_probe_accuracy == 91.5
    assert info.encoding.to_meta() == enc.to_meta() and info.output_dim == 144 and len(info.sha256) == 64
    json.dumps(info.to_meta())


def test_bad_teacher_files_are_clear_errors(tmp_path):
    net, enc, path = _teacher(tmp_path)
    with pytest.raises(FileNotFoundError, match="train_teacher"):
        load_teacher(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(TeacherFileError, match="garbage.pt is not a ddistill teacher: not a torch file"):
        load_teacher(garbage)
    bare = atomic_torch_save(net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(TeacherFileError, match="save_teacher"):
        load_teacher(bare)
    blob = torch.load(path, weights_only=True)
    atomic_torch_save({**blob, "version": 2}, tmp_path / "newer.pt")
    with pytest.raises(TeacherFileError, match="upgrade"):
        load_teacher(tmp_path / "newer.pt")
    atomic_torch_save({**blob, "model_kwargs": {"width": 8, "depth": 1}}, tmp_path / "mismatch.pt")
    with pytest.raises(TeacherFileError, match="do not fit"):
        load_teacher(tmp_path / "mismatch.pt")
    with pytest.raises(KeyError, match="convnet"):
        save_teacher(tmp_path / "x.pt", net, model="no_such_model", encoding=enc, dataset="digits")


def test_official_teacher_architecture_loads_into_resnet18_ssl():
    """The documented path for the authors' checkpoints: torchvision resnet18 with a 3x3 stride-1 padding-2 stem,
    no max-pool and fc = Identity has exactly the state_dict of resnet18_ssl(stem_padding=2, num_classes=0)."""
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.models.resnet18()
    ref.fc = torch.nn.Identity()
    ref.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    ref.maxpool = torch.nn.Identity()
    ours = create_model("resnet18_ssl", in_channels=3, num_classes=0, image_size=32, stem_padding=2)
    ours.load_state_dict(ref.state_dict())  # strict
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# the script
# ---------------------------------------------------------------------------------------------------------------
def _script():
    spec = importlib.util.spec_from_file_location("train_teacher_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_teacher_script_on_digits(tmp_path, capsys):
    teacher = tmp_path / "teachers" / "teacher.pt"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "t", "dataset": {"name": "digits"},
        "synthesizer": {"name": "krr_st", "teacher": str(teacher), "num_images": 20,
                        "teacher_training": {"model": "convnet_bn", "model_kwargs": {"width": 4, "depth": 1},
                                             "projector_dims": [16, 16], "epochs": 1, "batch_size": 128,
                                             "max_images": 256, "warmup_epochs": 0,
                                             "perf": {"compile": False, "bf16": False}}},
    }))
    main = _script().main
    assert main([str(config), "synthesizer.teacher_training.probe.iterations=50"]) == 0
    net, info = load_teacher(teacher)
    summary = json.loads(teacher.with_suffix(".json").read_text())
    assert info.dataset == "digits" and info.linear_probe_accuracy == summary["linear_probe_accuracy"] > 10
    assert not teacher.with_name("teacher.pt.ckpt").exists()
    assert main([str(config)]) == 2 and "already exists" in capsys.readouterr().err
    bad = tmp_path / "dm.yaml"
    bad.write_text(yaml.safe_dump({"dataset": {"name": "digits"}, "synthesizer": {"name": "dm"}}))
    assert main([str(bad)]) == 2 and "krr_st" in capsys.readouterr().err
