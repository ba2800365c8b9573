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
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddistill import config as cfgmod  # noqa: E402
from synthesizers.mtt.expert_file import merge_expert_files  # noqa: E402
from synthesizers.mtt.experts import ExpertRunConfig, train_expert_run  # noqa: E402


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


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Trains this shard's experts. Returns ``{"trained": [...], "skipped": [...], "files": [...]}``."""
    run = ExpertRunConfig.load(args.config, args.overrides)
    shard, shards = parse_shard(args.shard)
    return train_expert_run(run, args.out or Path("runs") / "experts" / run.name, shard=shard, shards=shards)


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
