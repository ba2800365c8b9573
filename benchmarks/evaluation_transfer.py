"""KRR-ST transfer re-scored with the transfer evaluator's controls on a leak-free CIFAR-10 class split (issue #14).

What changed against ``krr_st_transfer.py`` (whose committed comparison pre-trained for 50 epochs, so the student never
fitted its targets, and whose "random" row learned the target task's own labels):

- **Leak-free split.** KRR-ST distils from CIFAR-10 classes 0-4 only (``DataSpec.classes``; labels unused) with the
  committed Barlow Twins teacher (``benchmarks/results/sets/krr_st_teacher_cifar10.pt``, trained on 20,000 unlabelled
  CIFAR-10 train images of *all* classes: it never saw a label, but it saw images of the target classes). The
  transfer target is classes 5-9 (the evaluator's default for a class-subset source): a class-balanced labelled subset
  of their train split (``--target-per-class``) for fine-tuning, their whole test split for scoring.
- **Every control, paired.** One evaluator call per run (evaluator seed ``--seed + run``) computes all rows on the
  same seeds: the KRR-ST set, ``random_subset`` (random real *source* images with *source* labels, DC recipe),
  ``random_teacher_targets`` (the same images with the teacher's representations as targets: KRR-ST's
  initialisation), ``no_pretraining`` and ``teacher_probe`` (linear probe of the teacher's features on the target:
  the ceiling). Every row fine-tunes with the same head initialisation and data order.
- **Pre-training that fits.** ``--stage calibrate`` picks the pre-training epochs before any transfer score is seen:
  the smallest multiple of ``--calib-step`` at which the set's regression pre-training reaches train R² >=
  ``--fit-r2`` (one training at the constant-rate regression recipe, R² measured along the way; the seeds of the
  evaluation's first run), then the smallest tried count (from that one, x1.5 per try) at which the random-subset
  label pre-training reaches ``--fit-accuracy`` % train accuracy (through the evaluator itself, fine-tuning 1 step).
  The evaluation then reports the fit of every row and run (train and held-out R² / accuracy); a row that does not
  fit is flagged in the table, not dropped.
- **Issue #15 fixes (KRR-ST's own settings).** The width-32 pool net has p + 1 = 513 features, close to N, where the
  official ridge 1e-6 tr(K_ss) does not regularise: ``--ridge auto`` (default) picks it from ``--ridge-grid`` by the
  held-out KRR loss at initialisation on ``--heldout-real`` source training images that the distillation never uses;
  the held-out KRR loss and the images' movement are logged every ``--diagnostic-every`` steps and recorded in the
  set (``meta["ridge"]``, ``meta["diagnostics"]``) and in ``krr_st.json``. ``--lr-images-units raw`` (default) reads
  ``--lr`` for the images in [0, 1] pixels as the official code does (the set is stored normalised). Regression
  pre-training runs in float32 (``--pretrain-precision auto``, the evaluator's default), the calibration too. The
  official behaviour: ``--ridge 1e-6 --heldout-real 0 --lr-images-units x_space``. A work directory made with other
  KRR-ST settings is refused (use a fresh ``--work``).
- Optional ``--leak-row`` (``--stage leak``): a random subset of the *target* classes with their labels, the old
  comparison's leak at the new budget, paired with the other rows (same evaluator seeds).

Stages (``--stage``) cache their outputs in ``--work``, so a crash loses no finished stage and a re-run resumes:
``init`` (the KRR-ST set before any outer step), ``distill`` (KRR-ST until ``--iterations`` outer steps or
``--distill-minutes`` of wall time, whichever comes first; checkpointed), ``check`` (the KRR-ST loss of the initial and
the distilled set on held-out source test images, ``krr_st_transfer.stage_check``), ``calibrate`` (``--part set``,
``subset`` -- it needs only the initial set -- or ``choose``), ``eval`` (one cached file per run; ``--only-runs``),
``leak``, ``report``. ``all`` runs them as subprocesses of this script, up to ``--jobs`` at a time (the distillation
chain beside the random-subset calibration, then the runs), and the report. The committed results (the defaults
above: ridge auto, held-out diagnostics, image lr in raw pixels, float32 regression pre-training; the report names
the command from the work directory's first launch)::

    python benchmarks/evaluation_transfer.py --stage all --threads 1 --jobs 2 --leak-row \
        --work runs/evaluation_transfer_issue15
    python benchmarks/evaluation_transfer.py --stage all --threads 1 --jobs 2 --leak-row --target-per-class 50 \
        --work runs/evaluation_transfer_issue15_t50 --out benchmarks/results/evaluation_transfer_t50

    python benchmarks/evaluation_transfer.py --stage all --threads 1 --jobs 1 --leak-row --target-per-class 10 \
        --work runs/evaluation_transfer_issue15_t10 --out benchmarks/results/evaluation_transfer_t10

(the second and third runs' work directories started with copies of the first's teacher, KRR-ST set and calibration
files, none of which depends on the target; their own stages then found them cached. The 10-per-class run was chosen,
before any of its scores, as the few-label regime where a teacher's linear probe usually overtakes training from
scratch; with this teacher it does not.) The same comparison with a teacher whose ceiling clears scratch (a diagnostic,
not KRR-ST's label-free setting: ``benchmarks/transfer_teacher_supervised.py``, a supervised teacher of the source
classes), at 10 and 500 labelled target images per class::

    python benchmarks/evaluation_transfer.py --stage all --threads 1 --jobs 1 \
        --teacher benchmarks/results/sets/krr_st_teacher_supervised_cifar10_src0-4.pt --target-per-class 10 \
        --work runs/evaluation_transfer_supteacher_t10 --out benchmarks/results/evaluation_transfer_supervised_teacher_t10
    python benchmarks/evaluation_transfer.py --stage all --threads 1 --jobs 1 \
        --teacher benchmarks/results/sets/krr_st_teacher_supervised_cifar10_src0-4.pt \
        --work runs/evaluation_transfer_supteacher --out benchmarks/results/evaluation_transfer_supervised_teacher

(the 500-per-class work directory started with copies of the 10-per-class one's teacher, set and calibration files.)

The official KRR-ST settings (``--ridge 1e-6 --heldout-real 0 --lr-images-units x_space``) need a work directory of
their own: a cached stage made with other KRR-ST settings is refused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # krr_st_transfer, when run as a script

ROWS = ("set", "random_subset", "random_teacher_targets", "no_pretraining", "teacher_probe")
ROW_LABELS = {
    "set": "KRR-ST set (MSE to its learned targets)",
    "random_subset": "random source subset, source labels (CE + DSA)",
    "random_teacher_targets": "random source images + teacher targets (MSE; KRR-ST's init)",
    "no_pretraining": "no pre-training",
    "teacher_probe": "teacher linear probe (ceiling)",
    "leak": "random *target* subset, target labels (CE + DSA; the old leak)",
}
PAPER = {"teacher": "ResNet-18 Barlow Twins on the whole source train split",
         "krr_st": "N = 1000 (CIFAR-100), ConvNet-128-256-512 pool, M = 10, T = 1000, 160,000 outer steps",
         "pretrain_epochs": 1000, "finetune_iterations": 10000, "finetune_data": "the whole target train split",
         "runs": 3}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=["init", "distill", "check", "calibrate", "eval", "leak", "report", "all"],
                   default="all")
    p.add_argument("--part", choices=["set", "subset", "choose", "all"], default="all", help="for --stage calibrate")
    p.add_argument("--only-runs", type=int, nargs="*", default=None, help="for --stage eval/leak: these runs only")
    p.add_argument("--jobs", type=int, default=1, help="--stage all: stage processes at a time")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz", help="CIFAR-10 JPEG mirror archive")
    p.add_argument("--work", default="runs/evaluation_transfer", help="stage cache")
    p.add_argument("--out", default="benchmarks/results/evaluation_transfer", help="writes OUT.md and OUT.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--teacher", default="benchmarks/results/sets/krr_st_teacher_cifar10.pt")
    p.add_argument("--source-classes", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="CIFAR-10 classes KRR-ST distils from; the target is the other classes")
    # network shared by the KRR-ST pool and the transfer evaluation (the teacher's backbone)
    p.add_argument("--model", default="convnet")
    p.add_argument("--model-kwargs", default='{"width": 32, "norm": "batchnorm"}')
    # KRR-ST budget (on a lightly loaded shared CPU: ~4.5 min pool initialisation + ~3.6 s per outer step)
    p.add_argument("--num-images", type=int, default=250)
    p.add_argument("--iterations", type=int, default=175, help="outer steps (also the horizon of the lr decay)")
    p.add_argument("--distill-minutes", type=float, default=15.0,
                   help="stop the distillation after this much wall time (incl. the pool initialisation)")
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--num-models", type=int, default=4)
    p.add_argument("--online-iteration", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-images-units", default="raw", choices=["x_space", "raw", "encoded"],
                   help="units of --lr for the images (raw = [0, 1] pixels, the official code's)")
    p.add_argument("--ridge", default="auto", help="a number (lambda = ridge * tr(K_ss); official 1e-6) or auto")
    p.add_argument("--ridge-grid", type=float, nargs="+", default=None, help="candidates of --ridge auto")
    p.add_argument("--heldout-real", type=int, default=1024,
                   help="source training images held out of the distillation for the held-out KRR loss")
    p.add_argument("--diagnostic-every", type=int, default=25, help="steps between KRR-ST diagnostics")
    p.add_argument("--pretrain-precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="evaluator.pretrain_precision (auto: fp32 for regression targets)")
    # pre-training epochs: given, or calibrated on the fit
    p.add_argument("--pretrain-epochs", type=int, default=0, help="0 = calibrate (--stage calibrate)")
    p.add_argument("--fit-r2", type=float, default=0.8, help="calibration target: train R² of the set's pre-training")
    p.add_argument("--fit-accuracy", type=float, default=90.0,
                   help="calibration target: train accuracy (%%) of the random-subset pre-training")
    p.add_argument("--calib-step", type=int, default=25, help="the set's R² is read every this many epochs")
    p.add_argument("--calib-start", type=int, default=150,
                   help="first epoch count tried for the random subset (then x1.5, rounded up to --calib-step)")
    p.add_argument("--max-pretrain-epochs", type=int, default=400, help="the most the CPU budget affords")
    p.add_argument("--min-fit-r2", type=float, default=0.5, help="evaluator flag: R² below this = did not fit")
    p.add_argument("--min-fit-accuracy", type=float, default=90.0, help="evaluator flag for label pre-training")
    # transfer budget
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--finetune-iterations", type=int, default=200)
    p.add_argument("--target-per-class", type=int, default=500)
    p.add_argument("--probe-iterations", type=int, default=2000)
    p.add_argument("--no-linear-probe", action="store_true", help="skip the frozen-feature linear probes")
    p.add_argument("--leak-row", action="store_true", help="--stage all also runs --stage leak")
    return p.parse_args()


# ------------------------------------------------------------------------------------------------------------------
def _model_kwargs(args: argparse.Namespace) -> dict:
    return json.loads(args.model_kwargs)


def source_spec(args: argparse.Namespace):
    from ddistill.data import DataSpec

    return DataSpec("cifar10_jpeg", args.data, classes=list(args.source_classes))


def shuffled(data, seed: int):
    """``data`` in a seeded random order. The folder loader returns a test split sorted by class, and the evaluator's
    held-out fit reads its first ``fit_heldout`` images: unshuffled, they would all be of one class."""
    import torch

    from ddistill.utils.seed import derive_seed, make_generator

    perm = torch.randperm(int(data.x.shape[0]), generator=make_generator(derive_seed(seed, 7004)))
    return data.subset(perm)


def balanced_subset(data, per_class: int, seed: int):
    """``per_class`` images of every class of ``data`` (uint8 ImageData), drawn with their own generator
    (``krr_st_transfer._target``'s draw, applied to the target classes)."""
    import torch

    from ddistill.utils.seed import derive_seed, make_generator

    gen = make_generator(derive_seed(seed, 7001))
    idx = []
    for c in range(int(data.info.num_classes)):
        members = torch.nonzero(data.y == c).flatten()
        if members.numel() < per_class:
            raise ValueError(f"class {c} has {members.numel()} train images, fewer than --target-per-class {per_class}")
        idx.append(members[torch.randperm(members.numel(), generator=gen)[:per_class]])
    return data.subset(torch.cat(idx))


def pretrain_epochs(args: argparse.Namespace, work: Path) -> int:
    if args.pretrain_epochs:
        return args.pretrain_epochs
    path = work / "calibration.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run --stage calibrate first, or pass --pretrain-epochs")
    return int(json.loads(path.read_text())["chosen_epochs"])


