import pytest
import torch

from ddistill.utils.train import TrainRecipe
from synthesizers import SYNTHESIZERS
from synthesizers._selection import EmbeddingConfig
from synthesizers.herding import herding_select
from synthesizers.kcenter import kcenter_select


def test_registry_has_baselines():
    for name in ["random", "herding", "kcenter", "dm", "full"]:
        assert name in SYNTHESIZERS
    with pytest.raises(KeyError, match="unknown synthesizer 'dc9'; choose from"):
        SYNTHESIZERS.get("dc9")


def test_random_is_class_balanced_and_seeded(digits):
    real, _ = digits
    cls = SYNTHESIZERS.get("random")
    a = cls(cls.Config(ipc=3), seed=1).fit(real)
    b = cls(cls.Config(ipc=3), seed=1).fit(real)
    c = cls(cls.Config(ipc=3), seed=2).fit(real)
    assert a.y.tolist() == [c_ for c_ in range(10) for _ in range(3)]
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    src = torch.tensor(a.meta["source_indices"])
    assert torch.equal(real.x[src], a.x)
    assert a.meta["synthesizer"] == "random" and a.meta["ipc"] == 3 and a.meta["encoding"]["shape"] == [1, 8, 8]


def test_ipc_larger_than_class_is_a_clear_error(digits):
    real, _ = digits
    cls = SYNTHESIZERS.get("random")
    with pytest.raises(ValueError, match=r"ipc=500 is larger than class .* choose ipc <= "):
        cls(cls.Config(ipc=500)).fit(real)


def test_herding_known_answer():
    # 1-D features 0..4, mean 2: herding picks 2 first, then the pair that keeps the running mean at 2.
    f = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    picked = herding_select(f, 3).tolist()
    assert picked[0] == 2 and sorted(picked[1:]) in ([1, 3], [0, 4])
    assert herding_select(f, 5).sort().values.tolist() == [0, 1, 2, 3, 4]


def test_kcenter_known_answer():
    f = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    # nearest the mean (1.22, 0.8) is [1, 1]; then the farthest from it, [5, 0]; then [0, 3].
    assert kcenter_select(f, 3).tolist() == [4, 2, 3]


@pytest.mark.parametrize("name", ["herding", "kcenter"])
def test_coreset_baselines_run(digits, name):
    real, _ = digits
    cls = SYNTHESIZERS.get(name)
    cfg = cls.Config(ipc=2, embedding=EmbeddingConfig(model="convnet", model_kwargs={"depth": 2, "width": 16},
                                                       train=TrainRecipe(epochs=1, augment="none")))
    s = cls(cfg, seed=0).fit(real)
    assert s.x.shape == (20, 1, 8, 8) and s.y.bincount().tolist() == [2] * 10
    src = torch.tensor(s.meta["source_indices"])
    assert (real.y[src] == s.y).all()
