"""Tests of differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021): shapes, replay, siamese broadcast,
generator hygiene, gradients and hand-computed parity values for the reference semantics
(VICO-UoE/DatasetCondensation utils.py)."""
from __future__ import annotations

import math

import pytest
import torch

from ddistill.augment import AUGMENTS, DSA, NoAugment, default_strategy
from ddistill.augment import functional as AF
from ddistill.augment.dsa import DIGIT_STRATEGY, FULL_STRATEGY, VALID_OPS


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int, c: int, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=_gen(seed))


# ----------------------------------------------------------------------------------------------------------------------
# shapes / construction
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("strategy", [*VALID_OPS, FULL_STRATEGY])
@pytest.mark.parametrize("mode", ["single", "all"])
def test_output_shapes(channels: int, strategy: str, mode: str) -> None:
    aug = DSA(strategy, mode=mode)
    g = _gen(1)
    for size in [(8, 8), (7, 10)]:
        x = _images(4, channels, *size)
        for _ in range(4):  # several draws so "single" mode visits several ops
            out = aug(x, generator=g)
            assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


def test_params_keys() -> None:
    g = _gen(0)
    for op in VALID_OPS:
        p = DSA(op).sample_params(3, g)
        assert p["op"].dtype == torch.long and p["op"].numel() == 1 and int(p["op"]) == 0
        expected = {"color": {"brightness", "saturation", "contrast"}}.get(op, {op})
        assert set(p) == {"op"} | expected
        assert all(v.shape[0] == 3 for k, v in p.items() if k != "op")
    p = DSA(mode="all").sample_params(2, g)
    assert int(p["op"]) == -1 and set(p) == {"op", "brightness", "saturation", "contrast", *VALID_OPS} - {"color"}


def test_unknown_op_and_mode() -> None:
    with pytest.raises(ValueError, match="valid ops"):
        DSA("color_blur")
    with pytest.raises(ValueError):
        DSA(mode="sometimes")
    assert DSA("none").sample_params(4) == {}


def test_default_strategy_registry_and_identity() -> None:
    assert default_strategy("MNIST") == DIGIT_STRATEGY == "color_crop_cutout_scale_rotate"
    assert default_strategy("svhn") == default_strategy("usps") == default_strategy("digits") == DIGIT_STRATEGY
    assert default_strategy("cifar10") == FULL_STRATEGY
    assert DSA.for_dataset("mnist").ops == ("color", "crop", "cutout", "scale", "rotate")
    assert isinstance(AUGMENTS.build("dsa", strategy="crop"), DSA)
    ident = AUGMENTS.build("none")
    assert isinstance(ident, NoAugment)
    x = _images(2, 3)
    assert ident.sample_params(2) == {} and ident(x) is x and ident.siamese(x, x)[1] is x


# ----------------------------------------------------------------------------------------------------------------------
# replay / broadcast / siamese
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [*VALID_OPS, FULL_STRATEGY])
def test_replay_and_broadcast(strategy: str) -> None:
    aug = DSA(strategy, mode="all")
    x = _images(5, 3, 9, 8)
    g = _gen(3)
    for _ in range(3):
        per_sample = aug.sample_params(5, g)
        assert torch.equal(aug(x, per_sample), aug(x, per_sample))  # replay is bit-identical
        shared = aug.sample_params(1, g)
        batched = aug(x, shared)
        one_by_one = torch.cat([aug(x[i : i + 1], shared) for i in range(5)])
        assert torch.equal(batched, one_by_one)


def test_siamese_same_op_and_params_across_batch_sizes() -> None:
    aug = DSA()
    x_syn = _images(3, 3, seed=1)
    x_real = torch.cat([x_syn, _images(7, 3, seed=2)])  # the first 3 real images equal the synthetic ones
    seen = set()
    for seed in range(24):
        out_real, out_syn = aug.siamese(x_real, x_syn, generator=_gen(seed))
        assert out_real.shape == x_real.shape and out_syn.shape == x_syn.shape
        # shared images must be transformed identically (all statistics, e.g. the contrast mean, are per image)
        assert torch.equal(out_real[:3], out_syn)
        params = aug.sample_params(1, _gen(seed))
        seen.add(int(params["op"]))
        assert torch.equal(out_syn, aug(x_syn, params))  # siamese == one sample_params(1) draw replayed
    assert seen == set(range(len(aug.ops)))  # every op was exercised


