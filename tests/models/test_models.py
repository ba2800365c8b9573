"""Tests of the model zoo: interface contract of every registered model, DC fidelity details, ModelFamily."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ddistill.models import EVAL_POOLS, MODELS, ModelFamily, create_model, list_models

B = 2
K = 10


def _geometry(name: str) -> tuple[int, int]:
    """(in_channels, image_size) used for ``name`` in the contract tests."""
    if name == "convnet_d4" or "_64_" in name:
        return 3, 64
    return 3, 32


def _inputs(in_channels: int, size: int) -> torch.Tensor:
    return torch.randn(B, in_channels, size, size, generator=torch.Generator().manual_seed(0))


def _check_contract(model: nn.Module, x: torch.Tensor, name: str) -> None:
    logits = model(x)
    assert logits.shape == (B, K)
    feats, emb = model.forward_features(x)
    assert emb.shape == (B, model.embed_dim)
    assert model.embed(x).shape == (B, model.embed_dim)
    assert isinstance(feats, list) and feats and len(model.features(x)) == len(feats)
    for f in feats:
        assert f.ndim == (2 if name == "mlp" else 4)
        assert f.shape[0] == B
        assert torch.isfinite(f).all()
    assert torch.isfinite(logits).all() and torch.isfinite(emb).all()
    # forward must be exactly the classifier applied to the embedding of the same pass.
    torch.testing.assert_close(logits, model.classifier(emb))
    (logits.square().mean() + sum(f.mean() for f in feats)).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name: str) -> None:
    in_channels, size = _geometry(name)
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels, num_classes=K, image_size=size)
    _check_contract(model, _inputs(in_channels, size), name)


@pytest.mark.parametrize("name", ["convnet", "mlp", "lenet", "alexnet", "vgg11", "resnet18", "resnet18_bn_ap"])
def test_one_channel_28px(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=K, image_size=28)
    _check_contract(model, _inputs(1, 28), name)


@pytest.mark.parametrize("name", list_models())
def test_channels_last_bf16_autocast(name: str) -> None:
    in_channels, size = _geometry(name)
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels, num_classes=K, image_size=size)
    model = model.to(memory_format=torch.channels_last)
    x = _inputs(in_channels, size).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        emb = model.embed(x)
    assert logits.shape == (B, K) and emb.shape == (B, model.embed_dim)
    assert torch.isfinite(logits.float()).all()
    logits.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_instancenorm_is_per_channel_groupnorm() -> None:
    model = create_model("convnet", in_channels=3, num_classes=K, image_size=32)
    assert model.widths == [128, 128, 128]
    for block in model.blocks:
        norm = block.norm
        assert isinstance(norm, nn.GroupNorm)
        assert norm.num_groups == norm.num_channels == 128 and norm.affine
        assert isinstance(block.act, nn.ReLU) and isinstance(block.pool, nn.AvgPool2d)


def test_norm_variants_follow_dc() -> None:
    def first_norm(name: str, **kw: object) -> nn.Module:
        return create_model(name, in_channels=1, num_classes=K, image_size=28, **kw).blocks[0].norm

    ln = first_norm("convnet_ln")
    # DC's layernorm spans the whole (C, H, W) map; 28 px digits enter as 32 px after the padding-3 conv.
    assert isinstance(ln, nn.LayerNorm) and ln.normalized_shape == (128, 32, 32) and ln.elementwise_affine
    gn = first_norm("convnet_gn")
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 4
    bn = first_norm("convnet_bn")
    assert isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats
    assert isinstance(first_norm("convnet_nn"), nn.Identity)
    act = create_model("convnet_leakyrelu", in_channels=3, num_classes=K, image_size=32).blocks[0].act
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.01


def test_mnist_geometry() -> None:
    model = create_model("convnet", in_channels=1, num_classes=K, image_size=28)
    assert model.blocks[0].conv.padding == (3, 3)
    assert all(b.conv.padding == (1, 1) for b in model.blocks[1:])
    assert model.classifier.in_features == 128 * 4 * 4  # sized as for 32 px, as in DC
    assert model(torch.zeros(B, 1, 28, 28)).shape == (B, K)
    rgb = create_model("convnet", in_channels=3, num_classes=K, image_size=32)
    assert rgb.blocks[0].conv.padding == (1, 1) and rgb.classifier.in_features == 128 * 4 * 4


def test_dc_classifier_sizes() -> None:
    def head(name: str, c: int = 3, s: int = 32) -> int:
        return create_model(name, in_channels=c, num_classes=K, image_size=s).embed_dim

    assert head("alexnet") == head("alexnet", 1, 28) == 192 * 4 * 4
    assert head("vgg11") == head("vgg11", 1, 28) == 512
    assert head("lenet") == head("lenet", 1, 28) == 84
    assert head("mlp") == 128
    assert head("resnet18") == 512
    assert head("resnet18_bn_ap") == 512 * 4 * 4 and head("resnet18_bn_ap", 1, 28) == 512 * 3 * 3
    lenet = create_model("lenet", in_channels=1, num_classes=K, image_size=28)
    assert lenet.fc1.in_features == 16 * 5 * 5
    assert create_model("mlp", in_channels=1, num_classes=K, image_size=28).layers[0].in_features == 28 * 28


def test_default_depth_and_overrides() -> None:
    def depth(size: int, name: str = "convnet", **kw: object) -> int:
        return len(create_model(name, in_channels=3, num_classes=K, image_size=size, **kw).blocks)

    assert depth(28) == depth(32) == 3
    assert depth(64) == 4
    assert depth(128) == 5
    assert depth(64, "convnet_d3") == 3 and depth(32, depth=2) == 2
    model = create_model("convnet", in_channels=3, num_classes=K, image_size=32, norm="batchnorm", width=64)
    assert isinstance(model.blocks[0].norm, nn.BatchNorm2d) and model.blocks[0].conv.out_channels == 64
    # overrides beat the variant's own defaults
    assert isinstance(
        create_model("convnet_bn", in_channels=3, num_classes=K, image_size=32, norm="none").blocks[0].norm,
        nn.Identity,
    )
    krr = create_model("convnet_128_256_512_bn", in_channels=3, num_classes=K, image_size=32)
    assert krr.widths == [128, 256, 512] and isinstance(krr.blocks[2].norm, nn.BatchNorm2d)
    assert krr.embed_dim == 512 * 4 * 4
    krr64 = create_model("convnet_64_128_256_512_bn", in_channels=3, num_classes=K, image_size=64)
    assert krr64.widths == [64, 128, 256, 512] and krr64.embed_dim == 512 * 4 * 4
    assert create_model("convnet", in_channels=3, num_classes=K, image_size=(64, 32)).out_hw == (8, 4)


def test_invalid_configurations() -> None:
    with pytest.raises(ValueError, match="too small"):
        create_model("convnet_d5", in_channels=3, num_classes=K, image_size=16)
    with pytest.raises(ValueError, match="norm"):
        create_model("convnet", in_channels=3, num_classes=K, image_size=32, norm="weirdnorm")
    with pytest.raises(ValueError, match="depth"):
        create_model("convnet", in_channels=3, num_classes=K, image_size=32, width=[8, 8], depth=3)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(KeyError, match="convnet_bn") as info:
        create_model("resnet1000", in_channels=3, num_classes=K, image_size=32)
    assert "resnet1000" in str(info.value)
    with pytest.raises(KeyError):
        ModelFamily("nope", in_channels=3, num_classes=K, image_size=32)


def test_eval_pools_are_registered() -> None:
    assert EVAL_POOLS["cross"] == ["convnet", "alexnet", "vgg11", "resnet18"]
    assert EVAL_POOLS["width"] == ["convnet_w32", "convnet_w64", "convnet_w128", "convnet_w256"]
    for pool in EVAL_POOLS.values():
        assert all(name in MODELS for name in pool)


def test_resnet18_ssl_representation_head() -> None:
    model = create_model("resnet18_ssl", in_channels=3, num_classes=0, image_size=32, stem_padding=2)
    assert isinstance(model.fc, nn.Identity) and model.conv1.padding == (2, 2)
    assert "layer2.0.downsample.0.weight" in model.state_dict()
    assert not any(k.startswith("fc.") for k in model.state_dict())
    model.eval()
    assert model(torch.randn(B, 3, 32, 32)).shape == (B, 512)


# ------------------------------------------------------------------------------------------------ ModelFamily
def _family(seed: int = 0) -> ModelFamily:
    return ModelFamily("convnet", in_channels=3, num_classes=K, image_size=16, seed=seed, width=8, depth=2)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_family_is_reproducible() -> None:
    assert _same(_family().build(3), _family().build(3))
    assert not _same(_family().build(3), _family().build(4))
    assert not _same(_family(0).build(3), _family(1).build(3))
    net = _family().build(0)
    assert isinstance(net.blocks[0].conv, nn.Conv2d) and net.blocks[0].conv.out_channels == 8


def test_family_leaves_global_rng_untouched() -> None:
    torch.manual_seed(1234)
    reference = torch.rand(8)
    torch.manual_seed(1234)
    fam = _family()
    fam.build(0)
    fam.sample()
    fam.sample()
    assert torch.equal(torch.rand(8), reference)


def test_family_state_dict_resumes_stream() -> None:
    full = _family()
    expected = [full.sample() for _ in range(4)]
    first = _family()
    first.sample()
    first.sample()
    state = first.state_dict()
    resumed = _family()
    resumed.load_state_dict(state)
    assert resumed.next_index == 2
    assert _same(resumed.sample(), expected[2]) and _same(resumed.sample(), expected[3])
    assert _same(expected[1], _family().build(1))
    with pytest.raises(ValueError, match="seed"):
        _family(seed=5).load_state_dict(state)
