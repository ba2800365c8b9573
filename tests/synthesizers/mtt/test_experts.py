"""Expert trajectories: training (MTT and AST recipes), the file format, sharding + merge, the lazy buffer."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ddistill.augment import DSA
from ddistill.data import load_real
from ddistill.models import MLP, ModelFamily
from ddistill.utils.perf import PerfConfig
from ddistill.utils.train import TrainRecipe, train_classifier
from synthesizers.mtt import (
    ExpertBuffer,
    ExpertConfig,
    ExpertFile,
    ExpertFileError,
    ExpertLoss,
    ParamLayout,
    expert_config_from_preset,
    gradient_penalty,
    merge_expert_files,
    new_expert_file,
    train_expert,
    trajectory_smoothness,
)

TINY = dict(model="mlp", model_kwargs={"hidden": [16]}, train={"epochs": 2, "batch_size": 256})


def _cfg(preset=None, **kw) -> ExpertConfig:
    """An expert config: the preset (default: MTT's recipe) with ``kw`` on top (``train`` merged field by field)."""
    return expert_config_from_preset(preset, **kw)
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train_experts.py"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real():
    return load_real("digits")[0]


def _script():
    spec = importlib.util.spec_from_file_location("train_experts_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _file(real, indices, cfg=None, seed=0, **kw) -> ExpertFile:
    cfg = cfg or _cfg(**TINY)
    f = new_expert_file(real, cfg, seed, **kw)
    for i in indices:
        f.add(i, train_expert(real, cfg, index=i, seed=seed), test_accuracy=float(i))
    return f


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------
def test_expert_snapshots_are_reproducible_from_seed_and_index(real):
    cfg = _cfg(**TINY)
    a = train_expert(real, cfg, index=3, seed=7)
    b = train_expert(real, cfg, index=3, seed=7)
    c = train_expert(real, cfg, index=4, seed=7)
    assert len(a) == cfg.epochs + 1 and all(t.dtype == torch.float32 and t.dim() == 1 for t in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[-1])
    change = trajectory_smoothness(a)
    assert change.shape == (cfg.epochs,) and (change > 0).all()


def test_loss_fn_hook_reproduces_the_builtin_batch_path(real):
    """train_classifier(loss_fn=...) with plain DSA + CE equals the existing augment/criterion path bit for bit."""
    fam = ModelFamily("mlp", in_channels=1, num_classes=10, image_size=8, seed=0, hidden=(16,))
    sched = TrainRecipe(epochs=2, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256)
    dsa = DSA("color_crop_cutout_scale_rotate")
    nets = []
    for hook in (False, True):
        net, gen = fam.build(0), torch.Generator().manual_seed(5)
        if hook:
            cfg = _cfg(**TINY)
            train_classifier(net, real.x, real.y, sched, generator=gen,
                             loss_fn=ExpertLoss(cfg, dsa, gen, PerfConfig(False, False, False)))
        else:
            train_classifier(net, real.x, real.y, sched, augment=dsa, generator=gen)
        nets.append(net)
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    with pytest.raises(ValueError, match="loss_fn"):
        train_classifier(fam.build(0), real.x, real.y, sched, augment=dsa, loss_fn=lambda m, x, y, e: x.sum())


def test_ast_recipe_clipping_and_decay_schedule():
    cfg = expert_config_from_preset("ast", train={"epochs": 50})
    t = cfg.train
    assert (t.lr, t.momentum, t.weight_decay, t.lr_decay, cfg.grad_penalty) == (0.003, 0.9, 1e-3, 0.6, 2.0)
    # AST's buffer.py decays after finishing epoch 50 // 2 + 1 = 26, so epochs 27.. use 0.6 x lr.
    assert t.lr_decay_at == "half+2" and t.decay_epoch() == 27 and t.rebuild_optimizer_at_decay
    assert [cfg.clip_factor(e) for e in (0, 1, 9, 10, 30)] == [0.5, 0.55, 0.95, 1.0, 1.0]
    mtt = expert_config_from_preset("mtt")
    assert mtt.clip_factor(0) == 1.0 and mtt.train.decay_epoch() is None and mtt.train.epochs == 50
    with pytest.raises(KeyError, match="ast"):
        expert_config_from_preset("smooth")
    with pytest.raises(ValueError, match="half\\+N"):
        _cfg(train={"lr_decay_at": "mid", "lr_decay": 0.5})


def test_gradient_penalty_known_answer_on_a_linear_model():
    """For f(x) = W flatten(x) + b, d sum(f)/dx = column sums of W, so the penalty is analytic."""
    net = MLP(in_channels=2, num_classes=3, image_size=2, hidden=(4,))
    net.layers = torch.nn.ModuleList()  # logits = classifier(flatten(x)): a linear model
    net.classifier = torch.nn.Linear(8, 3)
    x = torch.randn(5, 2, 2, 2)
    grad = net.classifier.weight.sum(0).reshape(2, 2, 2)  # (C, H, W)
    expected = ((grad.norm(dim=0) - 1) ** 2).mean()
    torch.testing.assert_close(gradient_penalty(net, x), expected)
    gradient_penalty(net, x).backward()  # trainable: the penalty reaches the weights (double backward)
    assert net.classifier.weight.grad.abs().sum() > 0


def test_ast_switches_train_and_clipping_slows_the_first_epoch(real):
    """The clipping loss (x0.5 in epoch 0) makes the first epoch's parameter change smaller than MTT's plain SGD;
    the gradient penalty trains finite experts."""
    base = dict(TINY, train={**TINY["train"], "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0})
    plain = train_expert(real, _cfg(**base), index=0, seed=0)
    clipped = train_expert(real, _cfg(**base, clip_loss=True), index=0, seed=0)
    assert torch.equal(plain[0], clipped[0])
    assert trajectory_smoothness(clipped)[0] < 0.75 * trajectory_smoothness(plain)[0]
    penalised = train_expert(real, expert_config_from_preset("ast", **TINY), index=0, seed=0)
    assert all(torch.isfinite(t).all() for t in penalised) and not torch.equal(penalised[-1], plain[-1])


# ---------------------------------------------------------------------------------------------------------------
# File format
# ---------------------------------------------------------------------------------------------------------------
def test_expert_file_round_trip_and_model_rebuild(real, tmp_path):
    f = _file(real, [0, 1])
    f.save(tmp_path / "e.pt")
    g = ExpertFile.load(tmp_path / "e.pt")
    assert g.header() == f.header() and g.expert_indices == [0, 1] and g.test_accuracy == [0.0, 1.0]
    assert g.num_epochs == 2 and g.layout == ParamLayout.from_module(g.build_model())
    assert all(torch.equal(a, b) for ta, tb in zip(f.trajectories, g.trajectories) for a, b in zip(ta, tb))
    assert g.encoding == real.encoding.to_meta() and g.dataset == "digits" and g.expert_config["model"] == "mlp"
    net = g.build_model(g.trajectories[1][-1])
    assert torch.equal(ParamLayout.from_module(net).flatten(net), g.trajectories[1][-1])
    assert g.trajectory(0).shape == (3, g.layout.numel)
    assert torch.stack([trajectory_smoothness(t) for t in g.trajectories]).shape == (2, 2)
    raw = torch.load(tmp_path / "e.pt", weights_only=True)
    assert raw["format"] == "ddistill.experts" and raw["version"] == 1
    bf = _file(real, [0], storage_dtype="bfloat16")
    bf.save(tmp_path / "bf.pt")
    back = ExpertFile.load(tmp_path / "bf.pt", mmap=True)
    assert back.trajectories[0][0].dtype == torch.bfloat16 and back.trajectory(0).dtype == torch.float32
    assert (tmp_path / "bf.pt").stat().st_size < 0.6 * (tmp_path / "e.pt").stat().st_size


def test_bad_expert_files_are_clear_errors(real, tmp_path):
    good = tmp_path / "good.pt"
    _file(real, [0]).save(good)
    torch.save([[torch.zeros(3)]], tmp_path / "mtt_replay_buffer.pt")  # MTT's own format
    with pytest.raises(ExpertFileError, match="not a ddistill expert file"):
        ExpertFile.load(tmp_path / "mtt_replay_buffer.pt")
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExpertFileError, match="truncated"):
        ExpertFile.load(tmp_path / "truncated.pt")
    blob = torch.load(good, weights_only=True)
    torch.save({**blob, "version": 2}, tmp_path / "newer.pt")
    with pytest.raises(ExpertFileError, match="upgrade ddistill"):
        ExpertFile.load(tmp_path / "newer.pt")
    torch.save({**blob, "trajectories": [[torch.zeros(3)] * 3]}, tmp_path / "wrong.pt")
    with pytest.raises(ExpertFileError, match="vector"):
        ExpertFile.load(tmp_path / "wrong.pt")
    with pytest.raises(FileNotFoundError):
        ExpertFile.load(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------------------------
# Merging and the lazy buffer
# ---------------------------------------------------------------------------------------------------------------
def test_merge_checks_runs_duplicates_and_gaps(real, tmp_path):
    _file(real, [0]).save(tmp_path / "a.pt")
    _file(real, [2]).save(tmp_path / "c.pt")
    _file(real, [1], seed=1).save(tmp_path / "other_seed.pt")
    with pytest.raises(ExpertFileError, match="seed"):
        merge_expert_files([tmp_path / "a.pt", tmp_path / "other_seed.pt"], tmp_path / "m.pt")
    with pytest.raises(ExpertFileError, match=r"\[1\] are missing"):
        merge_expert_files([tmp_path / "c.pt", tmp_path / "a.pt"], tmp_path / "m.pt")
    with pytest.raises(ExpertFileError, match="in both"):
        merge_expert_files([tmp_path / "a.pt", tmp_path / "a.pt"], tmp_path / "m.pt")
    merged = ExpertFile.load(merge_expert_files([tmp_path / "c.pt", tmp_path / "a.pt"], tmp_path / "m.pt",
                                                require_complete=False))
    assert merged.expert_indices == [0, 2]


def test_buffer_reads_files_lazily_and_resumes(real, tmp_path):
    folder = tmp_path / "experts"
    for group in ([0, 1], [2], [3, 4]):
        _file(real, group).save(folder / f"experts_{group[0]:05d}-{group[-1]:05d}.pt")
    buf = ExpertBuffer(folder)
    assert buf.num_experts == 5 and buf.num_epochs == 2 and buf.header["model"] == "mlp"
    g = torch.Generator().manual_seed(0)
    first = [buf.sample(g)[0] for _ in range(5)]
    assert sorted(first) == [0, 1, 2, 3, 4]  # every expert once per pass over the files
    state, gstate = buf.state_dict(), g.get_state()
    later = [buf.sample(g)[0] for _ in range(4)]
    again = ExpertBuffer(folder)
    again.load_state_dict(state)
    g.set_state(gstate)
    assert [again.sample(g)[0] for _ in range(4)] == later
    index, traj = again.sample(g)
    assert len(traj) == 3 and traj[0].shape == (buf.layout.numel,)
    assert ExpertBuffer(folder, max_experts=2).num_experts == 2
    _file(real, [5], seed=3).save(folder / "experts_00005-00005.pt")
    with pytest.raises(ExpertFileError, match="different runs"):
        ExpertBuffer(folder)
    with pytest.raises(FileNotFoundError, match="train_experts"):
        ExpertBuffer(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------------------------
# The script: shards, resume, merge
# ---------------------------------------------------------------------------------------------------------------
def _write_config(path: Path, **over) -> Path:
    cfg = {"name": "tiny", "seed": 0, "dataset": {"name": "digits"}, "num_experts": 3, "experts_per_file": 1,
           "evaluate": True, "progress": False, "experts": {"preset": "mtt", **TINY}}
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_shards_merge_into_the_single_run_file(tmp_path):
    script = _script()
    config = _write_config(tmp_path / "experts.yaml")
    shards = tmp_path / "shards"
    s0 = script.main([str(config), "--shard", "0/2", "--out", str(shards)])
    s1 = script.main([str(config), "--shard", "1/2", "--out", str(shards)])
    assert s0["trained"] == [0, 2] and s1["trained"] == [1]
    again = script.main([str(config), "--shard", "0/2", "--out", str(shards)])  # resume: nothing left to do
    assert again["trained"] == [] and again["skipped"] == [0, 2]
    merged = script.main(["merge", str(shards), "--out", str(tmp_path / "merged.pt")])
    single = tmp_path / "single"
    script.main([str(config), "experts_per_file=null", "--out", str(single)])
    (one,) = single.glob("experts_*.pt")
    assert one.name == "experts_00000-00002.pt"
    a, b = ExpertFile.load(merged), ExpertFile.load(one)
    assert a.header() == b.header() and a.expert_indices == b.expert_indices == [0, 1, 2]
    assert a.test_accuracy == b.test_accuracy and all(acc > 10 for acc in a.test_accuracy)
    assert all(torch.equal(x, y) for ta, tb in zip(a.trajectories, b.trajectories) for x, y in zip(ta, tb))
    assert merged.read_bytes() == one.read_bytes()
    with pytest.raises(FileExistsError, match="different run"):
        script.main([str(config), "seed=1", "--out", str(shards)])


def test_shard_from_torchrun_environment(monkeypatch):
    script = _script()
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert script.parse_shard(None) == (2, 4)
    assert script.parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError, match="i/n"):
        script.parse_shard("3")