# ----------------------------------------------------------------------------------------------------------------------
# RNG hygiene
# ----------------------------------------------------------------------------------------------------------------------
def test_generator_reproducibility_and_global_rng_untouched() -> None:
    aug = DSA(mode="all")
    state = torch.get_rng_state()
    reference = torch.rand(4)
    torch.set_rng_state(state)

    p1, p2 = aug.sample_params(6, _gen(7)), aug.sample_params(6, _gen(7))
    assert p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)
    p3 = aug.sample_params(6, _gen(8))
    assert not torch.equal(p1["scale"], p3["scale"])
    x = _images(6, 3)
    assert torch.equal(DSA()(x, generator=_gen(9)), DSA()(x, generator=_gen(9)))
    DSA().siamese(x, x[:2], generator=_gen(10))

    assert torch.equal(torch.rand(4), reference)  # no draw from / reseed of the global generator happened


def test_parameter_ranges() -> None:
    g = _gen(11)
    n = 4000
    s = AF.sample_scale(n, 1.2, g)
    assert s.shape == (n, 2) and s.min() >= 1 / 1.2 - 1e-6 and s.max() < 1.2
    a = AF.sample_rotate(n, 15.0, g)
    assert a.abs().max() <= math.radians(15.0) + 1e-6 and a.abs().max() > math.radians(14.0)
    shifts = AF.crop_shift_from_uniform(AF.sample_crop(n, g), 32, 28, 0.125)  # s = int(32*.125+.5)=4, int(28*.125+.5)=4
    assert shifts[:, 0].unique().tolist() == list(range(-4, 5)) and shifts[:, 1].unique().tolist() == list(range(-4, 5))
    centres = AF.cutout_center_from_uniform(AF.sample_cutout(n, g), 32, 7, 0.5)  # sides 16 (even), 4 (even)
    assert centres[:, 0].unique().tolist() == list(range(0, 33)) and centres[:, 1].unique().tolist() == list(range(8))
    assert 0.4 < AF.sample_flip(n, 0.5, g).float().mean() < 0.6


# ----------------------------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------------------------
_FIXED = {
    "flip": lambda x: AF.flip(x, torch.tensor([True, False])),
    "scale": lambda x: AF.scale(x, torch.tensor([[1.13, 0.87], [0.91, 1.07]])),
    "rotate": lambda x: AF.rotate(x, torch.tensor([0.21, -0.13])),
    "brightness": lambda x: AF.brightness(x, torch.tensor([0.3, -0.2])),
    "saturation": lambda x: AF.saturation(x, torch.tensor([1.7, 0.4])),
    "contrast": lambda x: AF.contrast(x, torch.tensor([0.6, 1.3])),
    "crop": lambda x: AF.crop(x, torch.tensor([[1, -2], [0, 1]])),
    "cutout": lambda x: AF.cutout(x, torch.tensor([[2, 5], [0, 3]])),
    "crop_broadcast": lambda x: AF.crop(x, torch.tensor([[-1, 2]])),
    "rotate_broadcast": lambda x: AF.rotate(x, torch.tensor([0.3])),
}


