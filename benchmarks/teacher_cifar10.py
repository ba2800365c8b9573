"""The soft-label teacher of DD-Ranking's soft-label protocol on CIFAR-10 (issue #14): a ConvNet trained on the whole
real training split, saved as a ``ddistill.classifier`` file that ``evaluation_cifar10.py --teacher`` (protocol
``dd_ranking_soft``) and any ``soft_labels.teacher`` read.

Why a file: DD-Ranking evaluates soft labels from a fixed, pre-trained teacher of the student's architecture (its
ConvNet-3 teachers are loaded from ``teacher_dir``). Training one inside every evaluation would retrain it per cell,
and on this CPU each epoch over 50,000 images takes minutes.

Network: the evaluation network of ``evaluation_cifar10.py``'s ``common`` and ``dd_ranking`` protocols (instance-norm
ConvNet-3, width 128), so teacher and student share the architecture as DD-Ranking's configs do. Recipe: by default
the recipe of that script's whole-training-split row (DC's SGD 0.01, momentum 0.9, wd 5e-4, batch 256, x0.1 at half,
no augmentation, ``--epochs`` 10): a reduced teacher, stated with its test accuracy in the file, the result and every
report that uses it. DD-Ranking's own teachers are trained far longer. The committed teacher and result::

    python benchmarks/teacher_cifar10.py --threads 1

Encoding: a soft-label teacher must see the student's inputs, so its encoding is the set's. By default the mean/std
normalisation of the DataDAM and random sets; ``--encoding-from SET`` takes a set file's encoding instead, e.g. the
ZCA whitening of the trajectory-matching sets (all four ``runs/mtt10k/sets/mtt_*`` share one ZCA). That teacher
carries the 3072 x 3072 ZCA matrix (38 MB), so, like those sets, it is not committed; its result is::

    python benchmarks/teacher_cifar10.py --threads 1 --encoding-from runs/mtt10k/sets/mtt_mtt_ipc1.pt \
        --teacher-out runs/mtt10k/dd_ranking_teacher_cifar10_zca.pt --out benchmarks/results/teacher_cifar10_zca

``--zca`` fits that whitening itself, as the sets' data loader does (whole training split, eps 0.1, 1 thread), so the
teacher trains while the sets are made; the soft-label cells check that its ZCA tensors equal the set's. The teacher
of the re-made sets (``runs/mtt10k_r3``)::

    python benchmarks/teacher_cifar10.py --threads 1 --zca \
        --teacher-out runs/mtt10k_r3/dd_ranking_teacher_cifar10_zca.pt --out benchmarks/results/teacher_cifar10_zca_r3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--dataset", default="cifar10_jpeg", help="dataset name (digits: a quick check of the script)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--augment", default="none", choices=["none", "dsa"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--encoding-from", default=None, metavar="SET",
                   help="a SyntheticSet file whose encoding (e.g. its ZCA) the teacher's inputs take (default: the "
                   "dataset's mean/std normalisation)")
    # The trajectory-matching sets' ZCA is fitted on the whole training split when their data is loaded
    # (mtt_cifar10.py's load_real(..., zca=True)); fitting it the same way here lets the teacher train while the sets
    # are still being made. load_classifier still compares the two encodings tensor for tensor before any use; the
    # fit's last bits depend on the torch thread count, so --threads must be the sets' (mtt_cifar10.py: 1).
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the inputs (eps 0.1, fitted on the whole training "
                   "split as benchmarks/mtt_cifar10.py does, at the same --threads) instead of --encoding-from a set")
    p.add_argument("--teacher-out", default="benchmarks/results/sets/dd_ranking_teacher_cifar10.pt")
    p.add_argument("--out", default="benchmarks/results/teacher_cifar10")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --teacher-out and --out result")
    args = p.parse_args(argv)
    if args.zca and args.encoding_from is not None:
        p.error("--zca and --encoding-from both choose the encoding: pass one")
    return args


def encode_as(set_path: str, spec, real, test):
    """The real splits in the input space of the set at ``set_path`` (its encoding, ZCA tensors included), so the
    teacher's file carries exactly the encoding ``load_classifier(..., encoding=)`` compares with the set's."""
    from ddistill.data import Encoding, EvalNeeds, load_eval_data
    from ddistill.synset import SyntheticSet, SyntheticSetError

    if not Path(set_path).exists():
        raise SystemExit(f"--encoding-from {set_path} does not exist")
    try:
        synset = SyntheticSet.load(set_path)
    except SyntheticSetError as e:
        raise SystemExit(f"--encoding-from: {e}") from None
    if (synset.meta.get("data") or {}).get("name") not in (None, spec.name):
        raise SystemExit(f"--encoding-from {set_path}: a set of {synset.meta['data']['name']!r}, not of "
                         f"--dataset {spec.name!r}")
    if "encoding" not in synset.meta:
        raise SystemExit(f"--encoding-from {set_path}: the set records no image encoding (meta['encoding'])")
    try:
        enc = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"--encoding-from {set_path}: unreadable encoding ({e})") from None
    data = load_eval_data(spec, EvalNeeds(test=True, train=True), encoding=enc, loaded=(real, test))
    return data.train, data.test


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    teacher_path = Path(args.teacher_out)
    # The result files describe the teacher file: neither is replaced without --overwrite (a forgotten --out would
    # otherwise rewrite the committed result of another teacher).
    for path in (teacher_path, Path(args.out).with_suffix(".json"), Path(args.out).with_suffix(".md")):
        if path.exists() and not args.overwrite:
            raise SystemExit(f"{path} exists; pass --overwrite to replace it (or another --teacher-out / --out)")
    import torch

    from ddistill.augment import build_augment
    from ddistill.classifier_file import save_classifier, train_real_classifier
    from ddistill.data import DataSpec, load_data
    from ddistill.io import machine_info, write_json
    from ddistill.utils.perf import PerfConfig
    from ddistill.utils.train import TrainRecipe, accuracy

    torch.set_num_threads(args.threads)
    spec = DataSpec(args.dataset, args.data if args.dataset != "digits" else None, zca=args.zca)
    real, test = load_data(spec)
    if args.encoding_from is not None:
        real, test = encode_as(args.encoding_from, spec, real, test)
    recipe = TrainRecipe(epochs=args.epochs, augment=args.augment)
    start = time.perf_counter()
    net = train_real_classifier(real, "convnet", {}, recipe, seed=args.seed, perf=PerfConfig(threads=args.threads),
                                augment=build_augment(args.augment, args.dataset))
    seconds = time.perf_counter() - start
    test_acc = 100.0 * accuracy(net, real.encoding.encode(test.x), test.y)
    inputs = ("ZCA-whitened as " + str(args.encoding_from) if args.encoding_from is not None
              else f"ZCA-whitened, eps {real.encoding.zca.eps:g}, fitted on the whole training split"
              if real.encoding.zca is not None else "mean/std normalised")
    recipe_meta = {"what": f"instance-norm ConvNet-3 width 128 on the whole {args.dataset} training split ({inputs}), "
                   f"DC recipe (SGD 0.01, momentum 0.9, wd 5e-4, batch 256, x0.1 at half), {args.epochs} epochs, "
                   f"augment {args.augment}; made by teacher_cifar10.py", "epochs": args.epochs,
                   "augment": args.augment, "encoding": real.encoding.to_meta(), "encoding_from": args.encoding_from}
    save_classifier(teacher_path, net, model="convnet", model_kwargs={}, real=real, recipe=recipe_meta,
                    seed=args.seed, test_accuracy=test_acc)
    payload = {"benchmark": "teacher_cifar10", "command": "python benchmarks/teacher_cifar10.py "
               + " ".join(sys.argv[1:]), "machine": machine_info(), "data": args.data, "teacher": str(teacher_path),
               "threads": args.threads, "seconds": seconds, "train_images": int(len(real)),
               "test_images": int(len(test.y)), "test_accuracy": test_acc, "seed": args.seed, **recipe_meta}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), payload)
    out.with_suffix(".md").write_text("\n".join([
        "# The soft-label teacher of the DD-Ranking soft-label protocol (issue #14)", "",
        f"Command: `{payload['command']}` ({seconds / 60:.1f} min of training on {machine_info().get('cpu')}, "
        f"{args.threads} torch thread(s), possibly shared with other jobs). Data: `{args.data}` "
        f"({len(real):,} train / {len(test.y):,} test images). Seed {args.seed}.", "",
        f"Teacher: {recipe_meta['what']}. File: `{teacher_path}`.", "",
        f"- test accuracy: {test_acc:.2f} % (the ceiling a soft-label student can inherit from it)", "",
        "A reduced teacher: DD-Ranking's are trained to convergence. Its soft labels are scored by "
        "`evaluation_cifar10.py --protocols dd_ranking_soft --teacher " + str(teacher_path) + "`.", ""]))
    print(f"test accuracy {test_acc:.2f} % ({seconds / 60:.1f} min); wrote {teacher_path}, {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
