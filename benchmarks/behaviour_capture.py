"""Behaviour capture for refactors: every synthesizer and evaluator run on tiny budgets with fixed seeds, the
resulting tensors and scores saved to one file. Run it before and after a change that must not change behaviour and
compare the two files (``--compare A B``): every entry must be bit-identical.

    python benchmarks/behaviour_capture.py --out /tmp/after.pt
    python benchmarks/behaviour_capture.py --compare /tmp/before.pt /tmp/after.pt

Covers DM (eager and default speed settings), DataDAM (both presets, batched and per class), random / herding /
kcenter / full, MTT and AST experts and distillation (plain and AST switches with the memory-saving unroll),
KRR-ST with a fixed teacher, Barlow Twins teacher training and the linear probe, the classifier (also with the
default speed settings and on the whole real set), continual, NAS and transfer evaluators (hard, regression and no
pre-training), Mirage and random graphs on MUTAG, and the graph evaluator (GCN, GIN, full data). Data: scikit-learn's
digits and the MUTAG zip of ../shared/data/tu. About 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def capture(args: argparse.Namespace) -> dict:
    out: dict = {}
    work = Path(tempfile.mkdtemp(prefix="ddistill-capture-"))
    out = {}

    from ddistill.data import load_real
    from ddistill.utils.perf import PerfConfig
    from synthesizers import SYNTHESIZERS
    FAST = PerfConfig(channels_last=False, bf16=False, compile=False)
    real, test = load_real("digits")

    def syn(name, seed=0, real=real, preset=None, **cfg):
        cls = SYNTHESIZERS.get(name)
        c = cls.config_from_preset(preset, **cfg) if preset else cls.Config(**cfg)
        return cls(c, seed=seed)

    # --- image synthesizers on digits ---
    s = syn("dm", ipc=3, iterations=6, batch_real=32, model_kwargs={"depth": 2, "width": 16}, perf=FAST).fit(real)
    out["dm"] = s.tensors
    s = syn("dm", ipc=3, iterations=4, batch_real=32, model_kwargs={"depth": 2, "width": 16}).fit(real)
    out["dm_perfauto"] = s.tensors
    for preset in ("paper", "official"):
        kwargs = {"depth": 2, "width": 16, **({"norm": "batchnorm"} if preset == "official" else {})}
        s = syn("datadam", preset=preset, ipc=2, iterations=5, batch_real=32, model_kwargs=kwargs, perf=FAST).fit(real)
        out[f"datadam_{preset}"] = s.tensors
    s = syn("datadam", ipc=2, iterations=3, batch_real=32, batched=False, model_kwargs={"depth": 2, "width": 16}, perf=FAST).fit(real)
    out["datadam_unbatched"] = s.tensors
    out["random"] = syn("random", ipc=4, seed=3).fit(real).tensors
    from synthesizers._selection import EmbeddingConfig
    from ddistill.utils.train import TrainRecipe
    emb = EmbeddingConfig(model="convnet", model_kwargs={"depth": 2, "width": 16}, train=TrainRecipe(epochs=2, augment="none"))
    out["herding"] = syn("herding", ipc=3, embedding=emb).fit(real).tensors
    out["kcenter"] = syn("kcenter", ipc=3, embedding=emb).fit(real).tensors
    out["full_n"] = torch.tensor(len(syn("full").fit(real)))

    # --- MTT experts and distillation ---
    from synthesizers.mtt import new_expert_file, train_expert, expert_config_from_preset
    for preset in ("mtt", "ast"):
        ec = expert_config_from_preset(preset, model="convnet", model_kwargs={"width": 8, "depth": 1}, train={"epochs": 4, "batch_size": 128})
        f = new_expert_file(real, ec, seed=0)
        for i in range(2):
            traj = train_expert(real, ec, index=i, seed=0)
            f.add(i, traj)
            out[f"expert_{preset}_{i}"] = torch.stack(traj)
        f.save(work / f"experts_{preset}.pt")
    for preset in ("mtt", "ast"):
        base = dict(ipc=2, iterations=4, syn_steps=3, expert_epochs=2, max_start_epoch=2, lr_images=100.0, experts=str(work / f"experts_{preset}.pt"))
        s = syn("mtt", **base).fit(real)
        out[f"mtt_{preset}"] = s.tensors
        s = syn("mtt", **base, init="representative", inner_momentum=0.9, balanced_inner_loss=True, intermediate_matching=1.0, weight_perturbation=1.0, memory_saving=True).fit(real)
        out[f"mtt_{preset}_astswitches"] = s.tensors

    # --- KRR-ST with a tiny teacher ---
    from torch import nn
    class TinyTeacher(nn.Module):
        def __init__(self, seed=0, dim=16):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, dim))
        def forward(self, x):
            return self.net(x)
    from synthesizers.krr_st import KRRST, KRRSTConfig
    kc = KRRSTConfig(num_images=20, iterations=5, num_models=2, online_iteration=3, batch_real=64, model="convnet", model_kwargs={"depth": 2, "width": 16}, lr=1e-3)
    s = KRRST(kc, seed=0, teacher=TinyTeacher()).fit(real)
    out["krr_st"] = s.tensors
    # teacher training
    from synthesizers.krr_st.teacher import BarlowTwinsConfig, train_teacher
    from ddistill.utils.probe import linear_probe, LinearProbeConfig
    bt = BarlowTwinsConfig(model="convnet", model_kwargs={"depth": 2, "width": 16}, projector_dims=[32, 32], epochs=2, batch_size=64, max_images=256, optimizer="sgd", lr=0.05, warmup_epochs=0.5)
    backbone = train_teacher(real, bt, seed=0, progress=False)
    out["teacher"] = {k: v.clone() for k, v in backbone.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    out["probe"] = torch.tensor(linear_probe(backbone, (real.x, real.y), (real.encoding.encode(test.x), test.y), config=LinearProbeConfig(iterations=50), generator=g))

    # --- evaluators ---
    from evaluators import ClassifierConfig, ClassifierEvaluator, ContinualConfig, ContinualEvaluator, NASConfig, NASEvaluator, TransferConfig, TransferEvaluator
    from ddistill.data import EvalData
    from ddistill.utils.train import TrainRecipe as TR
    dmset = syn("dm", ipc=4, iterations=3, batch_real=32, model_kwargs={"depth": 2, "width": 16}, perf=FAST).fit(real)
    with_train = EvalData(test=test, train=real)  # the evaluators' controls read the real training split
    r = ClassifierEvaluator(ClassifierConfig(num_models=2, train=TR(epochs=15), model_kwargs={"depth": 2, "width": 16}, perf=FAST, progress=False), seed=1).evaluate(dmset, with_train)
    out["eval_classifier"] = torch.tensor(r.values)
    r = ClassifierEvaluator(ClassifierConfig(num_models=1, train=TR(epochs=6), model_kwargs={"depth": 2, "width": 16}, progress=False), seed=1).evaluate(dmset, with_train)
    out["eval_classifier_perfauto"] = torch.tensor(r.values)
    r = ClassifierEvaluator(ClassifierConfig(num_models=1, train=TR(epochs=2), model_kwargs={"depth": 2, "width": 16}, perf=FAST, progress=False), seed=1).evaluate_real(real, test)
    out["eval_real"] = torch.tensor(r.values)
    r = ContinualEvaluator(ContinualConfig(stages=5, num_orders=2, models_per_order=1, train=TR(epochs=5), model_kwargs={"depth": 2, "width": 16}, perf=FAST, progress=False), seed=0).evaluate(dmset, with_train)
    out["eval_continual"] = torch.tensor(r.details["curves"])
    nas = NASEvaluator(NASConfig(num_architectures=3, proxy=TR(epochs=3), real=TR(epochs=1, augment="none"), real_train_size=300, val_size=200, space={"width": [8, 16], "depth": [1, 2], "act": ["relu"], "norm": ["instancenorm", "none"], "pool": ["avgpooling"]}, perf=FAST, progress=False), seed=0)
    r = nas.evaluate(dmset, EvalData(test=test, train=real))
    out["eval_nas"] = torch.tensor(r.details["proxy_val_accuracy"] + r.details["real_val_accuracy"] + r.values)
    from ddistill.data import get_dataset
    train_img = get_dataset("digits", split="train")
    tc = TransferConfig(num_runs=2, pretrain_recipe={"epochs": 3}, finetune=TR(iterations=12, batch_size=64, schedule="cosine", augment={"name": "pad_crop_flip", "padding": 4, "flip": True}), model="convnet", model_kwargs={"depth": 2, "width": 16}, linear_probe=True, perf=FAST, progress=False)
    tc.probe.iterations = 20
    r = TransferEvaluator(tc, seed=0).evaluate(dmset, EvalData(downstream={"digits": (train_img, test)}))
    out["eval_transfer_hard"] = torch.tensor(r.values + r.details["linear_probe"])
    r = TransferEvaluator(tc, seed=0).evaluate(s, EvalData(downstream={"digits": (train_img, test)}))
    out["eval_transfer_regression"] = torch.tensor(r.values + r.details["linear_probe"])
    tc2 = TransferConfig(num_runs=1, pretrain="none", finetune=TR(iterations=12, batch_size=64, schedule="cosine", augment={"name": "pad_crop_flip", "padding": 4, "flip": True}), model="convnet", model_kwargs={"depth": 2, "width": 16}, perf=FAST, progress=False)
    r = TransferEvaluator(tc2, seed=0).evaluate(dmset, EvalData(downstream={"digits": (train_img, test)}))
    out["eval_transfer_none"] = torch.tensor(r.values)

    # --- graphs ---
    from ddistill.data.graph import load_graph_dataset
    from synthesizers.mirage import Mirage, MirageConfig
    from synthesizers.random_graphs import RandomGraphs, RandomGraphsConfig
    import dataclasses
    def GC(epochs, **kw):
        base = GraphEvalConfig()
        if args.graph_calibration is not None and hasattr(base, "calibration"):
            kw["calibration"] = args.graph_calibration
        return GraphEvalConfig(**kw, train=dataclasses.replace(base.train, epochs=epochs))
    from evaluators.graph import GraphEvalConfig, GraphEvaluator
    mutag = load_graph_dataset("mutag", args.tu)
    ms = Mirage(MirageConfig(hops=2, support=0.3, progress=False)).fit(mutag)
    out["mirage"] = ms.tensors
    rs = RandomGraphs(RandomGraphsConfig(budget_bytes=ms.meta["distilled_bytes"]), seed=2).fit(mutag)
    out["random_graphs"] = rs.tensors
    for m in ("gcn", "gin"):
        r = GraphEvaluator(GC(4, model=m, num_runs=2, progress=False, extra_metrics=("roc_auc",)), seed=0).evaluate(ms, mutag)
        out[f"eval_graph_{m}"] = torch.tensor(r.values + r.details["test_extra"]["roc_auc"] + r.details["val"])
    r = GraphEvaluator(GC(3, model="gcn", num_runs=1, progress=False), seed=0).evaluate(rs, mutag)
    out["eval_graph_random"] = torch.tensor(r.values)
    r = GraphEvaluator(GC(2, model="gcn", num_runs=1, progress=False), seed=0).evaluate_real(mutag)
    out["eval_graph_full"] = torch.tensor(r.values)
    return out


def compare(a_path: str, b_path: str) -> int:
    """Prints EQUAL / DIFFER per entry; returns the number of differences."""
    a = torch.load(a_path, weights_only=True)
    b = torch.load(b_path, weights_only=True)
    bad = 0
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            print(f"MISSING {k}")
            bad += 1
            continue
        x, y = a[k], b[k]
        if isinstance(x, dict):
            diff = [t for t in sorted(set(x) | set(y)) if t not in x or t not in y or not torch.equal(x[t], y[t])]
            same = not diff
        else:
            same = torch.equal(x, y)
        print(("EQUAL  " if same else "DIFFER ") + k)
        bad += not same
    print(f"{bad} differences in {len(set(a) | set(b))} entries")
    return bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="capture file to write")
    p.add_argument("--tu", default="../shared/data/tu", help="folder holding MUTAG.zip")
    p.add_argument("--compare", nargs=2, default=None, metavar=("A", "B"), help="compare two capture files")
    p.add_argument("--graph-calibration", default=None, help="the graph evaluator's calibration where the tree has "
                   "that option (none = the behaviour before it existed)")
    args = p.parse_args()
    if args.compare:
        raise SystemExit(1 if compare(*args.compare) else 0)
    if not args.out:
        p.error("--out is required (or --compare A B)")
    torch.set_num_threads(2)
    out = capture(args)
    torch.save(out, args.out)
    print(f"saved {len(out)} entries to {args.out}")


if __name__ == "__main__":
    main()
