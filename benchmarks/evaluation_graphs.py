"""Mirage re-scored with the graph evaluator's controls (issue #14, item 5): is a Mirage score more than graph size?

For every dataset the Mirage set of ``mirage_graphs.py`` (same supports, GNN settings, budgets, splits: imported from
it, not copied) is scored by the graph evaluator with all its controls on, and so is the full training set:

- ``num_nodes`` / ``num_edges`` / ``edge_density``: one number per graph, fitted on the real training graphs;
- ``label_histogram``: a linear model on node / edge label counts and size;
- ``untrained``: the same GNN at epoch 0 (the set's model seeds);
- ``random_graphs``: random real training graphs of the set's bytes, trained with the set's recipe;
- ``size_binned``: the set's own models' ROC-AUC within node-count quantile bins of the test split.

Every seed trains one model per (set, GNN) exactly as ``mirage_graphs.py`` does (``GraphEvaluator(seed=s)`` with one
run), so the Mirage scores are the same runs as in ``mirage_graphs.md``; controls are averaged over the same seeds and
the evaluator's warning rule (a score must beat a control by more than one std) is applied to the across-seed means.
NCI1 is also run with the non-official Adam weight decay 1e-2 on the Mirage set (a second, labelled protocol).

    python benchmarks/evaluation_graphs.py --out benchmarks/results/evaluation_graphs
    python benchmarks/evaluation_graphs.py --md-only benchmarks/results/evaluation_graphs.json

The second line re-writes the .md from the JSON (e.g. after editing the conclusions below). The official code's
choices are mirage_graphs.py's flags (``--split-protocol``, ``--support-schedule``, ``--selection-split``,
``--calibration``, ``--eval-timing``, ``--gnns gcn_ogb``); e.g. the official NCI1 / IMDB-B protocol::

    python benchmarks/evaluation_graphs.py --datasets nci1 imdb_binary --gnns gcn_ogb --split-protocol official \
        --support-schedule --selection-split val --eval-timing before_epoch --calibration none --alt-weight-decay \
        --out benchmarks/results/evaluation_graphs_official
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The per-dataset settings (supports, GNN hyper-parameters, budgets) live in mirage_graphs.py.
from mirage_graphs import (GNN_CHOICES, PUBLISHED, RECIPE_KEYS, SPECS, add_protocol_flags, fmt,  # noqa: E402
                           load_dataset, protocol_settings, schedule_config, summarise)

from ddistill.config import from_dict  # noqa: E402
from ddistill.io import machine_info, write_json  # noqa: E402
from evaluators.graph import GraphEvalConfig, GraphEvaluator, majority_rate  # noqa: E402
from evaluators.graph_controls import CONTROLS, SIZE_FEATURES, control_warnings  # noqa: E402
from synthesizers.mirage import Mirage, MirageConfig  # noqa: E402
from synthesizers.mirage.selection import describe_tried  # noqa: E402

DATASETS = ("nci1", "imdb_binary", "mutag", "ogbg_molbace")
#: Control rows of the tables, in order (``random_graphs_size_binned`` is shown in the size-binned column).
CONTROL_ROWS = ("random_graphs", "untrained", *SIZE_FEATURES, "label_histogram")
LABELS = {"random_graphs": "random real graphs, same bytes, trained like the set",
          "untrained": "untrained GNN (epoch 0, same seeds)", "num_nodes": "number of nodes only",
          "num_edges": "number of edges only", "edge_density": "edge density only",
          "label_histogram": "label histogram + size (linear)"}

#: Hand-written reading of the measured numbers (dataset -> paragraph) of the committed default run
#: (``--out benchmarks/results/evaluation_graphs``) only; the numbers quoted come from that JSON. Any other output
#: takes its reading from ``<out>.reading.md`` beside it (a file of ``## <dataset>`` sections), when there is one.
# Read off the committed numbers (benchmarks/results/evaluation_graphs.json, 5 seeds); re-check them after a re-run.
CONCLUSIONS: dict[str, str] = {
    "mutag": "Every row that learns anything sits at the size floor: the number of nodes alone scores 95.83, the "
             "Mirage set 96.94 ± 1.36 and the full training set 95.56 ± 1.36, and a linear model on node-label "
             "counts is above all of them (98.61). MUTAG's test split (18 graphs) cannot separate a set from its size "
             "floor: only 2 of its 4 node-count bins hold both classes.",
    "imdb_binary": "With the first feasible support threshold the Mirage set (60.85) is below random real graphs of "
                   "the same bytes (69.44), below the number of edges alone (63.42) and within one std of the "
                   "untrained network; the full set (84.65) shows the task is learnable. The threshold schedule of "
                   "the official script (the methods issue) is the next thing to measure; this row does not show "
                   "Mirage working on IMDB-B.",
    "ogbg_molbace": "The one dataset where the Mirage set beats random graphs of the same bytes (77.15 vs 74.71, "
                    "outside one std) and the label histogram, but it ties the number of nodes (76.80) and loses "
                    "12 points within node-count bins (65.11): most of its ROC-AUC is the size ranking. It is also "
                    "above the full set trained with the same 30-epoch recipe (66.91), a recipe that under-trains "
                    "the full set rather than a win of the set.",
    "nci1": "Under the official protocol (Adam weight decay 1e2) the Mirage set (64.40), random graphs (63.99), the "
            "untrained network (53.26 ± 15.84) and every size feature (about 66) are within one std of each other, "
            "and within node-count bins the set scores 55.67: the published protocol measures graph size, not the "
            "set. With weight decay 1e-2 (not official) the set is lower still (55.57 ± 8.33). The full training set "
            "(the benchmark's full-set recipe: 60 epochs, weight decay 1e-2, not the official 1e2) scores 67.89 ± "
            "0.29, only 1.9 points above the number of nodes alone (66.01) and below the label-histogram linear "
            "model (67.96); within node-count bins it keeps 61.38. On NCI1 at these budgets, graph size and label "
            "counts carry nearly all the signal a GCN picks up, even from the whole training set; the 68.2 "
            "published for Mirage is no higher than what the full set and the label histogram score here.",
}


def conclusions_for(out: Path, rows: dict[str, Any]) -> dict[str, str]:
    """The hand-written reading of the run written to ``out`` (without suffix): :data:`CONCLUSIONS` for the committed
    default run, else the ``## <dataset>`` sections of ``<out>.reading.md`` (none when it does not exist), so a
    reading never lands beside numbers it was not written from."""
    if out.name == "evaluation_graphs":
        return {k: v for k, v in CONCLUSIONS.items() if k in rows}
    reading = out.parent / f"{out.name}.reading.md"
    if not reading.exists():
        return {}
    sections: dict[str, str] = {}
    name = None
    for line in reading.read_text().splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            sections[name] = ""
        elif name is not None:
            sections[name] = (sections[name] + " " + line.strip()).strip()
    return {k: v for k, v in sections.items() if k in rows}


def parse_protocols(items: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for item in items:
        name, _, wd = item.partition(":")
        if name not in SPECS or not wd:
            raise SystemExit(f"--alt-weight-decay expects DATASET:WD with DATASET in {sorted(SPECS)}, got {item!r}")
        out.setdefault(name, []).append(float(wd))
    return out


def eval_config(gnn: str, hops: int, train_cfg: dict[str, Any], epochs: int, eval_every: int, threads: int,
                extra: tuple[str, ...], settings: dict[str, Any] | None = None) -> GraphEvalConfig:
    """The evaluator config of mirage_graphs.py for one (GNN, set), with every control on; ``settings``: the protocol
    flags' evaluator settings (calibration, eval_timing)."""
    recipe = {k: v for k, v in train_cfg.items() if k in RECIPE_KEYS}
    recipe["epochs"] = epochs
    return from_dict(GraphEvalConfig, {
        "model": gnn, "layers": hops, "eval_every": eval_every, "num_runs": 1, "threads": threads,
        "progress": False, "metric": "roc_auc", "extra_metrics": list(extra), "controls": list(CONTROLS),
        "train": recipe, **(settings or {}), **{k: v for k, v in train_cfg.items() if k not in RECIPE_KEYS}})


