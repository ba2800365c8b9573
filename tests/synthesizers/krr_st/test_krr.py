"""KRR-ST synthesizer: the closed-form solve, gradients, the model pool, label-freedom, saving and resuming."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from ddistill.data import Encoding
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from synthesizers.krr_st import KRRST, KRRSTConfig, ModelPool, krr_predict, save_teacher

from tests._helpers import FAST
from .conftest import without_labels


def _cfg(**kw) -> KRRSTConfig:
    base = dict(num_images=20, model="convnet_bn", model_kwargs={"width": 8, "depth": 2}, num_models=3,
                online_iteration=4, iterations=4, batch_real=64, lr=1e-2, checkpoint_every=2, perf=FAST)
    base.update(kw)
    return KRRSTConfig(**base)


def _numpy_krr(fs: np.ndarray, ft: np.ndarray, ys: np.ndarray, ridge: float, bias: bool) -> np.ndarray:
    if bias:
        fs = np.concatenate([fs, np.ones((fs.shape[0], 1))], 1)
        ft = np.concatenate([ft, np.ones((ft.shape[0], 1))], 1)
    kss, kts = fs @ fs.T, ft @ fs.T
    lam = ridge * np.trace(kss)
    return kts @ scipy.linalg.solve(kss + lam * np.eye(len(kss)), ys, assume_a="sym")


# ---------------------------------------------------------------------------------------------------------------
# closed-form KRR
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,feat", [(5, 9), (12, 6)])  # well-posed (N < F) and rank-deficient (N > F + 1) kernels
def test_krr_predict_matches_scipy_float64(bias, n, feat):
    g = torch.Generator().manual_seed(n)
    fs, ft, ys = torch.randn(n, feat, generator=g, dtype=torch.float64), torch.randn(7, feat, generator=g,
                                                                                     dtype=torch.float64), \
        torch.randn(n, 3, generator=g, dtype=torch.float64)
    expected = _numpy_krr(fs.numpy(), ft.numpy(), ys.numpy(), 1e-6, bias)
    got = krr_predict(fs, ft, ys, ridge=1e-6, bias=bias)
    assert got.dtype == torch.float64 and got.shape == (7, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-7, atol=1e-9)


def test_krr_predict_float32_and_dtype_argument():
    g = torch.Generator().manual_seed(0)
    fs, ft, ys = torch.randn(6, 10, generator=g), torch.randn(4, 10, generator=g), torch.randn(6, 2, generator=g)
    expected = _numpy_krr(fs.double().numpy(), ft.double().numpy(), ys.double().numpy(), 1e-6, True)
    np.testing.assert_allclose(krr_predict(fs, ft, ys).numpy(), expected, rtol=1e-3, atol=1e-4)
    out64 = krr_predict(fs, ft, ys, dtype=torch.float64)
    assert out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), expected, rtol=1e-7, atol=1e-9)


def test_ridge_is_relative_to_the_trace_and_detached():
    fs = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    ys = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(3, 8, dtype=torch.float64)
    # With a huge ridge, Y_hat ~ K_ts Y_s / (ridge tr K_ss): the trace scaling is visible.
    big = krr_predict(fs, ft, ys, ridge=1e6, bias=False)
    kss, kts = fs @ fs.T, ft @ fs.T
    approx = kts @ ys / (1e6 * torch.trace(kss))
    torch.testing.assert_close(big, approx, rtol=1e-4, atol=1e-12)
    # gradcheck of the whole map in float64 (lambda is a constant of the graph, as in the official code).
    assert torch.autograd.gradcheck(lambda a, b: krr_predict(a, ft, b), (fs, ys))


# ---------------------------------------------------------------------------------------------------------------
# the synthesizer
# ---------------------------------------------------------------------------------------------------------------
def test_loss_matches_a_direct_computation_and_gradients_reach_x_and_y(digits, tiny_teacher):
    real, _ = digits
    synth = KRRST(_cfg(), seed=1, teacher=tiny_teacher)
    synth.setup(real)
    synth.init_pool()
    state = synth.generator.get_state()
    loss = synth.loss(real, step=0)
    loss.backward()
    gx, gy = synth.params["x"].grad, synth.params["y"].grad
    assert gx is not None and gy is not None
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0 and gy.abs().sum() > 0
    # The pool network only provides features: no weight gradients are computed for it.
    assert all(p.grad is None for m in synth.pool.models for p in m.parameters())

    # Replay the step's draws and recompute the loss with numpy/scipy in float64.
    synth.generator.set_state(state)
    idx = int(torch.randint(3, (1,), generator=synth.generator))
    assert idx == synth._last_idx
    x_real = synth.sample_real(real)
    model = synth.pool.models[idx].eval()
    with torch.no_grad():
        y_real = tiny_teacher(x_real).double().numpy()
        fs = model.embed(synth.params["x"]).double().numpy()
        ft = model.embed(x_real).double().numpy()
    y_hat = _numpy_krr(fs, ft, synth.params["y"].detach().double().numpy(), 1e-6, True)
    expected = float(((y_hat - y_real) ** 2).mean())
    assert float(loss.detach()) == pytest.approx(expected, rel=2e-3)


def test_float64_solve_gives_gradients_too(digits, tiny_teacher):
    real, _ = digits
    synth = KRRST(_cfg(solve_dtype="float64"), seed=0, teacher=tiny_teacher)
    synth.setup(real)
    loss = synth.loss(real, 0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert synth.params["x"].grad.abs().sum() > 0 and synth.params["y"].grad.abs().sum() > 0


def test_init_is_first_n_of_a_shuffle_and_teacher_targets(digits, tiny_teacher):
    real, _ = digits
    synth = KRRST(_cfg(), seed=3, teacher=tiny_teacher)
    synth.setup(real)
    idx = torch.randperm(real.x.shape[0], generator=torch.Generator().manual_seed(3))[:20]
    torch.testing.assert_close(synth.params["x"].detach(), real.x[idx])
    with torch.no_grad():
        torch.testing.assert_close(synth.params["y"].detach(), tiny_teacher(real.x[idx]))


def test_labels_are_never_read(digits, tiny_teacher):
    real, _ = digits
    blind = without_labels(real)
    with pytest.raises(AssertionError):
        blind.y
    synset = KRRST(_cfg(iterations=3), seed=0, teacher=tiny_teacher).fit(blind)
    assert synset.y.shape == (20, 16)


def test_outer_steps_change_x_and_y_and_the_set_saves(digits, tiny_teacher, tmp_path):
    real, _ = digits
    losses = []
    synth = KRRST(_cfg(iterations=5), seed=0, teacher=tiny_teacher)
    synset = synth.fit(real, callbacks=[lambda s, step, logs: losses.append(logs["loss"])])
    init = KRRST(_cfg(iterations=0), seed=0, teacher=tiny_teacher).fit(real)
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert not torch.allclose(synset.x, init.x) and not torch.allclose(synset.y, init.y)
    meta = synset.meta
    assert meta["synthesizer"] == "krr_st" and meta["labels"] == "regression" and meta["learned"] == ["x", "y"]
    assert meta["num_images"] == 20 and meta["ipc"] is None and meta["step"] == 5
    assert meta["target_model"] == "TinyTeacher" and meta["target_dim"] == 16 and meta["x_space"] == "normalized"
    assert meta["eval_model"] == "convnet_bn" and meta["encoding"] == real.encoding.to_meta()
    assert meta["pool"]["resets"] + meta["pool"]["trainings"] == 5
    path = synset.save(tmp_path / "synset.pt")
    back = SyntheticSet.load(path)
    assert back.y.dtype == torch.float32 and back.y.shape == (20, 16)
    assert torch.equal(back.x, synset.x) and torch.equal(back.y, synset.y) and back.meta == meta


def test_raw_x_space_keeps_pixels_and_records_it(digits, tiny_teacher):
    real, _ = digits
    raw = KRRST(_cfg(iterations=0, x_space="raw"), seed=0, teacher=tiny_teacher).fit(real)
    norm = KRRST(_cfg(iterations=0), seed=0, teacher=tiny_teacher).fit(real)
    torch.testing.assert_close(raw.x, real.encoding.decode(norm.x))
    assert raw.x.min() >= 0 and raw.x.max() <= 1
    torch.testing.assert_close(raw.y, norm.y)  # targets come from the normalised images either way
    assert raw.meta["x_space"] == "raw" and raw.meta["encoding"]["normalize"] is False
    torch.testing.assert_close(raw.decode_images(), norm.decode_images())
    stepped = KRRST(_cfg(iterations=2, x_space="raw"), seed=0, teacher=tiny_teacher).fit(real)
    assert torch.isfinite(stepped.x).all()


def test_teacher_file_with_another_encoding_is_fed_its_own_encoding(digits, tiny_teacher, tmp_path):
    real, _ = digits
    from ddistill.models import create_model

    net = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=4, depth=1)
    other = Encoding((0.5,), (0.25,), (1, 8, 8))
    path = save_teacher(tmp_path / "teacher.pt", net, model="convnet_bn", model_kwargs={"width": 4, "depth": 1},
                        encoding=other, dataset="digits")
    synth = KRRST(_cfg(teacher=str(path)), seed=0)
    synth.setup(real)
    x = synth.params["x"].detach()
    with torch.no_grad():
        expected = net.eval()(other.encode(real.encoding.decode(x)))
    torch.testing.assert_close(synth.params["y"].detach(), expected)
    meta = synth.synthetic_set(real).meta
    assert meta["target_model"] == "convnet_bn" and meta["teacher"]["sha256"] and meta["teacher"]["dataset"] == "digits"


def test_clear_errors():
    with pytest.raises(ValueError, match="normalized"):
        KRRSTConfig(x_space="pixels")
    with pytest.raises(ValueError, match="float64"):
        KRRSTConfig(solve_dtype="half")
    with pytest.raises(KeyError, match="cifar100_official"):
        KRRST.config_from_preset("cifar1000")
    official = KRRST.config_from_preset("cifar100_official")
    assert official.pool_reset_counter is False and official.x_space == "raw" and official.num_images == 1000
    assert KRRST.config_from_preset("tinyimagenet").lr == 1e-5


def test_missing_teacher_and_too_many_images(digits, tiny_teacher):
    real, _ = digits
    with pytest.raises(ValueError, match="teacher"):
        KRRST(_cfg(), seed=0).fit(real)
    with pytest.raises(ValueError, match="num_images"):
        KRRST(_cfg(num_images=10**6), seed=0, teacher=tiny_teacher).fit(real)


def test_grad_clip_bounds_each_tensor(digits, tiny_teacher):
    real, _ = digits
    synth = KRRST(_cfg(grad_clip=1e-3), seed=0, teacher=tiny_teacher)
    synth.setup(real)
    synth.loss(real, 0).backward()
    for key in ("x", "y"):
        assert synth.params[key].grad.norm() <= 1e-3 * (1 + 1e-4)


def test_linear_lr_schedule():
    synth = KRRST(KRRSTConfig(iterations=100, lr=1e-3, lr_end_factor=1e-3))
    assert synth.lr_at(0) == pytest.approx(1e-3)
    assert synth.lr_at(50) == pytest.approx(1e-3 * (1 + (1e-3 - 1) * 0.5))
    assert synth.lr_at(100) == pytest.approx(1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the model pool
# ---------------------------------------------------------------------------------------------------------------
def _pool(reset_counter: bool) -> ModelPool:
    family = ModelFamily("convnet_bn", in_channels=1, num_classes=4, image_size=8, seed=5, width=4, depth=1)
    return ModelPool(family, 1, 2, lr=0.1, momentum=0.9, weight_decay=1e-3, reset_counter=reset_counter,
                     device="cpu")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("reset_counter,expected", [
    # intended: re-initialise, restart the counter, train again for T = 2 visits
    (True, ["train", "reset", "train", "train", "reset", "train"]),
    # official model_pool.py: the counter stays at T, so every later visit re-initialises and never trains
    (False, ["train", "reset", "reset", "reset", "reset", "reset"]),
])
def test_pool_reset_behaviour(reset_counter, expected):
    pool = _pool(reset_counter)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 4, generator=g)
    pool.initialize(x, y, [1])
    assert pool.counters == [1]
    outcomes = []
    for _ in range(6):
        before = copy.deepcopy(pool.models[0])
        outcomes.append(pool.update(0, x, y))
        assert not _same_weights(before, pool.models[0])  # a step or a re-initialisation always changes it
        if outcomes[-1] == "reset":
            # A reset gives the slot's next generation from the family: fresh, reproducible weights.
            fresh = pool.family.build(pool.generations[0] * pool.num_models + 0)
            assert _same_weights(fresh, pool.models[0])
    assert outcomes == expected
    assert pool.resets == expected.count("reset") and pool.trainings == expected.count("train")
    assert pool.counters == ([1] if reset_counter else [2])
    assert all(not p.requires_grad for p in pool.models[0].parameters())


def test_pool_online_step_is_full_batch_sgd_in_train_mode():
    pool = _pool(True)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 4, generator=g)
    ref = copy.deepcopy(pool.models[0]).requires_grad_(True).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(ref(x), y).backward()
        opt.step()
        pool.update(0, x, y)
    for a, b in zip(ref.state_dict().values(), pool.models[0].state_dict().values()):
        torch.testing.assert_close(a, b)


def test_pool_state_round_trip():
    pool = _pool(True)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 4, generator=g)
    pool.initialize(x, y, [2])
    pool.update(0, x, y)  # reset -> generation 1
    pool.update(0, x, y)
    other = _pool(True)
    other.load_state_dict(pool.state_dict())
    assert other.generations == [1] and other.counters == pool.counters
    pool.update(0, x, y)
    other.update(0, x, y)
    assert _same_weights(pool.models[0], other.models[0])


def test_official_file_export_and_import(digits, tiny_teacher, tmp_path):
    from synthesizers.krr_st import export_official, import_official

    real, _ = digits
    synset = KRRST(_cfg(iterations=1), seed=0, teacher=tiny_teacher).fit(real)
    x_path, y_path = export_official(synset, tmp_path)
    x = torch.load(x_path, weights_only=True)
    torch.testing.assert_close(x, real.encoding.decode(synset.x))  # raw pixels, as the official test.py expects
    back = import_official(tmp_path, dataset="digits", mean=real.encoding.mean, std=real.encoding.std,
                           model="convnet_bn")
    back.validate()
    assert back.meta["x_space"] == "raw" and back.meta["labels"] == "regression" and torch.equal(back.y, synset.y)
    torch.testing.assert_close(back.decode_images(), synset.decode_images())
