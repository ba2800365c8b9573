"""KRR-ST transfer at a CPU budget on the CIFAR-10 JPEG mirror (issue #5): teacher, distillation, transfer table.

1. **Teacher**: Barlow Twins (``synthesizers.krr_st.teacher.train_teacher``) on a generator-drawn subset of the CIFAR-10 training
   split (labels unused), then a linear probe on frozen features (train split -> test split).
2. **Distill**: KRR-ST (``synthesizers/krr_st.py``) distils N unlabeled images + D-dim targets from the training split.
3. **Transfer** (``evaluators/transfer.py``), ``--runs`` runs per row, each pre-trains a fresh network on its set and
   fine-tunes the whole network on the target task:

   - ``krr_st``: pre-train on the KRR-ST set (MSE to the learned targets, the ``regression`` recipe);
   - ``random``: a random class-balanced real subset of the same size with hard labels, the supervised DC recipe
     (CE + DSA), the same pre-training epochs (``scripts/configs/krr_st/cifar10_cpu_random.yaml``);
   - ``krr_st_init``: control -- the KRR-ST set before any outer step (random real images with the teacher's
     representations as targets), the ``regression`` recipe;
   - ``none``: no pre-training.

   Target task: a labeled, class-balanced subset of the CIFAR-10 training split (``--target-per-class`` per class,
   drawn with its own generator) for fine-tuning, scored on the full CIFAR-10 test split. (The source images are
   also CIFAR-10 train images: this is the "source = target" setting of the paper's first column, in the low-label
   regime where pre-training matters; no other 32x32 colour dataset is stored here.)

Network: one small ConvNet (``convnet`` width 32, BatchNorm, 512-d embedding) is the teacher backbone, the KRR-ST
pool network and the transfer network. The method's defaults (ResNet-18 teacher, ConvNet 128-256-512 pool) cost
~38 CPU-s per outer step at N = 1000 (``krr_st_speed.md``), and a ResNet-18 Barlow Twins epoch over the 50k images
is ~1 CPU-hour (estimated from the measured forward pass), which does not fit this machine's shared cores within the
session; ``--model``/``--model-kwargs`` change it.

Every stage caches its output in ``--work`` (teacher, sets, per-row results), so stages can be run separately or in
parallel (``--stage teacher|distill|check|eval|report``; ``all`` runs them in order). The budget is given by the
arguments, and the report reads it back from what the stages recorded. The committed results are those of::

    python benchmarks/krr_st_transfer.py --stage all --threads 1 --work runs/krr_st_transfer \
        --out benchmarks/results/krr_st_transfer --linear-probe

run as separate processes to use the wall-clock time: ``--stage teacher``, ``--stage eval --rows random`` and
``--stage eval --rows none`` in parallel, then ``--stage distill``, ``--stage eval --rows krr_st_init``,
``--stage check``, ``--stage eval --rows krr_st``, ``--stage report``; the four ``eval`` rows were then re-run with
``--linear-probe`` in a second work directory sharing the teacher and sets (same default arguments throughout).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

ROWS = ("krr_st", "random", "krr_st_init", "none")
ROW_LABELS = {
    "krr_st": "KRR-ST set (MSE to learned targets)",
    "random": "random real subset, hard labels (CE + DSA)",
    "krr_st_init": "KRR-ST init: random real images + teacher targets (MSE)",
    "none": "no pre-training",
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=["teacher", "distill", "check", "eval", "report", "all"], default="all")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), help="rows for --stage eval")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--work", default="runs/krr_st_transfer")
    p.add_argument("--out", default="benchmarks/results/krr_st_transfer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    # network shared by the teacher backbone, the KRR-ST pool and the transfer evaluation
    p.add_argument("--model", default="convnet")
    p.add_argument("--model-kwargs", default='{"width": 32, "norm": "batchnorm"}')
    # teacher budget
    p.add_argument("--teacher-epochs", type=int, default=12)
    p.add_argument("--teacher-images", type=int, default=20000)
    p.add_argument("--teacher-batch", type=int, default=256)
    p.add_argument("--teacher-warmup", type=float, default=1.0)
    p.add_argument("--teacher-projector", type=int, nargs="*", default=[1024, 1024, 1024])
    p.add_argument("--probe-iterations", type=int, default=2000)
    # KRR-ST budget
    p.add_argument("--num-images", type=int, default=500)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--num-models", type=int, default=4)
    p.add_argument("--online-iteration", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    # transfer budget
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pretrain-epochs", type=int, default=50)
    p.add_argument("--finetune-iterations", type=int, default=200)
    p.add_argument("--target-per-class", type=int, default=500)
    p.add_argument("--linear-probe", action="store_true",
                   help="also a linear probe on the frozen pre-trained features (target subset -> test split)")
    return p.parse_args()


def _model_kwargs(args: argparse.Namespace) -> dict:
    return json.loads(args.model_kwargs)


def stage_teacher(args: argparse.Namespace, real, test, work: Path) -> dict:
    from ddistill.io import write_json
    from ddistill.utils.probe import LinearProbeConfig, linear_probe
    from synthesizers.krr_st.teacher import BarlowTwinsConfig, save_teacher, train_teacher
    from ddistill.utils.seed import derive_seed, make_generator

    out = work / "teacher.pt"
    summary_path = work / "teacher.json"
    if out.exists() and summary_path.exists():
        return json.loads(summary_path.read_text())
    cfg = BarlowTwinsConfig(model=args.model, model_kwargs=_model_kwargs(args), epochs=args.teacher_epochs,
                            max_images=args.teacher_images, batch_size=args.teacher_batch,
                            warmup_epochs=args.teacher_warmup, projector_dims=list(args.teacher_projector),
                            checkpoint_every=1, probe=LinearProbeConfig(iterations=args.probe_iterations))
    t0 = time.perf_counter()
    teacher = train_teacher(real, cfg, seed=args.seed, checkpoint=work / "teacher.ckpt", resume=True, progress=True,
                            on_epoch_end=lambda e, loss: print(f"teacher epoch {e + 1}: loss {loss:.4f}", flush=True))
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = linear_probe(teacher, (real.x, real.y), (real.encoding.encode(test.x), test.y), config=cfg.probe,
                       num_classes=real.num_classes, generator=make_generator(derive_seed(args.seed, 99)),
                       progress=True)
    probe_seconds = time.perf_counter() - t0
    from ddistill.config import to_dict

    save_teacher(out, teacher, model=cfg.model, model_kwargs=cfg.model_kwargs, encoding=real.encoding,
                 dataset=real.info.name, config={**to_dict(cfg), "seed": args.seed}, linear_probe_accuracy=acc)
    summary = {"teacher": str(out), "model": cfg.model, "model_kwargs": cfg.model_kwargs,
               "linear_probe_accuracy": acc, "linear_probe_train": "CIFAR-10 train split (50k, frozen features)",
               "linear_probe_test": "CIFAR-10 test split (10k)", "train_seconds": train_seconds,
               "probe_seconds": probe_seconds, "config": to_dict(cfg)}
    write_json(summary_path, summary)
    (work / "teacher.ckpt").unlink(missing_ok=True)
    print(f"teacher linear probe {acc:.2f} %", flush=True)
    return summary


def stage_distill(args: argparse.Namespace, real, work: Path) -> dict:
    from ddistill.io import write_json
    from ddistill.synset import SyntheticSet
    from synthesizers import SYNTHESIZERS
    from synthesizers.callbacks import Checkpoint

    summary_path = work / "krr_st.json"
    if summary_path.exists() and (work / "krr_st.pt").exists() and (work / "krr_st_init.pt").exists():
        return json.loads(summary_path.read_text())
    cls = SYNTHESIZERS.get("krr_st")
    common = {"num_images": args.num_images, "teacher": str(work / "teacher.pt"), "model": args.model,
                  "model_kwargs": _model_kwargs(args), "num_models": args.num_models,
                  "online_iteration": args.online_iteration, "batch_real": args.batch_real, "lr": args.lr}
    # The set before any outer step: same seed, so the same images and teacher targets as the run below starts from.
    init = cls(cls.config_from_preset("cifar100", iterations=0, checkpoint_every=0, **common), seed=args.seed)
    init.fit(real).save(work / "krr_st_init.pt")
    cfg = cls.config_from_preset("cifar100", iterations=args.iterations, checkpoint_every=50, **common)
    synth = cls(cfg, seed=args.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    synset: SyntheticSet = synth.fit(real, callbacks=[Checkpoint(work / "krr_st.ckpt", cfg.checkpoint_every, resume=True),
                                                      lambda s, step, logs: losses.append(logs["loss"])])
    seconds = time.perf_counter() - t0
    synset.save(work / "krr_st.pt")
    summary = {"set": str(work / "krr_st.pt"), "num_images": args.num_images,
               "fraction_of_source": args.num_images / int(real.x.shape[0]), "iterations": args.iterations,
               "seconds_incl_pool_init": seconds, "seconds_per_iteration_incl_pool_init": seconds / max(args.iterations, 1),
               "config": {k: v for k, v in common.items()}, "loss_first": losses[0] if losses else None,
               "loss_last": losses[-1] if losses else None, "losses": losses, "pool": synset.meta.get("pool"),
               "resumed": len(losses) < args.iterations}
    write_json(summary_path, summary)
    (work / "krr_st.ckpt").unlink(missing_ok=True)
    return summary


def _target(args: argparse.Namespace):
    """The labeled fine-tuning subset of the CIFAR-10 train split and the full test split (uint8 ImageData)."""
    import torch

    from ddistill.data import get_dataset
    from ddistill.utils.seed import derive_seed, make_generator

    train = get_dataset("cifar10_jpeg", root=args.data, split="train")
    test = get_dataset("cifar10_jpeg", root=args.data, split="test")
    gen = make_generator(derive_seed(args.seed, 7001))
    idx = []
    for c in range(int(train.info.num_classes)):
        members = torch.nonzero(train.y == c).flatten()
        idx.append(members[torch.randperm(members.numel(), generator=gen)[: args.target_per_class]])
    return train.subset(torch.cat(idx)), test


def stage_eval(args: argparse.Namespace, real, work: Path, rows: list[str]) -> dict:
    from ddistill.data import EvalData
    from ddistill.io import write_json
    from ddistill.synset import SyntheticSet
    from ddistill.utils.probe import LinearProbeConfig
    from evaluators.transfer import TransferConfig, TransferEvaluator
    from synthesizers import SYNTHESIZERS

    target_train, target_test = _target(args)
    out = {}
    for row in rows:
        path = work / f"row_{row}.json"
        if path.exists():
            out[row] = json.loads(path.read_text())
            continue
        if row in ("krr_st", "krr_st_init"):
            synset = SyntheticSet.load(work / f"{row}.pt")
            pretrain = "regression"
        else:
            ipc = args.num_images // int(real.num_classes)
            rnd = SYNTHESIZERS.get("random")
            synset = rnd(rnd.config_from_preset(None, ipc=ipc), seed=args.seed).fit(real)
            pretrain = "hard" if row == "random" else "none"
        cfg = TransferConfig(model=args.model, model_kwargs=_model_kwargs(args), num_runs=args.runs,
                             pretrain=pretrain, pretrain_recipe={"epochs": args.pretrain_epochs},
                             finetune=dataclasses.replace(TransferConfig().finetune, iterations=args.finetune_iterations),
                             linear_probe=args.linear_probe,
                             probe=LinearProbeConfig(iterations=args.probe_iterations))
        t0 = time.perf_counter()
        data = EvalData(downstream={target_train.info.name: (target_train, target_test)})
        res = TransferEvaluator(cfg, seed=args.seed).evaluate(synset, data)
        result = {"row": row, "label": ROW_LABELS[row], "set_size": int(synset.x.shape[0]),
                  "target_per_class": args.target_per_class,
                  "linear_probe_iterations": args.probe_iterations if args.linear_probe else None,
                  "values": res.values, "mean": res.mean, "std": res.std, "details": res.details,
                  "seconds": time.perf_counter() - t0}
        write_json(path, result)
        print(f"{row}: {res.mean:.2f} +- {res.std:.2f} {res.values}", flush=True)
        out[row] = result
    return out


def stage_check(args: argparse.Namespace, test, work: Path, nets: int = 2, steps: int = 25,
                batches: int = 4) -> dict:
    """Did the distillation lower its own objective? The KRR-ST loss of the initial and the distilled set on the same
    held-out real images (``batches`` x ``batch_real`` CIFAR-10 *test* images, no augmentation), with ``nets`` fresh
    networks of the pool's architecture, each measured untrained and after ``steps`` full-batch online steps on the
    set being scored (the pool's recipe). Same networks, same real images for both sets, and the same ridge: the one
    the distilled set used (``meta["ridge"]``: e.g. a ``ridge: auto`` choice; 1e-6 for sets that record none)."""
    import torch
    import torch.nn.functional as F

    from ddistill.data import Encoding
    from ddistill.models import ModelFamily
    from ddistill.io import write_json
    from ddistill.synset import SyntheticSet
    from synthesizers.krr_st.teacher import load_teacher
    from ddistill.utils.seed import derive_seed, make_generator
    from synthesizers.krr_st import krr_predict

    path = work / "krr_loss_check.json"
    if path.exists():
        return json.loads(path.read_text())
    distill = json.loads((work / "krr_st.json").read_text())
    kc = distill["config"]
    teacher, _ = load_teacher(work / "teacher.pt")
    gen = make_generator(derive_seed(args.seed, 7002))
    idx = torch.randperm(int(test.x.shape[0]), generator=gen)[: batches * kc["batch_real"]]
    init = SyntheticSet.load(work / "krr_st_init.pt")
    x_real = Encoding.from_meta(init.meta["encoding"], init.tensors).encode(test.x[idx])
    with torch.no_grad():
        y_real = teacher(x_real)
    ridge = float((SyntheticSet.load(work / "krr_st.pt").meta.get("ridge") or {}).get("value") or 1e-6)
    result: dict = {"nets": nets, "online_steps": steps, "real_images": int(idx.numel()), "ridge": ridge,
                    "real_source": "CIFAR-10 test split (held out), no augmentation"}
    for name in ("krr_st_init", "krr_st"):
        synset = SyntheticSet.load(work / f"{name}.pt")
        x, y = synset.x.float(), synset.y.float()
        family = ModelFamily(kc["model"], in_channels=int(x.shape[1]), num_classes=int(y.shape[1]),
                             image_size=tuple(x.shape[2:]), seed=derive_seed(args.seed, 7003), **kc["model_kwargs"])
        scores: dict[str, list[float]] = {"untrained": [], f"after_{steps}_steps": []}
        for i in range(nets):
            net = family.build(i, "cpu")
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
            for t in range(steps + 1):
                if t in (0, steps):
                    net.eval()
                    with torch.no_grad():
                        f_syn = net.embed(x)
                        vals = [float(F.mse_loss(krr_predict(f_syn, net.embed(xb), y, ridge=ridge), yb))
                                for xb, yb in zip(x_real.chunk(batches), y_real.chunk(batches))]
                    scores["untrained" if t == 0 else f"after_{steps}_steps"].append(sum(vals) / len(vals))
                if t < steps:
                    net.train()
                    loss = F.mse_loss(net(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        result[name] = {k: {"values": v, "mean": sum(v) / len(v)} for k, v in scores.items()}
        print(name, {k: v["mean"] for k, v in result[name].items()}, flush=True)
    write_json(path, result)
    return result


def image_change(work: Path, png: Path, count: int = 16) -> dict:
    """How far KRR-ST moved the images and targets from their initialisation; writes a 2-row grid (init, final)."""
    import torch
    from torchvision.utils import save_image

    from ddistill.synset import SyntheticSet

    init, final = SyntheticSet.load(work / "krr_st_init.pt"), SyntheticSet.load(work / "krr_st.pt")
    x0, x1 = init.decode_images(), final.decode_images()
    grid = torch.cat([x0[:count], x1[:count]])
    save_image(torch.nn.functional.interpolate(grid, scale_factor=2, mode="nearest"), png, nrow=count, padding=2,
               pad_value=1.0)
    dx, dy = (x1 - x0).abs(), (final.y.float() - init.y.float()).abs()
    return {"mean_abs_pixel_change": float(dx.mean()), "max_abs_pixel_change": float(dx.max()),
            "mean_abs_target_change": float(dy.mean()), "mean_abs_target_init": float(init.y.float().abs().mean()),
            "grid_images": count, "grid": str(png)}


def stage_report(args: argparse.Namespace, work: Path) -> None:
    from ddistill.io import machine_info, write_json

    teacher = json.loads((work / "teacher.json").read_text())
    distill = json.loads((work / "krr_st.json").read_text())
    rows = {r: json.loads((work / f"row_{r}.json").read_text()) for r in ROWS if (work / f"row_{r}.json").exists()}
    change = image_change(work, Path(args.out).with_suffix(".png"))
    # The teacher is small (a width-32 ConvNet): keep a copy with the results for reuse (`synthesizers.krr_st.teacher.load_teacher`).
    teacher_copy = Path(args.out).parent / "sets" / "krr_st_teacher_cifar10.pt"
    teacher_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "teacher.pt", teacher_copy)
    teacher = {**teacher, "committed_copy": str(teacher_copy)}
    check = json.loads((work / "krr_loss_check.json").read_text())
    losses = distill["losses"]
    k = max(1, len(losses) // 10)
    loss_window = {"steps": k, "first": sum(losses[:k]) / k, "last": sum(losses[-k:]) / k}
    machine = machine_info()
    machine["torch_threads"] = args.threads
    command = (f"python benchmarks/krr_st_transfer.py --stage all --threads {args.threads} --work {args.work} "
               f"--out {args.out}" + (" --linear-probe" if args.linear_probe else ""))
    # The budget is read back from what each stage recorded, so the report cannot disagree with the runs.
    tc, kc = teacher["config"], distill["config"]
    budget = {
        "network": {"model": tc["model"], "model_kwargs": tc["model_kwargs"]},
        "teacher": {"epochs": tc["epochs"], "images": tc["max_images"], "batch_size": tc["batch_size"],
                    "warmup_epochs": tc["warmup_epochs"], "projector_dims": tc["projector_dims"],
                    "probe_iterations": tc["probe"]["iterations"]},
        "krr_st": {"num_images": kc["num_images"], "iterations": distill["iterations"],
                   "batch_real": kc["batch_real"], "num_models": kc["num_models"],
                   "online_iteration": kc["online_iteration"], "lr": kc["lr"], "model": kc["model"],
                   "model_kwargs": kc["model_kwargs"]},
    }
    transfer = {}
    for name, row in rows.items():
        det = row["details"]
        seen = {"runs": len(row["values"]), "finetune_iterations": det["finetune_iterations"],
                "target_per_class": row["target_per_class"], "model": det["model"], "model_kwargs": det["model_kwargs"]}
        if det["pretrain"] != "none":
            seen["pretrain_epochs"] = det["pretrain_epochs"]
        for k, v in seen.items():
            if transfer.setdefault(k, v) != v:
                raise ValueError(f"row {name} has {k}={v}, another row {transfer[k]}: rows ran with different budgets")
    budget["transfer"] = transfer
    result = {"benchmark": "krr_st_transfer", "command": command, "machine": machine, "shared_cpu": True,
              "data": f"CIFAR-10 JPEG mirror ({args.data})",
              "target": {"finetune": f"class-balanced labeled subset of the CIFAR-10 train split, "
                                     f"{budget['transfer']['target_per_class']} per class", "test": "CIFAR-10 test split (10k)"},
              "budget": budget, "teacher": teacher,
              "distill": {k: v for k, v in distill.items() if k != "losses"}, "distill_losses": distill["losses"],
              "image_change": change, "distill_loss_window": loss_window, "krr_loss_check": check,
              "rows": rows}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)

    b, t, d = budget, teacher, distill
    after = f"after_{check['online_steps']}_steps"
    n_target = 10 * budget["transfer"]["target_per_class"]
    lines = [
        "# KRR-ST transfer on CIFAR-10 at a CPU budget\n",
        (f"Source: CIFAR-10 JPEG mirror train split. Network everywhere (teacher backbone, KRR-ST pool, transfer): "
        f"`{b['network']['model']}` {b['network']['model_kwargs']} -- a small ConvNet instead of the paper's "
        f"ResNet-18 teacher / ConvNet-128-256-512 because of the CPU budget (see krr_st_speed.md). "
        f"{machine['torch_threads']} torch thread(s) on a shared {machine['cores']}-core CPU. "
        f"Command: `{command}` (run as separate stage processes, see the script's docstring).\n"),
        (f"**Teacher** (Barlow Twins, {b['teacher']['epochs']} epochs on {b['teacher']['images']} train images, "
        f"batch {b['teacher']['batch_size']}, projector {b['teacher']['projector_dims']}, "
        f"{t['train_seconds'] / 60:.1f} min wall on the shared CPU): linear-probe accuracy **{t['linear_probe_accuracy']:.2f} %** "
        f"(frozen {t['model']} features, probe trained on the 50k train split for "
        f"{b['teacher']['probe_iterations']} iterations, tested on the 10k test split). Teacher file: "
        f"`{t['committed_copy']}`.\n"),
        (f"**KRR-ST set**: N = {d['num_images']} images ({100 * d['fraction_of_source']:.1f} % of the "
        f"{round(d['num_images'] / d['fraction_of_source'])} source images), {d['iterations']} outer steps, real batch "
        f"{b['krr_st']['batch_real']}, pool M = {b['krr_st']['num_models']}, T = {b['krr_st']['online_iteration']}, "
        f"AdamW lr {b['krr_st']['lr']:g}; KRR loss (mean over the first / last {loss_window['steps']} steps; each step "
        f"uses a different pool network, so single steps are noisy) {loss_window['first']:.4g} -> "
        f"{loss_window['last']:.4g}; {d['seconds_incl_pool_init'] / 60:.1f} min wall (shared CPU) including the pool initialisation. The images "
        f"moved by {change['mean_abs_pixel_change']:.4f} on average (max {change['max_abs_pixel_change']:.3f}) in "
        f"[0, 1] pixels from their initialisation; the targets by {change['mean_abs_target_change']:.4f} on average "
        f"(mean |target| {change['mean_abs_target_init']:.4f}). `krr_st_transfer.png`: the first "
        f"{change['grid_images']} images, initialisation (top) and distilled (bottom).\n"),
        (f"**Objective check** (`--stage check`): KRR-ST loss on {check['real_images']} held-out CIFAR-10 test "
         f"images (no augmentation) with {check['nets']} fresh pool-architecture networks, untrained / after "
         f"{check['online_steps']} online steps on the scored set: initial set "
         f"{check['krr_st_init']['untrained']['mean']:.4g} / "
         f"{check['krr_st_init'][after]['mean']:.4g}, distilled set {check['krr_st']['untrained']['mean']:.4g} / "
         f"{check['krr_st'][after]['mean']:.4g}.\n"),
        (f"**Transfer**: pre-train {b['transfer']['pretrain_epochs']} epochs on each set (paper: 1000), then fine-tune "
        f"the whole network {b['transfer']['finetune_iterations']} iterations (batch 256, SGD 0.01, cosine; paper: "
        f"10k) on a class-balanced labeled subset of the CIFAR-10 train split ({n_target} images, "
        f"{budget['transfer']['target_per_class']} per class); top-1 accuracy on the CIFAR-10 test split, "
        f"{b['transfer']['runs']} runs per row, mean ± std (population std).\n"),
    ]
    probe = all("linear_probe" in row["details"] for row in rows.values())
    if probe:
        (probe_iterations,) = {row["linear_probe_iterations"] for row in rows.values()}
        for row in rows.values():
            v = row["details"]["linear_probe"]
            m = sum(v) / len(v)
            row["linear_probe_mean"], row["linear_probe_std"] = m, (sum((a - m) ** 2 for a in v) / len(v)) ** 0.5
        write_json(out.with_suffix(".json"), result)
        lines.append(f"Linear probe: logistic regression on the frozen pre-trained features (before fine-tuning), "
                     f"trained on the same {n_target} labeled images for {probe_iterations} "
                     f"iterations, tested on the CIFAR-10 test split.\n")
    lines += ["| pre-training set | images | fine-tuned test accuracy (%) | runs |"
              + (" linear probe (%) |" if probe else ""),
              "|---|---:|---:|---|" + ("---:|" if probe else "")]
    for r in ROWS:
        if r not in rows:
            continue
        row = rows[r]
        size = str(row["set_size"]) if r != "none" else "–"
        runs = ", ".join(f"{v:.2f}" for v in row["values"])
        cell = f" {row['linear_probe_mean']:.2f} ± {row['linear_probe_std']:.2f} |" if probe else ""
        lines.append(f"| {row['label']} | {size} | {row['mean']:.2f} ± {row['std']:.2f} | {runs} |{cell}")
    if "krr_st" in rows:
        diffs = {other: rows["krr_st"]["mean"] - rows[other]["mean"] for other in ROWS if other in rows and
                 other != "krr_st"}
        result["krr_st_minus"] = diffs
        write_json(out.with_suffix(".json"), result)
        lines.append("\nFine-tuned accuracy of KRR-ST minus: "
                     + "; ".join(f"{ROW_LABELS[k]} {v:+.2f} points" for k, v in diffs.items()) + ".")
        if probe:
            pdiffs = {other: rows["krr_st"]["linear_probe_mean"] - rows[other]["linear_probe_mean"] for other in diffs}
            result["krr_st_minus_linear_probe"] = pdiffs
            write_json(out.with_suffix(".json"), result)
            lines.append("Linear-probe accuracy of KRR-ST minus: "
                         + "; ".join(f"{ROW_LABELS[k]} {v:+.2f} points" for k, v in pdiffs.items()) + "."
                         + (" At this budget the KRR-ST pre-training gives better frozen features than no "
                            "pre-training, but fine-tuning does not keep the advantage."
                            if pdiffs.get("none", 0) > 0 >= diffs.get("none", 0) else ""))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.stage == "report":
        stage_report(args, work)
        return
    from ddistill.data import load_real

    real, test = load_real("cifar10_jpeg", root=args.data)
    if args.stage in ("teacher", "all"):
        stage_teacher(args, real, test, work)
    if args.stage in ("distill", "all"):
        stage_distill(args, real, work)
    if args.stage in ("check", "all"):
        stage_check(args, test, work)
    if args.stage in ("eval", "all"):
        stage_eval(args, real, work, list(ROWS) if args.stage == "all" else args.rows)
    if args.stage == "all":
        stage_report(args, work)


if __name__ == "__main__":
    main()
