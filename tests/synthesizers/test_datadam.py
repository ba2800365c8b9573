import math

import pytest
import torch

from synthesizers import SYNTHESIZERS
from synthesizers.datadam import DataDAMConfig, attention_map, class_mean_distance

from tests._helpers import FAST


def test_attention_map_known_answer():
    # F (1, C=2, H=1, W=2): channel 0 = [1, -2], channel 1 = [0, 1].
    f = torch.tensor([[[[1.0, -2.0]], [[0.0, 1.0]]]])
    # p = 2: sum_k |F_k|^2 = [1, 5], L2-normalised.
    torch.testing.assert_close(attention_map(f, 2.0), torch.tensor([[1.0, 5.0]]) / math.sqrt(26.0))
    # p = 1 (the official code's call): [1, 3] / sqrt(10).
    torch.testing.assert_close(attention_map(f, 1.0), torch.tensor([[1.0, 3.0]]) / math.sqrt(10.0))
    # p = 4: [1, 17] / sqrt(290).
    torch.testing.assert_close(attention_map(f, 4.0), torch.tensor([[1.0, 17.0]]) / math.sqrt(290.0))


def test_class_mean_distance_known_answer():
    real = torch.tensor([[1.0], [3.0], [0.0], [2.0]])  # class means 2, 1
    syn = torch.tensor([[1.0], [1.0]])  # one image per class
    assert class_mean_distance(real, syn, [2, 2], 1).item() == pytest.approx(1.0)
    # unequal real batch sizes (a small class) are averaged per class
    assert class_mean_distance(torch.tensor([[1.0], [3.0], [5.0]]), syn, [1, 2], 1).item() == pytest.approx(9.0)


def test_sam_loss_known_answer_on_fixed_tensors():
    """The SAM + MMD loss for fixed maps, computed by hand from Eq. (3)-(5) with scale 100 and lambda 0.5."""
    f_real = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 2.0]]]])  # 2 real images of one class, C=1, 1x2
    f_syn = torch.tensor([[[[3.0, 4.0]]]])
    a_real = attention_map(f_real, 1.0)  # [1, 0], [0, 1] -> mean [.5, .5]
    a_syn = attention_map(f_syn, 1.0)  # [.6, .8]
    sam = class_mean_distance(a_real, a_syn, [2], 1)
    assert sam.item() == pytest.approx(0.1 ** 2 + 0.3 ** 2)
    emb_real, emb_syn = torch.tensor([[1.0, 2.0], [3.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    mmd = class_mean_distance(emb_real, emb_syn, [2], 1)  # ||(2, 2)||^2 = 8
    assert (100 * (sam + 0.5 * mmd)).item() == pytest.approx(100 * (0.1 + 4.0))


def _cfg(**kw):
    base = dict(ipc=2, iterations=4, batch_real=16, model="convnet", model_kwargs={"depth": 3, "width": 16},
                attention_power=4.0, perf=FAST)
    base.update(kw)
    return DataDAMConfig(**base)


def test_loss_decreases_and_images_change(digits):
    real, _ = digits
    cls = SYNTHESIZERS.get("datadam")
    losses = []
    synset = cls(_cfg(iterations=15, augment="none"), seed=0).fit(
        real, callbacks=[lambda s, step, logs: losses.append(logs["loss"])])
    init = cls(_cfg(iterations=0, augment="none"), seed=0).fit(real)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert not torch.allclose(synset.x, init.x)
    assert synset.meta["synthesizer"] == "datadam" and synset.meta["config"]["preset"] == "paper"
    assert synset.meta["eval_model"] == "convnet" and synset.meta["eval_model_kwargs"] == {"depth": 3, "width": 16}


@pytest.mark.parametrize("augment", ["none", "dsa"])
def test_batched_and_per_class_paths_give_the_same_loss(digits, augment):
    real, _ = digits
    cls = SYNTHESIZERS.get("datadam")
    losses = {}
    for batched in (True, False):
        synth = cls(_cfg(batched=batched, augment=augment), seed=5)
        synth.setup(real)
        losses[batched] = synth.loss(real, step=0)[0]
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-6)


def test_presets_and_cli_spelling():
    cls = SYNTHESIZERS.get("datadam")
    official = cls.config_from_preset("official", ipc=1)
    assert official.model_kwargs == {"norm": "batchnorm"} and official.attention_power == 1.0
    assert official.iterations == 20000 and official.batch_real == 64 and official.ipc == 1
    paper = cls.config_from_preset("paper")
    assert paper.attention_power == 4.0 and paper.iterations == 8000 and paper.model_kwargs == {}
    with pytest.raises(KeyError, match=r"unknown preset 'fast'.*\['official', 'paper'\]"):
        cls.config_from_preset("fast")
    from ddistill.config import build_component

    _, cfg = build_component(SYNTHESIZERS, {"name": "datadam", "preset": "official", "ipc": 10}, "synthesizer")
    assert cfg.preset == "official" and cfg.ipc == 10


def test_official_preset_records_batchnorm_eval_net(digits):
    real, _ = digits
    cls = SYNTHESIZERS.get("datadam")
    cfg = cls.config_from_preset("official", ipc=1, iterations=2, batch_real=8, perf=FAST,
                                 model_kwargs={"norm": "batchnorm", "depth": 2, "width": 8})
    synset = cls(cfg, seed=0).fit(real)
    assert synset.meta["eval_model_kwargs"]["norm"] == "batchnorm"


@pytest.mark.parametrize("augment", ["none", "dsa"])
def test_class_chunks_give_the_unchunked_set(digits, augment):
    """Back-propagating chunk by chunk is the same gradient: one chunk of every class is the unchunked computation
    exactly; chunks of one class change only the float summation order of the gradient."""
    real, _ = digits
    cls = SYNTHESIZERS.get("datadam")
    sets, logs = {}, {}
    for chunk in (0, 10, 1):
        seen = []
        sets[chunk] = cls(_cfg(iterations=3, batched=False, augment=augment, class_chunk=chunk), seed=2).fit(
            real, callbacks=[lambda s, step, lg, seen=seen: seen.append(lg)])
        logs[chunk] = seen
    assert torch.equal(sets[0].x, sets[10].x)
    assert [lg["loss"] for lg in logs[0]] == pytest.approx([lg["loss"] for lg in logs[10]], rel=1e-6)
    torch.testing.assert_close(sets[1].x, sets[0].x, rtol=1e-5, atol=1e-5)
    assert [lg["sam"] for lg in logs[0]] == pytest.approx([lg["sam"] for lg in logs[1]], rel=1e-5)
    assert not torch.equal(sets[1].x, cls(_cfg(iterations=0), seed=2).fit(real).x)  # the images moved


def test_class_chunk_needs_the_per_class_path():
    with pytest.raises(ValueError, match="class_chunk needs batched: false"):
        DataDAMConfig(class_chunk=2, batched=True)
    with pytest.raises(ValueError, match="class_chunk must be >= 0"):
        DataDAMConfig(class_chunk=-1, batched=False)
