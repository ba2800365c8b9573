"""KRR-ST options of issue #15: the ridge rule, the held-out diagnostics and the units of the images' learning rate."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddistill.data import Encoding
from synthesizers.callbacks import Checkpoint
from synthesizers.krr_st import KRRST, KRRSTConfig, krr_predict

from tests._helpers import FAST


def _cfg(**kw) -> KRRSTConfig:
    base = dict(num_images=20, model="convnet_bn", model_kwargs={"width": 8, "depth": 2}, num_models=3,
                online_iteration=4, iterations=4, batch_real=64, lr=1e-2, checkpoint_every=2, perf=FAST)
    base.update(kw)
    return KRRSTConfig(**base)


def _pixels(synset) -> torch.Tensor:
    """The set's images in [0, 1] pixel units, not clamped (a pixel pushed below 0 keeps its whole move)."""
    return Encoding.from_meta(synset.meta["encoding"], synset.tensors).decode(synset.x)


def _quiet(synth: KRRST, real, **kw):
    # Not about the near-threshold warning (tested on its own below).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synth.fit(real, **kw)


# ---------------------------------------------------------------------------------------------------------------
# ridge
# ---------------------------------------------------------------------------------------------------------------
def test_config_errors_name_the_key_and_the_choices():
    with pytest.raises(ValueError, match="heldout_real"):
        KRRSTConfig(ridge="auto")
    with pytest.raises(ValueError, match=r"ridge.*\['auto'\]"):
        KRRSTConfig(ridge="large")
    with pytest.raises(ValueError, match="ridge"):
        KRRSTConfig(ridge=-1.0)
    with pytest.raises(ValueError, match="ridge_grid"):
        KRRSTConfig(ridge="auto", heldout_real=8, ridge_grid=[])
    with pytest.raises(ValueError, match=r"lr_images_units.*'raw'"):
        KRRSTConfig(lr_images_units="pixels")
    with pytest.raises(ValueError, match="lr_images"):
        KRRSTConfig(lr_images=0.0)
    assert KRRSTConfig(ridge="1e-4").ridge == 1e-4  # YAML reads 1e-4 (no dot) as a string
    assert KRRSTConfig().ridge == 1e-6 and KRRSTConfig().heldout_real == 0  # the official defaults stay


def test_ridge_auto_picks_the_lowest_heldout_loss_and_the_loss_uses_it(digits, tiny_teacher):
    real, _ = digits
    grid = [1e-6, 1e-2, 1e3]
    synth = KRRST(_cfg(ridge="auto", ridge_grid=grid, heldout_real=100), seed=0, teacher=tiny_teacher)
    synth.setup(real)
    assert synth.ridge_value is None  # chosen once the pool is spread
    synth.init_pool()
    info = synth._ridge_info
    assert info["rule"] == "auto" and info["grid"] == grid and len(info["heldout_loss"]) == 3
    assert len(set(info["heldout_loss"])) == 3  # the candidates are told apart
    best = int(np.argmin(info["heldout_loss"]))
    assert synth.ridge_value == grid[best] == info["value"]
    with torch.no_grad():
        p = synth.pool.models[0].eval().embed(synth.params["x"][:1]).shape[1] + 1  # + the bias column
    assert info["features"] == p and info["interpolation_ratio"] == pytest.approx(p / 20)

    # The recorded losses, recomputed from scratch: the initial set, the pool's networks, the held-out real images.
    x_h = real.x[synth._heldout_idx]
    with torch.no_grad():
        y_h = tiny_teacher(x_h)
        for j, r in enumerate(grid):
            per_model = [float(F.mse_loss(krr_predict(m.eval().embed(synth.params["x"]), m.embed(x_h),
                                                      synth.params["y"], ridge=r), y_h)) for m in synth.pool.models]
            assert info["heldout_loss"][j] == pytest.approx(sum(per_model) / len(per_model), rel=1e-5)

    # The outer loss is computed with the chosen ridge: replay the step's draws.
    state = synth.generator.get_state()
    loss = float(synth.loss(real, 0).detach())
    synth.generator.set_state(state)
    idx = int(torch.randint(3, (1,), generator=synth.generator))
    x_real = synth.sample_real(real)
    model = synth.pool.models[idx].eval()
    with torch.no_grad():
        y_hat = krr_predict(model.embed(synth.params["x"]), model.embed(x_real), synth.params["y"],
                            ridge=grid[best])
        assert loss == pytest.approx(float(F.mse_loss(y_hat, tiny_teacher(x_real))), rel=1e-5)


