"""``ddistill`` command line: distill, evaluate, show, import, export, build-store, list.

This module is the application layer: the one place in ``ddistill`` that imports the plugin packages
``synthesizers`` and ``evaluators`` (inside the commands, so ``import ddistill`` never loads them). Every other
``ddistill`` module is the core, which the plugins import and which never imports them.

    ddistill distill CONFIG [key=value ...] [--resume]
    ddistill evaluate SYNSET [key=value ...] [--evaluator NAME] [--pool cross]
    ddistill show SYNSET [--grid out.png]
    ddistill import FORMAT PATH... --dataset NAME --out SYNSET [--zca] [--experiment K] [--lr X]
    ddistill export SYNSET --format png|ddranking --out DIR [--overwrite]
    ddistill build-store SRC OUT --resolution R [--resize center_crop|stretch] [--channels 1|3] [--workers N]
    ddistill list models|datasets|graph_datasets|gnns|synthesizers|evaluators|augmentations|importers|exporters

:func:`distill` and :func:`evaluate` are the commands as functions (benchmarks and tests run exactly what users run).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Sequence

from . import config as cfgmod
from .data import DataSpec

__all__ = ["RunConfig", "distill", "evaluate", "main"]


@dataclass
class RunConfig:
    """A distillation run.

    Args:
        name: run name; the run directory is ``out_dir/name``.
        seed: seed of every generator in the run.
        device: "cpu", "cuda", "cuda:1", ...
        out_dir: parent of run directories.
        dataset: the real data.
        synthesizer: ``{name: <registry name>, preset?: <name>, ...its Config fields}``.
        evaluator: ``{name: <registry name>, preset?: <name>, ...its Config fields}`` run on the final set; null = none.
        eval_every: also evaluate every this many steps (iterative synthesizers; 0 = only at the end).
        grid: write ``grid.png`` of the final set (image sets).
    """

    name: str = "run"
    seed: int = 0
    device: str = "cpu"
    out_dir: str = "runs"
    dataset: DataSpec = field(default_factory=DataSpec)
    synthesizer: dict[str, Any] = field(default_factory=lambda: {"name": "dm"})
    evaluator: dict[str, Any] | None = None
    eval_every: int = 0
    grid: bool = True


# ------------------------------------------------------------------------------------------------
def check_device(device: str) -> str:
    """``device`` if torch can use it here; otherwise a ValueError naming the problem and the choices."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"config key 'device': {device!r} is not a device; choose cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device' is {device!r} but CUDA is not available on this machine; use device=cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"config key 'device' is {device!r} but this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"config key 'device' is {device!r} but MPS is not available on this machine; use device=cpu")
    return device


