"""DD-Ranking's label-robust (LRS) and augmentation-robust (ARS) scores (Li et al., "DD-Ranking: Rethinking the
Evaluation of Dataset Distillation", 2025; ``ddranking`` v0.2.0 ``metrics/{soft_label,hard_label,aug_robust}.py``),
re-implemented from their definitions.

Per evaluation run ``i``, with accuracies ``a`` of four trainings:

- LRS: ``HLR_i = a_real_hard - a_syn_hard`` (hard-label recovery, lower is better),
  ``IOR_i = a_syn_any - a_rdm_any`` (improvement over a random real subset trained the same way),
  ``alpha_i = w * IOR_i - (1 - w) * HLR_i``, ``LRS_i = (e^alpha_i - e^-1) / (e - e^-1)``;
- ARS: ``beta_i = g * (a_syn_aug - a_rdm_aug) + (1 - g) * (a_syn_noaug - a_rdm_noaug)``,
  ``ARS_i = (e^beta_i - e^-1) / (e - e^-1)``.

The reported numbers are the mean and population std over runs of the per-run values (never the score of the mean
accuracies). DD-Ranking's README calls the scores "normalised to [0, 1]", which holds only when the accuracies are
fractions; its code passes percentages (then the score is unbounded above and floors at -0.1565). ``units="fraction"``
(our default) follows the definition; ``units="percent"`` reproduces the code's numbers. Both are labelled in the
output.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["UNITS", "augmentation_robust_score", "label_robust_score", "normalised_exp"]

UNITS = ("fraction", "percent")
_E, _INV_E = math.e, math.exp(-1.0)


def normalised_exp(x: float) -> float:
    """``(e^x - e^-1) / (e - e^-1)``: 0 at x = -1, 1 at x = 1 (DD-Ranking's squashing of alpha / beta)."""
    return (math.exp(x) - _INV_E) / (_E - _INV_E)


def _scale(units: str) -> float:
    if units not in UNITS:
        raise ValueError(f"unknown units '{units}'; choose from {list(UNITS)}")
    return 0.01 if units == "fraction" else 1.0


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _check(name: str, *lists: Sequence[float]) -> int:
    n = len(lists[0])
    if n == 0 or any(len(v) != n for v in lists):
        raise ValueError(f"{name} needs one accuracy per run in every list, got lengths {[len(v) for v in lists]}")
    return n


def label_robust_score(acc_real_hard: float | Sequence[float], acc_syn_hard: Sequence[float],
                       acc_syn_any: Sequence[float], acc_rdm_any: Sequence[float], *, lam: float = 0.5,
                       units: str = "fraction") -> dict[str, float | list[float]]:
    """LRS from per-run test accuracies in percent (0-100).

    Args:
        acc_real_hard: the whole-real-data accuracy (one number, or one per run).
        acc_syn_hard: the set trained with hard labels, per run.
        acc_syn_any: the set trained with its own label protocol (soft labels for LRS-soft; = acc_syn_hard for
            LRS-hard), per run.
        acc_rdm_any: a random real subset of the same size trained with that same protocol, per run.
        lam: ``w``, the weight of IOR (DD-Ranking's ``lrs_lambda``, default 0.5).
        units: ``fraction`` (accuracies / 100 inside the exponential, so LRS is in [0, 1]) or ``percent``
            (``ddranking`` v0.2.0's code).

    Returns:
        ``hard_label_recovery_{mean,std}``, ``improvement_over_random_{mean,std}`` (percentage points) and
        ``label_robust_score_{mean,std}`` plus the per-run lists, as DD-Ranking names them.
    """
    n = _check("label_robust_score", acc_syn_hard, acc_syn_any, acc_rdm_any)
    real = [float(acc_real_hard)] * n if isinstance(acc_real_hard, (int, float)) else list(acc_real_hard)
    _check("label_robust_score", real, acc_syn_hard)
    s = _scale(units)
    hlr = [r - h for r, h in zip(real, acc_syn_hard)]
    ior = [a - b for a, b in zip(acc_syn_any, acc_rdm_any)]
    lrs = [normalised_exp(lam * s * i - (1 - lam) * s * h) for h, i in zip(hlr, ior)]
    out: dict[str, float | list[float]] = {}
    for key, values in (("hard_label_recovery", hlr), ("improvement_over_random", ior), ("label_robust_score", lrs)):
        out[f"{key}_mean"], out[f"{key}_std"] = _mean_std(values)
        out[key] = values
    out["units"] = units  # type: ignore[assignment]
    return out


def augmentation_robust_score(acc_syn_aug: Sequence[float], acc_rdm_aug: Sequence[float],
                              acc_syn_noaug: Sequence[float], acc_rdm_noaug: Sequence[float], *, lam: float = 0.5,
                              units: str = "fraction") -> dict[str, float | list[float]]:
    """ARS from per-run test accuracies in percent: set and random subset, each with and without augmentation.

    Args:
        lam: ``g``, the weight of the with-augmentation gap (DD-Ranking's ``ars_lambda``, default 0.5).
        units: as :func:`label_robust_score`.

    Returns:
        ``with_aug_scores_{mean,std}``, ``without_aug_scores_{mean,std}`` (percentage points) and
        ``augmentation_robust_score_{mean,std}`` plus the per-run lists.
    """
    _check("augmentation_robust_score", acc_syn_aug, acc_rdm_aug, acc_syn_noaug, acc_rdm_noaug)
    s = _scale(units)
    with_aug = [a - b for a, b in zip(acc_syn_aug, acc_rdm_aug)]
    without = [a - b for a, b in zip(acc_syn_noaug, acc_rdm_noaug)]
    ars = [normalised_exp(lam * s * w + (1 - lam) * s * o) for w, o in zip(with_aug, without)]
    out: dict[str, float | list[float]] = {}
    for key, values in (("with_aug_scores", with_aug), ("without_aug_scores", without),
                        ("augmentation_robust_score", ars)):
        out[f"{key}_mean"], out[f"{key}_std"] = _mean_std(values)
        out[key] = values
    out["units"] = units  # type: ignore[assignment]
    return out
