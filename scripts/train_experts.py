"""Train MTT/AST expert trajectories, sharded over processes or machines, and merge the shards.

    python scripts/train_experts.py CONFIG [key=value ...] [--shard i/n] [--out DIR]
    torchrun --nproc_per_node 4 scripts/train_experts.py CONFIG --out DIR      # shard = RANK / WORLD_SIZE
    python scripts/train_experts.py merge DIR --out FILE

The run's experts are grouped into files of ``experts_per_file`` consecutive indices
(``experts_00000-00009.pt`` ...); shard k of n trains the files j with j % n == k. Expert i's randomness
depends only on (seed, i), so the files are the same however the run is sharded, and ``merge`` writes exactly the
file of an unsharded run with ``experts_per_file: null``. A shard resumes where it stopped: each file is rewritten
atomically after every expert and the experts already in it are skipped. Distillation reads the folder directly
(``synthesizer.experts: DIR``), one file at a time.

Config (YAML; see scripts/configs/experts/)::

    name: cifar10_zca_mtt
    seed: 0
    device: cpu
    dataset: {name: ..., root: ..., zca: true, kwargs: {...}}
    num_experts: 100
    experts_per_file: 10
    storage_dtype: float32        # or bfloat16
    experts: {preset: mtt, model: convnet, epochs: 50, ...}   # ExpertConfig fields, optional preset
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddistill import config as cfgmod  # noqa: E402
from ddistill.cli import DataConfig  # noqa: E402
from ddistill.trajectories import (  # noqa: E402
    STORAGE_DTYPES,
    ExpertConfig,
    ExpertFile,
    expert_config_from_preset,
    merge_expert_files,
    train_expert,
    trajectory_smoothness,
)


@dataclass
class ExpertRunConfig:
    """An expert-training run.

    Args:
        name: run name; the default output folder is ``runs/experts/<name>``.
        seed: run seed; expert i is a function of (seed, i) only.
        device: "cpu", "cuda", ... ("cuda" becomes "cuda:$LOCAL_RANK" under torchrun).
        dataset: the real training data (set ``zca`` as the distillation will).
        num_experts: experts in the whole run (MTT: 100).
        experts_per_file: consecutive experts per file (MTT groups 10); null = one file for the run.
        storage_dtype: "float32" or "bfloat16" snapshots.
        evaluate: record each expert's final test accuracy.
        experts: ExpertConfig fields, with an optional ``preset`` ("mtt", "ast", "ast_optim").
        progress: tqdm bars.
    """

    name: str = "experts"
    seed: int = 0
    device: str = "cpu"
    dataset: DataConfig = field(default_factory=DataConfig)
    num_experts: int = 100
    experts_per_file: int | None = 10
    storage_dtype: str = "float32"
    evaluate: bool = True
    experts: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise cfgmod.ConfigError(f"num_experts must be >= 1, got {self.num_experts}")
        if self.experts_per_file is not None and self.experts_per_file < 1:
            raise cfgmod.ConfigError(f"experts_per_file must be >= 1 or null, got {self.experts_per_file}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise cfgmod.ConfigError(f"unknown storage_dtype '{self.storage_dtype}'; "
                                     f"choose from {sorted(STORAGE_DTYPES)}")

    def expert_config(self) -> ExpertConfig:
        spec = dict(self.experts)
        return expert_config_from_preset(spec.pop("preset", None), **spec)

    def file_groups(self) -> list[list[int]]:
        """Expert indices of each file of the run."""
        size = self.experts_per_file or self.num_experts
        return [list(range(s, min(s + size, self.num_experts))) for s in range(0, self.num_experts, size)]


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExpertRunConfig:
    """Parses an expert-run YAML (plus ``a.b=c`` overrides) strictly; the expert block is validated too."""
    run = cfgmod.from_dict(ExpertRunConfig, cfgmod.load(path, list(overrides)), where=str(path or "config"))
    run.expert_config()
    return run


def file_name(indices: list[int]) -> str:
    return f"experts_{indices[0]:05d}-{indices[-1]:05d}.pt"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); None -> torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise cfgmod.ConfigError(f"--shard must look like i/n (e.g. 0/4), got '{text}'") from None
    if not 0 <= i < n:
        raise cfgmod.ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _record_config(out: Path, resolved: dict[str, Any]) -> None:
    """Writes ``out/config.yaml``; a folder already holding another run's experts is an error."""
    path = out / "config.yaml"
    text = yaml.safe_dump(resolved, sort_keys=False)
    if path.exists():
        old = yaml.safe_load(path.read_text())
        keys = ("seed", "dataset", "num_experts", "experts_per_file", "storage_dtype", "experts")
        differ = [k for k in keys if old.get(k) != resolved.get(k)]
        if differ:
            raise FileExistsError(f"{out} holds experts of a different run (config differs in {differ}); "
                                  f"choose another --out")
        return
    _atomic_write_text(path, text)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Trains this shard's experts. Returns ``{"trained": [...], "skipped": [...], "files": [...]}``."""
    from ddistill.data import load_real
    from ddistill.utils.io import JSONLLogger
    from ddistill.utils.train import accuracy

    run = load_config(args.config, args.overrides)
    cfg = run.expert_config()
    shard, shards = parse_shard(args.shard)
    device = run.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    out = Path(args.out or Path("runs") / "experts" / run.name)
    out.mkdir(parents=True, exist_ok=True)
    resolved = cfgmod.to_dict(run)
    resolved["experts"] = cfg.to_dict()
    _record_config(out, resolved)
    groups = [g for j, g in enumerate(run.file_groups()) if j % shards == shard]
    summary: dict[str, Any] = {"trained": [], "skipped": [], "files": [str(out / file_name(g)) for g in groups]}
    if not groups:
        print(f"shard {shard}/{shards}: no files to train ({len(run.file_groups())} files in the run)", flush=True)
        return summary

    d = run.dataset
    real, test = load_real(d.name, root=d.root, download=d.download, zca=d.zca, zca_eps=d.zca_eps, device=device,
                           **d.kwargs)
    x_test = real.encoding.encode(test.x.to(device)) if run.evaluate else None
    y_test = test.y.to(device) if run.evaluate else None
    logger = JSONLLogger(out / "log.jsonl")
    todo = sum(len(g) for g in groups)
    print(f"shard {shard}/{shards}: {todo} experts of {run.num_experts} ({cfg.preset}, {cfg.model}, {cfg.epochs} "
          f"epochs) on {real.info.name} into {out}", flush=True)
    bar = tqdm(total=todo, desc=f"experts shard {shard}/{shards}", disable=not run.progress)
    for group in groups:
        path = out / file_name(group)
        blank = ExpertFile.for_run(real, cfg, run.seed, storage_dtype=run.storage_dtype)
        if path.exists():
            current = ExpertFile.load(path)
            if current.header() != blank.header():
                raise FileExistsError(f"{path} holds experts of a different run; choose another --out")
        else:
            current = blank
        for i in group:
            if i in current.expert_indices:
                summary["skipped"].append(i)
                bar.update(1)
                continue
            snaps = train_expert(real, cfg, index=i, seed=run.seed, device=device,
                                 progress=f"expert {i}" if run.progress else False)
            acc = None
            if run.evaluate:
                model = current.build_model(snaps[-1], device=device)
                acc = 100.0 * accuracy(model, x_test, y_test)
            current.add(i, snaps, acc)
            current.save(path)  # atomic: an interruption loses at most the expert in progress
            change = trajectory_smoothness(snaps)
            logger.log(expert=i, test_accuracy=acc, param_change=change.tolist(), shard=f"{shard}/{shards}")
            summary["trained"].append(i)
            bar.update(1)
            bar.set_postfix(acc=f"{acc:.1f}" if acc is not None else "-", change=f"{change.mean():.3g}")
    bar.close()
    print(f"shard {shard}/{shards}: trained {len(summary['trained'])}, already present {len(summary['skipped'])}",
          flush=True)
    return summary