def _mean_of(v: Any) -> float:
    if isinstance(v, (list, tuple)):
        finite = [x for x in v if isinstance(x, (int, float)) and math.isfinite(x)]
        return sum(finite) / len(finite) if finite else math.nan
    return float(v) if isinstance(v, (int, float)) else math.nan


def aggregate(per_seed: list[dict[str, Any]], extra: tuple[str, ...]) -> dict[str, Any]:
    """Across-seed mean / std of the set's score and of every control (each seed ran one model)."""
    values = [r["values"][0] for r in per_seed]
    out: dict[str, Any] = {**summarise(values), "values": values,
                           "extra": {k: {**summarise(v), "values": v} for k, v in
                                     ((k, [r["test_extra"][k][0] for r in per_seed]) for k in extra)}}
    controls: dict[str, Any] = {}
    for name in per_seed[0].get("controls", {}):
        entries = [r["controls"][name] for r in per_seed]
        if "skipped" in entries[0]:
            controls[name] = {"skipped": entries[0]["skipped"], "what": entries[0].get("what", "")}
            continue
        vals = [_mean_of(e.get("mean")) for e in entries]
        c: dict[str, Any] = {**summarise(vals), "values": vals, "what": entries[0].get("what", "")}
        ex = {}
        for k in entries[0].get("test_extra", {}) or {}:
            ev = [_mean_of(e["test_extra"][k]) for e in entries]
            ex[k] = {**summarise(ev), "values": ev}
        if ex:
            c["extra"] = ex
        if "overall_roc_auc" in entries[0]:
            c["overall_roc_auc"] = summarise([_mean_of(e["overall_roc_auc"]) for e in entries])
            c["edges"] = entries[0].get("edges")
            c["bins_used"] = [e.get("bins_used") for e in entries]
            c["bins_skipped"] = [e.get("bins_skipped") for e in entries]
        if name == "random_graphs":
            c["drawn"] = [d for e in entries for d in e.get("drawn", [])]
            c["best_epoch"] = [e.get("best_epoch") for e in entries]
        if name in SIZE_FEATURES or name == "label_histogram":
            c["deterministic"] = True
        controls[name] = c
    out["controls"] = controls
    out["warnings"] = control_warnings("roc_auc", out["mean"], out["std"], controls)
    rg = controls.get("random_graphs")
    if rg and "mean" in rg:
        v = verdict(out["mean"], out["std"], rg["mean"], rg["std"])
        if v != "beats":
            out["warnings"].append(f"the set's roc_auc {out['mean']:.2f} is {v} random real graphs of the same bytes "
                                   f"trained like the set: {rg['mean']:.2f} ± {rg['std']:.2f}")
    out["per_seed_warnings"] = [r.get("warnings", []) for r in per_seed]
    out["runs"] = [{"seed": r["seed"], "test": r["values"][0], "val": r["val"][0], "best_epoch": r["best_epoch"][0],
                    "train_seconds": r["train_seconds"][0], "control_seconds": r.get("control_seconds"),
                    "train_graphs": r["train_graphs"]} for r in per_seed]
    return out