def transfer_config(args: argparse.Namespace, epochs: int, **changes):
    from ddistill.utils.probe import LinearProbeConfig
    from evaluators.transfer import CONTROLS, TransferConfig

    base = TransferConfig()
    cfg = TransferConfig(model=args.model, model_kwargs=_model_kwargs(args), num_runs=1, pretrain="auto",
                         pretrain_recipe={"epochs": epochs},
                         finetune=dataclasses.replace(base.finetune, iterations=args.finetune_iterations),
                         linear_probe=not args.no_linear_probe, probe=LinearProbeConfig(iterations=args.probe_iterations),
                         controls=list(CONTROLS), teacher=args.teacher, min_fit_r2=args.min_fit_r2,
                         min_fit_accuracy=args.min_fit_accuracy, pretrain_precision=args.pretrain_precision)
    return dataclasses.replace(cfg, **changes)


def eval_data(args: argparse.Namespace, evaluator, synset, real, test):
    """What the evaluator asks for (its ``needs``: the source train split for the random controls, the source test
    split for the held-out fit, the leak-free target), with the target's train split cut to ``--target-per-class``
    labelled images per class."""
    from ddistill.config import from_dict
    from ddistill.data import DataSpec, Encoding, load_eval_data

    spec = from_dict(DataSpec, synset.meta["data"], where="meta.data")
    data = load_eval_data(spec, evaluator.needs(synset.meta), encoding=Encoding.from_meta(synset.meta["encoding"],
                                                                                          synset.tensors),
                          loaded=(real, test))
    for name, (train, tst) in list(data.downstream.items()):
        data.downstream[name] = (balanced_subset(train, args.target_per_class, args.seed), tst)
    return data