def test_fixed_ridge_is_recorded_and_warned_about_near_the_threshold(digits, tiny_teacher):
    real, _ = digits
    # The test net embeds 8x8 digits in 72 features: p + 1 = 73 against N = 60 is near the threshold.
    with pytest.warns(UserWarning, match="interpolation threshold"):
        synset = KRRST(_cfg(iterations=1, num_images=60), seed=0, teacher=tiny_teacher).fit(real)
    r = synset.meta["ridge"]
    assert r["rule"] == "fixed" and r["value"] == 1e-6 and r["near_interpolation_threshold"] is True
    assert r["features"] == 73 and r["interpolation_ratio"] == pytest.approx(73 / 60)
    d = synset.meta["diagnostics"]
    assert d["heldout_images"] == 0 and "heldout_krr_loss" not in d["end"] and "0" in d["heldout_krr_loss_missing"]
    # N = 20 is far from it (ratio 3.65): no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        far = KRRST(_cfg(iterations=1), seed=0, teacher=tiny_teacher).fit(real)
    assert far.meta["ridge"]["near_interpolation_threshold"] is False


# ---------------------------------------------------------------------------------------------------------------
# held-out images and diagnostics
# ---------------------------------------------------------------------------------------------------------------
def test_heldout_images_are_never_drawn(digits, tiny_teacher):
    real, _ = digits
    synth = KRRST(_cfg(heldout_real=300, num_images=200), seed=0, teacher=tiny_teacher)
    synth.setup(real)
    held = set(synth._heldout_idx.tolist())
    assert len(held) == 300
    # The initial images are real images that are not held out.
    rows = {tuple(r.flatten().tolist()) for r in real.x[synth._heldout_idx]}
    assert not any(tuple(r.flatten().tolist()) in rows for r in synth.params["x"].detach())
    drawn = set()
    for _ in range(50):
        drawn |= set(synth._draw(64).tolist())
    assert not drawn & held and len(drawn) > 500
    # The held-out draw has a generator of its own: the same indices whatever the run's seed stream did.
    again = KRRST(_cfg(heldout_real=300, num_images=200), seed=0, teacher=tiny_teacher)
    again.setup(real)
    assert torch.equal(again._heldout_idx, synth._heldout_idx)
    with pytest.raises(ValueError, match="heldout_real"):
        KRRST(_cfg(heldout_real=1340), seed=0, teacher=tiny_teacher).fit(real)