def verdict(mean: float, std: float, c_mean: float, c_std: float) -> str:
    """The evaluator's rule: the set beats a control when it is above it by more than the larger of the two stds."""
    if any(isinstance(x, float) and math.isnan(x) for x in (mean, c_mean)):
        return "n/a"
    tol = max(0.0 if math.isnan(std) else std, 0.0 if math.isnan(c_std) else c_std)
    if mean > c_mean + tol:
        return "beats"
    if mean < c_mean - tol:
        return "below"
    return "within one std of"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="folder with tu/ and ogb/ (default ../shared/data)")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=sorted(SPECS))
    p.add_argument("--gnns", nargs="*", default=["gcn"], choices=GNN_CHOICES)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    p.add_argument("--alt-weight-decay", nargs="*", default=["nci1:0.01"], metavar="DATASET:WD",
                   help="extra protocol rows: the Mirage set trained with this Adam weight decay (not official)")
    p.add_argument("--epochs", type=int, default=None, help="epochs on the Mirage set (default: per dataset)")
    p.add_argument("--eval-every", type=int, default=None, help="validation period on the Mirage set")
    p.add_argument("--full-epochs", type=int, default=None, help="epochs on the full set (default: per dataset)")
    p.add_argument("--no-full", action="store_true", help="skip the full-training-set rows")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the CPU is shared)")
    p.add_argument("--out", default="benchmarks/results/evaluation_graphs")
    p.add_argument("--resume", action="store_true", help="keep the cells of an existing --out JSON run with the same "
                   "seeds and budget")
    add_protocol_flags(p)
    p.add_argument("--md-only", default=None, help="re-write the .md of an existing results JSON")
    args = p.parse_args()
    if args.md_only:
        path = Path(args.md_only)
        saved = json.loads(path.read_text())
        saved["conclusions"] = conclusions_for(path.with_suffix(""), saved["rows"])
        saved["postprocess_command"] = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
        write_json(path, saved)
        write_markdown(saved, path.with_suffix(".md"))
        write_plot(saved, path.with_suffix(".png"))
        return

    torch.set_num_threads(args.threads)
    alt = parse_protocols(args.alt_weight_decay)
    command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text()) if args.resume and out.with_suffix(".json").exists() \
        else None
    start_all = time.perf_counter()
    rows: dict[str, Any] = {}
    result: dict[str, Any] = {
        "benchmark": "evaluation_graphs", "command": command, "machine": machine_info(), "data_root": args.data,
        "seeds": args.seeds, "gnns": args.gnns, "controls": list(CONTROLS),
        "overrides": {"epochs": args.epochs, "eval_every": args.eval_every, "full_epochs": args.full_epochs},
        "protocol": ("per (set, GNN, seed): one fresh model as in mirage_graphs.py (GraphEvaluator(seed) with one run, "
                     "Adam lr 1e-3, layers = L, sum readout, test ROC-AUC at the best validation ROC-AUC epoch, ties "
                     "to the later epoch); the evaluator's controls of each seed (size features and label histogram "
                     "fitted on the real training graphs, deterministic; the untrained GNN with the run's model seed; "
                     "random real graphs of the set's bytes, drawn per seed and trained with the set's recipe on "
                     "other seed streams; ROC-AUC within 4 node-count quantile bins of the test split); mean ± "
                     "population std over seeds; warnings: the evaluator's rule (beat a control by more than the "
                     "larger std) applied to the across-seed means, plus the same rule for the random-graphs control"),
        "paper_budget": "official scripts: 30 epochs x 10 runs (ogbg), 301 (NCI1), 1500 (IMDB-B), validation every "
                        "epoch, top-5 of 10 runs by validation",
        "conclusions": {}, "rows": rows,
    }
    for name in args.datasets:
        spec = SPECS[name]
        root = Path(args.data) / spec["root"]
        if not root.exists():
            rows[name] = {"skipped": f"{root} not found"}
            print(f"{name}: skipped, {root} not found", flush=True)
            continue
        w = time.perf_counter()
        data = load_dataset(name, root, args.split_protocol)
        load_seconds = time.perf_counter() - w
        hops = spec["mirage"]["hops"]
        budget = {**spec["budget"], **{k: v for k, v in (("epochs", args.epochs), ("eval_every", args.eval_every),
                                                          ("full_epochs", args.full_epochs)) if v is not None}}
        extra = ("accuracy",) if data.info.metric == "accuracy" else ()
        w, c = time.perf_counter(), time.process_time()
        synset = Mirage(MirageConfig(progress=False, **spec["mirage"])).fit(data)
        meta = synset.meta
        settings = protocol_settings(args)
        # With a schedule every GNN picks its threshold (validated with the official protocol's settings).
        synsets = {gnn: synset for gnn in args.gnns}
        schedules: dict[str, Any] = {}
        if args.support_schedule:
            for gnn in args.gnns:
                train_cfg = dict(spec["eval"])
                recipe = {k: v for k, v in train_cfg.items() if k in RECIPE_KEYS}
                recipe["epochs"] = budget["epochs"]
                scorer = {"layers": hops, "eval_every": budget["eval_every"], "threads": args.threads,
                          "metric": "roc_auc", "train": recipe, **settings,
                          **{k: v for k, v in train_cfg.items() if k not in RECIPE_KEYS}}
                synsets[gnn] = Mirage(schedule_config(spec, args, gnn, scorer)).fit(data)
                sm = synsets[gnn].meta
                schedules[gnn] = {**sm["support_schedule"], "tree_sets_per_class": sm["tree_sets_per_class"],
                                  "distilled_bytes": sm["distilled_bytes"], "size": sm["size"]}
        protocols = {"official": dict(spec["eval"])}
        for wd in alt.get(name, []):
            protocols[f"weight decay {wd:g} (not official)"] = {**spec["eval"], "weight_decay": wd}
        full_cfg = {**spec["eval"], **spec.get("full_eval", {})}
        row: dict[str, Any] = {
            "data": {"root": str(root), "split": data.info.split, "train": len(data.train), "val": len(data.val),
                     "test": len(data.test), "load_seconds": load_seconds},
            "why": spec["why"], "mirage_config": meta["config"], "budget": budget,
            "official_budget": spec["budget"],
            "distillation": {"wall_seconds": time.perf_counter() - w, "cpu_seconds": time.process_time() - c,
                             "thresholds": meta["thresholds"], "tree_sets_per_class": meta["tree_sets_per_class"],
                             "bytes": meta["distilled_bytes"], "full_graph_bytes": meta["full_graph_bytes"]},
            "protocols": {k: {**v, "layers": hops} for k, v in protocols.items()},
            "options": {"split_protocol": args.split_protocol, "support_schedule": args.support_schedule,
                        "selection_split": args.selection_split if args.support_schedule else None, **settings},
            "size": meta["size"], "support_schedule": schedules,
            "test_majority_rate": majority_rate(torch.tensor([int(g.y) for g in data.test]), data.info.num_classes),
            "full_eval_config": {**full_cfg, "layers": hops}, "published": PUBLISHED.get(name), "results": {},
        }
        rows[name] = row
        print(f"{name}: {data}; Mirage {meta['tree_sets_per_class']} tree-sets, {meta['distilled_bytes']} B",
              flush=True)
        cells = [(proto, gnn, "mirage") for proto in protocols for gnn in args.gnns]
        if not args.no_full:
            cells += [("full", gnn, "full") for gnn in args.gnns]
        for proto, gnn, source in cells:
            key = f"{proto} / {gnn}"
            prev = (old or {}).get("rows", {}).get(name, {}).get("results", {}).get(key)
            if prev and old["seeds"] == args.seeds and old["rows"][name]["budget"] == budget:
                row["results"][key] = prev
                print(f"  {name} {key}: kept from {out.with_suffix('.json')}", flush=True)
                continue
            cell_start = time.perf_counter()
            per_seed = []
            for seed in args.seeds:
                if source == "full":
                    cfg = eval_config(gnn, hops, full_cfg, budget["full_epochs"], 1, args.threads, extra, settings)
                    res = GraphEvaluator(cfg, seed=seed).evaluate_real(data, hops=hops)
                else:
                    cfg = eval_config(gnn, hops, protocols[proto], budget["epochs"], budget["eval_every"],
                                      args.threads, extra, settings)
                    res = GraphEvaluator(cfg, seed=seed).evaluate(synsets[gnn], data)
                per_seed.append({**res.to_dict(), "seed": seed})
                print(f"    seed {seed}: " + res.report().replace("\n", "\n    "), flush=True)
            agg = aggregate(per_seed, extra)
            agg.update({"source": source, "protocol": proto, "gnn": gnn,
                        "train_config": {**(full_cfg if source == "full" else protocols[proto]), "layers": hops},
                        "epochs": budget["full_epochs" if source == "full" else "epochs"],
                        "eval_every": 1 if source == "full" else budget["eval_every"],
                        "wall_seconds": time.perf_counter() - cell_start})
            row["results"][key] = agg
            print(f"  {name} {key}: {fmt(agg['mean'], agg['std'])} roc_auc; warnings: {agg['warnings']}", flush=True)
            result["wall_seconds"] = time.perf_counter() - start_all
            write_json(out.with_suffix(".json"), result)
        write_markdown(result, out.with_suffix(".md"))
    result["wall_seconds"] = time.perf_counter() - start_all
    result["conclusions"] = conclusions_for(out, rows)
    write_json(out.with_suffix(".json"), result)
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


