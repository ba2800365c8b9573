"""Mirage (Gupta et al., ICLR 2024) on TU and OGB graph classification: distillation time (wall and process
CPU), distilled bytes vs the full training set, and GCN / GIN / GAT trained on Mirage's tree-sets, on random
real graphs of the same byte budget (the paper's "Random(sum)") and on the full training set, 5 seeds each,
next to the published Mirage figures (methods.md, section Mirage).

    python benchmarks/mirage_graphs.py --datasets mutag proteins nci1 imdb_binary ogbg_molbace ogbg_molhiv \
        --seeds 0 1 2 3 4 --out benchmarks/results/mirage_graphs
    python benchmarks/mirage_graphs.py --md-only benchmarks/results/mirage_graphs.json --alternatives
    python benchmarks/mirage_graphs.py --datasets mutag nci1 --gnns gcn gin --sources mirage --batch-norm \
        --timing-repeats 1 --out benchmarks/results/mirage_graphs_batchnorm_check
    python benchmarks/mirage_graphs.py --datasets nci1 --gnns gcn gin gat --sources mirage --weight-decay 0.01 \
        --timing-repeats 1 --out benchmarks/results/mirage_nci1_weight_decay_check

The second line re-writes the notes and the .md and records the alternative thresholds of every dataset; the
third and fourth are the batch-norm and weight-decay checks quoted in the notes.

The official code's choices are flags (defaults: the library's): ``--split-protocol official`` (the TU scripts'
shuffled split), ``--support-schedule`` (each dataset's ``SPECS[...]["schedule"]``, the threshold chosen per GNN by
validation score, ``--selection-split`` train_holdout / val), ``--gnns gcn_ogb`` (the official OGB-style GCN),
``--eval-timing before_epoch`` (scored before each epoch's training pass) and ``--calibration none`` (no decision
threshold calibration; the default ``val_bias`` fits it on the validation graphs)::

    python benchmarks/mirage_graphs.py --datasets nci1 imdb_binary --gnns gcn_ogb --sources mirage \
        --split-protocol official --support-schedule --selection-split val --eval-timing before_epoch \
        --calibration none --timing-repeats 1 --out benchmarks/results/mirage_graphs_official

Per-dataset hops / support and GNN hyper-parameters are in ``SPECS`` below (the official configs where methods.md
has them, stated choices otherwise) and are written into the results together with the epoch budget. Every
seed trains one fresh model per (source, GNN); for ``random`` the seed also draws the graphs. Each run reports
the real test score at its best validation epoch (the official protocol); all runs are reported (the official
scripts report the top 5 of 10 by validation). The epoch budget is per dataset (``SPECS[...]["budget"]``:
epochs on the distilled / random sets, validation every ``eval_every`` epochs there, and epochs on the full set,
validated every epoch); ``--epochs`` / ``--full-epochs`` / ``--eval-every`` override it for all datasets.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ddistill.config import from_dict
from ddistill.data.graph import load_graph_dataset
from ddistill.io import machine_info, write_json
from evaluators.graph import GraphEvalConfig, GraphEvaluator, majority_rate
from synthesizers.mirage import Mirage, MirageConfig
from synthesizers.mirage.selection import describe_tried
from synthesizers.random_graphs import RandomGraphs, RandomGraphsConfig

#: Keys of the benchmark's evaluation specs that belong to the training recipe (the rest are GNN settings).
RECIPE_KEYS = ("lr", "weight_decay", "batch_size")

GNNS = ("gcn", "gin", "gat")
#: Every GNN the flags accept: the default three and the official OGB-style GCN.
GNN_CHOICES = (*GNNS, "gcn_ogb")
SOURCES = ("mirage", "random", "full")

# hops / support of the distillation and the GNN training settings per dataset. "why" says where they come from.
# Official values (methods.md 3.2) where they exist. methods.md 3.4 reads the weight decays 1e1 / 1e2 of the official
# python scripts as typos; for NCI1 we measured otherwise (the NCI1 note) and keep the script's 1e2. "full_eval"
# overrides "eval" for the full-set row.
SPECS: dict[str, dict[str, Any]] = {
    "mutag": {
        "root": "tu", "mirage": {"hops": 2, "support": 0.5},
        "eval": {"hidden": 128, "dropout": 0.5, "batch_size": 32, "weight_decay": 1e-2},
        "budget": {"epochs": 200, "eval_every": 2, "full_epochs": 100},
        "why": "MUTAG is not in the official code: L = 2 as the official TU scripts, relative support 0.5 per "
               "class (lower supports give far larger sets; see the alternatives)",
        "alternatives": [{"hops": 2, "support": 0.1}, {"hops": 2, "support": 0.3}],
        # not official (MUTAG is not in the official code): the supports that stay far below the full set
        "schedule": [0.6, 0.5, 0.4, 0.3],
    },
    "proteins": {
        "root": "tu", "mirage": {"hops": 1, "support": 0.3},
        "eval": {"hidden": 64, "dropout": 0.4, "batch_size": 64, "weight_decay": 1e-2},
        "budget": {"epochs": 200, "eval_every": 5, "full_epochs": 100},
        "why": "PROTEINS is not in the official code: L = 1 and the GCN settings of the official DD config (DD is "
               "the closest dataset, also protein graphs); DD's absolute support {15, 9} gave a set far larger "
               "than the full training set in a setup run (not repeated here: it mines for minutes), so relative "
               "support 0.3 per class (see the alternatives)",
        "alternatives": [{"hops": 1, "support": 0.5}, {"hops": 2, "support": 0.2}],
    },
    "nci1": {
        "root": "tu", "mirage": {"hops": 2, "support": [440, 570], "drop_shared": True},
        "eval": {"hidden": 128, "dropout": 0.5, "batch_size": 500, "weight_decay": 1e2},
        "full_eval": {"weight_decay": 1e-2},
        "budget": {"epochs": 301, "eval_every": 1, "full_epochs": 60},
        "why": "official NCI1 script: L = 2, support {0: 460, 1: 590} lowered by 20 at its first step = {440, 570} "
               "(its second step, {420, 550}, is an alternative), tree-sets frequent in both classes dropped; GNN "
               "2/128/0.5, batch 500, 301 epochs validated every epoch, and the script's Adam weight decay 1e2 for "
               "the Mirage and random sets: not a typo in effect, with 1e-2 the Mirage set scores lower (see the "
               "notes); the full set is trained with the usual 1e-2",
        "alternatives": [{"hops": 2, "support": [420, 550], "drop_shared": True},
                         {"hops": 2, "support": [460, 590], "drop_shared": True},
                         {"hops": 2, "support": [440, 570], "drop_shared": False}],
        # the official script's two steps: {460, 590} lowered by 20 per step
        "schedule": [[440, 570], [420, 550]],
    },
    "imdb_binary": {
        "root": "tu", "mirage": {"hops": 2, "support": [11, 12]},
        "eval": {"hidden": 64, "dropout": 0.2, "batch_size": 32, "weight_decay": 0.1},
        "budget": {"epochs": 200, "eval_every": 5, "full_epochs": 60},
        "why": "official IMDB-B script: L = 2, degree labels, support schedule {0: 14, 1: 15} lowered by 1 per "
               "step; here the first step at which both classes have a frequent tree-set, {11, 12} (earlier steps "
               "in the alternatives); GNN hidden 64, dropout 0.2, "
               "wd 0.1, batch 32 (the script's 3 layers replaced by L = 2 layers)",
        "alternatives": [{"hops": 2, "support": [14, 15]}, {"hops": 2, "support": [12, 13]}],
        # the official script's ten steps: {14, 15} lowered by 1 per step (the first steps find no class-1 tree-set
        # on this split and are recorded as errors)
        "schedule": [[14 - k, 15 - k] for k in range(1, 11)],
    },
    "ogbg_molbace": {
        "root": "ogb", "mirage": {"hops": 3, "support": [150, 104]},
        "eval": {"hidden": 128, "dropout": 0.6, "batch_size": 32, "weight_decay": 1e-2},
        "budget": {"epochs": 30, "eval_every": 1, "full_epochs": 30},
        "why": "official C++ config configs/molbace.py: L = 3, support {0: 150, 1: 104}; GNN 3/128/0.6, batch 32",
    },
    "ogbg_molhiv": {
        "root": "moleculenet", "mirage": {"hops": 3, "support": [1800, 115]},
        "eval": {"hidden": 128, "dropout": 0.1, "batch_size": 64, "weight_decay": 1e-2, "batch_norm": True},
        "budget": {"epochs": 30, "eval_every": 5, "full_epochs": 0, "timing_repeats": 1},
        "skip_full": "the full training set (see the split) does not fit this CPU budget",
        "why": "official C++ config configs/molhiv.py: L = 3, support {0: 1800, 1: 115}; GNN 3/128/0.1 with batch "
               "norm, batch 64 (the official GCN settings, used for all three GNNs); MoleculeNet CSV with RDKit "
               "featurisation and a computed scaffold split (the OGB folder is not staged)",
    },
}

# Published Mirage figures (methods.md "3.3 Datasets and reported results"), with what they measure.
PUBLISHED: dict[str, dict[str, Any]] = {
    "nci1": {"bytes": 318, "metric": "roc_auc", "mirage": {"gcn": "68.20"}, "random": {"gcn": "60.72"},
             "note": "paper Table 1 via reviews (2nd-hand); the NCI1 figures are ROC-AUC, not accuracy"},
    "ogbg_molbace": {"metric": "roc_auc",
                     "mirage": {"gat": "70.77", "gcn": "68.6-70.3 (official log)", "gin": "68.3-74.3 (official log)"},
                     "random": {"gat": "73.75"},
                     "note": "GAT: paper Table 1 via reviews (2nd-hand); GCN / GIN: ranges of the official logs "
                             "(top-5 test ROC-AUC)"},
    "ogbg_molhiv": {"metric": "roc_auc", "mirage": {"gcn": "61.8-66.2 (official log)", "gin": "71.1 (official log)",
                               "gat": "71.7 (official log)"},
                    "full": {"any": "73.71 / 75.93 / 78.66 across the three GNNs (order not given)"},
                    "note": "official logs (top-5 test ROC-AUC); full-data figures from reviews (2nd-hand)"},
}


# Issue #6 targets for the whole distillation (wall seconds on this CPU).
TARGET_SECONDS = {"nci1": 30, "ogbg_molhiv": 120}

# Caveats written into the results (no numbers here: every number of the .md comes from the JSON).
NOTES = [
    ("Every run's epoch is selected by validation ROC-AUC, ties going to the later epoch, as in the official scripts. "
     "The previous version of this file selected TU runs by validation accuracy with ties going to the first epoch: "
     "on Mirage sets the accuracy of real graphs sits at the majority rate at every epoch, so every run was scored "
     "at its first validation point, barely trained. That, with the NCI1 weight decay below, is why NCI1 was at "
     "chance there"),
    ("Accuracy at the majority rate with zero spread on Mirage sets is a decision-threshold shift, not a broken "
     "evaluator: the same runs rank the test graphs well (their ROC-AUC rows). Training sums node embeddings over the "
     "few roots of a tree-set, while a test graph sums over all its nodes (the official readout), so the logits of "
     "real graphs move to one side of the threshold learnt on tree-sets. The paper's TU tables report ROC-AUC, which "
     "is insensitive to this. Batch norm after every convolution (off in the official TU configs, so off here) "
     "leaves the MUTAG and NCI1 accuracy at the majority rate too: see mirage_graphs_batchnorm_check.md (same "
     "script, --batch-norm). "
     "GCN also sees a leaf degree of one in a tree where the real graph has the full degree (symmetric "
     "normalisation), an approximation of the method, not a bug"),
    ("NCI1 trains the Mirage and random sets with the official script's Adam weight decay 1e2, which methods.md "
     "reads as a typo. In effect it is not one: with 1e-2 the same Mirage set scores lower for all three GNNs and "
     "varies widely across seeds (mirage_nci1_weight_decay_check.md, same script with --weight-decay 0.01). Our "
     "reading: a decay that large keeps "
     "the weights tiny, so the network stays close to a linear function of its summed root features, which "
     "transfers from a handful of tree-sets to the sum over all nodes of a real graph. At this setting Mirage and "
     "random graphs of the same bytes score about the same on NCI1, while the paper has Mirage above random. Our "
     "NCI1 set is also larger than the published byte count: the paper's byte definition is not in the sources we "
     "have, and our split (stratified 80/10/10) is not the script's shuffled one, so its absolute thresholds "
     "440 / 570 select tree-sets from slightly different class counts"),
    ("IMDB-BINARY: Mirage scores below random graphs of the same bytes for all three GNNs. Its degree-labelled "
     "trees are frequent in few graphs (the official support schedule finds no tree-set for class 1 until "
     "{11, 12}), so the set holds a few small tree-sets that say little about whole graphs; we did not tune this"),
    ("Full-data rows are trained for fewer epochs than the official scripts (budgets above): they are lower bounds"),
    ("The random baseline takes at least one graph per class, so its sets can exceed Mirage's bytes when a single "
     "graph is larger than half the budget: see the random sets above"),
    ("ogbg-molhiv: Mirage yields as many tree-sets per class as the official log (methods.md), but training is "
     "unstable at this budget: one step per epoch on the nine tree-sets, validation every few epochs only, and the "
     "official GCN settings (with batch norm) applied to all three GNNs. Some GIN / GAT runs, Mirage and random "
     "alike, end below chance in both validation and test ROC-AUC, hence the large spreads; the official scripts "
     "report the top 5 of 10 runs by validation, this benchmark all runs. No full-data row: the full training set "
     "does not fit this CPU budget"),
]


WEIGHT_DECAY_NOTE = ("A check for the NCI1 note of mirage_graphs.md: the same protocol with one Adam weight decay "
                     "(--weight-decay) on the Mirage / random sets instead of the per-dataset value")


def notes_for(command: str) -> list[str]:
    """The notes of a results file: a check run (--batch-norm / --weight-decay) gets its own one-line note."""
    if "--batch-norm" in command:
        return [BATCH_NORM_NOTE]
    if "--weight-decay" in command:
        return [WEIGHT_DECAY_NOTE]
    return NOTES


BATCH_NORM_NOTE = ("A check for the first note of mirage_graphs.md: the same protocol with batch norm after every "
                   "convolution of every GNN (--batch-norm), Mirage sets only")


def try_alternatives(data: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Distils with the other settings considered for a dataset (``spec["alternatives"]``); records their size or
    the error (e.g. no frequent tree-set for a class)."""
    out = []
    for kw in spec.get("alternatives", []):
        w = time.perf_counter()
        try:
            meta = Mirage(MirageConfig(progress=False, **kw)).fit(data).meta
            out.append({"config": kw, "tree_sets_per_class": meta["tree_sets_per_class"],
                        "distilled_bytes": meta["distilled_bytes"], "wall_seconds": time.perf_counter() - w})
        except ValueError as e:
            out.append({"config": kw, "error": str(e)})
    return out


