"""Feeds scripted per-run accuracies through ``ddranking``'s own ``compute_metrics`` (LRS-hard, LRS-soft, ARS) and
compares what it returns with :mod:`ddistill.utils.robust_scores` (issue #14, item 3).

No training runs: the accuracy helpers of DD-Ranking's metric classes are replaced by queues of the accuracies below,
so the comparison isolates the score formulas. Needs ``ddranking`` importable (the environment of
``benchmarks/ddranking_compat.sh``)::

    VENV/bin/python benchmarks/ddranking_scores_check.py --out benchmarks/results/ddranking_scores_check.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The same per-run accuracies (percent) as tests/test_robust_scores.py's "ddranking" cases.
HARD = {"full": [60.0, 60.5], "syn": [59.0, 59.8], "rnd": [58.7, 59.9], "lam": 0.3}
SOFT = {"full": [50.0] * 5, "syn_hard": [49.2, 49.9, 50.3, 48.7, 49.5], "syn_soft": [50.1, 51.0, 50.4, 49.8, 50.6],
        "rnd_soft": [49.7, 50.2, 50.9, 49.0, 50.1]}
ARS = {"syn_aug": [51.2, 50.6, 51.9], "rnd_aug": [50.4, 50.9, 50.8], "syn_noaug": [48.3, 48.0, 48.9],
       "rnd_noaug": [48.5, 47.6, 48.1]}


def _fake(num_eval: int, scripts: dict[str, list[float]], random_tuple: int) -> types.SimpleNamespace:
    """A stand-in ``self`` whose accuracy helpers pop scripted values in the order compute_metrics calls them."""
    queues = {k: list(v) for k, v in scripts.items()}
    ns = types.SimpleNamespace(num_eval=num_eval, eval_full_data=True, use_dist=False, rank=0, world_size=1, ipc=1,
                               num_classes=10, save_path=tempfile.mktemp(suffix=".csv"), soft_label_mode="M",
                               label_type="soft")
    for name in queues:
        setattr(ns, name, (lambda q: (lambda **kw: (q.pop(0), 0.01)))(queues[name]))
    ns._get_random_data_helper = lambda eval_iter: (None,) * random_tuple
    return ns


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch
    from importlib.metadata import version

    import ddranking.metrics.aug_robust as A
    import ddranking.metrics.hard_label as H
    import ddranking.metrics.soft_label as S
    from ddistill.utils.robust_scores import augmentation_robust_score, label_robust_score

    # ddranking 0.2.0's LRS-hard appends each run's lrs twice (hard_label.py, compute_metrics), so its CSV writer
    # raises on unequal column lengths before returning; the returned means/stds are unaffected (a duplicated list
    # has the same mean and population std), so the writer is disabled here and the bug is reported.
    for mod in (A, H, S):
        mod.save_results = lambda *a, **k: None
    zero = torch.zeros(1)
    rows = []

    def compare(name: str, theirs: dict, ours: dict) -> None:
        for key, value in theirs.items():
            rows.append({"metric": name, "key": key, "ddranking": float(value), "ddistill": float(ours[key]),
                         "equal": abs(float(value) - float(ours[key])) <= 1e-12})

    n = len(HARD["syn"])
    seq = [v for i in range(n) for v in (HARD["syn"][i], HARD["full"][i], HARD["rnd"][i])]
    theirs = H.LabelRobustScoreHard.compute_metrics(_fake(n, {"_compute_hard_label_metrics_helper": seq}, 3),
                                                    image_tensor=zero, syn_lr=0.01, lrs_lambda=HARD["lam"])
    compare("LRS-hard", theirs, label_robust_score(HARD["full"], HARD["syn"], HARD["syn"], HARD["rnd"],
                                                    lam=HARD["lam"], units="percent"))
    n = len(SOFT["syn_hard"])
    fake = _fake(n, {"_compute_hard_label_metrics_helper": [v for i in range(n) for v in (SOFT["syn_hard"][i],
                                                                                          SOFT["full"][i])],
                     "_compute_soft_label_metrics_helper": [v for i in range(n) for v in (SOFT["syn_soft"][i],
                                                                                          SOFT["rnd_soft"][i])]}, 3)
    theirs = S.LabelRobustScoreSoft.compute_metrics(fake, image_tensor=zero, soft_labels=zero, syn_lr=0.01)
    compare("LRS-soft", theirs, label_robust_score(SOFT["full"], SOFT["syn_hard"], SOFT["syn_soft"], SOFT["rnd_soft"],
                                                    units="percent"))
    n = len(ARS["syn_aug"])
    fake = _fake(n, {"_compute_with_aug_metrics_helper": [v for i in range(n) for v in (ARS["syn_aug"][i],
                                                                                        ARS["rnd_aug"][i])],
                     "_compute_without_aug_metrics_helper": [v for i in range(n) for v in (ARS["syn_noaug"][i],
                                                                                           ARS["rnd_noaug"][i])]}, 4)
    theirs = A.AugmentationRobustScore.compute_metrics(fake, image_tensor=zero, soft_labels=zero, syn_lr=0.01)
    compare("ARS", theirs, augmentation_robust_score(ARS["syn_aug"], ARS["rnd_aug"], ARS["syn_noaug"],
                                                     ARS["rnd_noaug"], units="percent"))
    result = {"ddranking": version("ddranking"), "inputs": {"LRS-hard": HARD, "LRS-soft": SOFT, "ARS": ARS},
              "rows": rows, "all_equal": all(r["equal"] for r in rows),
              "note": "ddranking's LRS-hard CSV writer disabled: it appends lrs twice per run and raises"}
    for r in rows:
        print(f"{r['metric']:9s} {r['key']:32s} ddranking {r['ddranking']:.15g}  ddistill {r['ddistill']:.15g}  "
              f"{'equal' if r['equal'] else 'DIFFERENT'}")
    print("all equal:", result["all_equal"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["all_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