# ------------------------------------------------------------------------------------------------------------------
def _krr_config(args: argparse.Namespace, work: Path, iterations: int):
    from synthesizers import SYNTHESIZERS

    cls = SYNTHESIZERS.get("krr_st")
    common = {"num_images": args.num_images, "teacher": str(work / "teacher.pt"), "model": args.model,
              "model_kwargs": _model_kwargs(args), "num_models": args.num_models,
              "online_iteration": args.online_iteration, "batch_real": args.batch_real, "lr": args.lr,
              "lr_images_units": args.lr_images_units, "ridge": args.ridge, "heldout_real": args.heldout_real,
              "diagnostic_every": args.diagnostic_every}
    if args.ridge_grid:
        common["ridge_grid"] = list(args.ridge_grid)
    return cls, common, cls.config_from_preset("cifar100", iterations=iterations, checkpoint_every=25, **common)


#: KRR-ST settings that change the initial set or the distillation: a cached stage made with others is refused.
_CACHE_KEYS = ("num_images", "model", "model_kwargs", "num_models", "online_iteration", "batch_real", "lr",
               "lr_images_units", "ridge", "ridge_grid", "heldout_real")


def _check_cached(cached: dict, current: dict, what: str) -> None:
    """Refuses a cached stage made with other KRR-ST settings (a setting either side did not record reads as the
    config default, which is the official behaviour for every issue-#15 option)."""
    from ddistill.config import to_dict
    from synthesizers.krr_st import KRRSTConfig

    defaults = to_dict(KRRSTConfig())

    def value(d: dict, key: str):
        v = d.get(key, defaults.get(key))
        return float(v) if key == "ridge" and v != "auto" else v

    diff = [f"{k}: cached {value(cached, k)!r}, asked {value(current, k)!r}" for k in _CACHE_KEYS
            if value(cached, k) != value(current, k)]
    if diff:
        raise SystemExit(f"{what} in the work directory was made with other KRR-ST settings ({'; '.join(diff)}): use a "
                         f"fresh --work")


def _teacher_copy(args: argparse.Namespace, work: Path) -> None:
    """``krr_st_transfer.stage_check`` (and the set's metadata) read the teacher from ``WORK/teacher.pt``."""
    if not (work / "teacher.pt").exists():
        shutil.copyfile(args.teacher, work / "teacher.pt")


def stage_init(args: argparse.Namespace, real, work: Path) -> None:
    """The KRR-ST set before any outer step (the same seed as the distillation, so the images and teacher targets it
    starts from): the objective check's reference, and all the random-subset calibration needs (the set's size)."""
    _teacher_copy(args, work)
    cls, common, cfg = _krr_config(args, work, 0)
    if (work / "krr_st_init.pt").exists():
        from ddistill.synset import SyntheticSet

        _check_cached(SyntheticSet.load(work / "krr_st_init.pt").meta["config"], common, "krr_st_init.pt")
        return
    cls(cfg, seed=args.seed).fit(real).save(work / "krr_st_init.pt")


def stage_distill(args: argparse.Namespace, real, work: Path) -> dict:
    """KRR-ST from the source classes with the committed teacher, until ``--iterations`` steps or
    ``--distill-minutes`` (``StopAfter``), checkpointed every 25 steps; the summary ``krr_st_transfer`` reads."""
    from ddistill.io import write_json
    from synthesizers.callbacks import Checkpoint, StopAfter

    summary_path = work / "krr_st.json"
    cls, common, cfg = _krr_config(args, work, args.iterations)
    if summary_path.exists() and (work / "krr_st.pt").exists():
        summary = json.loads(summary_path.read_text())
        _check_cached(summary["config"], common, "krr_st.json")
        return summary
    stage_init(args, real, work)
    synth = cls(cfg, seed=args.seed)
    losses: list[float] = []
    diagnostics: list[dict] = []

    def record(s, step: int, logs: dict) -> None:
        losses.append(logs["loss"])
        if "image_shift_pixels" in logs:
            diagnostics.append({"step": step, **{k: v for k, v in logs.items() if k != "loss"}})
            print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in diagnostics[-1].items() if k != "step"),
                  flush=True)

    t0 = time.perf_counter()
    synset = synth.fit(real, callbacks=[Checkpoint(work / "krr_st.ckpt", cfg.checkpoint_every, resume=True),
                                        StopAfter(wall_seconds=60 * args.distill_minutes), record])
    seconds = time.perf_counter() - t0
    synset.save(work / "krr_st.pt")
    steps = int(synth.iteration)
    summary = {"set": str(work / "krr_st.pt"), "num_images": args.num_images,
               "fraction_of_source": args.num_images / int(real.x.shape[0]), "iterations": steps,
               "planned_iterations": args.iterations, "stopped_by_time": steps < args.iterations,
               "distill_minutes": args.distill_minutes, "seconds_incl_pool_init": seconds,
               "seconds_per_iteration_incl_pool_init": seconds / max(len(losses), 1),
               "config": dict(common), "loss_first": losses[0] if losses else None,
               "loss_last": losses[-1] if losses else None, "losses": losses, "pool": synset.meta.get("pool"),
               "resumed": len(losses) < steps, "lr_at_stop": synth.lr_at(steps),
               "ridge": synset.meta.get("ridge"), "outer_lr": synset.meta.get("outer_lr"),
               "diagnostics": synset.meta.get("diagnostics"), "logged_diagnostics": diagnostics}
    write_json(summary_path, summary)
    (work / "krr_st.ckpt").unlink(missing_ok=True)
    print(f"distilled {steps} outer steps in {seconds / 60:.1f} min", flush=True)
    return summary


def calibrate_set(args: argparse.Namespace, test, work: Path) -> dict:
    """The set's regression pre-training with the seeds of the evaluation's first run (constant rate, so the first E
    epochs of a longer run are the E-epoch run): train and held-out R² every ``--calib-step`` epochs until train R²
    >= ``--fit-r2`` or ``--max-pretrain-epochs``."""
    from ddistill.data import Encoding
    from ddistill.io import write_json
    from ddistill.models import ModelFamily
    from ddistill.synset import SyntheticSet
    from ddistill.utils.seed import derive_seed, make_generator
    from ddistill.utils.train import criterion_for, predict, train_classifier
    from evaluators.transfer import (PRETRAIN_MODEL_STREAM, PRETRAIN_RECIPES, PRETRAIN_STREAM, _regression_fit, _Reencode,
                                     pretrain_perf)
    from synthesizers.krr_st.teacher import load_teacher

    path = work / "calib_set.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    synset = SyntheticSet.load(work / "krr_st.pt")
    cfg = transfer_config(args, args.max_pretrain_epochs)
    # The evaluator's precision rule (float32 for regression targets by default), so the calibration fits as the
    # evaluation will.
    perf = pretrain_perf(cfg.perf.resolve("cpu"), "regression", cfg.pretrain_precision)
    step, top = args.calib_step, args.max_pretrain_epochs
    encoding = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
    teacher, info = load_teacher(args.teacher)
    heldout_x = encoding.encode(test.x[: cfg.fit_heldout])
    heldout_y = predict(_Reencode(teacher, encoding, info.encoding), heldout_x)
    x, y = synset.x, synset.y.float()
    recipe = PRETRAIN_RECIPES["regression"].recipe({"epochs": top})
    family = ModelFamily(args.model, in_channels=int(x.shape[1]), num_classes=int(y.shape[1]),
                         image_size=tuple(x.shape[2:]), seed=derive_seed(args.seed, PRETRAIN_MODEL_STREAM),
                         **_model_kwargs(args))
    net = family.build(0, "cpu")
    curve: list[dict] = []

    class Fitted(Exception):
        pass

    def on_epoch_end(epoch: int, loss: float) -> None:
        e = epoch + 1
        if e % step:
            return
        point = {"epochs": e, "loss": loss, **_regression_fit(predict(net, x), y, "train"),
                 **_regression_fit(predict(net, heldout_x), heldout_y, "heldout")}
        curve.append(point)
        print(f"calibrate set: {e} epochs, train R² {point['train_r2']:.3f}, held-out R² {point['heldout_r2']:.3f}",
              flush=True)
        if point["train_r2"] >= args.fit_r2:
            raise Fitted

    try:
        train_classifier(perf.prepare_model(net), x, y, recipe, criterion=criterion_for("regression"),
                         generator=make_generator(derive_seed(args.seed, PRETRAIN_STREAM, 0)), perf=perf,
                         on_epoch_end=on_epoch_end)
    except Fitted:
        pass
    fitted = bool(curve) and curve[-1]["train_r2"] >= args.fit_r2
    result = {"curve": curve, "fitted": fitted, "epochs": curve[-1]["epochs"] if fitted else top,
              "seconds": time.perf_counter() - t0, "precision": "bf16" if perf.bf16 else "fp32"}
    write_json(path, result)
    return result


