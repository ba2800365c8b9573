"""Reuse of distilled sets on the CIFAR-10 JPEG mirror: class-incremental continual learning (DataDAM vs
random vs herding memories) and NAS (DataDAM vs random proxies), at a CPU budget.

    python benchmarks/reuse_cifar10.py --datadam benchmarks/results/sets/datadam_paper_cifar10_ipc10.pt \
        --out benchmarks/results/reuse_cifar10

Continual: 5 stages of 2 classes, memory = the set's images of the seen classes, a ConvNet-3 retrained from
scratch after each stage (GDumb-style), ``--runs`` runs (class orders x networks). NAS: ``--archs`` ConvNets
sampled from the DC 720-architecture space, each trained ``--proxy-epochs`` on the proxy and
``--real-epochs`` on real data (held-out validation split for both), Spearman correlation of the rankings, with the
NAS evaluator's controls beside it: the Spearman between two real rankings of other seeds (the ceiling: a ground truth
that does not agree with itself cannot be matched) and a random real proxy of the set's per-class counts (the proxy a
distilled set must beat), and the cost of the proxy search against the real one. The NAS controls of the committed
``reuse_cifar10_nas`` result (the continual rows are in ``reuse_cifar10``)::

    python benchmarks/reuse_cifar10.py --datadam benchmarks/results/sets/datadam_paper_cifar10_ipc10.pt \
        --skip continual --archs 6 --proxy-epochs 50 --real-epochs 1 --real-train-size 5000 --threads 1 \
        --out benchmarks/results/reuse_cifar10_nas

The random-proxy control drawn five times against the 3-epoch ground truth of ``reuse_cifar10_nas_real3`` (same
seeds; the ceiling is that file's, so the second real ranking is not trained again)::

    python benchmarks/reuse_cifar10.py --datadam benchmarks/results/sets/datadam_paper_cifar10_ipc10.pt \
        --skip continual --archs 6 --proxy-epochs 50 --real-epochs 3 --real-train-size 5000 --threads 1 \
        --nas-controls random_subset --nas-random-draws 5 --out benchmarks/results/reuse_cifar10_nas_real3_draws
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ddistill.data import EvalData, load_real
from ddistill.io import machine_info, write_json
from ddistill.synset import SyntheticSet
from ddistill.utils.train import TrainRecipe
from evaluators import EvalResult
from evaluators.continual import ContinualConfig, ContinualEvaluator
from evaluators.nas import CONTROLS as NAS_CONTROLS, NASConfig, NASEvaluator
from synthesizers import SYNTHESIZERS
from synthesizers._selection import EmbeddingConfig


def plot_curves(results: dict[str, EvalResult], path: str, *, title: str = "") -> None:
    """Accuracy-per-stage curves (mean ± std) of several memories into one PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, res in results.items():
        mean, std = np.array(res.details["curve_mean"]), np.array(res.details["curve_std"])
        classes = [(i + 1) * res.details["classes_per_stage"] for i in range(len(mean))]
        ax.errorbar(classes, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xlabel("classes seen")
    ax.set_ylabel("test accuracy on seen classes (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--datadam", required=True, help="a DataDAM synset.pt distilled from the same data")
    p.add_argument("--out", default="benchmarks/results/reuse_cifar10")
    p.add_argument("--runs", type=int, default=3, help="continual runs (class orders, 1 network each)")
    p.add_argument("--cl-epochs", type=int, default=300)
    p.add_argument("--herding-embed-epochs", type=int, default=5)
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--proxy-epochs", type=int, default=100)
    p.add_argument("--real-epochs", type=int, default=2)
    p.add_argument("--real-train-size", type=int, default=10000)
    p.add_argument("--skip", nargs="*", default=[], choices=["continual", "nas"])
    p.add_argument("--nas-proxies", nargs="+", default=["DataDAM"], choices=["DataDAM", "random"],
                   help="proxies scored by NAS; the evaluator's random_subset control already scores a random real "
                        "proxy of the set's counts beside each (add 'random' for the fixed random set as a proxy too)")
    p.add_argument("--nas-random-draws", type=int, default=1,
                   help="random real proxies the NAS control draws (each a full proxy search); its spread is theirs")
    p.add_argument("--nas-controls", nargs="*", default=list(NAS_CONTROLS), choices=list(NAS_CONTROLS),
                   help="the NAS evaluator's controls (real_repeat costs a second real ranking)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    real, test = load_real("cifar10_jpeg", root=args.data)
    datadam = SyntheticSet.load(args.datadam)
    ipc = int(datadam.meta["ipc"])
    rnd, herd = SYNTHESIZERS.get("random"), SYNTHESIZERS.get("herding")
    memories = {
        f"DataDAM ({datadam.meta['config'].get('preset', '')})": datadam,
        "random": rnd(rnd.Config(ipc=ipc), seed=args.seed).fit(real),
    }
    if "continual" not in args.skip:  # herding trains an embedding network on the whole split: only when used
        memories["herding"] = herd(herd.Config(ipc=ipc, embedding=EmbeddingConfig(
            train=TrainRecipe(epochs=args.herding_embed_epochs, augment="none"))), seed=args.seed).fit(real)
    out = Path(args.out)
    result = {"benchmark": "reuse_cifar10", "machine": machine_info(), "data": "CIFAR-10 JPEG mirror", "ipc": ipc,
              "datadam_set": args.datadam, "seed": args.seed, "continual": {}, "nas": {},
              "command": " ".join(["python", "benchmarks/reuse_cifar10.py", *sys.argv[1:]])}
    lines = [f"# Reuse of distilled sets, CIFAR-10 JPEG mirror, IPC {ipc}\n",
             f"Command: `{result['command']}`. Seed {args.seed}.\n"]
    if "continual" not in args.skip:
        # controls=[]: the "random" memory row (same IPC, orders, networks and epochs) is the control.
        cfg = ContinualConfig(stages=5, num_orders=args.runs, models_per_order=1, model="convnet", model_kwargs={},
                              train=TrainRecipe(epochs=args.cl_epochs), progress=False, controls=[])
        result["continual"]["protocol"] = (f"5 stages x 2 classes, {args.runs} class orders x 1 ConvNet-3, "
                                           f"{args.cl_epochs} epochs from scratch after each stage, DSA")
        curves = {}
        for name, mem in memories.items():
            curves[name] = ContinualEvaluator(cfg, seed=args.seed).evaluate(mem, test)
            result["continual"][name] = curves[name].to_dict()
            print(f"continual {name}: " + ", ".join(f"{m:.1f}" for m in curves[name].details["curve_mean"]), flush=True)
            write_json(out.with_suffix(".json"), result)
        plot_curves(curves, str(out.with_name(out.name + "_continual.png")),
                    title=f"CIFAR-10 class-incremental, IPC {ipc} memory")
        lines += [f"## Continual learning ({result['continual']['protocol']})\n",
                  "| memory | " + " | ".join(f"{2 * (i + 1)} classes" for i in range(5)) + " |",
                  "|---|" + "---:|" * 5]
        for name, r in curves.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{m:.1f} ± {s:.1f}" for m, s in zip(r.details["curve_mean"], r.details["curve_std"])) + " |")
    if "nas" not in args.skip:
        cfg = NASConfig(num_architectures=args.archs, proxy=TrainRecipe(epochs=args.proxy_epochs),
                        real=TrainRecipe(epochs=args.real_epochs, augment="none"),
                        real_train_size=args.real_train_size, val_size=5000, progress=False,
                        random_subset_draws=args.nas_random_draws, controls=list(args.nas_controls))
        result["nas"]["protocol"] = (f"{args.archs} of the 720 DC ConvNets (seeded sample), proxy {args.proxy_epochs} "
                                     f"epochs with DSA, real {args.real_epochs} epochs on {args.real_train_size} "
                                     "images, 5000 held-out validation images")
        lines += [f"\n## NAS ({result['nas']['protocol']})\n",
                  "Controls beside each proxy, same architectures, validation split and budget: *random proxy* = a "
                  f"random real subset with the proxy's per-class counts (the proxy to beat; {args.nas_random_draws} "
                  "draw(s): mean ± std over the draws); *real vs real* = the "
                  "Spearman between two real rankings with other seeds (the ceiling for any proxy).\n",
                  "| proxy | Spearman | random proxy (control) | real vs real (ceiling) | selected arch "
                  "(real-trained test %) | best by real val (test %) | proxy search | its random-proxy control "
                  f"| real ranking{' (x2)' if 'real_repeat' in args.nas_controls else ''} |",
                  "|---|---:|---:|---:|---|---|---:|---:|---:|"]
        nas = NASEvaluator(cfg, seed=args.seed)  # one evaluator: the real-data ranking is trained once
        warnings: list[str] = []
        notes: list[str] = []
        for name in args.nas_proxies:
            mem = next(v for k, v in memories.items() if k.startswith(name))
            r = nas.evaluate(mem, EvalData(test=test, train=real))
            result["nas"][name] = r.to_dict()
            d = r.details
            c = d.get("controls", {})
            rdm, ceil = c.get("random_subset", {}), c.get("real_repeat", {})
            real_min = (d["cost"]["real_seconds"] + ceil.get("seconds", 0.0)) / 60
            spread = f" ± {rdm['std']:.3f}" if "std" in rdm else ""
            ceiling = f"{ceil['mean']:.3f}" if ceil else "not run"
            lines.append(f"| {name} | {r.values[0]:.3f} | {rdm.get('mean', float('nan')):.3f}{spread} | "
                         f"{ceiling} | {d['selected']} "
                         f"({d['selected_real_test_accuracy']:.1f}) | {d['best_by_real_val']} "
                         f"({d['best_real_test_accuracy']:.1f}) | {d['proxy_search_seconds'] / 60:.1f} min | "
                         f"{rdm.get('seconds', 0.0) / 60:.1f} min | {real_min:.1f} min |")
            print(lines[-1], flush=True)
            if "draws" in rdm:
                notes.append(f"- {name}'s random-proxy draws (Spearman each): "
                             + ", ".join(f"{x['spearman']:.3f}" for x in rdm["draws"]))
            warnings += [f"- warning ({name}): {w}" for w in d.get("warnings", [])]
            write_json(out.with_suffix(".json"), result)
        lines += ["", *notes, *warnings] if notes or warnings else []  # after the table: inside, it would break it
    write_json(out.with_suffix(".json"), result)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