# ----------------------------------------------------------------------------------------------------------------
# markdown
# ----------------------------------------------------------------------------------------------------------------
def _cell(c: dict[str, Any] | None, key: str = "") -> str:
    if not c:
        return ""
    if "skipped" in c:
        return "n/a (the set is the training split)"
    v = c if not key else (c.get("extra") or {}).get(key)
    if not v:
        return ""
    return fmt(v["mean"], v["std"])


def _binned(c: dict[str, Any] | None) -> str:
    if not c or "mean" not in c:
        return ""
    return fmt(c["mean"], c["std"])


def _vs(res: dict[str, Any], c: dict[str, Any] | None) -> str:
    if not c or "mean" not in c:
        return ""
    d = res["mean"] - c["mean"]
    return f"{d:+.2f} ({verdict(res['mean'], res['std'], c['mean'], c['std'])})"


def _budget_line(r: dict[str, Any]) -> str:
    b, o = r["budget"], r["official_budget"]
    text = (f"{b['epochs']} epochs on the Mirage set (validation every {b['eval_every']}), {b['full_epochs']} on the "
            f"full set (validation every epoch)")
    changed = [k for k in ("epochs", "eval_every", "full_epochs") if b[k] != o[k]]
    text += (" -- reduced from mirage_graphs.py's " + ", ".join(f"{k} {o[k]}" for k in changed) if changed else
             " -- mirage_graphs.py's budget, unchanged")
    return text


