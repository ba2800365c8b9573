"""Trajectory matching (MTT) and AST's student-side switches: exact gradients, both unroll modes, a short fit on
digits, resume, presets, and the AST pieces on known answers."""
from __future__ import annotations

import math

import pytest
import torch

from ddistill.augment import DSA, NoAugment
from ddistill.data import load_real
from ddistill.models import MLP, ConvNet
from ddistill.synset import SyntheticSet
from ddistill.utils.perf import PerfConfig
from ddistill.utils.train import TrainRecipe
from evaluators.classifier import ClassifierConfig, ClassifierEvaluator
from synthesizers.base import SYNTHESIZERS
from synthesizers.mtt import (
    PRESETS,
    ExpertFileError,
    ParamLayout,
    expert_config_from_preset,
    new_expert_file,
    train_expert,
    InnerPlan,
    MTTConfig,
    TrajectoryMatching,
    TrajectoryUnroll,
    balance_factor,
    kmeans,
    perturb_conv_weights,
    representative_indices,
)

EXPERT = dict(model="convnet", model_kwargs={"width": 8, "depth": 1}, train={"epochs": 3, "batch_size": 256})


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------------
# The unroll: gradients against finite differences, and memory-saving == plain
# ---------------------------------------------------------------------------------------------------------------
def _tiny_unroll(momentum: float, intermediate: bool, dtype=torch.float64, augment=None, batch=4, steps=4,
                 model=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = model or MLP(in_channels=1, num_classes=3, image_size=3, hidden=(5,), act="sigmoid")
    model = model.to(dtype)
    layout = ParamLayout.from_module(model)
    n_img = 6
    labels = torch.arange(3).repeat_interleave(2)
    theta0 = torch.randn(layout.numel, generator=g, dtype=dtype) * 0.5
    target = theta0 + 0.1 * torch.randn(layout.numel, generator=g, dtype=dtype)
    middle = theta0 + 0.05 * torch.randn(layout.numel, generator=g, dtype=dtype)
    augment = augment or NoAugment()
    batches = [torch.randperm(n_img, generator=g)[:batch] for _ in range(steps)]
    params = [augment.sample_params(batch, g) for _ in range(steps)]
    unroll = TrajectoryUnroll(model, layout, labels, InnerPlan(batches, params), augment, theta0, target,
                              intermediate=[(2, middle)] if intermediate else [], intermediate_weight=0.7,
                              inner_momentum=momentum, ce_scale=1.3)
    return unroll


@pytest.mark.parametrize("memory_saving", [False, True], ids=["plain", "memory_saving"])
@pytest.mark.parametrize("momentum,intermediate", [(0.0, False), (0.9, True)], ids=["mtt", "ast"])
def test_trajectory_loss_gradient_matches_finite_differences(momentum, intermediate, memory_saving):
    """d L / d(x, lr) of MTT Eq. 2 (through the whole unroll) equals central finite differences in float64."""
    unroll = _tiny_unroll(momentum, intermediate)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: unroll.loss(a, b, memory_saving=memory_saving), (x, lr),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_memory_saving_gives_the_plain_gradient_with_dsa_and_convnet():
    """The per-step recomputation replays the same DSA draws and gives the plain unroll's value and gradient."""
    torch.manual_seed(0)  # only for the ConvNet's (irrelevant) own weights
    net = ConvNet(in_channels=1, num_classes=3, image_size=8, width=4, depth=1)
    dsa = DSA("color_crop_cutout_scale_rotate")
    unroll = _tiny_unroll(0.9, True, dtype=torch.float32, augment=dsa, model=net, steps=5)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    grads = []
    for memory_saving in (False, True):
        xs = x.clone().requires_grad_(True)
        lr = torch.tensor(0.05, requires_grad=True)
        loss = unroll.loss(xs, lr, memory_saving=memory_saving)
        loss.backward()
        grads.append((loss.detach(), xs.grad, lr.grad))
    (l0, gx0, glr0), (l1, gx1, glr1) = grads
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(glr1, glr0, rtol=1e-4, atol=1e-6)
    assert gx0.abs().sum() > 0 and glr0.abs() > 0


def test_loss_is_normalised_distance_known_answer():
    """With lr = 0 the student stays at theta*_t, so Eq. 2 is exactly 1 (plus the intermediate term's own ratio)."""
    unroll = _tiny_unroll(0.0, False)
    x = torch.randn(6, 1, 3, 3, dtype=torch.float64)
    assert unroll.loss(x, torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------
# AST pieces on known answers
# ---------------------------------------------------------------------------------------------------------------
def test_balance_factor_multiplies_late_and_divides_early_starts():
    assert balance_factor(10, 20) == pytest.approx(math.log(8, 5))
    assert balance_factor(15, 20) == pytest.approx(math.log(13, 5))
    assert balance_factor(0, 20) == pytest.approx(1 / math.log(18, 5))
    assert balance_factor(9, 20) == pytest.approx(1 / math.log(9, 5))


def test_weight_perturbation_touches_conv_weights_only():
    net = ConvNet(in_channels=1, num_classes=3, image_size=8, width=4, depth=2)
    layout = ParamLayout.from_module(net)
    theta = layout.flatten(net)
    out = perturb_conv_weights(theta, layout, 1.0, torch.Generator().manual_seed(0))
    for name, sl, shape in layout.slices():
        changed = not torch.equal(out[sl], theta[sl])
        assert changed == (len(shape) == 4), name
        if len(shape) == 4:  # w + (d/||d||) * w: the relative change per element is |d_i| / ||d|| <= 1
            assert ((out[sl] - theta[sl]).abs() <= theta[sl].abs() + 1e-7).all()


def test_representative_selection_ipc1_and_uneven_ipc():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.randn(20, 2) + 10, torch.randn(20, 2) - 10])
    one = representative_indices(pts, 1, g)
    nearest_mean = ((pts - pts.mean(0)) ** 2).sum(1).argmin()
    assert one.tolist() == [int(nearest_mean)]
    many = representative_indices(pts, 15, g, clusters=10)
    assert len(many) == 15 and len(set(many.tolist())) == 15
    two = representative_indices(pts, 2, g)
    assert {int(i) < 20 for i in two} == {True, False}  # one representative per blob
    centres = kmeans(pts, 2, torch.Generator().manual_seed(3))
    assert sorted(centres[:, 0].sign().tolist()) == [-1.0, 1.0]