def distill(run: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Runs one distillation into ``out_dir/name`` (what ``ddistill distill`` does); returns the results dict.

    Args:
        run: the run config.
        resume: continue the run recorded in the directory (its config must match, see :mod:`ddistill.run_dir`).
        overwrite: replace a run already in the directory (its files are deleted first).
    """
    from evaluators import EVALUATORS
    from synthesizers import SYNTHESIZERS

    from .distributed import init_distributed
    from .run_dir import RunDir, RunDirError

    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other: continue the run or replace it")
    check_device(run.device)
    # Under torchrun: join the process group; this rank's device (cuda -> cuda:$LOCAL_RANK).
    context, device = init_distributed(run.device)
    run_dir = RunDir.for_run(run.out_dir, run.name)
    synth_cls, synth_cfg = cfgmod.build_component(SYNTHESIZERS, run.synthesizer, "synthesizer")
    evaluator = None
    if run.evaluator is not None:
        eval_cls, eval_cfg = cfgmod.build_component(EVALUATORS, run.evaluator, "evaluator")
        evaluator = eval_cls(eval_cfg, device=device, seed=run.seed)
    resolved = cfgmod.to_dict(run)
    resolved["synthesizer"] = {"name": synth_cls.name, **cfgmod.to_dict(synth_cfg)}
    if evaluator is not None:
        resolved["evaluator"] = {"name": evaluator.name, **cfgmod.to_dict(evaluator.config)}
    if not context.is_main:  # rank 0 owns the run directory; the others wait for its verdict on it
        if not context.agree(True):
            raise RunDirError(f"rank 0 could not prepare {run_dir.path}; its message says why")
        return _distill_run(run, run_dir, synth_cls, synth_cfg, evaluator, context, device, resume=resume)
    with run_dir.lock():
        try:
            _prepare_run_dir(run_dir, resolved, resume=resume, overwrite=overwrite)
        except BaseException:
            context.agree(False)
            raise
        context.agree(True)
        return _distill_run(run, run_dir, synth_cls, synth_cfg, evaluator, context, device, resume=resume)


def _prepare_run_dir(run_dir: Any, resolved: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Checks what the run directory holds against ``--resume`` / ``--overwrite`` and writes ``config.yaml``."""
    from .io import atomic_write
    from .run_dir import RunDirError

    state = run_dir.state()
    if state != "empty":
        if overwrite:
            print(f"--overwrite: removing {', '.join(run_dir.clear())} from {run_dir.path}", flush=True)
        elif resume:
            run_dir.check_resume(resolved)
        else:
            raise RunDirError(f"{run_dir.path} already holds a {run_dir.describe()}; pass --resume to continue it, "
                              f"--overwrite to replace it, or choose another name=")
    atomic_write(run_dir.file("config.yaml"), lambda f: f.write(cfgmod.dumps(resolved)), binary=False)


def _distill_run(run: RunConfig, run_dir: Any, synth_cls: Any, synth_cfg: Any, evaluator: Any, context: Any,
                 device: str, *, resume: bool) -> dict[str, Any]:
    """The distillation and final evaluation, on every rank; rank 0 writes the log, the set and the results."""
    from synthesizers import LoopConfig
    from synthesizers.callbacks import Checkpoint, JSONLLog, PeriodicEval, ProgressBar

    from .data import load_data, load_eval_data
    from .eval_records import write_record
    from .io import JSONLLogger, git_sha, machine_info, write_json

    main = context.is_main
    ckpt = run_dir.file("checkpoint.pt")
    logger = JSONLLogger(run_dir.file("log.jsonl")) if main else None

    real, test = load_data(run.dataset, device)
    synth = synth_cls(synth_cfg, device=device, seed=run.seed)  # joins the process group of init_distributed
    eval_data = None
    if evaluator is not None:
        eval_data = load_eval_data(run.dataset, evaluator.needs({"data": cfgmod.to_dict(run.dataset)}),
                                   encoding=getattr(real, "encoding", None), device=device, loaded=(real, test))
    if main:
        ranks = f" on {context.world_size} processes" if context.enabled else ""
        print(f"distilling {run.dataset.name} with {synth_cls.name} into {run_dir.path}{ranks}", flush=True)

    # Order matters: the checkpoint is written before a periodic evaluation runs, so a failing evaluation loses no
    # work; the progress bar starts after a resumed state is loaded. Log and bar run on rank 0 only.
    every = synth_cfg.checkpoint_every if isinstance(synth_cfg, LoopConfig) else 0  # one-shot methods: at the end
    callbacks: list[Any] = [Checkpoint(ckpt, every, resume=resume)]
    if main:
        callbacks.append(JSONLLog(logger, every=10))
    periodic = None
    if evaluator is not None and run.eval_every:
        periodic = PeriodicEval(evaluator, eval_data, run.eval_every, log=logger, echo=True)
        callbacks.append(periodic)
    callbacks.append(ProgressBar())

    start = time.perf_counter()
    synset = synth.fit(real, callbacks=callbacks)
    seconds = time.perf_counter() - start
    synset.meta.update(git=git_sha(Path(__file__).parent), run=run.name)
    if context.enabled:
        synset.meta["world_size"] = context.world_size
    if not main:  # the final evaluation shares its models over the ranks; rank 0 reports and writes
        if evaluator is not None:
            evaluator.evaluate(synset, eval_data)
        return {"run": run.name, "rank": context.rank}
    synset.save(run_dir.file("synset.pt"))
    wrote = [run_dir.file("synset.pt")]
    if run.grid and synset.meta.get("kind", "image") == "image" and synset.x.dim() == 4:
        wrote.append(synset.save_grid(run_dir.file("grid.png")))
    results: dict[str, Any] = {"run": run.name, "synthesizer": synth_cls.name, "dataset": run.dataset.name,
                               "ipc": synset.meta.get("ipc"), "distill_seconds": seconds, "seed": run.seed,
                               "machine": machine_info()}
    if evaluator is not None:
        res = evaluator.evaluate(synset, eval_data)
        results["evaluation"] = res.to_dict()
        if periodic is not None and periodic.curve:
            results["curve"] = periodic.curve
            results["reported_as"] = max_over_distillation(periodic.curve, res)
        logger.log(step=synset.meta.get("step"), eval=res.to_dict(), final=True)
        print(f"final: {res.report()}", flush=True)
        # Listed with the set's later evaluations (the same evaluator config and seed: the same record key as
        # ``ddistill evaluate`` would give it).
        wrote.append(write_record(run_dir.file("synset.pt"), {
            "synset": str(run_dir.file("synset.pt")), "evaluator": evaluator.name, "seed": run.seed,
            "config": cfgmod.to_dict(evaluator.config), "data": cfgmod.to_dict(run.dataset), "device": str(device),
            "key_config": type(evaluator).key_config(cfgmod.to_dict(evaluator.config), synset.meta),
            "setup": evaluation_setup(type(evaluator), evaluator.config, res.to_dict()),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "evaluation": res.to_dict(),
            "by": "ddistill distill (the final evaluation)"}))
        if "reported_as" in results:
            best = results["reported_as"]["max_over_distillation"]
            print(f"  reported as max_over_distillation (not the honest score): {best['mean']:.2f} at step "
                  f"{best['step']}", flush=True)
    write_json(run_dir.file("results.json"), results)
    print(f"wrote {', '.join(str(p) for p in wrote)}", flush=True)
    return results


def evaluation_setup(eval_cls: Any, config: Any, evaluation: dict[str, Any] | None) -> str:
    """One line that tells an evaluation record from its neighbours in ``evaluations.md``: the preset, the fields set
    beyond the evaluator's defaults (or the preset's), speed and display settings left out, and the network it
    trained (resolved from the set when the config left it open)."""
    preset = getattr(config, "preset", None)
    base = cfgmod.config_from_preset(eval_cls.Config, getattr(eval_cls, "presets", {}) or {}, preset, {},
                                     where="evaluator") if preset else eval_cls.Config()
    changed = {k: v for k, v in cfgmod.differences(base, config).items()
               if k not in ("preset", "progress") and not k.startswith("perf.") and ".perf." not in k}
    parts = ([f"preset={preset}"] if preset else []) + [f"{k}={v}" for k, v in sorted(changed.items())]
    details = evaluation or {}
    if details.get("model") and "model" not in changed:
        kwargs = details.get("model_kwargs") or {}
        parts.append(f"network={details['model']}" + (f" {kwargs}" if kwargs else ""))
    return "; ".join(str(p) for p in parts) or "defaults"


def max_over_distillation(curve: list[dict[str, Any]], final: Any) -> dict[str, Any]:
    """The papers' "max over evaluation points" habit (MTT's Max_Accuracy, DataDAM's "Maximum Results"): the best
    mean over the periodic evaluations and the final one, labelled -- the set written is always the final one."""
    points = [*curve, {"step": "final", "mean": final.mean, "std": final.std}]
    best = max(points, key=lambda p: p["mean"])
    return {"max_over_distillation": {**best, "what": "the best mean over the evaluation points during distillation "
                                                      "(selected on the test split; the saved set is the final one)"}}


def evaluate(synset_path: str | Path, *, evaluator: str = "classifier", overrides: Sequence[str] = (),
             pool: str | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Scores a saved set (what ``ddistill evaluate`` does); returns what it writes to the results file.

    Args:
        synset_path: a ``synset.pt``.
        evaluator: evaluator registry name.
        overrides: ``evaluator.*``, ``dataset.*``, ``seed=``, ``device=`` (``evaluator.preset=...`` picks a preset).
        pool: score with every network of a pool (``EVAL_POOLS`` / ``GNN_POOLS`` name, e.g. ``cross``).
        out: also write the result to this JSON file (every evaluation is kept under
            ``<set folder>/evaluations/``, keyed by evaluator, config and seed; see :mod:`ddistill.eval_records`).
    """
    from evaluators import EVALUATORS

    from .data import Encoding, load_eval_data
    from .distributed import init_distributed
    from .eval_records import data_overrides, write_record
    from .io import write_json
    from .models import EVAL_POOLS
    from .models.gnn import GNN_POOLS
    from .synset import SyntheticSet

    synset = SyntheticSet.load(synset_path)
    over = cfgmod.load(None, list(overrides))
    unknown = sorted(set(over) - {"dataset", "evaluator", "seed", "device"})
    if unknown:
        raise cfgmod.ConfigError(f"unknown override section(s) {unknown}; use dataset.*, evaluator.*, seed=, device=")
    recorded = synset.meta.get("data") or {"name": synset.meta["dataset"]}
    spec = cfgmod.from_dict(DataSpec, cfgmod.merge(DataSpec, recorded, over.get("dataset", {})), where="dataset")
    device, seed = check_device(str(over.get("device", "cpu"))), over.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise cfgmod.ConfigError(f"seed must be an integer, got {seed!r}")
    # Under torchrun every rank trains its share of the models; rank 0 prints and writes the records.
    context, device = init_distributed(device)
    espec = {"name": evaluator, **over.get("evaluator", {})}
    eval_cls, eval_cfg = cfgmod.build_component(EVALUATORS, espec, "evaluator")
    ev = eval_cls(eval_cfg, device=device, seed=seed)
    pools = {**EVAL_POOLS, **GNN_POOLS}
    if pool and pool not in pools:  # before any data is loaded
        raise KeyError(f"unknown pool '{pool}'; choose from {sorted(pools)}")
    encoding = Encoding.from_meta(synset.meta["encoding"], synset.tensors) if "encoding" in synset.meta else None
    data = load_eval_data(spec, ev.needs({**synset.meta, "data": cfgmod.to_dict(spec)}), encoding=encoding,
                          device=device)
    result: dict[str, Any] = {"synset": str(synset_path), "evaluator": ev.name, "seed": seed,
                              "config": cfgmod.to_dict(ev.config), "data": cfgmod.to_dict(spec),
                              "device": str(device), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if context.is_main:  # what is about to run (long runs print nothing else until done when output is a file)
        print(f"evaluating {synset_path} with {ev.name}" + (f" over the {pool} pool" if pool else "") + ": "
              f"{evaluation_setup(eval_cls, ev.config, None)}", flush=True)
    if pool:
        result["pool_name"] = pool
        results = ev.across(pools[pool], synset, data)
        result["pool"] = {name: r.to_dict() for name, r in results.items()}
        if not context.is_main:
            return {"rank": context.rank}
        for name, r in results.items():
            print(f"{name:12s} {r.report()}", flush=True)
    else:
        res = ev.evaluate(synset, data)
        if not context.is_main:
            return {"rank": context.rank}
        result["evaluation"] = res.to_dict()
        print(res.report(), flush=True)
    if context.enabled:
        result["world_size"] = context.world_size
    if pool:  # the pool is part of what was evaluated: it keys the record too
        result["config"] = {**result["config"], "pool": pool}
    # So are other data than the set's own (another test split is another evaluation): the fields that differ.
    own = cfgmod.to_dict(cfgmod.from_dict(DataSpec, cfgmod.merge(DataSpec, recorded, {}), where="dataset"))
    changed = data_overrides(own, result["data"])
    if changed:
        result["data_overrides"] = changed
    # The set's own network, named or not, is one evaluation (the distill's final record names it).
    result["key_config"] = eval_cls.key_config(result["config"], synset.meta)
    result["setup"] = evaluation_setup(eval_cls, ev.config, result.get("evaluation"))
    record = write_record(synset_path, result)
    print(f"wrote {record} (all evaluations of this set: {record.parent.parent / 'evaluations.md'})")
    if out:
        write_json(Path(out), result)
        print(f"wrote {out}")
    result["record"] = str(record)
    return result


# ------------------------------------------------------------------------------------------------
def cmd_distill(args: argparse.Namespace) -> dict[str, Any]:
    try:
        run = cfgmod.from_dict(RunConfig, cfgmod.load(args.config, args.overrides))
    except cfgmod.ConfigError as e:
        raise cfgmod.ConfigError(f"{args.config}: {e}") from None
    return distill(run, resume=args.resume, overwrite=args.overwrite)


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate(args.synset, evaluator=args.evaluator, overrides=args.overrides, pool=args.pool, out=args.out)


def cmd_show(args: argparse.Namespace) -> None:
    from .synset import SyntheticSet

    synset = SyntheticSet.load(args.synset)
    print(synset.describe())
    if args.grid and synset.meta.get("kind", "image") == "image" and synset.x.dim() == 4:
        print(f"wrote {synset.save_grid(args.grid)}")


def cmd_import(args: argparse.Namespace) -> None:
    from .interop import InteropError, import_set

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InteropError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    synset = import_set(args.format, args.paths, dataset=args.dataset, root=args.root, zca=args.zca,
                        zca_eps=args.zca_eps, experiment=args.experiment, lr=args.lr)
    synset.save(out)
    lr = f", lr {float(synset.tensors['lr']):.6g}" if "lr" in synset.tensors else ", no lr"
    print(f"imported {len(synset)} images ({synset.meta['num_classes']} classes, ipc {synset.meta['ipc']}, "
          f"{synset.meta['labels']} labels{lr}) from {args.format} into {out}")
    for line in synset.meta["imported"]["assumed"]:
        print(f"  assumed: {line}")


def cmd_export(args: argparse.Namespace) -> None:
    from .interop import export_set

    report = export_set(args.synset, args.format, args.out, overwrite=args.overwrite)
    print(f"wrote {report.out} ({len(report.files)} files, {args.format})")
    for note in report.notes:
        print(f"  note: {note}")


def cmd_build_store(args: argparse.Namespace) -> None:
    from .data.folder import _resolve_folder_root
    from .data.store import ImageStore, build_dataset_store, build_store

    src = Path(args.source).expanduser()
    options = dict(channels=args.channels, resize=args.resize, max_per_class=args.max_per_class, workers=args.workers,
                   overwrite=args.overwrite)
    # A dataset root (train/ beside test/ or val/, or an archive of one) gets one store per split: the layout
    # dataset.store reads. Anything else is one ImageFolder split.
    if src.is_file() or (src.is_dir() and (_resolve_folder_root(str(src), "imagefolder") / "train").is_dir()):
        built = build_dataset_store(src, args.out, args.resolution, **options)
    else:
        built = {"": build_store(src, args.out, args.resolution, **options)}
    for split, path in built.items():
        store = ImageStore.open(path)
        n, c, h, w = store.meta.shape
        print(f"wrote {path}: {n} images of {c}x{h}x{w} ({store.nbytes / 2**30:.2f} GiB), {store.num_classes} classes"
              + (f" [{split}]" if split else ""))
    if "" not in built:
        print(f"use it with: dataset: {{name: imagefolder, root: {args.source}, store: {args.out}, "
              f"resolution: {args.resolution}}}")


def cmd_list(args: argparse.Namespace) -> None:
    from .augment import AUGMENTS
    from .data import DATASETS
    from .data.graph import GRAPH_DATASETS
    from .interop import EXPORTERS, IMPORTERS
    from .models import MODELS
    from .models.gnn import GNN_MODELS

    regs = {"models": MODELS, "datasets": DATASETS, "augmentations": AUGMENTS, "graph_datasets": GRAPH_DATASETS,
            "gnns": GNN_MODELS, "importers": IMPORTERS, "exporters": EXPORTERS}
    if args.kind in ("synthesizers", "evaluators"):
        from evaluators import EVALUATORS
        from synthesizers import SYNTHESIZERS

        regs.update(synthesizers=SYNTHESIZERS, evaluators=EVALUATORS)
    for name in regs[args.kind].names():
        print(name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddistill", description="Dataset distillation: distill, evaluate, inspect.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("distill", help="distill a dataset from a YAML config")
    d.add_argument("config", help="YAML run config (see scripts/configs/)")
    d.add_argument("overrides", nargs="*", help="key=value overrides, e.g. synthesizer.ipc=1 seed=3")
    d.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    d.add_argument("--overwrite", action="store_true", help="replace a run already in out_dir/name")
    d.set_defaults(func=cmd_distill)
    e = sub.add_parser("evaluate", help="train fresh models on a synthetic set and test them")
    e.add_argument("synset", help="path of a synset.pt")
    e.add_argument("overrides", nargs="*", help="evaluator.* / dataset.* / seed= / device= overrides")
    e.add_argument("--evaluator", default="classifier", help="evaluator registry name")
    e.add_argument("--pool", default=None, help="evaluate with every network of a pool (e.g. cross, depth, gnn)")
    e.add_argument("--out", default=None, help="also write the result here (every evaluation is kept in "
                                                "<set folder>/evaluations/, summarised in evaluations.{csv,md})")
    e.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("show", help="print a synthetic set's metadata and write an image grid")
    s.add_argument("synset")
    s.add_argument("--grid", default=None, help="PNG path for the image grid")
    s.set_defaults(func=cmd_show)
    im = sub.add_parser("import", help="convert a set saved by other code (MTT, DC/DM/DataDAM, DD-Ranking, PNGs)")
    im.add_argument("format", help="mtt, dc_res, ddranking or png (ddistill list importers)")
    im.add_argument("paths", nargs="+", help="the folder or files to read")
    im.add_argument("--dataset", required=True, help="the dataset the set was distilled from (its mean/std, ZCA)")
    im.add_argument("--root", default=None, help="the dataset's folder (dataset.root)")
    im.add_argument("--out", required=True, help="the synset.pt to write")
    im.add_argument("--zca", action="store_true", help="the tensors are ZCA-whitened (ddistill fits the dataset's ZCA)")
    im.add_argument("--zca-eps", type=float, default=0.1, help="ZCA regularisation (default 0.1)")
    im.add_argument("--experiment", type=int, default=None, help="dc_res: which [images, labels] pair (default 0)")
    im.add_argument("--lr", type=float, default=None, help="the learned learning rate (MTT and AST do not save it)")
    im.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    im.set_defaults(func=cmd_import)
    ex = sub.add_parser("export", help="write a synthetic set for other code (PNG ImageFolder, DD-Ranking tensors)")
    ex.add_argument("synset", help="path of a synset.pt")
    ex.add_argument("--format", required=True, help="png or ddranking (ddistill list exporters)")
    ex.add_argument("--out", required=True, help="the folder to write")
    ex.add_argument("--overwrite", action="store_true", help="replace a folder ddistill exported before")
    ex.set_defaults(func=cmd_export)
    bs = sub.add_parser("build-store", help="decode an ImageFolder tree once into a memory-mapped uint8 store (for "
                                            "datasets too large for RAM; see dataset.store)")
    bs.add_argument("source", help="one ImageFolder split (a sub-folder of images per class), or a dataset root "
                                   "holding train/ and test/ (or val/), or a .tar/.tar.gz of one: then OUT gets one "
                                   "store per split (OUT/train, OUT/test), the layout dataset.store reads")
    bs.add_argument("out", help="the store folder to create (must not exist, unless --overwrite)")
    bs.add_argument("--resolution", type=int, required=True, help="side of the stored square images in pixels")
    bs.add_argument("--resize", choices=["center_crop", "stretch"], default="center_crop",
                    help="center_crop (default): shorter side to R, then the central R x R crop; stretch: R x R "
                         "ignoring the aspect ratio")
    bs.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 = grayscale, 3 = RGB (default)")
    bs.add_argument("--workers", type=int, default=0, help="decoding processes (0 = this process)")
    bs.add_argument("--max-per-class", type=int, default=None, help="keep the first N images of each class")
    bs.add_argument("--overwrite", action="store_true", help="replace a store already at OUT")
    bs.set_defaults(func=cmd_build_store)
    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=["models", "datasets", "graph_datasets", "gnns", "synthesizers", "evaluators",
                                     "augmentations", "importers", "exporters"])
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # (The CUDA_HOME warning of a CPU compile is silenced where the library compiles: ddistill.utils.perf.compiled.)
    parser = build_parser()
    # key=value overrides may come before or after options (``evaluate S --evaluator nas evaluator.x=1``).
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        from .plugins import load_plugins

        load_plugins()
        args.func(args)
        # Under torchrun every rank gets here when the command succeeded on all of them: leave the process group
        # now rather than at interpreter exit (where gloo can abort a finished run; see shutdown_distributed).
        from .distributed import shutdown_distributed

        shutdown_distributed()
    except BrokenPipeError:
        # The reader went away (``ddistill show ... | head``): not an error; silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except FloatingPointError as e:
        print(f"ddistill: error: {e} (in a new run: another name= or --overwrite; --resume keeps the recorded "
              f"settings)", file=sys.stderr)
        return 2
    except (KeyError, ValueError, OSError) as e:  # ConfigError, RunDirError, file errors, disk full, permissions
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
        print(f"ddistill: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddistill: interrupted; --resume continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def entry() -> NoReturn:
    """The ``ddistill`` command and ``python -m ddistill.cli``: :func:`main`, then the exit a torchrun rank needs
    (:func:`ddistill.distributed.exit_process`). Code that calls :func:`main` itself keeps its process."""
    from .distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    entry()
