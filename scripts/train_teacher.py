"""Trains the self-supervised (Barlow Twins) teacher of a KRR-ST run.

    python scripts/train_teacher.py CONFIG [key=value ...] [--resume] [--out PATH] [--no-probe] [--overwrite]

CONFIG is a KRR-ST run config (``scripts/configs/krr_st/*.yaml``), so one file describes the whole experiment:

- ``dataset``: the source images (labels are read only by the linear probe that reports the teacher's quality);
- ``synthesizer.teacher_training``: the recipe (:class:`synthesizers.krr_st.teacher.BarlowTwinsConfig`);
- ``synthesizer.teacher``: where the teacher file goes (``--out`` overrides it);
- ``seed`` / ``device``.

Writes ``teacher.pt`` (``ddistill.teacher`` format) and ``teacher.json`` beside it with the linear-probe accuracy.
Training checkpoints every ``teacher_training.checkpoint_every`` epochs to ``<teacher>.ckpt``; ``--resume`` continues
an interrupted run exactly (the checkpoint is removed once the teacher file is written). Example (CPU budget)::

    python scripts/train_teacher.py scripts/configs/krr_st/cifar10_cpu.yaml synthesizer.teacher_training.epochs=5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddistill import config as cfgmod  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_teacher", description="Train the Barlow Twins teacher of a KRR-ST run.")
    p.add_argument("config", help="KRR-ST run config (YAML)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. synthesizer.teacher_training.epochs=10")
    p.add_argument("--resume", action="store_true", help="continue from the training checkpoint")
    p.add_argument("--out", default=None, help="teacher file (default: synthesizer.teacher)")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    p.add_argument("--overwrite", action="store_true", help="replace an existing teacher file")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Trains, probes and saves the teacher; returns the summary written to ``teacher.json``."""
    from ddistill.cli import RunConfig
    from ddistill.data import load_data
    from ddistill.io import write_json
    from ddistill.utils.probe import linear_probe
    from ddistill.utils.seed import derive_seed, make_generator
    from synthesizers import SYNTHESIZERS
    from synthesizers.krr_st.teacher import save_teacher, train_teacher

    run_cfg = cfgmod.from_dict(RunConfig, cfgmod.load(args.config, args.overrides), where="config")
    name = dict(run_cfg.synthesizer or {}).get("name")
    if name != "krr_st":
        raise cfgmod.ConfigError(f"{args.config}: synthesizer.name is {name!r}; train_teacher reads a krr_st config")
    _, synth_cfg = cfgmod.build_component(SYNTHESIZERS, run_cfg.synthesizer, "synthesizer")
    tcfg = synth_cfg.teacher_training
    out = Path(args.out or synth_cfg.teacher or "")
    if not str(out) or out == Path("."):
        raise cfgmod.ConfigError("no output path: set synthesizer.teacher=<path>/teacher.pt or pass --out")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it or --out to write elsewhere")
    ckpt = out.with_name(out.name + ".ckpt")
    if ckpt.exists() and not args.resume:
        raise FileExistsError(f"{ckpt} holds an interrupted training run; pass --resume to continue it or delete it")

    real, test = load_data(run_cfg.dataset, run_cfg.device)
    print(f"training a Barlow Twins {tcfg.model} teacher on {real.info.name} ({real.x.shape[0]} images) -> {out}",
          flush=True)
    start = time.perf_counter()
    teacher = train_teacher(real, tcfg, seed=run_cfg.seed, device=run_cfg.device, checkpoint=ckpt,
                            resume=args.resume, progress=True,
                            on_epoch_end=lambda e, loss: print(f"epoch {e + 1}: loss {loss:.4f}", flush=True))
    seconds = time.perf_counter() - start

    accuracy = None
    if not args.no_probe:
        print("linear probe on frozen teacher features ...", flush=True)
        accuracy = linear_probe(teacher, (real.x, real.y), (real.encoding.encode(test.x), test.y),
                                config=tcfg.probe, num_classes=real.num_classes, device=run_cfg.device,
                                generator=make_generator(derive_seed(run_cfg.seed, 99)), progress=True)
        print(f"linear probe accuracy: {accuracy:.2f} %", flush=True)
    recipe = {**cfgmod.to_dict(tcfg), "seed": run_cfg.seed}
    save_teacher(out, teacher, model=tcfg.model, model_kwargs=tcfg.model_kwargs, encoding=real.encoding,
                 dataset=real.info.name, config=recipe, linear_probe_accuracy=accuracy)
    summary = {"teacher": str(out), "dataset": real.info.name, "model": tcfg.model, "seed": run_cfg.seed,
               "linear_probe_accuracy": accuracy, "train_seconds": seconds, "config": recipe}
    write_json(out.with_suffix(".json"), summary)
    if ckpt.exists():
        ckpt.unlink()  # the teacher file is the result; the checkpoint is only for interrupted runs
    print(f"wrote {out} and {out.with_suffix('.json')}", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (cfgmod.ConfigError, KeyError, ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"train_teacher: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