def test_presets_cover_the_table_and_parse():
    for name in ("cifar10_ipc1", "cifar10_ipc10", "cifar10_ipc50", "cifar100_ipc1", "cifar100_ipc10",
                 "cifar100_ipc50", "tinyimagenet_ipc1", "tinyimagenet_ipc10"):
        cfg = TrajectoryMatching.config_from_preset(name, experts="x")
        ast = TrajectoryMatching.config_from_preset(f"{name}_ast", experts="x")
        assert cfg.preset == name and cfg.inner_momentum == 0 and ast.inner_momentum == 0.9
        assert ast.init == "representative" and ast.balanced_inner_loss and ast.intermediate_matching == 1.0
    c = TrajectoryMatching.config_from_preset("cifar100_ipc50")
    assert (c.syn_steps, c.expert_epochs, c.max_start_epoch, c.lr_images, c.batch_syn) == (80, 2, 40, 1000.0, 125)
    assert PRESETS["cifar10_ipc1"]["lr_lr"] == 1e-7
    # AST's own CIFAR-10 IPC 10 command: MTT-different rates, real init, perturbed-start normaliser, balanced loss.
    a = TrajectoryMatching.config_from_preset("cifar10_ipc10_ast_official", experts="x")
    assert (a.syn_steps, a.expert_epochs, a.max_start_epoch, a.lr_images, a.lr_lr, a.lr_teacher) == \
        (30, 2, 20, 100.0, 1e-6, 0.01)
    assert a.init == "real" and a.distance_from == "student_start" and a.balanced_inner_loss
    assert a.weight_perturbation == 1.0 and a.intermediate_matching == 1.0 and a.inner_momentum == 0.9
    b = TrajectoryMatching.config_from_preset("cifar100_ipc10_ast_official", experts="x")
    assert b.init == "representative" and not b.balanced_inner_loss and b.batch_syn == 128
    with pytest.raises(ValueError, match="distance_from"):
        MTTConfig(distance_from="start")
    with pytest.raises(KeyError, match="cifar10_ipc10"):
        TrajectoryMatching.config_from_preset("cifar10_ipc20")