def test_diagnostics_at_start_every_k_steps_and_at_the_end(digits, tiny_teacher):
    real, _ = digits
    logs: dict[int, dict] = {}
    synth = KRRST(_cfg(iterations=4, heldout_real=100, diagnostic_every=2), seed=0, teacher=tiny_teacher)
    synset = _quiet(synth, real, callbacks=[lambda s, step, l: logs.setdefault(step, dict(l))])
    d = synset.meta["diagnostics"]
    start, end = d["start"], d["end"]
    assert start["step"] == 0 and start["image_shift_pixels"] == 0.0 and start["image_shift_encoded"] == 0.0
    assert start["target_shift"] == 0.0 and np.isfinite(start["heldout_krr_loss"])
    assert end["step"] == 4 and end["image_shift_pixels"] > 0 and end["target_shift"] > 0
    assert end["heldout_krr_loss"] != start["heldout_krr_loss"]
    # Pixels vs encoded units: one channel, so the encoded shift is the pixel shift divided by its std.
    std = real.encoding.std[0]
    assert end["image_shift_encoded"] == pytest.approx(end["image_shift_pixels"] / std, rel=1e-5)
    # The run's logs carry them every 2 steps (and at the last), and the start value at the last step.
    assert [s for s in logs if "heldout_krr_loss" in logs[s]] == [2, 4]
    assert "image_shift_pixels" not in logs[1] and "image_shift_pixels" not in logs[3]
    assert 0 < logs[2]["image_shift_pixels"] < logs[4]["image_shift_pixels"]
    assert logs[4]["heldout_krr_loss"] == end["heldout_krr_loss"]
    assert logs[4]["heldout_krr_loss_start"] == start["heldout_krr_loss"]
    assert [c["step"] for c in d["curve"]] == [2, 4]
    # The end value is the held-out loss of the final set with the final pool.
    assert synth.heldout_krr_loss()[0] == pytest.approx(end["heldout_krr_loss"])
    # The paired baseline: the initial set under the same networks (equal to the set's own loss at the start).
    assert start["heldout_krr_loss_initial_set"] == start["heldout_krr_loss"]
    assert synth.heldout_krr_loss(initial=True)[0] == pytest.approx(end["heldout_krr_loss_initial_set"])
    assert end["heldout_krr_loss_initial_set"] != end["heldout_krr_loss"]
    assert all("heldout_krr_loss_initial_set" in c for c in d["curve"])
    # Measured independently: mean |x - x_init| in [0, 1] pixels.
    init = KRRST(_cfg(iterations=0, heldout_real=100), seed=0, teacher=tiny_teacher).fit(real)
    assert float((_pixels(synset) - _pixels(init)).abs().mean()) == pytest.approx(
        end["image_shift_pixels"], rel=1e-5)
    assert init.meta["diagnostics"]["end"]["image_shift_pixels"] == 0.0
    assert "never spread" in init.meta["diagnostics"]["heldout_krr_loss_missing"]


def test_diagnostics_never_change_the_run(digits, tiny_teacher):
    real, _ = digits
    a = _quiet(KRRST(_cfg(iterations=4, heldout_real=100, diagnostic_every=1), seed=0, teacher=tiny_teacher), real)
    b = _quiet(KRRST(_cfg(iterations=4, heldout_real=100), seed=0, teacher=tiny_teacher), real)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_raw_x_space_diagnostics_are_in_pixels(digits, tiny_teacher):
    real, _ = digits
    synset = _quiet(KRRST(_cfg(iterations=2, x_space="raw", heldout_real=100), seed=0, teacher=tiny_teacher), real)
    init = KRRST(_cfg(iterations=0, x_space="raw", heldout_real=100), seed=0, teacher=tiny_teacher).fit(real)
    end = synset.meta["diagnostics"]["end"]
    assert end["image_shift_pixels"] == pytest.approx(float((synset.x - init.x).abs().mean()), rel=1e-5)
    assert end["image_shift_encoded"] == pytest.approx(end["image_shift_pixels"] / real.encoding.std[0], rel=1e-5)


def test_resume_keeps_the_ridge_choice_and_the_diagnostics(digits, tiny_teacher, tmp_path):
    real, _ = digits
    cfg = _cfg(iterations=4, heldout_real=100, ridge="auto", ridge_grid=[1e-6, 1e-2], diagnostic_every=1)
    full = _quiet(KRRST(cfg, seed=0, teacher=tiny_teacher), real)

    class Interrupt(Exception):
        pass

    def stop(s, step, logs):
        if step == 3:
            raise Interrupt

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        _quiet(KRRST(cfg, seed=0, teacher=tiny_teacher), real, callbacks=[Checkpoint(ckpt, every=1), stop])
    resumed = _quiet(KRRST(cfg, seed=0, teacher=tiny_teacher), real, callbacks=[Checkpoint(ckpt, resume=True)])
    assert torch.equal(resumed.x, full.x) and torch.equal(resumed.y, full.y)
    assert resumed.meta["ridge"] == full.meta["ridge"]
    assert resumed.meta["diagnostics"] == full.meta["diagnostics"]