def fmt(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def summarise(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan}
    m = sum(finite) / len(finite)
    return {"mean": m, "std": math.sqrt(sum((v - m) ** 2 for v in finite) / len(finite))}


def time_distillation(data: Any, cfg: MirageConfig, repeats: int) -> tuple[Any, dict[str, Any]]:
    """Runs Mirage ``repeats`` times (it is deterministic); wall (perf_counter) and process CPU (process_time)."""
    walls, cpus, synset = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        synset = Mirage(cfg).fit(data)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return synset, {"wall_seconds": walls, "cpu_seconds": cpus, "wall_median": statistics.median(walls),
                    "cpu_median": statistics.median(cpus), "wall_min": min(walls), "cpu_min": min(cpus)}


def add_protocol_flags(p: argparse.ArgumentParser) -> None:
    """The flags that switch the library's defaults to the official code's choices (shared with
    evaluation_graphs.py)."""
    p.add_argument("--split-protocol", default="stratified", choices=["stratified", "official"],
                   help="TU split: stratified 80/10/10 (default) or the official scripts' shuffled 10%% test / 10%% "
                        "val / rest train (molecules always use the scaffold split)")
    p.add_argument("--support-schedule", action="store_true",
                   help="distil with each dataset's support schedule (SPECS[...]['schedule'], else its support) and "
                        "keep the threshold that validates best, chosen per GNN")
    p.add_argument("--selection-split", default="train_holdout", choices=["train_holdout", "val"],
                   help="with --support-schedule: validate on held-out training graphs (default) or on the dataset's "
                        "validation split (official)")
    p.add_argument("--calibration", default="val_bias", choices=["val_bias", "none"],
                   help="decision threshold: fitted on the validation graphs (default) or none (official)")
    p.add_argument("--eval-timing", default="after_epoch", choices=["after_epoch", "before_epoch"],
                   help="score after each epoch's training pass (default) or before it (official loop)")


def load_dataset(name: str, root: Path, split_protocol: str) -> Any:
    """A benchmark dataset; the TU split protocol is passed only when it is not the default (molecules have one)."""
    official_tu = split_protocol != "stratified" and SPECS[name]["root"] == "tu"
    return load_graph_dataset(name, root, **({"split_protocol": split_protocol} if official_tu else {}))


def protocol_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The graph-evaluator settings the protocol flags set."""
    return {"calibration": args.calibration, "eval_timing": args.eval_timing}


def schedule_config(spec: dict[str, Any], args: argparse.Namespace, gnn: str, eval_cfg: dict[str, Any]
                    ) -> MirageConfig:
    """Mirage with the dataset's support schedule, its candidates scored by ``gnn`` trained with ``eval_cfg`` (one run
    per benchmark seed, all reported)."""
    mirage = dict(spec["mirage"])
    schedule = spec.get("schedule") or [mirage["support"]]
    mirage.pop("support", None)
    return from_dict(MirageConfig, {**mirage, "progress": False, "support_schedule": schedule, "selection": {
        "split": args.selection_split, "scorer_kwargs": {**eval_cfg, "model": gnn, "num_runs": len(args.seeds)}}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="folder with tu/, ogb/ and moleculenet/")
    p.add_argument("--datasets", nargs="*", default=["mutag", "proteins", "nci1", "imdb_binary", "ogbg_molbace"],
                   choices=sorted(SPECS))
    p.add_argument("--gnns", nargs="*", default=list(GNNS), choices=GNN_CHOICES)
    p.add_argument("--sources", nargs="*", default=list(SOURCES), choices=SOURCES)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=None, help="epochs on Mirage / random sets (default: per dataset)")
    p.add_argument("--eval-every", type=int, default=None, help="validation period on Mirage / random sets")
    p.add_argument("--full-epochs", type=int, default=None, help="epochs on the full set (default: per dataset)")
    p.add_argument("--timing-repeats", type=int, default=3, help="distillations timed per dataset (default; "
                   "per-dataset value in SPECS wins)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the CPU is shared)")
    p.add_argument("--out", default="benchmarks/results/mirage_graphs")
    p.add_argument("--weight-decay", type=float, default=None, help="Adam weight decay on the Mirage / random sets "
                   "for every dataset (default: per dataset; a check of the NCI1 note)")
    p.add_argument("--select", default="roc_auc", choices=["roc_auc", "dataset"],
                   help="validation metric that selects each run's epoch: roc_auc (the official scripts and the "
                        "paper's tables) or the dataset's own metric (accuracy for TU)")
    p.add_argument("--batch-norm", action="store_true", help="batch norm after every convolution in every GNN "
                   "(a check of the readout-scale shift; off in the official TU configs)")
    add_protocol_flags(p)
    p.add_argument("--md-only", default=None, help="re-write the notes and the .md of an existing results JSON")
    p.add_argument("--alternatives", action="store_true", help="with --md-only: also distil with the alternative "
                   "settings of each dataset and record them")
    args = p.parse_args()
    if args.md_only:
        import json

        path = Path(args.md_only)
        saved = json.loads(path.read_text())
        saved["notes"] = notes_for(saved["command"])
        saved["target_seconds"] = TARGET_SECONDS
        saved["postprocess_command"] = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
        for name, row in saved["rows"].items():
            if "skipped" not in row:
                row["why"] = SPECS[name]["why"]
                if row.get("skipped_sources"):
                    row["skipped_sources"] = {"full": SPECS[name]["skip_full"]}
                if args.alternatives:
                    data = load_dataset(name, Path(row["data"]["root"]),
                                        saved.get("options", {}).get("split_protocol", "stratified"))
                    row["alternatives"] = try_alternatives(data, SPECS[name])
        write_json(path, saved)
        write_markdown(saved, path.with_suffix(".md"))
        return
    torch.set_num_threads(args.threads)
    command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    out = Path(args.out)
    rows: dict[str, dict[str, Any]] = {}
    result = {
        "benchmark": "mirage_graphs", "command": command, "machine": machine_info(),
        "data_root": args.data, "seeds": args.seeds, "gnns": args.gnns, "sources": args.sources,
        "budget": {"per_dataset": "rows[<dataset>].budget", "overrides": {"epochs": args.epochs,
                   "eval_every": args.eval_every, "full_epochs": args.full_epochs},
                   "paper": "official scripts: 30 epochs x 10 runs (ogbg), 301 (NCI1), 1500 (IMDB-B), 100 (DD), "
                            "validation every epoch; top-5 of 10 runs by validation"},
        "protocol": "per (source, GNN, seed): one fresh model, Adam lr 1e-3, layers = L, sum readout (roots for "
                    "Mirage tree-sets, all nodes for real graphs), test score at the best validation epoch "
                    "(selected by " + ("validation ROC-AUC, as the official scripts" if args.select == "roc_auc" else
                       "validation accuracy (TU) / ROC-AUC (OGB)")
                    + "; ties: the later epoch, as the official code); uniform sampling "
                    "of tree-sets (as the official code); ROC-AUC and accuracy in percent; mean ± population std "
                    "over seeds",
        "selection_metric": args.select,
        "distillation_timing": "Mirage.fit on the loaded dataset (discretise, computation-tree ids, mining, "
                               "materialisation, byte accounting); data loading is timed separately; the CPU is "
                               "shared with other jobs, so wall time >= CPU time",
        "options": {"split_protocol": args.split_protocol, "support_schedule": args.support_schedule,
                    "selection_split": args.selection_split if args.support_schedule else None,
                    **protocol_settings(args)},
        "published_source": "methods.md section Mirage 3.3", "target_seconds": TARGET_SECONDS,
        "notes": notes_for(command),
        "rows": rows,
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
        cfg = MirageConfig(progress=False, **spec["mirage"])
        budget = {**spec["budget"], **{k: v for k, v in (("epochs", args.epochs), ("eval_every", args.eval_every),
                                                          ("full_epochs", args.full_epochs)) if v is not None}}
        if args.batch_norm:
            spec = {**spec, "eval": {**spec["eval"], "batch_norm": True}}
        if args.weight_decay is not None:
            spec = {**spec, "eval": {**spec["eval"], "weight_decay": args.weight_decay}}
        # The epoch is selected by validation ROC-AUC (the official scripts' criterion, the paper's metric); TU
        # rows also score test accuracy at that epoch
        select = "roc_auc" if args.select == "roc_auc" else data.info.metric
        if select != "roc_auc":
            extra = ("roc_auc",)
        else:
            extra = ("accuracy",) if data.info.metric == "accuracy" else ()
        sources = [s for s in args.sources if not (s == "full" and spec.get("skip_full"))]
        synset, timing = time_distillation(data, cfg, budget.get("timing_repeats", args.timing_repeats))
        meta = synset.meta
        # With a schedule every GNN picks its own threshold, as the official scripts' loop over GNN types.
        synsets = {gnn: synset for gnn in args.gnns}
        schedules: dict[str, Any] = {}
        if args.support_schedule and "mirage" in sources:
            for gnn in args.gnns:
                train_cfg = dict(spec["eval"])
                recipe = {k: v for k, v in train_cfg.items() if k in RECIPE_KEYS}
                recipe["epochs"] = budget["epochs"]
                scorer = {"layers": hops, "eval_every": budget["eval_every"], "threads": args.threads,
                          "metric": select, "train": recipe, **protocol_settings(args),
                          **{k: v for k, v in train_cfg.items() if k not in RECIPE_KEYS}}
                w = time.perf_counter()
                synsets[gnn] = Mirage(schedule_config(spec, args, gnn, scorer)).fit(data)
                sched = synsets[gnn].meta["support_schedule"]
                schedules[gnn] = {**sched, "wall_seconds": time.perf_counter() - w,
                                  "tree_sets_per_class": synsets[gnn].meta["tree_sets_per_class"],
                                  "distilled_bytes": synsets[gnn].meta["distilled_bytes"]}
                print(f"  {name} {gnn}: schedule selected {sched['selected_support']} ("
                      + ", ".join(f"{e['support']}: " + (f"{e['validation_score']:.2f}" if "validation_score" in e
                                                         else "infeasible") for e in sched["entries"]) + ")",
                      flush=True)
        row: dict[str, Any] = {
            "data": {"root": str(root), "split": data.info.split, "train": len(data.train), "val": len(data.val),
                     "test": len(data.test), "load_seconds": load_seconds,
                     "test_majority_rate": majority_rate(torch.tensor([int(g.y) for g in data.test]),
                                                         data.info.num_classes)},
            "metric": select, "mirage_config": meta["config"], "why": spec["why"],
            "eval_config": {**spec["eval"], "layers": hops}, "budget": budget,
            "full_eval_config": {**spec["eval"], **spec.get("full_eval", {}), "layers": hops},
            "skipped_sources": {"full": spec["skip_full"]} if "full" not in sources and spec.get("skip_full") else {},
            "distillation": {**timing, "thresholds": meta["thresholds"],
                             "tree_sets_per_class": meta["tree_sets_per_class"],
                             "unique_trees": meta["unique_trees"],
                             "distinct_trees_distilled": meta["distinct_trees_distilled"]},
            "size": {k: v for k, v in meta["size"].items() if k != "definitions"},
            "size_definitions": meta["size"]["definitions"],
            "support_schedule": schedules,
            "bytes": {"mirage": meta["distilled_bytes"], "full_graph": meta["full_graph_bytes"],
                      "full_tree": meta["full_tree_bytes"], "definition": meta["bytes_definition"],
                      "graph_definition": "plain graph encoding 4*(2 + nodes + 3*undirected edges) per graph, int32 "
                                          "(ddistill.data.graph.graph_bytes); random sets use the same"},
            "published": PUBLISHED.get(name), "results": {}, "random_sets": [],
            "alternatives": try_alternatives(data, spec),
        }
        rows[name] = row
        print(f"{name}: {data}; Mirage {meta['tree_sets_per_class']} tree-sets, {meta['distilled_bytes']} B vs "
              f"{meta['full_graph_bytes']} B full, wall {timing['wall_median']:.2f} s, "
              f"CPU {timing['cpu_median']:.2f} s",
              flush=True)
        for gnn in args.gnns:
            row["results"][gnn] = {}
            for source in sources:
                values, runs, extra_values = [], [], {k: [] for k in extra}
                for seed in args.seeds:
                    full = source == "full"
                    train_cfg = {**spec["eval"], **(spec.get("full_eval", {}) if full else {})}
                    recipe = {k: v for k, v in train_cfg.items() if k in RECIPE_KEYS}
                    recipe["epochs"] = budget["full_epochs" if full else "epochs"]
                    ecfg = from_dict(GraphEvalConfig, {
                        "model": gnn, "layers": hops, "eval_every": 1 if full else budget["eval_every"], "num_runs": 1,
                        "threads": args.threads, "progress": False, "metric": select, "extra_metrics": list(extra),
                        "train": recipe, **protocol_settings(args),
                        **{k: v for k, v in train_cfg.items() if k not in RECIPE_KEYS}})
                    ev = GraphEvaluator(ecfg, seed=seed)
                    if source == "mirage":
                        res = ev.evaluate(synsets[gnn], data)
                    elif source == "random":
                        rnd = RandomGraphs(RandomGraphsConfig(budget_bytes=synsets[gnn].meta["distilled_bytes"],
                                                              hops=hops),
                                           seed=seed).fit(data)
                        if gnn == args.gnns[0]:
                            row["random_sets"].append({"seed": seed, "bytes": rnd.meta["distilled_bytes"],
                                                       "graphs_per_class": rnd.meta["graphs_per_class"]})
                        res = ev.evaluate(rnd, data)
                    else:
                        res = ev.evaluate_real(data, hops=hops)
                    values.append(res.values[0])
                    for k in extra:
                        extra_values[k].append(res.details["test_extra"][k][0])
                    runs.append({"seed": seed, "test": res.values[0], "val": res.details["val"][0],
                                 "best_epoch": res.details["best_epoch"][0],
                                 "majority_rate": res.details["majority_rate"]["test"],
                                 "calibration_bias": res.details["calibration_bias"][0],
                                 "train_seconds": res.details["train_seconds"][0],
                                 "train_graphs": res.details["train_graphs"],
                                 **{f"test_{k}": res.details["test_extra"][k][0] for k in extra}})
                s = summarise(values)
                row["results"][gnn][source] = {**s, "values": values, "runs": runs, "epochs": ecfg.train.epochs,
                                               "eval_every": ecfg.eval_every,
                                               "extra": {k: {**summarise(v), "values": v}
                                                         for k, v in extra_values.items()}}
                more = "".join(f", {k} {fmt(**summarise(v))}" for k, v in extra_values.items())
                print(f"  {name} {gnn} {source}: {fmt(s['mean'], s['std'])} ({select}{more})", flush=True)
                write_json(out.with_suffix(".json"), result)
        write_markdown(result, out.with_suffix(".md"))
    write_json(out.with_suffix(".json"), result)
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


def write_markdown(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    b = result["budget"]
    lines = [
        "# Mirage graph distillation: time, bytes, GCN / GIN / GAT on Mirage vs random vs full\n",
        f"Command: `{result['command']}`"
        + (f", then `{result['postprocess_command']}`" if result.get("postprocess_command") else "") + "\n",
        (f"Machine: {m['cpu']}, {m['cores']} cores shared with other jobs, torch {m['torch']}, "
        f"{m['torch_threads']} torch thread(s). Seeds {result['seeds']}. Budget per dataset in the settings list "
        f"below (CPU budget; paper: {b['paper']}). {result['protocol']}.\n"),
        "## Distillation\n",
        ("| dataset | L | support (thresholds) | tree-sets per class | Mirage bytes | full bytes (graphs) | "
        "full bytes (tree-sets) | ratio | compression ratio | N / E / F / D | N*F / E*D (label columns) | "
        "wall s (median) | CPU s (median) | target (issue #6) | published bytes |"),
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|",
    ]
    for name, r in result["rows"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |||||||||")
            continue
        d, by = r["distillation"], r["bytes"]
        pub = (r.get("published") or {}).get("bytes", "")
        limit = result.get("target_seconds", {}).get(name)
        target = "" if limit is None else f"< {limit} s: {'met' if d['wall_median'] < limit else 'missed'}"
        sz = r.get("size")
        size_cells = ("|  |  |  " if sz is None else
                      f"| {sz['compression_ratio']:.4f} | {sz['N']} / {sz['E']} / {sz['F']} / {sz['D']} | "
                      f"{sz['NxF_labels']} / {sz['ExD_labels']} ")
        lines.append(f"| {name} | {r['mirage_config']['hops']} | {d['thresholds']} | {d['tree_sets_per_class']} | "
                     f"{by['mirage']:,} | {by['full_graph']:,} | {by['full_tree']:,} | "
                     f"{by['full_graph'] / by['mirage']:.0f}x {size_cells}| {d['wall_median']:.2f} | "
                     f"{d['cpu_median']:.2f} | {target} | {pub} |")
    lines += ["\nBytes: " + next((r["bytes"]["definition"] for r in result["rows"].values() if "bytes" in r), "")
              + "; full / random graphs: " + next((r["bytes"]["graph_definition"] for r in result["rows"].values()
                                                   if "bytes" in r), "") + ". Ratio = full graph bytes / Mirage bytes. "
              "Compression ratio = Mirage bytes / full tree-set bytes (same encoding, unit: bytes of int32 "
              "integers). " + next((r["size_definitions"] for r in result["rows"].values() if "size_definitions" in r),
                                   "") + ". "
              "Timing: " + result["distillation_timing"] + ".\n",
              "## Test metric (%), mean ± std over seeds\n",
              (("Every run's epoch is selected by validation ROC-AUC (the official scripts' criterion and the metric "
                "of the paper's tables); accuracy rows of TU datasets are the test accuracy of the same runs and "
                "epochs. " if result.get("selection_metric") == "roc_auc" else
                "Accuracy rows: the epoch is selected by validation accuracy. ROC-AUC rows of TU datasets: the same "
                "runs and epochs, ROC-AUC of the test predictions (the metric of the paper's tables). ")
               + "Published figures are shown only in rows of the metric they measure.\n"),
              ("| dataset | metric | GNN | Mirage | random (same bytes) | full | published Mirage | published random | "
              "published full | majority rate (test) |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    def table(metric: str) -> None:
        for name, r in result["rows"].items():
            if "skipped" in r:
                continue
            pub = r.get("published") or {}
            if pub.get("metric") != metric:
                pub = {}
            for gnn, res in r["results"].items():
                if r["metric"] != metric and not all(metric in res[s]["extra"] for s in res):
                    continue
                cells = []
                for s in SOURCES:
                    if s not in res:
                        cells.append("not run")
                        continue
                    v = res[s] if r["metric"] == metric else res[s]["extra"][metric]
                    cells.append(fmt(v["mean"], v["std"]))
                full_pub = pub.get("full", {}).get("any", "")
                rate = r["data"].get("test_majority_rate")
                majority = f"{rate:.2f}" if metric == "accuracy" and rate is not None else ""
                lines.append(f"| {name} | {metric} | {gnn} | {' | '.join(cells)} | "
                             f"{pub.get('mirage', {}).get(gnn, '')} | {pub.get('random', {}).get(gnn, '')} | "
                             f"{full_pub} | {majority} |")

    for metric in (("roc_auc", "accuracy") if result.get("selection_metric") == "roc_auc" else
                   ("accuracy", "roc_auc")):
        table(metric)
    opts = result.get("options")
    if opts:
        lines.append(f"\nOptions: {opts}. Accuracy rows: the majority-class rate of the test split (the accuracy of "
                     f"always predicting the most frequent class) is in the last column.")
    for name, r in result["rows"].items():
        for gnn, sched in (r.get("support_schedule") or {}).items():
            tried = describe_tried(sched["entries"])
            lines.append(f"- {name} / {gnn}: support schedule ({sched['split']}) selected "
                         f"{sched['selected_support']} ({sched['distilled_bytes']:,} B); tried {tried}")
    lines.append("\nRandom sets actually drawn (bytes, graphs per class), per seed:\n")
    for name, r in result["rows"].items():
        if r.get("random_sets"):
            sets = ", ".join(f"{s['bytes']:,} B {s['graphs_per_class']}" for s in r["random_sets"])
            lines.append(f"- {name}: {sets}")
    lines.append("\nSettings per dataset:\n")
    for name, r in result["rows"].items():
        if "skipped" not in r:
            pub = r.get("published") or {}
            note = f" Published: {pub['note']}." if pub.get("note") else ""
            bud = r["budget"]
            skipped = "".join(f" No {k} row: {v}." for k, v in r.get("skipped_sources", {}).items())
            full_cfg = r.get("full_eval_config")
            full_note = f" Full set: {full_cfg}." if full_cfg and full_cfg != r["eval_config"] else ""
            lines.append(f"- {name}: {r['why']}. GNN: {r['eval_config']}.{full_note} Budget: {bud['epochs']} "
                         f"epochs on Mirage / random sets (validation every {bud['eval_every']}), "
                         f"{bud['full_epochs']} on the full set "
                         f"(validation every epoch).{skipped}{note} Split {r['data']['train']} / {r['data']['val']} / "
                         f"{r['data']['test']} graphs ({r['data']['split']})"
                         + (f"; one test graph is {100 / r['data']['test']:.2f} accuracy points." if r["metric"] ==
                            "accuracy" else "."))
            for alt in r.get("alternatives", []):
                got = (f"error: {alt['error']}" if "error" in alt else f"{alt['tree_sets_per_class']} tree-sets, "
                       f"{alt['distilled_bytes']:,} B")
                lines.append(f"  - alternative {alt['config']}: {got}")
    lines.append("\nNotes:\n")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
