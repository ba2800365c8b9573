"""Trajectory matching (MTT) and AST's smooth experts on the CIFAR-10 JPEG mirror at a CPU budget.

Three stages, run as separate processes (they share the 2 CPU cores of the benchmark machine) and joined by
``report``. Work files (expert trajectories, partial results, synthetic sets) go to ``--work`` (default under
/tmp: the trajectories are not committed)::

    # 1. experts: MTT recipe and AST recipe (clipping loss + gradient penalty), one file per expert
    python benchmarks/mtt_cifar10.py experts --recipes mtt ast --experts 2 --epochs 4 --per-class 50
    # 2. distillation from the AST experts (MTT student, memory-saving unroll, syn_steps scaled to the short
    #    experts), then random and DataDAM (official preset) for the same CPU time, ConvNet-3 evaluations
    python benchmarks/mtt_cifar10.py distill --ipc 10 --recipe ast --iterations 40 --syn-steps 2 --memory-saving \
        --models 2 --eval-epochs 100 --no-datadam
    python benchmarks/mtt_cifar10.py distill --ipc 1 --recipe ast --iterations 200 --syn-steps 2 --memory-saving
    python benchmarks/mtt_cifar10.py datadam --ipc 1 --recipe ast     # DataDAM on its own (non-ZCA) data
    python benchmarks/mtt_cifar10.py distill --ipc 1 --recipe mtt --iterations 200 --syn-steps 2 --memory-saving \
        --no-datadam                                                  # the same from the plain MTT experts
    # 3. JSON, Markdown table and PNG
    python benchmarks/mtt_cifar10.py report --out benchmarks/results/mtt_cifar10 --note "..." [--note ...]

A larger budget (``mtt_cifar10_10k``): 4 MTT experts x 15 epochs on 1000 images per class, trained with bf16
autocast + torch.compile (``--fast-experts``, the evaluator's speed settings: 3.6x on the same ConvNet-3 + DSA step
in eval_throughput.md), then IPC 10 and IPC 1 with syn_steps 10::

    python benchmarks/mtt_cifar10.py experts --work /tmp/mtt4 --recipes mtt --experts 4 --epochs 15 \
        --per-class 1000 --fast-experts
    python benchmarks/mtt_cifar10.py distill --work /tmp/mtt4 --ipc 10 --recipe mtt --iterations 40 --syn-steps 10 \
        --no-datadam --models 5 --eval-epochs 300
    python benchmarks/mtt_cifar10.py datadam --work /tmp/mtt4 --ipc 10 --recipe mtt --models 5 --eval-epochs 300
    python benchmarks/mtt_cifar10.py distill --work /tmp/mtt4 --ipc 1 --recipe mtt --iterations 500 --syn-steps 10 \
        --no-datadam --models 5 --eval-epochs 300
    python benchmarks/mtt_cifar10.py datadam --work /tmp/mtt4 --ipc 1 --recipe mtt --models 5 --eval-epochs 300
    python benchmarks/mtt_cifar10.py report --work /tmp/mtt4 --out benchmarks/results/mtt_cifar10_10k --note "..."

AST experts vs plain MTT experts at that budget (``mtt_ast_cifar10_10k``; issue #15): one expert per family (an AST
expert costs about 18x an MTT one here: the gradient penalty differentiates twice, in float32, without compile), the
same MTT student, iterations and evaluation for both families; the AST family skips the random row, which the MTT
family's file holds (same seed, IPC and evaluator)::

    python benchmarks/mtt_cifar10.py experts --work runs/mtt10k --recipes ast --experts 1 --epochs 15 \
        --per-class 1000 --fast-experts
    python benchmarks/mtt_cifar10.py experts --work runs/mtt10k --recipes mtt --experts 1 --epochs 15 \
        --per-class 1000 --fast-experts
    python benchmarks/mtt_cifar10.py distill --work runs/mtt10k --ipc 10 --recipe mtt --iterations 40 --syn-steps 10 \
        --no-datadam --models 5 --eval-epochs 300      # then --ipc 1 --iterations 500
    python benchmarks/mtt_cifar10.py distill --work runs/mtt10k --ipc 10 --recipe ast --iterations 40 --syn-steps 10 \
        --no-datadam --no-random --models 5 --eval-epochs 300      # then --ipc 1 --iterations 500
    python benchmarks/mtt_cifar10.py report --work runs/mtt10k --out benchmarks/results/mtt_ast_cifar10_10k --note "..."

Experts are trained on a class-balanced subset of the training set (``--per-class`` images per class, drawn
with a seeded generator) with ZCA fitted on the full training set (MTT's CIFAR recipe); distillation
initialises from and evaluates against the full training/test sets. Every budget number is an argument and is
written into the results.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

PUBLISHED_MTT = {1: "46.3 ± 0.8", 10: "65.3 ± 0.7"}  # MTT (Cazenavette et al. 2022) Table 1, ConvNet-3
PAPER_BUDGET = {"experts": 100, "expert_epochs": 50, "iterations": 5000, "eval_epochs": 1000}  # methods.md
DEFAULT_WORK = "/tmp/ddistill_mtt_cifar10"


def load(args: argparse.Namespace):
    from ddistill.data import load_real

    return load_real("cifar10_jpeg", root=args.data, zca=True)


def subset(real, per_class: int, seed: int):
    """Class-balanced subset of ``real`` (``per_class`` images per class, seeded draw) with the same encoding."""
    from ddistill.utils.seed import make_generator

    g = make_generator(seed)
    idx = torch.cat([real.class_indices(c)[torch.randperm(real.class_count(c), generator=g)[:per_class]]
                     for c in range(real.num_classes)])
    return real.subset(idx)


# ---------------------------------------------------------------------------------------------------------------
# Stage 1: experts
# ---------------------------------------------------------------------------------------------------------------
def stage_experts(args: argparse.Namespace) -> None:
    shard, shards = (int(v) for v in args.shard.split("/"))
    real, test = load(args)
    train = subset(real, args.per_class, args.seed) if args.per_class else real
    x_test, y_test = real.encoding.encode(test.x), test.y
    for recipe in args.recipes:
        train_recipe(args, recipe, real, train, x_test, y_test, shard, shards)


def _has_penalty(recipe: str) -> bool:
    from synthesizers.mtt import EXPERT_PRESETS

    return EXPERT_PRESETS[recipe].get("grad_penalty", 0.0) > 0


def train_recipe(args, recipe, real, train, x_test, y_test, shard, shards) -> None:
    from ddistill.utils.train import accuracy
    from synthesizers.mtt import expert_config_from_preset, new_expert_file, train_expert, trajectory_smoothness

    work = Path(args.work)
    folder = work / f"experts_{recipe}"
    folder.mkdir(parents=True, exist_ok=True)
    overrides: dict = {"train": {"epochs": args.epochs}}
    if args.fast_experts:
        # bf16 autocast (fp32 weights, as mixed-precision training) and torch.compile: 3.6x on this ConvNet-3 + DSA
        # train step (benchmarks/results/eval_throughput.md). The gradient penalty differentiates twice, which
        # torch.compile does not support, and runs outside autocast anyway (ExpertLoss), so AST keeps compile off.
        overrides["perf"] = {"channels_last": None, "bf16": True, "compile": not _has_penalty(recipe)}
    cfg = expert_config_from_preset(recipe, **overrides)
    for i in range(shard, args.experts, shards):
        path = folder / f"experts_{i:05d}-{i:05d}.pt"
        part = work / f"experts_{recipe}_{i}.json"
        if path.exists() and part.exists():
            print(f"expert {i} ({recipe}) already trained", flush=True)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        snaps = train_expert(train, cfg, index=i, seed=args.seed, progress=f"{recipe} expert {i}")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        ef = new_expert_file(real, cfg, args.seed, storage_dtype="float32")
        acc = 100.0 * accuracy(ef.build_model(snaps[-1]), x_test, y_test)
        ef.add(i, snaps, acc)
        ef.save(path)
        change = trajectory_smoothness(snaps)
        part.write_text(json.dumps({"recipe": recipe, "expert": i, "test_accuracy": acc,
                                    "param_change": change.tolist(), "train_seconds": seconds,
                                    "train_cpu_seconds": cpu, "threads": torch.get_num_threads(),
                                    "expert_config": cfg.to_dict(), "epochs": args.epochs,
                                    "per_class": args.per_class, "train_images": len(train)}))
        print(f"{recipe} expert {i}: {acc:.2f}% in {seconds / 60:.1f} min, change {change.tolist()}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Stage 2: distillation and evaluation
# ---------------------------------------------------------------------------------------------------------------
def stage_distill(args: argparse.Namespace) -> None:
    from ddistill.io import machine_info
    from ddistill.utils.train import TrainRecipe
    from evaluators import ClassifierConfig, ClassifierEvaluator
    from synthesizers import SYNTHESIZERS, ProgressBar

    work = Path(args.work)
    sets = work / "sets"
    real, test = load(args)
    experts_dir = work / f"experts_{args.recipe}"
    num_epochs = json.loads(next(work.glob(f"experts_{args.recipe}_*.json")).read_text())["epochs"]

    def evaluate(synset):
        # controls=[]: the "random" row below (same data, IPC, networks, seed and epochs) is the control.
        ev = ClassifierEvaluator(ClassifierConfig(num_models=args.models, train=TrainRecipe(epochs=args.eval_epochs),
                                                  progress=False, controls=[]), seed=args.seed)
        return ev.evaluate(synset, test)

    rows: dict[str, dict] = {}
    part = work / f"distill_ipc{args.ipc}_{args.recipe}.json"

    def save() -> None:
        part.write_text(json.dumps({"machine": machine_info(), "ipc": args.ipc, "recipe": args.recipe,
                                    "rows": rows}, default=str))

    # MTT (the DC-BENCH table values of the setting; max_start_epoch capped by the recorded epochs)
    cls = SYNTHESIZERS.get("mtt")
    preset = f"cifar10_ipc{args.ipc}" + ("_ast" if args.student == "ast" else "")
    base = cls.config_from_preset(preset)
    max_start = min(base.max_start_epoch, num_epochs - base.expert_epochs + 1)
    overrides = {"experts": str(experts_dir), "iterations": args.iterations, "max_start_epoch": max_start,
                 "checkpoint_every": 0, "memory_saving": args.memory_saving}
    if args.syn_steps:
        overrides["syn_steps"] = args.syn_steps
    cfg = cls.config_from_preset(preset, **overrides)
    synth = cls(cfg, seed=args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    synset = synth.fit(real, callbacks=[ProgressBar()])
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    synset.save(sets / f"mtt_{args.recipe}_ipc{args.ipc}.pt")
    res = evaluate(synset)
    rows["mtt"] = {**res.to_dict(), "method": f"MTT ({args.student} student, {args.recipe} experts)",
                   "iterations": args.iterations, "distill_seconds": seconds, "distill_cpu_seconds": cpu_seconds,
                   "seconds_per_iteration": seconds / args.iterations, "learned_lr": float(synset.tensors["lr"]),
                   "config": dataclasses.asdict(cfg), "published": PUBLISHED_MTT.get(args.ipc)}
    print(f"MTT IPC {args.ipc} ({args.iterations} it, {seconds / 60:.1f} min): {res}", flush=True)
    save()

    if args.random_row:
        rnd = SYNTHESIZERS.get("random")
        res = evaluate(rnd(rnd.Config(ipc=args.ipc), seed=args.seed).fit(real))
        rows["random"] = {**res.to_dict(), "method": "random real images"}
        print(f"random IPC {args.ipc}: {res}", flush=True)
        save()

    if args.datadam:
        # DataDAM (official preset) for the same CPU time as the MTT distillation: with one thread that is the same
        # wall-clock on an idle machine, and it is robust to other jobs sharing the cores (wall-clock is recorded).
        dsynth, dseconds, dcpu = datadam_for_cpu_time(real, args.ipc, args.seed, cpu_seconds)
        dset = dsynth.synthetic_set(real)
        dset.save(sets / f"datadam_same_clock_ipc{args.ipc}.pt")
        res = evaluate(dset)
        rows["datadam"] = {**res.to_dict(), "method": "DataDAM (official preset) on the same ZCA data, same CPU time",
                           "iterations": dsynth.completed_steps, "distill_seconds": dseconds,
                           "distill_cpu_seconds": dcpu}
        print(f"DataDAM IPC {args.ipc} ({dsynth.completed_steps} it, {dseconds / 60:.1f} min): {res}", flush=True)
        save()


def datadam_for_cpu_time(real, ipc: int, seed: int, cpu_seconds: float):
    """DataDAM (official preset) run until this process has used ``cpu_seconds`` of CPU time.
    Returns (synthesizer, wall seconds, CPU seconds)."""
    from synthesizers import SYNTHESIZERS, StopAfter

    dam = SYNTHESIZERS.get("datadam")
    synth = dam(dam.config_from_preset("official", ipc=ipc, iterations=10**6, checkpoint_every=0), seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    synth.fit(real, callbacks=[StopAfter(cpu_seconds=cpu_seconds)])
    return synth, time.perf_counter() - t0, time.process_time() - c0


def stage_datadam(args: argparse.Namespace) -> None:
    """DataDAM (official preset) on mean/std-normalised data (its own recipe, no ZCA) for the CPU time of the MTT
    row of ``distill_ipc{ipc}_{recipe}.json``; the row is added to that file as ``datadam_nozca``."""
    from ddistill.data import EvalData, load_real
    from ddistill.utils.train import TrainRecipe
    from evaluators import ClassifierConfig, ClassifierEvaluator

    work = Path(args.work)
    part = work / f"distill_ipc{args.ipc}_{args.recipe}.json"
    saved = json.loads(part.read_text())
    budget = saved["rows"]["mtt"]["distill_cpu_seconds"]
    real, test = load_real("cifar10_jpeg", root=args.data)
    dsynth, dseconds, dcpu = datadam_for_cpu_time(real, args.ipc, args.seed, budget)
    dset = dsynth.synthetic_set(real)
    dset.save(work / "sets" / f"datadam_nozca_same_clock_ipc{args.ipc}.pt")
    ev = ClassifierEvaluator(ClassifierConfig(num_models=args.models, train=TrainRecipe(epochs=args.eval_epochs),
                                              progress=False), seed=args.seed)
    # The table's "random" row is on the ZCA data of the MTT rows; with the real training split the evaluator adds the
    # random-subset control on this row's own (mean/std) data, same networks, seed and epochs.
    res = ev.evaluate(dset, EvalData(train=real, test=test))
    saved["rows"]["datadam_nozca"] = {**res.to_dict(), "iterations": dsynth.completed_steps, "distill_seconds": dseconds,
                                      "distill_cpu_seconds": dcpu,
                                      "method": "DataDAM (official preset, mean/std data, no ZCA), same CPU time"}
    part.write_text(json.dumps(saved, default=str))
    print(f"DataDAM (no ZCA) IPC {args.ipc} ({dsynth.completed_steps} it, {dcpu / 60:.1f} min CPU): {res.report()}",
          flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Stage 3: report
# ---------------------------------------------------------------------------------------------------------------
def stage_report(args: argparse.Namespace) -> None:
    import statistics

    from ddistill.io import machine_info, write_json

    work, out = Path(args.work), Path(args.out)
    experts: dict[str, list[dict]] = {}
    for p in sorted(work.glob("experts_*_*.json")):
        r = json.loads(p.read_text())
        experts.setdefault(r["recipe"], []).append(r)
    summary = {}
    for recipe, rs in experts.items():
        accs = [r["test_accuracy"] for r in rs]
        changes = torch.tensor([r["param_change"] for r in rs])  # (experts, epochs)
        per_epoch = changes.mean(0)
        summary[recipe] = {
            "experts": len(rs), "epochs": rs[0]["epochs"], "train_images": rs[0]["train_images"],
            "test_accuracy_mean": statistics.mean(accs), "test_accuracy_std": statistics.pstdev(accs),
            "param_change_per_epoch_mean": per_epoch.tolist(),
            "param_change_mean": float(changes.mean()),
            # variation of the per-epoch change along a trajectory: coefficient of variation, max/min ratio
            "param_change_cv": float((changes.std(1) / changes.mean(1)).mean()),
            "param_change_max_over_min": float((changes.max(1).values / changes.min(1).values).mean()),
            "param_change_first_over_mean": float((changes[:, 0] / changes.mean(1)).mean()),
            "train_minutes_per_expert": statistics.mean(r["train_seconds"] for r in rs) / 60,
            "train_cpu_minutes_per_expert": statistics.mean(r["train_cpu_seconds"] for r in rs) / 60,
            "expert_config": rs[0]["expert_config"],
        }
    distill = {}
    for p in sorted(work.glob("distill_ipc*_*.json")):
        r = json.loads(p.read_text())
        distill[f"ipc{r['ipc']}_{r['recipe']}"] = r
    result = {"benchmark": "mtt_cifar10", "machine": machine_info(),
              "data": f"CIFAR-10 JPEG mirror ({args.data}), ZCA (eps 0.1) fitted on the full training set",
              "budget": {"experts": {k: {f: v[f] for f in ("experts", "epochs", "train_images")}
                                     for k, v in summary.items()},
                         "eval": {k: {"models": len(v["rows"]["mtt"]["values"]), "epochs": v["rows"]["mtt"]["epochs"]}
                                  for k, v in distill.items() if "mtt" in v["rows"]}},
              "seed": args.seed, "published_source": "MTT (Cazenavette et al. 2022) Table 1, ConvNet-3",
              "paper_budget": PAPER_BUDGET, "notes": args.note,
              "experts": {"summary": summary, "per_expert": experts}, "distill": distill}
    write_json(out.with_suffix(".json"), result)
    plot(summary, out.with_suffix(".png"))

    lines = ["# MTT / AST on CIFAR-10 (JPEG mirror), CPU budget\n",
             "Commands: see the docstring of `benchmarks/mtt_cifar10.py` (stages `experts`, `distill`, `report`).\n",
             "## Experts\n",
             ("| recipe | experts x epochs | train images | test acc % | mean per-epoch change ‖Δθ‖ | CV of change "
              "| max/min change | first-epoch / mean change | CPU min/expert (wall) |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for recipe, s in summary.items():
        lines.append(f"| {recipe} | {s['experts']} x {s['epochs']} | {s['train_images']} | "
                     f"{s['test_accuracy_mean']:.2f} ± {s['test_accuracy_std']:.2f} | {s['param_change_mean']:.3f} | "
                     f"{s['param_change_cv']:.3f} | {s['param_change_max_over_min']:.2f} | "
                     f"{s['param_change_first_over_mean']:.2f} | {s['train_cpu_minutes_per_expert']:.1f} "
                     f"({s['train_minutes_per_expert']:.1f}) |")
    lines.append("\nPer-epoch change ‖θ*_{t+1} − θ*_t‖₂ (mean over experts; CV = std/mean of a trajectory's "
                 "per-epoch changes, averaged over experts):\n")
    for recipe, s in summary.items():
        lines.append(f"- {recipe}: " + ", ".join(f"{v:.3f}" for v in s["param_change_per_epoch_mean"]))
    lines.append(f"\nPlot: `{out.with_suffix('.png').name}`.\n")
    lines += [("## Distillation (ConvNet-3 evaluation with DSA and the evaluator's default lr for every row, as "
               "datadam_cifar10.py; the MTT sets' learned lr is listed below)\n"),
              ("| IPC | experts | row | accuracy % | evaluation | published (paper budget) | iterations | "
               "distill time (1 thread) |"),
              "|---:|---|---|---:|---|---|---:|---:|"]
    labels = {"datadam": "DataDAM (official preset) on the same ZCA data, same CPU time"}
    for d in distill.values():
        for name, r in d["rows"].items():
            t = (f"{r['distill_cpu_seconds'] / 60:.1f} min CPU ({r['distill_seconds'] / 60:.1f} min wall)"
                 if "distill_seconds" in r else "")
            ev = f"{len(r['values'])} models x {r['epochs']} epochs"
            lines.append(f"| {d['ipc']} | {d['recipe']} | {labels.get(name, r['method'])} | "
                         f"{r['mean']:.2f} ± {r['std']:.2f} | {ev} | "
                         f"{r.get('published') or ''} | {r.get('iterations', '')} | {t} |")
            control = r.get("controls", {}).get("random_subset")
            if control:  # the evaluator's control of this row, on the row's own data
                lines.append(f"| {d['ipc']} | {d['recipe']} | random real images, control of the row above (its "
                             f"data) | {control['mean']:.2f} ± {control['std']:.2f} | {ev} |  |  |  |")
    lines.append("")
    for d in distill.values():
        c = d["rows"]["mtt"]["config"]
        lines.append(f"- IPC {d['ipc']}, {d['recipe']} experts: preset `{c['preset']}`, {c['iterations']} iterations, "
                     f"syn_steps {c['syn_steps']}, expert_epochs {c['expert_epochs']}, max_start_epoch "
                     f"{c['max_start_epoch']}, batch_syn {c['batch_syn'] or 'all'}, memory_saving "
                     f"{c['memory_saving']}; learned lr {d['rows']['mtt']['learned_lr']:.5f} (init {c['lr_teacher']}).")
    lines += family_comparison(summary, distill)
    for note in result["notes"]:
        lines.append(f"\n**Note:** {note}")
    p = result["paper_budget"]
    lines.append(f"\nPublished MTT figures are at the paper budget ({p['experts']} experts x {p['expert_epochs']} "
                 f"epochs on the full training set, {p['iterations']} iterations, {p['eval_epochs']}-epoch evaluation, "
                 "maximum over evaluation points); the rows above are a CPU budget orders of magnitude smaller.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def family_comparison(summary: dict, distill: dict) -> list[str]:
    """AST experts vs plain MTT experts, side by side, from the numbers only (empty unless both families ran)."""
    if not {"ast", "mtt"} <= set(summary):
        return []
    a, m = summary["ast"], summary["mtt"]
    out = ["\n## AST experts vs plain MTT experts (same student, same distillation budget)\n",
           f"- Experts ({a['experts']} vs {m['experts']}, {a['epochs']} epochs on {a['train_images']} images): test "
           f"accuracy {a['test_accuracy_mean']:.2f} (AST) vs {m['test_accuracy_mean']:.2f} (MTT); per-epoch change, "
           f"CV along the trajectory {a['param_change_cv']:.3f} vs {m['param_change_cv']:.3f}, max/min "
           f"{a['param_change_max_over_min']:.2f} vs {m['param_change_max_over_min']:.2f}, first epoch / mean "
           f"{a['param_change_first_over_mean']:.2f} vs {m['param_change_first_over_mean']:.2f}; CPU minutes per "
           f"expert {a['train_cpu_minutes_per_expert']:.1f} vs {m['train_cpu_minutes_per_expert']:.1f}."]
    for ipc in sorted({d["ipc"] for d in distill.values()}):
        fa, fm = distill.get(f"ipc{ipc}_ast"), distill.get(f"ipc{ipc}_mtt")
        if not (fa and fm and "mtt" in fa["rows"] and "mtt" in fm["rows"]):
            continue
        ra, rm = fa["rows"]["mtt"], fm["rows"]["mtt"]
        same = ra["iterations"] == rm["iterations"] and len(ra["values"]) == len(rm["values"])
        gap = ra["mean"] - rm["mean"]
        spread = max(ra["std"], rm["std"])
        verdict = ("higher than" if gap > spread else "lower than" if gap < -spread else "within one std of")
        rnd = fm["rows"].get("random")
        out.append(f"- IPC {ipc}: from AST experts {ra['mean']:.2f} ± {ra['std']:.2f}, from MTT experts "
                   f"{rm['mean']:.2f} ± {rm['std']:.2f} ({gap:+.2f} points: {verdict} the MTT-expert set"
                   + ("" if same else "; NOT the same budget") + ")"
                   + (f"; random real images {rnd['mean']:.2f} ± {rnd['std']:.2f}." if rnd else "."))
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for recipe, s in summary.items():
        ys = s["param_change_per_epoch_mean"]
        ax.plot(range(1, len(ys) + 1), ys, marker="o",
                label=f"{recipe} experts (test {s['test_accuracy_mean']:.1f}%)")
    ax.set_xlabel("epoch $t+1$")
    ax.set_ylabel(r"$\|\theta^*_{t+1} - \theta^*_t\|_2$ (mean over experts)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Expert trajectory smoothness, CIFAR-10 ConvNet-3 (CPU budget)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["experts", "distill", "datadam", "report"])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--work", default=DEFAULT_WORK, help="expert files, partial results, sets (not committed)")
    p.add_argument("--out", default="benchmarks/results/mtt_cifar10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", action="append", default=[], help="report: what was left out and why (repeatable)")
    # experts
    p.add_argument("--recipe", default="ast", choices=["mtt", "ast"], help="experts to distill from")
    p.add_argument("--recipes", nargs="*", default=["mtt", "ast"], help="expert recipes to train")
    p.add_argument("--experts", type=int, default=2)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--per-class", type=int, default=100, help="training images per class for experts (0 = all)")
    p.add_argument("--shard", default="0/1")
    p.add_argument("--fast-experts", action="store_true", help="experts: bf16 autocast + torch.compile (recorded in "
                   "the expert files' config); default: the exact fp32 recipe")
    # distillation
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--student", default="mtt", choices=["mtt", "ast"], help="MTT preset or its _ast switches")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--syn-steps", type=int, default=None, help="override the preset's syn_steps")
    p.add_argument("--memory-saving", action="store_true")
    p.add_argument("--no-datadam", dest="datadam", action="store_false")
    p.add_argument("--no-random", dest="random_row", action="store_false",
                   help="skip the random row (it depends only on the seed and IPC: another family's file has it)")
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--eval-epochs", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    stages = {"experts": stage_experts, "distill": stage_distill, "datadam": stage_datadam, "report": stage_report}
    stages[args.stage](args)


if __name__ == "__main__":
    main()
