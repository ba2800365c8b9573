import torch

from synthesizers import SYNTHESIZERS
from synthesizers.dm import DMConfig

from tests._helpers import FAST


def _cfg(**kw):
    base = dict(ipc=2, iterations=4, batch_real=16, model="convnet", model_kwargs={"depth": 2, "width": 16},
                checkpoint_every=2, perf=FAST)
    base.update(kw)
    return DMConfig(**base)


def test_dm_loss_decreases_and_images_change(digits):
    real, _ = digits
    cls = SYNTHESIZERS.get("dm")
    synth = cls(_cfg(iterations=15, augment="none"), seed=0)
    losses = []
    synset = synth.fit(real, callbacks=[lambda s, step, logs: losses.append(logs["loss"])])
    init = cls(_cfg(iterations=0, augment="none"), seed=0).fit(real)
    assert len(losses) == 15 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert not torch.allclose(synset.x, init.x)
    assert synset.meta["learned"] == ["x"] and synset.meta["step"] == 15 and synset.meta["synthesizer"] == "dm"


def test_dm_loss_known_answer_against_per_class_loop(digits):
    """The batched loss equals DM's class-by-class formulation (Eq. 4) with the same draws."""
    real, _ = digits
    synth = SYNTHESIZERS.get("dm")(_cfg(augment="none"), seed=3)
    synth.setup(real)
    state = synth.generator.get_state()
    batched = synth.loss(real, step=0)
    synth.generator.set_state(state)
    net = synth.sample_network(0)
    expected = 0.0
    for c in range(real.num_classes):
        xr = real.sample(c, 16, synth.generator)
        xs = synth.params["x"][c * 2 : (c + 1) * 2]
        expected = expected + ((net.embed(xr).mean(0) - net.embed(xs).mean(0)) ** 2).sum()
    torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-5)
