"""Every registered augmentation, generated from the registry: shape, determinism under a generator, and that it
changes a batch (``none`` excepted); then Mixup / CutMix as DD-Ranking defines them."""
import pytest
import torch

from ddistill.augment import AUGMENTS, CutMix, Mixup, build_augment


def _batch():
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", AUGMENTS.names())
def test_every_augmentation_is_seeded_and_keeps_the_shape(name):
    aug = build_augment(name, "cifar10")
    x = _batch()
    a = aug(x, generator=torch.Generator().manual_seed(1))
    b = aug(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    if name != "none":
        assert not torch.equal(a, x)


def test_mixup_is_a_convex_combination_of_two_images():
    x = _batch()
    out = Mixup(0.8)(x, generator=torch.Generator().manual_seed(2))
    # Every output is lam * x_i + (1 - lam) * x_perm(i) for one lam: solve for lam on image 0 against all partners.
    found = False
    for j in range(8):
        d = (x[0] - x[j]).flatten()
        if d.norm() == 0:
            continue
        lam = float(((out[0] - x[j]).flatten() @ d) / (d @ d))
        if torch.allclose(out[0], lam * x[0] + (1 - lam) * x[j], atol=1e-5) and 0 <= lam <= 1:
            found = True
    assert found


def test_cutmix_pastes_one_box_from_other_images():
    x = _batch()
    out = CutMix(1.0)(x, generator=torch.Generator().manual_seed(3))
    changed = (out != x).any(1)  # (B, H, W)
    assert changed.any()
    rows = changed.any(0).any(1).nonzero().flatten()
    cols = changed.any(0).any(0).nonzero().flatten()
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    assert not changed.any(0)[~box].any()  # only one rectangle changes
    with pytest.raises(ValueError, match="beta"):
        CutMix(0.0)
