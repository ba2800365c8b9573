"""``ddistill`` command line: distill, evaluate, show, list.

This module sits at the top of the dependency graph (scripts -> {synthesizers, evaluators} -> ddistill):
it is the only part of the ``ddistill`` package that imports ``synthesizers``/``evaluators``, and it
does so inside the commands, so ``import ddistill`` never pulls them in.

    ddistill distill CONFIG [key=value ...] [--resume]
    ddistill evaluate SYNSET [key=value ...] [--pool cross]
    ddistill show SYNSET [--grid out.png]
    ddistill list models|datasets|synthesizers|evaluators|augmentations
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import config as cfgmod


@dataclass
class DataConfig:
    """Which real data to load.

    Args:
        name: dataset registry name (``ddistill list datasets``).
        root: folder (or archive for imagefolder) holding the files.
        download: let torchvision download (needs internet).
        zca: ZCA-whiten (fitted on the whole training split, MTT's recipe); replaces mean/std.
        zca_eps: ZCA regularisation (0.1 in MTT).
        kwargs: loader-specific options (e.g. ``{alias: cifar10_jpeg, mean: [...], std: [...]}``).
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False
    zca: bool = False
    zca_eps: float = 0.1
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """A distillation run.

    Args:
        name: run name; the run directory is ``out_dir/name``.
        seed: seed of every generator in the run.
        device: "cpu", "cuda", "cuda:1", ...
        out_dir: parent of run directories.
        dataset: the real data.
        synthesizer: ``{name: <registry name>, ...its Config fields}``.
        evaluator: ``{name: <registry name>, ...its Config fields}`` run on the final set; null = none.
        eval_every: also evaluate every this many steps (gradient synthesizers; 0 = only at the end).
        grid: write ``grid.png`` of the final set.
    """

    name: str = "run"
    seed: int = 0
    device: str = "cpu"
    out_dir: str = "runs"
    dataset: DataConfig = field(default_factory=DataConfig)
    synthesizer: dict[str, Any] = field(default_factory=lambda: {"name": "dm"})
    evaluator: dict[str, Any] | None = None
    eval_every: int = 0
    grid: bool = True


def _component(registry: Any, spec: dict[str, Any] | None, kind: str) -> tuple[Any, Any]:
    """(class, typed config) from ``{name: ..., **fields}``."""
    spec = dict(spec or {})
    if "name" not in spec:
        raise cfgmod.ConfigError(f"{kind} needs a name; choose from {registry.names()}")
    cls = registry.get(spec.pop("name"))
    preset = spec.pop("preset", None)
    if preset is not None:
        return cls, cls.config_from_preset(preset, **spec)
    return cls, cfgmod.from_dict(cls.Config, spec, where=kind)


def _is_graph(name: str) -> bool:
    from .data.graph import GRAPH_DATASETS

    return name in GRAPH_DATASETS


def _load_data(data: DataConfig, device: str):
    """(training data, test data) for the run: (RealData, ImageData) for images; for graph datasets the
    whole GraphDataset (train/val/test) twice, as Mirage and the graph evaluator take it."""
    if _is_graph(data.name):
        from .data.graph import load_graph_dataset

        graphs = load_graph_dataset(data.name, data.root, download=data.download, **data.kwargs)
        return graphs, graphs
    from .data import load_real

    return load_real(data.name, root=data.root, download=data.download, zca=data.zca, zca_eps=data.zca_eps,
                     device=device, **data.kwargs)


# ------------------------------------------------------------------------------------------------
def cmd_distill(args: argparse.Namespace) -> dict[str, Any]:
    from evaluators import EVALUATORS
    from synthesizers import SYNTHESIZERS, GradientSynthesizer

    from .utils.io import JSONLLogger, git_sha, machine_info, write_json

    run = cfgmod.from_dict(RunConfig, cfgmod.load(args.config, args.overrides), where="config")
    synth_cls, synth_cfg = _component(SYNTHESIZERS, run.synthesizer, "synthesizer")
    evaluator = None
    if run.evaluator is not None:
        eval_cls, eval_cfg = _component(EVALUATORS, run.evaluator, "evaluator")
        evaluator = eval_cls(eval_cfg, device=run.device, seed=run.seed)
    run_dir = Path(run.out_dir) / run.name
    ckpt = run_dir / "checkpoint.pt"
    if run_dir.exists() and ckpt.exists() and not args.resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another name=")
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = cfgmod.to_dict(run)
    resolved["synthesizer"] = {"name": synth_cls.name, **cfgmod.to_dict(synth_cfg)}
    if evaluator is not None:
        resolved["evaluator"] = {"name": run.evaluator["name"], **cfgmod.to_dict(evaluator.config)}
    cfgmod.dump(resolved, run_dir / "config.yaml")
    logger = JSONLLogger(run_dir / "log.jsonl")

    real, test = _load_data(run.dataset, run.device)
    synth = synth_cls(synth_cfg, device=run.device, seed=run.seed)
    print(f"distilling {run.dataset.name} with {synth_cls.name} into {run_dir}", flush=True)

    curve: list[dict[str, Any]] = []

    def log_step(s: Any, step: int, logs: dict[str, float]) -> None:
        if step % 10 == 0 or step == getattr(synth_cfg, "iterations", step):
            logger.log(step=step, **logs)
        if evaluator is not None and run.eval_every and step % run.eval_every == 0 and step < synth_cfg.iterations:
            res = evaluator.evaluate(s.synthetic_set(real), test)
            curve.append({"step": step, "mean": res.mean, "std": res.std})
            logger.log(step=step, eval=res.to_dict())
            print(f"step {step}: {res}", flush=True)

    start = time.perf_counter()
    if isinstance(synth, GradientSynthesizer):
        synset = synth.fit(real, callbacks=[log_step], checkpoint=ckpt, resume=args.resume)
    else:
        synset = synth.fit(real)
    seconds = time.perf_counter() - start
    synset.meta.update(data=cfgmod.to_dict(run.dataset), git=git_sha(Path(__file__).parent), run=run.name)
    synset.save(run_dir / "synset.pt")
    if run.grid and synset.x.dim() == 4:
        synset.save_grid(run_dir / "grid.png")
    results: dict[str, Any] = {"run": run.name, "synthesizer": synth_cls.name, "dataset": run.dataset.name,
                               "ipc": synset.meta.get("ipc"), "distill_seconds": seconds, "seed": run.seed,
                               "machine": machine_info()}
    if evaluator is not None:
        res = evaluator.evaluate(synset, test)
        results["evaluation"] = res.to_dict()
        if curve:
            results["curve"] = curve
        logger.log(step=synset.meta.get("step"), eval=res.to_dict(), final=True)
        print(f"final: {res}", flush=True)
    write_json(run_dir / "results.json", results)
    print(f"wrote {run_dir / 'synset.pt'}" + (f", {run_dir / 'grid.png'}" if run.grid else ""), flush=True)
    return results


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from evaluators import EVALUATORS, ClassifierConfig, evaluate_pool

    from .models import EVAL_POOLS
    from .synset import SyntheticSet
    from .utils.io import write_json

    synset = SyntheticSet.load(args.synset)
    over = cfgmod.load(None, args.overrides)
    unknown = sorted(set(over) - {"dataset", "evaluator", "seed", "device"})
    if unknown:
        raise cfgmod.ConfigError(f"unknown override section(s) {unknown}; use dataset.*, evaluator.*, seed=, device=")
    data = cfgmod.from_dict(DataConfig, {**(synset.meta.get("data") or {"name": synset.meta["dataset"]}),
                                          **over.get("dataset", {})}, where="dataset")
    device, seed = str(over.get("device", "cpu")), int(over.get("seed", 0))
    espec = {"name": args.evaluator, **over.get("evaluator", {})}
    eval_cls, eval_cfg = _component(EVALUATORS, espec, "evaluator")
    from .data import get_dataset

    if _is_graph(data.name):
        test = _load_data(data, device)[1]
    else:
        test = get_dataset(data.name, root=data.root, split="test", download=data.download, **data.kwargs)
    out: dict[str, Any] = {"synset": str(args.synset), "evaluator": espec["name"], "seed": seed}
    if args.pool:
        if args.pool not in EVAL_POOLS:
            raise KeyError(f"unknown pool '{args.pool}'; choose from {sorted(EVAL_POOLS)}")
        if not isinstance(eval_cfg, ClassifierConfig):
            raise ValueError("--pool works with the classifier evaluator")
        results = evaluate_pool(synset, test, EVAL_POOLS[args.pool], eval_cfg, device=device, seed=seed)
        out["pool"] = {name: r.to_dict() for name, r in results.items()}
        for name, r in results.items():
            print(f"{name:12s} {r}", flush=True)
    else:
        extra = {}
        if getattr(eval_cls, "needs_real", False):  # e.g. NAS ranks architectures on real data too
            from .data import Encoding, RealData

            train = get_dataset(data.name, root=data.root, split="train", download=data.download, **data.kwargs)
            extra["real"] = RealData.from_images(train, Encoding.from_meta(synset.meta["encoding"], synset.tensors),
                                                 device)
        res = eval_cls(eval_cfg, device=device, seed=seed).evaluate(synset, test, **extra)
        out["evaluation"] = res.to_dict()
        print(res, flush=True)
    target = Path(args.out) if args.out else Path(args.synset).with_name("results_eval.json")
    write_json(target, out)
    print(f"wrote {target}")
    return out


def cmd_show(args: argparse.Namespace) -> None:
    from .synset import SyntheticSet

    synset = SyntheticSet.load(args.synset)
    print(synset.describe())
    if args.grid and "x" in synset.tensors and synset.x.dim() == 4:
        print(f"wrote {synset.save_grid(args.grid)}")


def cmd_list(args: argparse.Namespace) -> None:
    from .augment import AUGMENTS
    from .data import DATASETS
    from .models import MODELS

    from .data.graph import GRAPH_DATASETS
    from .models.gnn import GNN_MODELS

    regs = {"models": MODELS, "datasets": DATASETS, "augmentations": AUGMENTS, "graph_datasets": GRAPH_DATASETS,
            "gnns": GNN_MODELS}
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
    d.set_defaults(func=cmd_distill)
    e = sub.add_parser("evaluate", help="train fresh models on a synthetic set and test them")
    e.add_argument("synset", help="path of a synset.pt")
    e.add_argument("overrides", nargs="*", help="evaluator.* / dataset.* / seed= / device= overrides")
    e.add_argument("--evaluator", default="classifier", help="evaluator registry name")
    e.add_argument("--pool", default=None, help="evaluate with every model of an EVAL_POOLS entry (e.g. cross)")
    e.add_argument("--out", default=None, help="results JSON (default: results_eval.json beside the set)")
    e.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("show", help="print a synthetic set's metadata and write an image grid")
    s.add_argument("synset")
    s.add_argument("--grid", default=None, help="PNG path for the image grid")
    s.set_defaults(func=cmd_show)
    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=["models", "datasets", "graph_datasets", "gnns", "synthesizers", "evaluators",
                                     "augmentations"])
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
        args.func(args)
    except (cfgmod.ConfigError, KeyError, ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ddistill: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
