"""One case of ``tests/test_distributed.py``, run by ``torchrun --nproc_per_node N`` (or plainly, as one process).

    python tests/distributed_worker.py CASE OUT_DIR [--steps K] [--stop-after K] [--resume] [--experts FILE]

Rank 0 writes ``OUT_DIR/result.pt`` (tensors only) with what the test compares between world sizes. Not collected by
pytest (no ``test_`` prefix).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddistill.data import load_real  # noqa: E402
from ddistill.distributed import exit_process, init_distributed, shutdown_distributed  # noqa: E402
from ddistill.utils.perf import PerfConfig  # noqa: E402

FAST = PerfConfig(channels_last=False, bf16=False, compile=False, threads=1)
CASES = ("dm", "datadam_batchnorm", "mtt", "krr_st", "classifier", "continual", "nas", "graph", "transfer")


def _matching(name: str, out: Path, steps: int, stop_after: int | None, resume: bool,
              **extra) -> dict[str, torch.Tensor]:
    from synthesizers import SYNTHESIZERS
    from synthesizers.callbacks import Checkpoint, StopAfter

    real, _ = load_real("digits")
    cls = SYNTHESIZERS.get(name)
    cfg = cls.Config(ipc=2, iterations=steps, batch_real=16, perf=FAST, checkpoint_every=2, **extra)
    losses: list[float] = []
    callbacks = [Checkpoint(out / "checkpoint.pt", 2, resume=resume), lambda s, step, logs: losses.append(logs["loss"])]
    if stop_after is not None:
        callbacks.append(StopAfter(steps=stop_after))
    synset = cls(cfg, seed=3).fit(real, callbacks=callbacks)
    start = cls(cls.Config(ipc=2, iterations=0, batch_real=16, perf=FAST, **extra), seed=3).fit(real)
    return {"x": synset.x, "x0": start.x, "loss": torch.tensor(losses, dtype=torch.float64)}


def _mtt(out: Path, steps: int, experts: str) -> dict[str, torch.Tensor]:
    from synthesizers.mtt import MTTConfig, TrajectoryMatching

    real, _ = load_real("digits")
    cfg = MTTConfig(ipc=2, iterations=steps, experts=experts, syn_steps=3, expert_epochs=1, max_start_epoch=2,
                    lr_images=100.0, lr_lr=1e-5, lr_teacher=0.01, segments=2)
    losses: list[float] = []
    synset = TrajectoryMatching(cfg, seed=1).fit(real, callbacks=[lambda s, step, logs: losses.append(logs["loss"])])
    start = TrajectoryMatching(dataclasses.replace(cfg, iterations=0), seed=1).fit(real)
    return {"x": synset.x, "lr": synset.tensors["lr"], "x0": start.x, "lr0": start.tensors["lr"],
            "loss": torch.tensor(losses, dtype=torch.float64)}


def _krr_st(steps: int) -> dict[str, torch.Tensor]:
    from synthesizers.krr_st import KRRST, KRRSTConfig

    real, _ = load_real("digits")
    with torch.random.fork_rng(devices=[]):  # a fixed random teacher: 8x8 digits -> 16-d targets
        torch.manual_seed(0)
        teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Tanh(),
                                      torch.nn.Linear(32, 16))
    cfg = KRRSTConfig(num_images=20, model="convnet_bn", model_kwargs={"width": 8, "depth": 2}, num_models=3,
                      online_iteration=4, iterations=steps, batch_real=64, lr=1e-2, perf=FAST)
    losses: list[float] = []
    grads: dict[str, torch.Tensor] = {}

    def record(synth, step: int, logs: dict[str, float]) -> None:
        losses.append(logs["loss"])
        if step == 1:  # AdamW's first step is ~lr * sign(g): compare the summed gradients themselves
            grads.update({f"grad_{k}": p.grad.detach().clone() for k, p in synth.params.items()})

    synset = KRRST(cfg, seed=0, teacher=teacher).fit(real, callbacks=[record])
    return {"x": synset.x, "y": synset.tensors["y"], "loss": torch.tensor(losses, dtype=torch.float64), **grads}


def _classifier() -> dict[str, torch.Tensor]:
    from ddistill.data import EvalData
    from evaluators.classifier import ClassifierEvaluator
    from synthesizers import SYNTHESIZERS

    real, test = load_real("digits")
    synset = SYNTHESIZERS.get("random")(SYNTHESIZERS.get("random").Config(ipc=3), seed=0).fit(real)
    cfg = ClassifierEvaluator.config_from_preset(None, model="mlp", model_kwargs={}, num_models=3, perf=FAST,
                                                 progress=False, controls=["random_subset"], test_every=5,
                                                 train={"epochs": 10, "batch_size": 16, "augment": "none"})
    res = ClassifierEvaluator(cfg, seed=0).evaluate(synset, EvalData(train=real, test=test))
    control = res.details["controls"]["random_subset"]
    return {"values": torch.tensor(res.values, dtype=torch.float64),
            "control": torch.tensor(control["values"], dtype=torch.float64),
            "curves": torch.tensor(res.details["test_curves"], dtype=torch.float64)}


def _continual() -> dict[str, torch.Tensor]:
    from ddistill.data import EvalData
    from ddistill.utils.train import TrainRecipe
    from evaluators.continual import ContinualConfig, ContinualEvaluator
    from synthesizers import SYNTHESIZERS

    real, test = load_real("digits")
    synset = SYNTHESIZERS.get("random")(SYNTHESIZERS.get("random").Config(ipc=3), seed=0).fit(real)
    cfg = ContinualConfig(stages=2, num_orders=3, models_per_order=1, model="mlp", model_kwargs={},
                          train=TrainRecipe(epochs=5, augment="none"), perf=FAST)
    res = ContinualEvaluator(cfg, seed=0).evaluate(synset, EvalData(train=real, test=test))
    return {"values": torch.tensor(res.values, dtype=torch.float64),
            "curves": torch.tensor(res.details["curves"], dtype=torch.float64),
            "control": torch.tensor(res.details["controls"]["random_subset"]["values"], dtype=torch.float64)}


def _nas() -> dict[str, torch.Tensor]:
    from ddistill.data import EvalData
    from ddistill.utils.train import TrainRecipe
    from evaluators.nas import NASConfig, NASEvaluator
    from synthesizers import SYNTHESIZERS

    real, test = load_real("digits")
    synset = SYNTHESIZERS.get("random")(SYNTHESIZERS.get("random").Config(ipc=3), seed=0).fit(real)
    cfg = NASConfig(num_architectures=3, proxy=TrainRecipe(epochs=3), real=TrainRecipe(epochs=1, augment="none"),
                    real_train_size=300, val_size=200, space={"width": [8, 16], "depth": [1, 2], "act": ["relu"],
                                                              "norm": ["instancenorm", "none"],
                                                              "pool": ["avgpooling"]}, perf=FAST, progress=False)
    res = NASEvaluator(cfg, seed=0).evaluate(synset, EvalData(test=test, train=real))
    d = res.details
    return {"values": torch.tensor(res.values, dtype=torch.float64),
            "proxy": torch.tensor(d["proxy_val_accuracy"], dtype=torch.float64),
            "real": torch.tensor(d["real_val_accuracy"] + d["real_test_accuracy"], dtype=torch.float64),
            "repeat": torch.tensor(d["controls"]["real_repeat"]["real_val_accuracy"], dtype=torch.float64),
            "random": torch.tensor(d["controls"]["random_subset"]["proxy_val_accuracy"], dtype=torch.float64)}


def _graph() -> dict[str, torch.Tensor]:
    import dataclasses as dc

    from ddistill.data import EvalData
    from evaluators.graph import GraphEvalConfig, GraphEvaluator
    from synthesizers.random_graphs import RandomGraphs, RandomGraphsConfig
    from tests._helpers import toy_graphs

    data = toy_graphs()
    synset = RandomGraphs(RandomGraphsConfig(graphs_per_class=4, hops=1), seed=0).fit(data)
    train = dc.replace(GraphEvalConfig().train, epochs=2, batch_size=8, lr=2e-3)  # short: scores not all 100
    cfg = GraphEvalConfig(hidden=16, num_runs=3, threads=1, progress=False, train=train,
                          controls=["untrained", "random_graphs", "num_nodes"])
    res = GraphEvaluator(cfg, seed=0).evaluate(synset, EvalData(graphs=data))
    controls = res.details["controls"]
    return {"values": torch.tensor(res.values, dtype=torch.float64),
            "val": torch.tensor(res.details["val"], dtype=torch.float64),
            "untrained": torch.tensor(controls["untrained"]["values"], dtype=torch.float64),
            "random_graphs": torch.tensor(controls["random_graphs"]["values"], dtype=torch.float64)}


def _transfer(out: Path, rank: int) -> dict[str, torch.Tensor]:
    from ddistill.data import DataSpec, Encoding, load_data, load_eval_data
    from ddistill.models import create_model
    from ddistill.utils.probe import LinearProbeConfig
    from ddistill.utils.train import TrainRecipe
    from evaluators.transfer import TransferConfig, TransferEvaluator
    from synthesizers.krr_st.teacher import save_teacher
    from synthesizers.random import RandomConfig, RandomSubset

    source = DataSpec(name="digits", classes=[0, 1, 2, 3, 4])
    real, _ = load_data(source)
    # The teacher's initialisation comes from a generator (the same network on every rank); each rank writes its own
    # copy so no rank reads a file another is writing.
    gen = torch.Generator().manual_seed(0)
    teacher = create_model("convnet_bn", in_channels=1, num_classes=0, image_size=8, width=4, depth=1)
    with torch.no_grad():
        for prm in teacher.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen) * 0.3)
    path = save_teacher(out / f"teacher_rank{rank}.pt", teacher, model="convnet_bn",
                        model_kwargs={"width": 4, "depth": 1}, encoding=real.encoding, dataset="digits")
    synset = RandomSubset(RandomConfig(ipc=3), seed=0).fit(real)
    cfg = TransferConfig(num_runs=3, probe=LinearProbeConfig(iterations=50), linear_probe=True,
                         pretrain_recipe={"epochs": 3, "batch_size": 16}, teacher=str(path),
                         finetune=TrainRecipe(iterations=10, batch_size=32, schedule="cosine", augment="none"),
                         controls=["no_pretraining", "random_subset", "random_teacher_targets", "teacher_probe"],
                         model="convnet_bn", model_kwargs={"width": 8, "depth": 2}, perf=FAST, progress=False)
    ev = TransferEvaluator(cfg, seed=0)
    enc = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
    res = ev.evaluate(synset, load_eval_data(source, ev.needs(synset.meta), encoding=enc))
    d, c = res.details, res.details["controls"]
    fits = [[f[k] for k in sorted(f)] for f in d["pretrain_fit"]["runs"]]
    return {"values": torch.tensor(res.values, dtype=torch.float64),
            "probe": torch.tensor(d["linear_probe"], dtype=torch.float64),
            "fit": torch.tensor(fits, dtype=torch.float64),
            **{name: torch.tensor(c[name]["values"], dtype=torch.float64) for name in cfg.controls},
            "random_fit": torch.tensor([f["train_r2"] for f in c["random_teacher_targets"]["pretrain_fit"]["runs"]],
                                       dtype=torch.float64)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=CASES)
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--stop-after", type=int, default=None, help="interrupt after this many steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument("--experts", default="", help="expert file (case mtt)")
    args = p.parse_args()
    torch.set_num_threads(1)
    context, _ = init_distributed("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.case == "dm":
        result = _matching("dm", out, args.steps, args.stop_after, args.resume)
    elif args.case == "datadam_batchnorm":
        result = _matching("datadam", out, args.steps, args.stop_after, args.resume, model="convnet",
                           model_kwargs={"norm": "batchnorm", "width": 8, "depth": 2})
    elif args.case == "mtt":
        result = _mtt(out, args.steps, args.experts)
    elif args.case == "krr_st":
        result = _krr_st(args.steps)
    elif args.case == "graph":
        result = _graph()
    elif args.case == "continual":
        result = _continual()
    elif args.case == "nas":
        result = _nas()
    elif args.case == "transfer":
        result = _transfer(out, context.rank)
    else:
        result = _classifier()
    if context.is_main:
        torch.save({**result, "world_size": torch.tensor(context.world_size)}, out / "result.pt")
    shutdown_distributed()  # what the CLI does at the end of a command (barrier, then destroy the group)
    # So that a teardown abort's log (the test's warning carries its tail) tells whether it came after this point.
    print(f"[rank {context.rank}] left the process group", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
    exit_process(0)  # and how the CLI ends: a torchrun rank skips interpreter finalisation