def summary_row(name: str, key: str, res: dict[str, Any], full: dict[str, Any] | None) -> str:
    c = res["controls"]
    sizes = {n: c[n] for n in SIZE_FEATURES if n in c and "mean" in c[n]}
    best = max(sizes, key=lambda n: sizes[n]["mean"]) if sizes else None
    fcell = fmt(full["mean"], full["std"]) if full else "not run"
    fbin = _binned(full["controls"].get("size_binned")) if full else ""
    return (f"| {name} | {key} | {fmt(res['mean'], res['std'])} | {_cell(c.get('random_graphs'))} | "
            f"{_cell(c.get('untrained'))} | " + (f"{best} {sizes[best]['mean']:.2f}" if best else "") +
            f" | {_cell(c.get('label_histogram'))} | {_binned(c.get('size_binned'))} | {fcell} | {fbin} | "
            f"{len(res['warnings'])} |")


def generated_sentences(name: str, key: str, res: dict[str, Any], full: dict[str, Any] | None) -> str:
    """Numbers-only sentences: where the set stands against each control (the evaluator's one-std rule)."""
    c = res["controls"]
    parts = {"beats": [], "within one std of": [], "below": []}
    for n in CONTROL_ROWS:
        if n in c and "mean" in c[n]:
            v = verdict(res["mean"], res["std"], c[n]["mean"], c[n]["std"])
            if v in parts:
                parts[v].append(f"{n} {c[n]['mean']:.2f}")
    s = [f"Mirage ({key}) scores ROC-AUC {fmt(res['mean'], res['std'])} over {len(res['values'])} seeds."]
    for v in ("below", "within one std of", "beats"):
        if parts[v]:
            s.append(("It beats " if v == "beats" else f"It is {v} ") + ", ".join(parts[v]) + ".")
    b = c.get("size_binned")
    if b and "mean" in b:
        used = sorted(set(b.get("bins_used") or []))
        s.append(f"Within node-count bins (test-split edges {b.get('edges')}, bins used {used} of 4) its models score "
                 f"{fmt(b['mean'], b['std'])} (the same models' plain ROC-AUC {b['overall_roc_auc']['mean']:.2f}).")
    for n in CONTROL_ROWS:
        if n in c and "mean" in c[n] and c[n]["mean"] < 40:
            s.append(f"The {n} control ranks the test graphs in reverse (ROC-AUC {c[n]['mean']:.2f}, i.e. "
                     f"{100 - c[n]['mean']:.2f} with the sign flipped), which the one-std rule does not count.")
    rb = c.get("random_graphs_size_binned")
    if rb and "mean" in rb:
        s.append(f"Random graphs of the same bytes: size-binned {fmt(rb['mean'], rb['std'])}.")
    if full:
        fc = full["controls"]
        nn = fc.get("num_nodes", {}).get("mean", math.nan)
        s.append(f"The full training set scores {fmt(full['mean'], full['std'])} ({full['mean'] - nn:+.2f} over the "
                 f"number of nodes), size-binned {_binned(fc.get('size_binned'))}.")
    return " ".join(s)


