"""A supervised source-class teacher for the KRR-ST transfer comparison: does KRR-ST hand on a teacher that is worth
handing on? (issue #15)

Why: on the leak-free split of ``evaluation_transfer.py`` (CIFAR-10 classes 0-4 as source, 5-9 as target) the
committed Barlow Twins teacher (width-32 ConvNet, 12 epochs) has a linear probe *below* fine-tuning from scratch at
500, 50 and 10 labelled target images per class (``evaluation_transfer{,_t50,_t10}.md``), so no distillation of its
representation can be expected to beat no pre-training there. A stronger self-supervised teacher needs far more
epochs than this CPU allows. This script makes the cheapest teacher that may clear the bar: the same backbone trained
*with the source labels* (classes 0-4 only, so the target's labels stay unread), then ``evaluation_transfer.py
--teacher`` re-runs every row with it. It is a diagnostic, not KRR-ST's setting: the paper's teacher never reads a
label. The random-source-subset row of that comparison reads the same source labels, so the two stay comparable.

Recipe: the DC classifier recipe (SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, x0.1 at half, DSA) for
``--epochs`` epochs on the whole source training split (25,000 images), seed ``--seed``. The head is dropped: the
teacher file holds the backbone whose 512-d output KRR-ST regresses (as the Barlow Twins teacher's). The result
records the teacher's own source test accuracy and its linear probe on the source test split
(:func:`ddistill.utils.probe.linear_probe`, trained on the source train split). The committed teacher and result::

    python benchmarks/transfer_teacher_supervised.py --threads 1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

WHAT = ("supervised ConvNet width 32 BN, {epochs} epochs with the labels of CIFAR-10 classes {classes} (the transfer "
        "source; it never saw a target image or label); made by transfer_teacher_supervised.py")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--dataset", default="cifar10_jpeg")
    p.add_argument("--source-classes", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--width", type=int, default=32, help="ConvNet width (the KRR-ST pool and transfer network's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-out", default="benchmarks/results/sets/krr_st_teacher_supervised_cifar10_src0-4.pt")
    p.add_argument("--out", default="benchmarks/results/transfer_teacher_supervised")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --teacher-out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    teacher_path = Path(args.teacher_out)
    if teacher_path.exists() and not args.overwrite:
        raise SystemExit(f"{teacher_path} exists; pass --overwrite to replace it")
    import torch

    from ddistill.augment import build_augment
    from ddistill.classifier_file import train_real_classifier
    from ddistill.data import DataSpec, load_data
    from ddistill.io import machine_info, write_json
    from ddistill.models import create_model
    from ddistill.utils.perf import PerfConfig
    from ddistill.utils.probe import LinearProbeConfig, linear_probe
    from ddistill.utils.seed import make_generator
    from ddistill.utils.train import TrainRecipe, accuracy
    from synthesizers.krr_st.teacher import save_teacher

    torch.set_num_threads(args.threads)
    spec = DataSpec(args.dataset, args.data, classes=list(args.source_classes))
    real, test = load_data(spec)
    kwargs = {"width": args.width, "norm": "batchnorm"}
    recipe = TrainRecipe(epochs=args.epochs, augment="dsa")
    start = time.perf_counter()
    net = train_real_classifier(real, "convnet", kwargs, recipe, seed=args.seed, perf=PerfConfig(threads=args.threads),
                                augment=build_augment("dsa", args.dataset))
    seconds = time.perf_counter() - start
    x_test = real.encoding.encode(test.x)
    source_acc = 100.0 * accuracy(net, x_test, test.y)
    # The backbone: the same network with an identity head (num_classes=0), as the teacher file rebuilds it.
    backbone = create_model("convnet", in_channels=int(real.x.shape[1]), num_classes=0,
                            image_size=tuple(real.x.shape[2:]), **kwargs)
    state = {k: v for k, v in net.state_dict().items() if k in backbone.state_dict()}
    backbone.load_state_dict(state)
    backbone.eval()
    probe = linear_probe(backbone, (real.x, real.y), (x_test, test.y), config=LinearProbeConfig(),
                         generator=make_generator(args.seed))
    src = args.source_classes
    contiguous = src == list(range(src[0], src[-1] + 1))
    what = WHAT.format(epochs=args.epochs, classes=f"{src[0]}-{src[-1]}" if contiguous else src)
    config = {"what": what, "recipe": "DC classifier recipe (SGD 0.01, momentum 0.9, wd 5e-4, batch 256, x0.1 at "
              "half, DSA)", "epochs": args.epochs, "source_classes": list(args.source_classes), "seed": args.seed,
              "source_test_accuracy": source_acc}
    save_teacher(teacher_path, backbone, model="convnet", model_kwargs=kwargs, encoding=real.encoding,
                 dataset=f"{args.dataset}[{','.join(map(str, args.source_classes))}]", config=config,
                 linear_probe_accuracy=probe)
    payload = {"benchmark": "transfer_teacher_supervised", "command": "python benchmarks/transfer_teacher_supervised.py "
               + " ".join(sys.argv[1:]), "machine": machine_info(), "data": args.data, "teacher": str(teacher_path),
               "what": what, "seconds": seconds, "source_train_images": int(len(real)),
               "source_test_images": int(len(test.y)), "source_test_accuracy": source_acc,
               "source_linear_probe_accuracy": probe, **{k: v for k, v in config.items() if k != "what"}}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), payload)
    out.with_suffix(".md").write_text("\n".join([
        "# A supervised source-class teacher for the KRR-ST transfer diagnostic (issue #15)", "",
        f"Command: `{payload['command']}` ({seconds / 60:.1f} min of training on {machine_info().get('cpu')}, "
        f"{args.threads} torch thread(s), shared with other jobs). Data: `{args.data}`, classes "
        f"{args.source_classes} only ({len(real):,} train / {len(test.y):,} test images).", "",
        f"Teacher: {what}. File: `{teacher_path}` (the backbone; its head is dropped).", "",
        f"- its own source test accuracy: {source_acc:.2f} % ({len(args.source_classes)} classes)",
        f"- linear probe of its frozen 512-d features on the source split: {probe:.2f} %", "",
        "Its worth as a teacher for the target classes is measured by `evaluation_transfer.py --teacher` "
        "(the teacher-probe row against no pre-training), not here.", ""]))
    print(f"source test accuracy {source_acc:.2f} %, probe {probe:.2f} % ({seconds / 60:.1f} min); wrote "
          f"{teacher_path}, {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