def merge(args: argparse.Namespace) -> Path:
    folder = Path(args.folder)
    paths = sorted(folder.glob("experts_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no experts_*.pt files in {folder}")
    target = merge_expert_files(paths, args.out, require_complete=not args.allow_missing)
    print(f"merged {len(paths)} files into {target}", flush=True)
    return target


def build_parser(merge_mode: bool) -> argparse.ArgumentParser:
    if merge_mode:
        p = argparse.ArgumentParser(prog="train_experts.py merge", description="merge expert files into one")
        p.add_argument("folder", help="folder of experts_*.pt files (the --out of the shards)")
        p.add_argument("--out", required=True, help="merged file")
        p.add_argument("--allow-missing", action="store_true", help="merge even if some experts are missing")
        return p
    p = argparse.ArgumentParser(prog="train_experts.py", description="train MTT/AST expert trajectories")
    p.add_argument("config", help="YAML expert-run config (scripts/configs/experts/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. num_experts=10 experts.epochs=15")
    p.add_argument("--shard", default=None,
                   help="i/n: train the files of shard i of n (default: torchrun's RANK/WORLD_SIZE, else 0/1)")
    p.add_argument("--out", default=None, help="output folder (default runs/experts/<name>)")
    return p


def main(argv: Sequence[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    merge_mode = bool(argv) and argv[0] == "merge"
    args = build_parser(merge_mode).parse_args(argv[1:] if merge_mode else argv)
    return merge(args) if merge_mode else train(args)


if __name__ == "__main__":
    try:
        main()
    except (cfgmod.ConfigError, KeyError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