# ---------------------------------------------------------------------------------------------------------------
# units of the images' learning rate
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_space,units,pixels_per_lr", [
    ("normalized", "x_space", "std"),  # the default: lr in normalised units moves pixels by lr * std
    ("normalized", "encoded", "std"),
    ("normalized", "raw", "1"),        # lr stated in pixels: the pixels move by lr
    ("raw", "x_space", "1"),           # the official convention
    ("raw", "raw", "1"),
    ("raw", "encoded", "std"),
])
def test_lr_images_units_set_the_pixel_step(digits, tiny_teacher, x_space, units, pixels_per_lr):
    real, _ = digits
    lr = 1e-3
    std = real.encoding.std[0]
    cfg = _cfg(iterations=1, x_space=x_space, lr_images_units=units, lr=lr, augment_real=False)
    synth = KRRST(cfg, seed=0, teacher=tiny_teacher)
    init = KRRST(_cfg(iterations=0, x_space=x_space), seed=0, teacher=tiny_teacher).fit(real)
    synset = _quiet(synth, real)
    # AdamW's first step is lr * g / (|g| + eps) = +-lr per element (weight decay 0): exactly the rate in the
    # parameter's units, so the median pixel step reads the conversion off directly.
    step = (_pixels(synset) - _pixels(init)).abs().flatten().median().item()
    expected = lr * (std if pixels_per_lr == "std" else 1.0)
    assert step == pytest.approx(expected, rel=0.02)
    # The targets keep lr in their own units.
    assert (synset.y - init.y).abs().flatten().median().item() == pytest.approx(lr, rel=0.02)
    meta = synset.meta["outer_lr"]
    assert meta["images_in_raw_pixels"] == pytest.approx(expected) and meta["given_units"] == units
    assert len(synth.opts[0].param_groups) == (1 if synth.image_lr() == lr else 2)


def test_separate_image_lr_follows_the_schedule(digits, tiny_teacher):
    real, _ = digits
    synth = KRRST(_cfg(iterations=3, lr=1e-2, lr_images=5e-3, lr_end_factor=0.1), seed=0, teacher=tiny_teacher)
    _quiet(synth, real)
    groups = synth.opts[0].param_groups
    assert len(groups) == 2 and groups[0]["params"][0] is synth.params["x"]
    factor = synth.lr_factor(2)  # the rate of the last step (0-based step 2)
    assert groups[0]["lr"] == pytest.approx(5e-3 * factor) and groups[1]["lr"] == pytest.approx(1e-2 * factor)
    assert synth.learning_rates() == {"x": groups[0]["lr"], "y": groups[1]["lr"]}


def test_cli_run_log_and_saved_set_carry_the_diagnostics(digits, tmp_path):
    import json

    import yaml

    from ddistill.cli import main as cli
    from ddistill.models import create_model
    from ddistill.synset import SyntheticSet
    from synthesizers.krr_st import save_teacher

    real, _ = digits
    net = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=4, depth=1)
    teacher = save_teacher(tmp_path / "teacher.pt", net, model="convnet_bn", model_kwargs={"width": 4, "depth": 1},
                           encoding=real.encoding, dataset="digits")
    config = tmp_path / "krr.yaml"
    config.write_text(yaml.safe_dump({
        "name": "krr", "out_dir": str(tmp_path / "runs"), "dataset": {"name": "digits"},
        "synthesizer": {"name": "krr_st", "teacher": str(teacher), "num_images": 20, "num_models": 2,
                        "online_iteration": 3, "iterations": 20, "batch_real": 64, "lr": 1.0e-2,
                        "checkpoint_every": 10, "model": "convnet_bn", "model_kwargs": {"width": 8, "depth": 2},
                        "perf": {"compile": False, "bf16": False, "channels_last": False},
                        "ridge": "auto", "ridge_grid": ["1e-6", 1.0e-2], "heldout_real": 64, "diagnostic_every": 10,
                        "lr_images_units": "raw"},
    }))
    assert cli(["distill", str(config)]) == 0
    run = tmp_path / "runs" / "krr"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    diag = [r for r in records if "heldout_krr_loss" in r]
    assert [r["step"] for r in diag] == [10, 20] and diag[-1]["image_shift_pixels"] > diag[0]["image_shift_pixels"] > 0
    assert "heldout_krr_loss_start" in diag[-1]
    meta = SyntheticSet.load(run / "synset.pt").meta
    assert meta["ridge"]["rule"] == "auto" and meta["ridge"]["value"] in (1e-6, 1e-2)
    assert meta["diagnostics"]["end"]["heldout_krr_loss"] == diag[-1]["heldout_krr_loss"]
    assert meta["outer_lr"]["images_in_raw_pixels"] == pytest.approx(1e-2)