def calibrate_subset(args: argparse.Namespace, real, test, work: Path) -> dict:
    """The random-subset control's label pre-training through the evaluator itself (run 0's seeds, fine-tuning one
    step), at ``--calib-start`` epochs, then x1.5, until train accuracy >= ``--fit-accuracy``. The control depends on
    the set only through its size, so the initial set stands in for the distilled one."""
    from ddistill.io import write_json
    from ddistill.synset import SyntheticSet
    from evaluators.transfer import TransferEvaluator

    path = work / "calib_subset.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    synset = SyntheticSet.load(work / "krr_st_init.pt")
    step, top = args.calib_step, args.max_pretrain_epochs
    trials: list[dict] = []
    e, data = min(args.calib_start, top), None
    while True:
        base = transfer_config(args, e)
        ev = TransferEvaluator(dataclasses.replace(base, pretrain="none", controls=["random_subset"],
                                                   linear_probe=False, progress=False,
                                                   finetune=dataclasses.replace(base.finetune, iterations=1)),
                               seed=args.seed)
        if data is None:
            data = eval_data(args, ev, synset, real, test)
        t1 = time.perf_counter()
        fit = ev.evaluate(synset, data).details["controls"]["random_subset"]["pretrain_fit"]
        trials.append({"epochs": e, "train_accuracy": fit["train_accuracy"],
                       "heldout_accuracy": fit.get("heldout_accuracy"), "seconds": time.perf_counter() - t1})
        print(f"calibrate random_subset: {e} epochs, train accuracy {fit['train_accuracy']:.1f} %", flush=True)
        if fit["train_accuracy"] >= args.fit_accuracy or e >= top:
            break
        e = min(top, -(-int(e * 1.5) // step) * step)
    fitted = trials[-1]["train_accuracy"] >= args.fit_accuracy
    result = {"trials": trials, "fitted": fitted, "epochs": trials[-1]["epochs"], "seconds": time.perf_counter() - t0}
    write_json(path, result)
    return result


def calibrate_choose(args: argparse.Namespace, work: Path) -> dict:
    from ddistill.io import write_json

    path = work / "calibration.json"
    if path.exists():
        return json.loads(path.read_text())
    if args.pretrain_epochs:
        result = {"chosen_epochs": args.pretrain_epochs, "how": "given by --pretrain-epochs (not calibrated)"}
    else:
        cs, cr = (json.loads((work / f).read_text()) for f in ("calib_set.json", "calib_subset.json"))
        result = {"chosen_epochs": max(cs["epochs"], cr["epochs"]),
                  "how": (f"the larger of (a) the smallest multiple of {args.calib_step} epochs at which the set's "
                          f"regression pre-training reaches train R² >= {args.fit_r2} and (b) the smallest tried "
                          f"count ({args.calib_start}, then x1.5) at which the random subset's label pre-training "
                          f"reaches {args.fit_accuracy} % train accuracy; capped at {args.max_pretrain_epochs}; "
                          f"seeds of the evaluation's first run"),
                  "fit_r2_target": args.fit_r2, "fit_accuracy_target": args.fit_accuracy,
                  "max_epochs": args.max_pretrain_epochs, "set_curve": cs["curve"], "set_fitted": cs["fitted"],
                  "set_epochs": cs["epochs"], "random_subset_trials": cr["trials"],
                  "random_subset_fitted": cr["fitted"], "random_subset_epochs": cr["epochs"],
                  "all_fitted": cs["fitted"] and cr["fitted"], "seconds": cs["seconds"] + cr["seconds"]}
    write_json(path, result)
    print(f"pre-training epochs: {result['chosen_epochs']}", flush=True)
    return result


def stage_eval(args: argparse.Namespace, real, test, work: Path) -> list[dict]:
    """One evaluator call per run, all controls on, cached per run."""
    from ddistill.io import write_json
    from ddistill.synset import SyntheticSet
    from evaluators.transfer import TransferEvaluator

    synset = SyntheticSet.load(work / "krr_st.pt")
    epochs = pretrain_epochs(args, work)
    data = None
    out = []
    for r in (range(args.runs) if args.only_runs is None else args.only_runs):
        path = work / f"eval_run{r}.json"
        if path.exists():
            out.append(json.loads(path.read_text()))
            continue
        ev = TransferEvaluator(transfer_config(args, epochs), seed=args.seed + r)
        if data is None:
            data = eval_data(args, ev, synset, real, test)
        t0 = time.perf_counter()
        res = ev.evaluate(synset, data)
        entry = {"run": r, "evaluator_seed": args.seed + r, "pretrain_epochs": epochs,
                 "target_train_images": {k: int(v[0].x.shape[0]) for k, v in data.downstream.items()},
                 "result": res.to_dict(), "seconds": time.perf_counter() - t0}
        write_json(path, entry)
        print(res.report(), flush=True)
        out.append(entry)
    return out


def stage_leak(args: argparse.Namespace, work: Path) -> list[dict]:
    """A random subset of the target classes pre-trained with their labels, scored like the other rows."""
    from ddistill.data import DataSpec, EvalData, load_data, load_split
    from ddistill.io import write_json
    from evaluators.transfer import TransferEvaluator, default_targets
    from synthesizers import SYNTHESIZERS

    epochs = pretrain_epochs(args, work)
    (target,) = default_targets(source_spec(args), 10)
    out, data, synset = [], None, None
    for r in (range(args.runs) if args.only_runs is None else args.only_runs):
        path = work / f"leak_run{r}.json"
        if path.exists():
            out.append(json.loads(path.read_text()))
            continue
        if data is None:
            real_t, test_t = load_data(DataSpec(target.name, target.root, classes=list(target.classes)))
            k = int(real_t.num_classes)
            rnd = SYNTHESIZERS.get("random")
            synset = rnd(rnd.config_from_preset(None, ipc=args.num_images // k), seed=args.seed).fit(real_t)
            # held-out accuracy of the label pre-training: the target's own test split (shuffled, see shuffled())
            data = EvalData(spec=target, test=shuffled(test_t, args.seed),
                            downstream={target.label(): (balanced_subset(load_split(target, "train"),
                                                                         args.target_per_class, args.seed), test_t)})
        cfg = transfer_config(args, epochs, controls=[], pretrain="hard", downstream=[target])
        ev = TransferEvaluator(cfg, seed=args.seed + r)
        t0 = time.perf_counter()
        res = ev.evaluate(synset, data)
        entry = {"run": r, "evaluator_seed": args.seed + r, "pretrain_epochs": epochs, "set_size": len(synset),
                 "result": res.to_dict(), "seconds": time.perf_counter() - t0}
        write_json(path, entry)
        print(res.report(), flush=True)
        out.append(entry)
    return out


def run_all(args: argparse.Namespace, work: Path) -> None:
    """Every stage as a subprocess of this script (its arguments, ``--stage`` replaced), ``--jobs`` at a time, each
    logging to ``WORK/logs/``; then the report."""
    import subprocess

    from ddistill.io import write_json

    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    # Wall time is counted from the first launch, across resumed invocations (each one is recorded).
    started = work / "started.json"
    record = json.loads(started.read_text()) if started.exists() else {"time": time.time(), "invocations": []}
    record["invocations"].append({"time": time.time(), "argv": sys.argv[1:]})
    write_json(started, record)

    def cmd(stage: str, *extra: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--stage", stage, *extra]

    def start(chain: list[list[str]], name: str) -> subprocess.Popen:
        log = logs / f"{name}.log"
        script = " && ".join(" ".join(f"'{a}'" for a in c) for c in chain)
        print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] start {name} (log {log})", flush=True)
        return subprocess.Popen(["bash", "-c", script], stdout=open(log, "a"), stderr=subprocess.STDOUT)

    def wait(procs: dict[str, subprocess.Popen]) -> None:
        for name, proc in procs.items():
            if proc.wait():
                raise SystemExit(f"stage {name} failed (exit {proc.returncode}); see {logs / (name + '.log')}")
            print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] done {name}", flush=True)

    def pool(tasks: list[tuple[str, list[list[str]]]]) -> None:
        running: dict[str, subprocess.Popen] = {}
        while tasks or running:
            while tasks and len(running) < max(1, args.jobs):
                name, chain = tasks.pop(0)
                running[name] = start(chain, name)
            time.sleep(5)
            for name in [n for n, p in running.items() if p.poll() is not None]:
                wait({name: running.pop(name)})

    wait({"init": start([cmd("init")], "init")})
    pool([("distill", [cmd("distill"), cmd("check"), cmd("calibrate", "--part", "set")]),
          ("calibrate_subset", [cmd("calibrate", "--part", "subset")])])
    wait({"choose": start([cmd("calibrate", "--part", "choose")], "choose")})
    tasks = [(f"eval{r}", [cmd("eval", "--only-runs", str(r))]) for r in range(args.runs)]
    if args.leak_row:
        tasks += [(f"leak{r}", [cmd("leak", "--only-runs", str(r))]) for r in range(args.runs)]
    pool(tasks)
    wall = time.time() - record["time"]
    write_json(work / "wall.json", {"seconds": wall, "invocations": record["invocations"],
                                    "note": "wall time from the first --stage all launch to the report"})
    stage_report(args, work, wall)


# ------------------------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5


def _fit_summary(fits: list[dict], args: argparse.Namespace) -> dict:
    keys = sorted({k for f in fits for k in f})
    out = {k: sum(f[k] for f in fits if k in f) / sum(1 for f in fits if k in f) for k in keys}
    if "train_r2" in out:
        out["fitted"] = out["train_r2"] >= args.min_fit_r2
    else:
        out["fitted"] = out["train_accuracy"] >= args.min_fit_accuracy
    out["runs"] = fits
    return out


def collect(args: argparse.Namespace, runs: list[dict], leak: list[dict]) -> dict:
    """Per row: fine-tuned accuracies, linear probes, fits and label leaks over the runs (one evaluator call each)."""
    rows: dict[str, dict] = {}

    def add(name: str, entry: dict) -> None:
        row = rows.setdefault(name, {"label": ROW_LABELS[name], "values": [], "linear_probe": [], "fits": [],
                                     "label_leak": [], "warnings": []})
        if "values" in entry:
            row["values"] += list(entry["values"])
        row["linear_probe"] += list(entry.get("linear_probe", []))
        if "pretrain_fit" in entry:
            row["fits"] += entry["pretrain_fit"]["runs"]
        if "label_leak" in entry:
            row["label_leak"].append(entry["label_leak"])

    warnings: list[str] = []
    for run in runs:
        res = run["result"]
        add("set", res)
        for name, c in res.get("controls", {}).items():
            if "skipped" in c:
                raise ValueError(f"control {name} was skipped: {c['skipped']}")
            add(name, c)
        warnings += [f"run {run['run']}: {w}" for w in res.get("warnings", [])]
    for run in leak:
        add("leak", run["result"])
        warnings += [f"leak row, run {run['run']}: {w}" for w in run["result"].get("warnings", [])]
    for name, row in rows.items():
        row["mean"], row["std"] = _mean_std(row["values"])
        if row["linear_probe"]:
            row["linear_probe_mean"], row["linear_probe_std"] = _mean_std(row["linear_probe"])
        if row["fits"]:
            row["pretrain_fit"] = _fit_summary(row["fits"], args)
        leaks = set(row["label_leak"])
        row["label_leak"] = leaks.pop() if len(leaks) == 1 else (None if not leaks else "mixed")
        del row["fits"], row["warnings"]
    # Paired differences: the set's fine-tuned accuracy minus each row's, run by run (same fine-tuning seeds).
    base = rows["set"]["values"]
    for name, row in rows.items():
        if name in ("set", "teacher_probe"):
            continue
        diffs = [a - b for a, b in zip(base, row["values"])]
        row["set_minus_row"] = {"values": diffs, "mean": _mean_std(diffs)[0], "std": _mean_std(diffs)[1],
                                "positive_runs": sum(d > 0 for d in diffs), "runs": len(diffs)}
    return {"rows": rows, "warnings": warnings}


def _fit_cell(row: dict) -> str:
    fit = row.get("pretrain_fit")
    if not fit:
        return "–"
    if "train_r2" in fit:
        cell = f"R² train {fit['train_r2']:.3f} / held-out {fit.get('heldout_r2', float('nan')):.3f}"
    else:
        cell = (f"acc. train {fit['train_accuracy']:.1f} % / held-out {fit.get('heldout_accuracy', float('nan')):.1f}"
                f" %")
    return cell + ("" if fit["fitted"] else " **NOT FITTED**")


def _fit_runs_cell(row: dict) -> str:
    fit = row.get("pretrain_fit")
    if not fit:
        return "–"
    key = "train_r2" if "train_r2" in fit else "train_accuracy"
    return ", ".join(f"{f[key]:.3f}" if key == "train_r2" else f"{f[key]:.1f}" for f in fit["runs"])


def ceiling_sentence(rows: dict) -> str:
    """Whether the teacher's ceiling is above training from scratch, paired by run. KRR-ST can at best hand on the
    teacher's representation, so where the teacher's own linear probe does not beat fine-tuning from scratch on the
    same labelled target images, no KRR-ST set is expected to beat no pre-training and the comparison cannot show
    the method's worth (issue #15 asks for a teacher whose ceiling is clearly above scratch)."""
    probe, scratch = rows["teacher_probe"]["values"], rows["no_pretraining"]["values"]
    gaps = [p - n for p, n in zip(probe, scratch)]
    mean = sum(gaps) / len(gaps)
    if all(g > 0 for g in gaps):
        verdict = "above training from scratch in every paired run: the comparison can show what KRR-ST transfers."
    else:
        verdict = ("not above training from scratch in every paired run: at this teacher and target budget even a "
                   "perfect copy of the teacher's representation is not expected to beat no pre-training, so the "
                   "comparison cannot show KRR-ST's worth.")
    return (f"Teacher ceiling: the teacher's linear probe ({sum(probe) / len(probe):.2f} %) minus no pre-training "
            f"({sum(scratch) / len(scratch):.2f} %) is {mean:+.2f} points (paired runs "
            f"{', '.join(f'{g:+.2f}' for g in gaps)}), {verdict}")


def conclusions(rows: dict, old: dict | None, calib: dict, epochs: int) -> list[str]:
    """'What this shows', sentence by sentence, from the numbers only."""
    s = rows["set"]
    out = []
    fitted = {n: r["pretrain_fit"]["fitted"] for n, r in rows.items() if "pretrain_fit" in r}
    not_fit = [ROW_LABELS[n] for n, f in fitted.items() if not f]
    r2 = {n: r["pretrain_fit"].get("train_r2") for n, r in rows.items() if "pretrain_fit" in r}
    acc = {n: r["pretrain_fit"].get("train_accuracy") for n, r in rows.items() if "pretrain_fit" in r}
    out.append(
        f"At {epochs} pre-training epochs "
        + ("every pre-trained row fitted its own targets" if not not_fit else
           f"these rows did not fit their targets (flagged): {'; '.join(not_fit)}")
        + f" (KRR-ST set train R² {r2['set']:.3f}, random images + teacher targets "
          f"{r2['random_teacher_targets']:.3f}, random subset train accuracy {acc['random_subset']:.1f} %"
          "; means over runs)"
          + (", so the scores below compare fitted pre-trainings, unlike the committed 50-epoch comparison."
             if not not_fit else "; their scores measure under-trained networks."))
    if calib.get("all_fitted") is False:
        out.append(f"The calibration reached the cap of {calib['max_epochs']} epochs without meeting its targets.")
    verdicts = []
    for name in ("random_subset", "random_teacher_targets", "no_pretraining"):
        d = rows[name]["set_minus_row"]
        if d["positive_runs"] == d["runs"]:
            word = "higher than"
        elif d["positive_runs"] == 0:
            word = "lower than"
        else:
            word = "not consistently different from"
        verdicts.append(f"{word} {ROW_LABELS[name]} ({d['mean']:+.2f} points, paired runs "
                        f"{', '.join(f'{v:+.2f}' for v in d['values'])})")
    out.append(f"Fine-tuned on the leak-free target, the KRR-ST set ({s['mean']:.2f} ± {s['std']:.2f} %) is "
               + "; ".join(verdicts) + ".")
    beats = all(rows[n]["set_minus_row"]["positive_runs"] == rows[n]["set_minus_row"]["runs"]
                for n in ("random_subset", "random_teacher_targets", "no_pretraining"))
    out.append("So at this budget KRR-ST beats all three of its controls in every paired run." if beats else
               "So at this budget KRR-ST does not beat all of its controls in every paired run.")
    out.append(ceiling_sentence(rows))
    d_init = rows["random_teacher_targets"]["set_minus_row"]
    out.append(f"The distillation steps themselves (the set minus its initialisation, random images + teacher "
               f"targets) are worth {d_init['mean']:+.2f} ± {d_init['std']:.2f} points.")
    if "linear_probe_mean" in s:
        lp = {n: r["linear_probe_mean"] for n, r in rows.items() if "linear_probe_mean" in r}
        order = sorted((n for n in lp if n != "teacher_probe"), key=lambda n: -lp[n])
        out.append("Frozen-feature linear probes rank the pre-trainings "
                   + " > ".join(f"{ROW_LABELS[n].split(' (')[0]} {lp[n]:.2f}" for n in order)
                   + (f"; the teacher's own features reach {lp['teacher_probe']:.2f} % (the ceiling), "
                      f"{lp['teacher_probe'] - lp['set']:+.2f} points above the set's." if "teacher_probe" in lp
                      else "."))
    if "leak" in rows:
        lk = rows["leak"]
        out.append(f"The old comparison's leak, reproduced at this budget (a random subset of the *target* classes "
                   f"with their labels, same size and epochs, paired): {lk['mean']:.2f} ± {lk['std']:.2f} %, "
                   f"{lk['mean'] - rows['random_subset']['mean']:+.2f} points against the leak-free random source "
                   f"subset and {lk['mean'] - s['mean']:+.2f} against the KRR-ST set: "
                   + ("the leak inflates the label baseline." if lk["mean"] > rows["random_subset"]["mean"] else
                      "the leak does not inflate the label baseline here."))
    if old is not None:
        o = old["rows"]
        g_old = o["random"]["mean"] - o["none"]["mean"]
        g_new = rows["random_subset"]["mean"] - rows["no_pretraining"]["mean"]
        out.append(f"For reference, the committed comparison (10-way target sharing the source's labels, 50 epochs, "
                   f"not fitted) had random labelled subset minus no pre-training {g_old:+.2f} points and KRR-ST "
                   f"minus random {o['krr_st']['mean'] - o['random']['mean']:+.2f}; here (leak-free, fitted) the "
                   f"same gaps are {g_new:+.2f} and {s['mean'] - rows['random_subset']['mean']:+.2f}. The task (5-way "
                   f"vs 10-way), the set size and the epochs changed together, so this pair alone does not isolate "
                   f"the leak" + ("; the leak row above does." if "leak" in rows else "."))
    return out


def _teacher_what(path: str) -> str:
    """What the teacher is: its file's own description (``config["what"]``, e.g. the supervised teacher of
    ``transfer_teacher_supervised.py``), else that of the committed Barlow Twins teacher, which records none."""
    from synthesizers.krr_st.teacher import load_teacher

    _, info = load_teacher(path)
    what = (info.config or {}).get("what")
    return what or ("Barlow Twins ConvNet width 32 BN, 12 epochs on 20,000 unlabelled CIFAR-10 train images of all 10 "
                    "classes (it saw images of the target classes, never a label); made by krr_st_transfer.py")


def stage_report(args: argparse.Namespace, work: Path, wall: float | None = None) -> None:
    from ddistill.io import machine_info, write_json
    import krr_st_transfer

    distill = json.loads((work / "krr_st.json").read_text())
    calib = json.loads((work / "calibration.json").read_text())
    check = json.loads((work / "krr_loss_check.json").read_text()) if (work / "krr_loss_check.json").exists() else None
    runs = [json.loads((work / f"eval_run{r}.json").read_text()) for r in range(args.runs)
            if (work / f"eval_run{r}.json").exists()]
    if not runs:
        raise SystemExit("no eval_run*.json in the work directory: run --stage eval first")
    leak = [json.loads((work / f"leak_run{r}.json").read_text()) for r in range(args.runs)
            if (work / f"leak_run{r}.json").exists()]
    epochs = runs[0]["pretrain_epochs"]
    if any(r["pretrain_epochs"] != epochs for r in runs + leak):
        raise ValueError("runs were made with different pre-training epochs")
    table = collect(args, runs, leak)
    rows = table["rows"]
    old_path = Path(args.out).parent / "krr_st_transfer.json"
    old = json.loads(old_path.read_text()) if old_path.exists() else None
    change = krr_st_transfer.image_change(work, work / "krr_st_images.png")
    teacher = json.loads(Path(args.teacher).with_suffix(".json").read_text()) \
        if Path(args.teacher).with_suffix(".json").exists() else None
    det = runs[0]["result"]
    machine = machine_info()
    machine["torch_threads"] = args.threads
    started = work / "started.json"
    invocations = json.loads(started.read_text())["invocations"] if started.exists() else []
    # The command that made the results is the first ``--stage all`` launch recorded in the work directory (a later
    # ``--stage report`` does not repeat its options); without one, the options of this invocation.
    launches = [inv["argv"] for inv in invocations if inv["argv"][:2] == ["--stage", "all"]]
    command = "python benchmarks/evaluation_transfer.py " + (" ".join(launches[0]) if launches else (
        f"--stage all --threads {args.threads} --jobs {args.jobs}" + (" --leak-row" if args.leak_row else "")
        + (f" --target-per-class {args.target_per_class}" if args.target_per_class != 500 else "")
        + (f" --work {args.work}" if args.work != "runs/evaluation_transfer" else "")))
    stage_seconds = {"distill": distill["seconds_incl_pool_init"],
                     "calibrate": calib.get("seconds"),
                     "eval_runs": [r["seconds"] for r in runs], "leak_runs": [r["seconds"] for r in leak]}
    if wall is None and (work / "wall.json").exists():
        wall = json.loads((work / "wall.json").read_text())["seconds"]
    target_label = next(iter(runs[0]["target_train_images"]))
    kc = distill["config"]
    budget = {
        "network": {"model": args.model, "model_kwargs": _model_kwargs(args)},
        "teacher": {"file": args.teacher, "what": _teacher_what(args.teacher)},
        "krr_st": {"num_images": kc["num_images"], "iterations": distill["iterations"], "batch_real": kc["batch_real"],
                   "num_models": kc["num_models"], "online_iteration": kc["online_iteration"], "lr": kc["lr"],
                   # absent from work directories of earlier versions: the official behaviour
                   "lr_images_units": kc.get("lr_images_units", "x_space"), "ridge": kc.get("ridge", 1e-6),
                   "heldout_real": kc.get("heldout_real", 0)},
        "pretrain_epochs": epochs, "finetune_iterations": det["finetune_iterations"],
        "finetune_data": f"{runs[0]['target_train_images'][target_label]} labelled target train images "
                         f"({args.target_per_class} per class)",
        "linear_probe_iterations": None if args.no_linear_probe else args.probe_iterations,
        "runs": len(runs), "paper": PAPER,
    }
    result = {"benchmark": "evaluation_transfer", "issue": "#14 items 1, 2, 5", "command": command,
              "machine": machine, "shared_cpu": True, "wall_seconds": wall, "invocations": invocations,
              "stage_seconds": stage_seconds,
              "data": {"archive": args.data, "what": "CIFAR-10 JPEG mirror (quality 75)",
                       "source": f"cifar10_jpeg classes {args.source_classes} (train split, labels unused by KRR-ST)",
                       "target": f"{target_label}: fine-tune on a class-balanced subset of its train split, score on "
                                 f"its whole test split", "heldout_fit": "the first 1000 images of the source test "
                                 "split after a seeded shuffle"},
              "seeds": {"seed": args.seed, "evaluator_seeds": [r["evaluator_seed"] for r in runs],
                        "note": "one evaluator call per run; within a call every row uses the same fine-tuning seeds"},
              "budget": budget, "teacher": teacher, "calibration": calib,
              "distill": {k: v for k, v in distill.items() if k != "losses"}, "distill_losses": distill["losses"],
              "image_change": change, "krr_loss_check": check, "rows": rows, "warnings": table["warnings"],
              "runs": runs, "leak_runs": leak}
    result["conclusions"] = conclusions(rows, old, calib, epochs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)

    losses = distill["losses"]
    k = max(1, len(losses) // 10)
    b = budget
    after = f"after_{check['online_steps']}_steps" if check else ""
    lines = [
        "# KRR-ST transfer with controls on a leak-free class split (issue #14 items 1, 2, 5)\n",
        f"Command: `{command}` ({'%.1f min wall' % (wall / 60) if wall else 'wall time: see stage_seconds'} on a "
        f"{machine['cores']}-core CPU shared with other jobs, {args.threads} torch thread; {machine.get('cpu', '')}). "
        f"Script: `benchmarks/evaluation_transfer.py`; every number below is in `{Path(args.out).name}.json`."
        + (f" Wall time counted from the first launch; {len(invocations)} invocations of `--stage all` (cached stages "
           f"are skipped on resume): " + "; ".join(f"`{' '.join(i['argv'])}`" + (f" ({i['note']})" if i.get("note") else "")
                                                   for i in invocations) + "." if len(invocations) > 1 else "")
        + "\n",
        f"**Data**: CIFAR-10 JPEG mirror (`{args.data}`). Source: classes {args.source_classes} "
        f"(airplane, automobile, bird, cat, deer; 25,000 train images, labels never read by KRR-ST). Target: "
        f"classes 5-9 (dog, frog, horse, ship, truck), fine-tuned on {b['finetune_data']}, scored on their 5000 "
        f"test images. Source and target share no label.\n",
        f"**Teacher**: the committed `{args.teacher}` — {b['teacher']['what']}.\n",
        f"**Budget** (paper in brackets): network `{args.model}` {_model_kwargs(args)} everywhere [ResNet-18 "
        f"teacher, ConvNet-128-256-512]; KRR-ST N = {b['krr_st']['num_images']}, {b['krr_st']['iterations']} outer "
        f"steps, real batch {b['krr_st']['batch_real']}, M = {b['krr_st']['num_models']}, T = "
        f"{b['krr_st']['online_iteration']}, lr {b['krr_st']['lr']:g} [160,000 steps, M = 10, T = 1000]; "
        f"pre-training {epochs} epochs [1000]; fine-tuning {b['finetune_iterations']} SGD steps [10,000 on the whole "
        f"target]; {len(runs)} runs (evaluator seeds {result['seeds']['evaluator_seeds']}) [3]. Linear probes: "
        + (f"{args.probe_iterations} iterations on the same labelled images.\n" if not args.no_linear_probe else "off.\n"),
        f"**Pre-training epochs** (`--stage calibrate`, before any transfer score): {calib['how']}. Set: "
        + ", ".join(f"{p['epochs']} ep. R² {p['train_r2']:.3f}" for p in calib.get("set_curve", []))
        + "; random subset: "
        + ", ".join(f"{t['epochs']} ep. {t['train_accuracy']:.1f} %" for t in calib.get("random_subset_trials", []))
        + f" -> **{epochs} epochs**.\n",
        f"**Distillation**: {distill['iterations']} outer steps in {stage_seconds['distill'] / 60:.1f} min wall, incl. "
        f"the pool initialisation"
        + (f" (stopped by the {distill['distill_minutes']:g}-min budget before the planned "
           f"{distill['planned_iterations']}; the lr had decayed to {distill['lr_at_stop']:.2g})"
           if distill.get("stopped_by_time") else "") + f"; KRR loss mean of the first / last {k} steps "
        f"{sum(losses[:k]) / k:.4g} -> {sum(losses[-k:]) / k:.4g}; images moved {change['mean_abs_pixel_change']:.4f} "
        f"on average in [0, 1] pixels, targets {change['mean_abs_target_change']:.4f} (mean |target| "
        f"{change['mean_abs_target_init']:.4f})."
        + (f" Objective check on {check['real_images']} held-out source test images, {check['nets']} fresh networks, "
           f"untrained / after {check['online_steps']} online steps: initial set "
           f"{check['krr_st_init']['untrained']['mean']:.4g} / {check['krr_st_init'][after]['mean']:.4g}, "
           f"distilled {check['krr_st']['untrained']['mean']:.4g} / {check['krr_st'][after]['mean']:.4g}."
           if check else "") + "\n",
        _krr_diagnostics_line(distill),
        "Fit: the pre-trained network on its own training targets (train) and on held-out source test images "
        "(teacher representations for regression rows, source labels for the label row), mean over runs; "
        f"**NOT FITTED** = below R² {args.min_fit_r2} / accuracy {args.min_fit_accuracy} % on its own targets. "
        "label_leak: whether the row's pre-training read labels the target shares.\n",
        "| row | fine-tuned acc. (%) | runs | linear probe (%) | pre-training fit | fit per run | label_leak |",
        "|---|---:|---|---:|---|---|---|",
    ]
    for name in (*ROWS, "leak"):
        if name not in rows:
            continue
        row = rows[name]
        lp = f"{row['linear_probe_mean']:.2f} ± {row['linear_probe_std']:.2f}" if "linear_probe_mean" in row else "–"
        if name == "teacher_probe":
            lines.append(f"| {row['label']} | – | {', '.join(f'{v:.2f}' for v in row['values'])} | "
                         f"{row['mean']:.2f} ± {row['std']:.2f} | – | – | – |")
            continue
        lines.append(f"| {row['label']} | {row['mean']:.2f} ± {row['std']:.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in row['values'])} | {lp} | {_fit_cell(row)} | "
                     f"{_fit_runs_cell(row)} | {row['label_leak']} |")
    lines.append("\nKRR-ST minus each row, paired by run: "
                 + "; ".join(f"{ROW_LABELS[n]} {r['set_minus_row']['mean']:+.2f} ± {r['set_minus_row']['std']:.2f}"
                             for n, r in rows.items() if "set_minus_row" in r) + ".\n")
    if table["warnings"]:
        lines.append("Evaluator warnings: " + " | ".join(sorted(set(table["warnings"]))) + "\n")
    lines += ["## What this shows\n", " ".join(result["conclusions"]) + "\n"]
    plot(rows, out.with_suffix(".png"), title=f"{target_label}, {result['budget']['finetune_data']}")
    lines.append(f"Plot: `{out.with_suffix('.png').name}` (fine-tuned accuracy per row, each run a dot; the teacher's "
                 "linear probe as a dashed line, the no-pre-training mean as a dotted one).\n")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(rows: dict, path: Path, title: str) -> None:
    """Bars of the fine-tuned rows (mean, runs as dots) with the teacher's ceiling and the scratch level as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if n != "teacher_probe"]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    for i, n in enumerate(names):
        r = rows[n]
        ax.bar(i, r["mean"], color="tab:red" if n == "set" else ("tab:gray" if n == "leak" else "tab:blue"), alpha=0.6)
        ax.scatter([i] * len(r["values"]), r["values"], color="k", s=10, zorder=3)
    if "teacher_probe" in rows:
        ax.axhline(rows["teacher_probe"]["mean"], color="tab:green", ls="--", lw=1.2, label="teacher linear probe")
    ax.axhline(rows["no_pretraining"]["mean"], color="k", ls=":", lw=1, label="no pre-training")
    ax.set_xticks(range(len(names)))
    short = {"set": "KRR-ST set", "random_subset": "random source\nsubset, labels", "no_pretraining": "no\npre-training",
             "random_teacher_targets": "KRR-ST init\n(teacher targets)", "leak": "target subset,\nlabels (leak)"}
    ax.set_xticklabels([short.get(n, n) for n in names], fontsize=7)
    lo = min(min(rows[n]["values"]) for n in rows) - 3
    ax.set_ylim(lo, max(max(rows[n]["values"]) for n in rows) + 2)
    ax.set_ylabel("fine-tuned test accuracy (%)")
    ax.set_title(f"KRR-ST transfer with controls: {title}", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _krr_diagnostics_line(distill: dict) -> str:
    """The ridge choice and the held-out diagnostics of the distillation (issue #15), or why they are missing."""
    ridge, diag, lr = distill.get("ridge"), distill.get("diagnostics"), distill.get("outer_lr")
    if not ridge or not diag:
        return ("**Ridge / held-out diagnostics**: not recorded (a work directory of an earlier version: ridge 1e-6, "
                "no held-out images).\n")
    out = (f"**Ridge**: {ridge['rule']} -> {ridge['value']:g} x tr(K_ss) ({ridge['why']}); features p + 1 = "
           f"{ridge.get('features')} for N = {ridge.get('num_images')} (ratio {ridge.get('interpolation_ratio', 0):.2f})")
    if ridge.get("grid"):
        out += "; held-out KRR loss per candidate: " + ", ".join(
            f"{g:g}: {v:.4g}" for g, v in zip(ridge["grid"], ridge["heldout_loss"]))
    out += ". "
    if lr:
        px = lr.get("images_in_raw_pixels")
        out += (f"Image lr {lr['given']:g} given in {lr['given_units']} units -> {lr['images']:.3g} in "
                f"{lr['images_units']} units" + (f" ({px:.3g} in [0, 1] pixels)" if px is not None else "") + ". ")
    start, end = diag.get("start") or {}, diag.get("end") or {}
    if "heldout_krr_loss" in end:
        out += (f"Held-out KRR loss ({diag['heldout_images']} held-out source train images) "
                f"{start.get('heldout_krr_loss', float('nan')):.4g} at step {start.get('step', 0)} -> "
                f"{end['heldout_krr_loss']:.4g} at step {end['step']} (the pool networks differ between the two "
                f"readings)")
        if "heldout_krr_loss_initial_set" in end:
            out += (f"; under the final pool networks, the initial set scores "
                    f"{end['heldout_krr_loss_initial_set']:.4g} and the distilled set {end['heldout_krr_loss']:.4g} "
                    f"(the paired comparison)")
        out += "; "
    out += (f"the images moved {end.get('image_shift_pixels', float('nan')):.4f} in [0, 1] pixels "
            f"({end.get('image_shift_encoded', float('nan')):.4f} encoded), the targets "
            f"{end.get('target_shift', float('nan')):.4f} on average.\n")
    return out


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.stage == "all":
        run_all(args, work)
        return
    if args.stage == "report":
        stage_report(args, work)
        return
    if args.stage == "calibrate" and args.part == "choose":
        calibrate_choose(args, work)
        return
    if args.stage == "leak":
        stage_leak(args, work)
        return
    from ddistill.data import load_data

    real, test = load_data(source_spec(args))
    test = shuffled(test, args.seed)
    if args.stage == "init":
        stage_init(args, real, work)
    elif args.stage == "distill":
        stage_distill(args, real, work)
    elif args.stage == "check":
        import krr_st_transfer

        _teacher_copy(args, work)
        krr_st_transfer.stage_check(args, test, work)
    elif args.stage == "calibrate":
        if args.part in ("subset", "all"):
            calibrate_subset(args, real, test, work)
        if args.part in ("set", "all"):
            calibrate_set(args, test, work)
        if args.part == "all":
            calibrate_choose(args, work)
    elif args.stage == "eval":
        stage_eval(args, real, test, work)


if __name__ == "__main__":
    main()