@pytest.mark.parametrize("name", list(_FIXED))
def test_gradcheck(name: str) -> None:
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=_gen(12)).requires_grad_()
    assert torch.autograd.gradcheck(_FIXED[name], (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_full_strategy() -> None:
    aug = DSA(mode="all")
    params = aug.sample_params(1, _gen(13))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=_gen(14)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: aug(t, params), (x,), eps=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# reference-semantics values, hard-coded (worked out by hand from the reference formulas, no reference code imported)
# ----------------------------------------------------------------------------------------------------------------------
def test_parity_color() -> None:
    # brightness: x + offset with offset = (u - 0.5) * 1.0; u = 0.75 -> +0.25
    x = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    torch.testing.assert_close(AF.brightness(x, torch.tensor([0.25])), torch.tensor([[[[0.35, 0.45], [0.55, 0.65]]]]))
    # saturation: one RGB pixel (0.2, 0.5, 0.8), channel mean 0.5, factor u * 2.0 with u = 0.25 -> 0.5:
    # 0.5 + (c - 0.5) * 0.5 = (0.35, 0.5, 0.65)
    rgb = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)
    expected = torch.tensor([0.35, 0.5, 0.65]).view(1, 3, 1, 1)
    torch.testing.assert_close(AF.saturation(rgb, torch.tensor([0.5])), expected)
    # one channel: deviation from the channel mean is 0, so saturation is exactly the identity
    gray = _images(2, 1)
    assert torch.equal(AF.saturation(gray, torch.tensor([1.7, 0.1])), gray)
    # contrast: image [[0, 1], [2, 3]], mean 1.5, factor 1.5: 1.5 + (v - 1.5) * 1.5
    img = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    torch.testing.assert_close(AF.contrast(img, torch.tensor([1.5])), torch.tensor([[[[-0.75, 0.75], [2.25, 3.75]]]]))


def test_parity_flip_crop_cutout() -> None:
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    # flip mirrors the width axis only
    assert AF.flip(x, torch.tensor([True])).flatten().tolist() == [3, 2, 1, 6, 5, 4, 9, 8, 7]
    assert torch.equal(AF.flip(x, torch.tensor([False])), x)
    # crop with (row, col) shift (1, -1): out[i, j] = x[i + 1, j - 1], zero where that falls outside
    assert AF.crop(x, torch.tensor([[1, -1]])).flatten().tolist() == [0, 4, 5, 0, 7, 8, 0, 0, 0]
    # cutout on 4x4 ones, ratio 0.5 -> side int(4 * 0.5 + 0.5) = 2; centre (0, 3) covers rows clamp(-1..0) = {0},
    # cols 2..3
    ones = torch.ones(1, 1, 4, 4)
    expected = torch.ones(1, 1, 4, 4)
    expected[0, 0, 0, 2:] = 0
    assert torch.equal(AF.cutout(ones, torch.tensor([[0, 3]]), 0.5), expected)
    # centre (2, 2) -> rows 1..2, cols 1..2
    expected = torch.ones(1, 1, 4, 4)
    expected[0, 0, 1:3, 1:3] = 0
    assert torch.equal(AF.cutout(ones, torch.tensor([[2, 2]]), 0.5), expected)


def test_parity_scale_rotate() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # scale sx = sy = 2 with align_corners=False: pixel centres at normalised +-0.5 sample the input at +-1, i.e. at
    # pixel coordinates -0.5 and 1.5; bilinear with zero padding gives 0.5 * 0.5 of the nearest pixel -> 0.25 * x
    torch.testing.assert_close(AF.scale(x, torch.tensor([[2.0, 2.0]])), 0.25 * x)
    # sx = 2 only (horizontal): 0.5 * x
    torch.testing.assert_close(AF.scale(x, torch.tensor([[2.0, 1.0]])), 0.5 * x)
    # rotate +90 deg (anticlockwise): output (u, v) samples input (-v, u) -> [[2, 4], [1, 3]]
    out = AF.rotate(x.double(), torch.tensor([math.pi / 2], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[[[2.0, 4.0], [1.0, 3.0]]]], dtype=torch.float64))


def test_dsa_color_order() -> None:
    # 'color' applies brightness, then saturation, then contrast (reference AUGMENT_FNS['color'])
    aug = DSA("color")
    x = _images(2, 3)
    p = aug.sample_params(2, _gen(15))
    expected = AF.contrast(AF.saturation(AF.brightness(x, p["brightness"]), p["saturation"]), p["contrast"])
    assert torch.equal(aug(x, p), expected)


# ----------------------------------------------------------------------------------------------------------------------
# memory format / low precision
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", VALID_OPS)
def test_channels_last_and_bf16(strategy: str) -> None:
    aug = DSA(strategy)
    x = _images(3, 3, 8, 8)
    p = aug.sample_params(3, _gen(16))
    xc = x.contiguous(memory_format=torch.channels_last)
    out_c = aug(xc, p)
    assert out_c.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_c, aug(x, p), rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for inp in (x, xc, x.bfloat16()):
            out = aug(inp, p)
            assert out.shape == x.shape and torch.isfinite(out.float()).all()
    out = aug(x.bfloat16(), p)  # bf16 outside autocast: grid is cast to the input dtype
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