# ---------------------------------------------------------------------------------------------------------------
# The synthesizer on digits
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Two tiny ConvNet experts (3 epochs) on digits, and the data they were trained on."""
    real, test = load_real("digits")
    cfg = expert_config_from_preset(None, **EXPERT)
    f = new_expert_file(real, cfg, seed=0)
    for i in range(2):
        f.add(i, train_expert(real, cfg, index=i, seed=0))
    path = tmp_path_factory.mktemp("experts") / "experts_00000-00001.pt"
    f.save(path)
    return real, test, path


def _mtt(path, **kw):
    base = dict(ipc=2, iterations=4, experts=str(path), syn_steps=4, expert_epochs=1, max_start_epoch=2,
                lr_images=100.0, lr_lr=1e-5, lr_teacher=0.01, checkpoint_every=2)
    base.update(kw)
    return MTTConfig(**base)


def test_fit_lowers_the_loss_changes_images_and_saves_lr(experts, tmp_path):
    real, _, path = experts
    cls = SYNTHESIZERS.get("mtt")
    # One expert, one start epoch, all images every step, no augmentation: every iteration matches the same
    # segment, so the loss must go down as x and lr are optimised.
    cfg = _mtt(path, iterations=12, max_experts=1, max_start_epoch=1, augment="none", lr_images=100.0,
               lr_lr=1e-4)
    losses = []
    synset = cls(cfg, seed=0).fit(real, callbacks=[lambda s, step, logs: losses.append(logs["loss"])])
    init = cls(_mtt(path, iterations=0, max_experts=1, max_start_epoch=1, augment="none"), seed=0).fit(
        real)
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.allclose(synset.x, init.x)
    assert float(synset.tensors["lr"]) != pytest.approx(0.01, rel=1e-9, abs=0)
    assert synset.meta["learned"] == ["lr", "x"] and synset.meta["eval_model"] == "convnet"
    assert synset.meta["eval_model_kwargs"] == EXPERT["model_kwargs"] and synset.meta["synthesizer"] == "mtt"
    synset.save(tmp_path / "synset.pt")
    back = SyntheticSet.load(tmp_path / "synset.pt")
    assert back.tensors["lr"].dim() == 0 and torch.equal(back.x, synset.x)
    # The evaluator trains the recorded architecture with the learned rate.
    cfg = ClassifierConfig(train=TrainRecipe(lr="learned", epochs=2), num_models=1, controls=[], perf=PerfConfig(False, False, False))
    result = ClassifierEvaluator(cfg).evaluate(back, experts[1])
    assert result.details["lr"] == pytest.approx(float(synset.tensors["lr"])) and result.details["model"] == "convnet"


def test_ast_switches_run_with_memory_saving_and_ipc1(experts):
    real, _, path = experts
    cfg = _mtt(path, ipc=1, iterations=2, expert_epochs=2, max_start_epoch=1, syn_steps=4, init="representative",
               inner_momentum=0.9, balanced_inner_loss=True, intermediate_matching=1.0, weight_perturbation=1.0,
               distance_from="student_start", memory_saving=True)
    logs = []
    synset = TrajectoryMatching(cfg, seed=1).fit(real, callbacks=[lambda s, step, log: logs.append(log)])
    assert synset.x.shape == (10, 1, 8, 8) and torch.isfinite(synset.x).all()
    assert all(log["ce_scale"] != 1.0 and {"loss", "expert", "start_epoch", "syn_lr"} <= set(log) for log in logs)


def test_memory_saving_matches_plain_on_a_synthesizer_step(experts):
    real, _, path = experts
    grads = []
    for memory_saving in (False, True):
        synth = TrajectoryMatching(_mtt(path, batch_syn=7, inner_momentum=0.9, memory_saving=memory_saving), seed=4)
        synth.setup(real)
        loss, _ = synth.loss(real, 0)
        loss.backward()
        grads.append((loss.detach(), synth.params["x"].grad.clone(), synth.params["lr"].grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grads[1][2], grads[0][2], rtol=1e-4, atol=1e-7)


def test_experts_must_match_the_encoding_and_budget(experts):
    _, _, path = experts
    zca_real, _ = load_real("digits", zca=True)
    with pytest.raises(ExpertFileError, match="zca"):
        TrajectoryMatching(_mtt(path), seed=0).fit(zca_real)
    real = experts[0]
    with pytest.raises(ValueError, match="max_start_epoch"):
        TrajectoryMatching(_mtt(path, max_start_epoch=4, expert_epochs=1), seed=0).fit(real)
    with pytest.raises(ValueError, match="experts"):
        TrajectoryMatching(_mtt("", iterations=1), seed=0).fit(real)


def test_zca_data_round_trip(tmp_path):
    """Experts and distillation on ZCA-whitened data; the set carries the whitening for the evaluator."""
    real, _ = load_real("digits", zca=True)
    cfg = expert_config_from_preset(None, **{**EXPERT, "train": {"epochs": 1}})
    f = new_expert_file(real, cfg, seed=0)
    f.add(0, train_expert(real, cfg, index=0, seed=0))
    f.save(tmp_path / "e.pt")
    assert f.encoding["zca"] is True
    synset = TrajectoryMatching(_mtt(tmp_path / "e.pt", iterations=1, max_start_epoch=1), seed=0).fit(
        real)
    assert synset.meta["encoding"]["zca"] and {"zca_w", "zca_mean", "lr"} <= set(synset.tensors)