def write_markdown(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    lines = [
        "# Mirage on graphs, re-scored with the graph evaluator's controls (issue #14, item 5)\n",
        f"Command: `{result['command']}`" + (f", then `{result['postprocess_command']}`"
                                            if result.get("postprocess_command") else "")
        + (f". Wall time {result['wall_seconds'] / 60:.1f} min" if result.get("wall_seconds") else "") + ".\n",
        f"Machine: {m['cpu']}, {m['cores']} cores shared with other jobs (other benchmarks ran at the same time), "
        f"torch {m['torch']}, {m['torch_threads']} torch thread(s), no GPU. Seeds {result['seeds']}. GNNs "
        f"{result['gnns']}. Data: `{result['data_root']}` (paths per dataset below).\n",
        f"Protocol: {result['protocol']}. Paper budget: {result['paper_budget']}.\n",
        "ROC-AUC in percent (the paper's TU / OGB metric). Controls are scored on the same test split, with the same "
        "metric, for the same seeds and budget as the set. Size features and the label histogram are fitted on the "
        "real training graphs and need no seed (std 0). \"vs set\": the set's mean minus the control's, and the "
        "verdict of the evaluator's rule (the set beats a control only when it is above it by more than the larger "
        "of the two stds).\n",
        "## Summary: the set vs its controls\n",
        "| dataset | protocol, GNN | Mirage | random graphs (same bytes) | untrained GNN | best size feature | "
        "label histogram | Mirage size-binned AUC | full set | full size-binned AUC | warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---:|",
    ]
    for name, r in result["rows"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |||||||||")
            continue
        for key, res in r["results"].items():
            if res["source"] == "full":
                continue
            full = r["results"].get(f"full / {res['gnn']}")
            lines.append(summary_row(name, key, res, full))
    for name, r in result["rows"].items():
        if "skipped" in r:
            continue
        d = r["distillation"]
        lines += [f"\n## {name}\n",
                  f"Data: `{r['data']['root']}`, split {r['data']['train']} / {r['data']['val']} / "
                  f"{r['data']['test']} graphs ({r['data']['split']}). Mirage: {r['mirage_config']}, thresholds "
                  f"{d['thresholds']}, tree-sets per class {d['tree_sets_per_class']}, {d['bytes']:,} B "
                  f"(full training set {d['full_graph_bytes']:,} B), distilled in {d['wall_seconds']:.2f} s wall. "
                  f"Budget: {_budget_line(r)}. Settings: {r['why']}.\n"]
        sz = r.get("size")
        if sz:
            lines.append(f"Size: {sz['distilled_bytes']:,} {sz['unit']}, N = {sz['N']} nodes, E = {sz['E']} edges, "
                         f"F = {sz['F']}, D = {sz['D']} (N*F = {sz['NxF']}, E*D = {sz['ExD']}; label columns "
                         f"{sz['F_labels']} / {sz['D_labels']}); compression ratio {sz['compression_ratio']:.4f} "
                         f"(distilled / whole training set, {sz['encoding']}).\n")
        if r.get("options"):
            lines.append(f"Options: {r['options']}. The majority-class rate of the test split (the accuracy of always "
                         f"predicting the most frequent class) is {r.get('test_majority_rate', float('nan')):.2f}.\n")
        for gnn, sched in (r.get("support_schedule") or {}).items():
            tried = describe_tried(sched["entries"])
            lines.append(f"Support schedule for {gnn} ({sched['split']}): selected {sched['selected_support']} "
                         f"({sched['distilled_bytes']:,} B); tried {tried}.\n")
        for key, res in r["results"].items():
            if res["source"] == "full":
                continue
            full = r["results"].get(f"full / {res['gnn']}")
            acc = "accuracy" in res.get("extra", {})
            lines += [f"### {name}: {key} (train config {res['train_config']})\n",
                      "| row | ROC-AUC | vs Mirage set | size-binned ROC-AUC" + (" | accuracy |" if acc else " |"),
                      "|---|---|---|---|" + ("---|" if acc else "")]
            c = res["controls"]

            def add(label: str, entry: dict[str, Any] | None, binned: dict[str, Any] | None, vs: str) -> None:
                lines.append(f"| {label} | {_cell(entry)} | {vs} | {_binned(binned)} |"
                             + (f" {_cell(entry, 'accuracy')} |" if acc else ""))

            lines.append(f"| **Mirage set** ({res['epochs']} epochs) | **{fmt(res['mean'], res['std'])}** |  | "
                         f"{_binned(c.get('size_binned'))} |"
                         + (f" {fmt(res['extra']['accuracy']['mean'], res['extra']['accuracy']['std'])} |"
                            if acc else ""))
            for n in CONTROL_ROWS:
                if n in c:
                    add(LABELS[n], c[n], c.get("random_graphs_size_binned") if n == "random_graphs" else None,
                        _vs(res, c[n]))
            if full:
                fc = full["controls"]
                wd = full["train_config"]["weight_decay"]
                lines.append(f"| full training set ({full['epochs']} epochs, wd {wd:g})"
                             f" | {fmt(full['mean'], full['std'])} | {res['mean'] - full['mean']:+.2f} | "
                             f"{_binned(fc.get('size_binned'))} |"
                             + (f" {fmt(full['extra']['accuracy']['mean'], full['extra']['accuracy']['std'])} |"
                                if acc else ""))
                lines.append(f"| full set's untrained GNN | {_cell(fc.get('untrained'))} |  |  |"
                             + (f" {_cell(fc.get('untrained'), 'accuracy')} |" if acc else ""))
            lines.append("")
            warn = res["warnings"]
            lines.append("Warnings (Mirage set, across-seed means): " + ("none" if not warn else ""))
            lines += [f"- {w}" for w in warn]
            per_seed = res.get("per_seed_warnings", [])
            lines.append(f"\nThe evaluator warned on {sum(1 for w in per_seed if w)} of {len(per_seed)} seeds "
                         f"(its own per-seed rule, one model per seed).")
            if full:
                lines.append("\nWarnings (full training set, across-seed means): "
                             + ("none" if not full["warnings"] else ""))
                lines += [f"- {w}" for w in full["warnings"]]
            rg = c.get("random_graphs", {})
            if rg.get("drawn"):
                lines.append("\nRandom graphs drawn (bytes, graphs per class), per seed: "
                             + ", ".join(f"{x['bytes']:,} B {x['graphs_per_class']}" for x in rg["drawn"]))
            secs = sum(run["train_seconds"] for run in res["runs"])
            lines.append(f"\nCost: {res['wall_seconds']:.0f} s wall for the set and its controls over "
                         f"{len(res['runs'])} seeds ({secs:.0f} s training the set itself)"
                         + (f"; full set {full['wall_seconds']:.0f} s." if full else "."))
            lines.append("\nGenerated from the numbers: " + generated_sentences(name, key, res, full) + "\n")
        lines.append(f"### What this shows ({name})\n")
        lines.append(result.get("conclusions", {}).get(name) or "(see the generated sentences above)")
    lines.append("\n## Notes\n")
    lines += [
        "- The Mirage rows are the same runs as mirage_graphs.py's (same evaluator call, seeds, settings and budget "
        "where the budget is unchanged); the random-graphs control is drawn by the evaluator on its own seed streams, "
        "so it is not the same draw as mirage_graphs.md's `random` column.",
        "- The full-set row is trained with mirage_graphs.py's full-set settings (for NCI1: weight decay 1e-2, 60 "
        "epochs) and is shared by both NCI1 protocol tables; its `random_graphs` control does not apply.",
        "- The untrained control uses the set's model seeds, so it is the very network the set's training starts "
        "from; for the full set it is the same initialisation (the weight decay does not enter at epoch 0).",
    ]
    path.write_text("\n".join(lines) + "\n")


def write_plot(result: dict[str, Any], path: Path) -> None:
    """One panel per dataset: the set's ROC-AUC beside its controls (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["rows"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        results = result["rows"][name]["results"]
        key = next(k for k in results if not k.startswith("full"))
        res, c = results[key], results[key]["controls"]
        size = max((n for n in ("num_nodes", "num_edges", "edge_density") if n in c), key=lambda n: c[n]["mean"])
        bars = [("Mirage set", res["mean"], res["std"]), ("random graphs", c["random_graphs"]["mean"],
                c["random_graphs"]["std"]), ("untrained", c["untrained"]["mean"], c["untrained"]["std"]),
                (size, c[size]["mean"], 0.0), ("label hist.", c["label_histogram"]["mean"], 0.0),
                ("set, size-binned", c["size_binned"]["mean"], c["size_binned"]["std"])]
        full = results.get(f"full / {res['gnn']}")
        if full:
            bars.append(("full set", full["mean"], full["std"]))
        ax.barh(range(len(bars)), [b[1] for b in bars], xerr=[b[2] for b in bars],
                color=["tab:blue"] + ["tab:gray"] * (len(bars) - 1))
        ax.set_yticks(range(len(bars)), [b[0] for b in bars])
        ax.invert_yaxis()
        ax.axvline(50, color="k", lw=0.5, ls=":")
        ax.set_xlim(0, 100)
        ax.set_title(f"{name} ({key.split(' / ')[0]})", fontsize=9)
        ax.set_xlabel("test ROC-AUC % (5 seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
