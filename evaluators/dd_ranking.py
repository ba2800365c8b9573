"""DD-Ranking's scores of a distilled image set (Li et al. 2025; ``ddranking`` v0.2.0): the label-robust score (LRS)
and the augmentation-robust score (ARS), computed as DD-Ranking defines them (:mod:`ddistill.utils.robust_scores`)
from trainings run by the classifier evaluator under DD-Ranking's protocol (preset ``dd_ranking``).

Per run ``i`` (one network per training kind, the random subset drawn afresh per run):

- LRS: ``acc_real_hard`` (one network on the whole real training split), ``acc_syn_hard`` (the set, hard labels),
  ``acc_syn_any`` / ``acc_rdm_any`` (the set / a random real subset of the same per-class size under the set's label
  protocol: hard labels, or a teacher's soft labels with ``label_type: soft``);
- ARS: the set and the random subset under that label protocol, with the configured augmentation and without any.

Two accuracy readings, both stored and labelled: ``final`` (the honest one: each network's accuracy after its last
epoch; the headline) and ``max_over_epochs`` (each network's best test checkpoint, what ``ddranking`` computes). Our
deviations from ``ddranking`` v0.2.0, stated in every result: the learning rate is selected on a validation split of
the real training data, never on the test split; seeds are explicit (``ddranking`` seeds from the wall clock); the
scores use accuracies as fractions (``units: fraction``, bounded in [0, 1] as its README says) unless
``units: percent`` (its code's numbers).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ddistill.data import EvalData, EvalNeeds
from ddistill.synset import SyntheticSet
from ddistill.utils.robust_scores import UNITS, augmentation_robust_score, label_robust_score
from ddistill.utils.soft_labels import SoftLabelConfig

from .base import EVALUATORS, EvalResult, Evaluator
from .classifier import PRESETS, ClassifierConfig, ClassifierEvaluator

SCORES = ("lrs", "ars")
LABEL_TYPES = ("hard", "soft")


def _dd_ranking_classifier() -> ClassifierConfig:
    return ClassifierEvaluator.config_from_preset("dd_ranking")


@dataclass
class DDRankingConfig:
    """Args:
        classifier: the protocol of every training (default: the classifier's ``dd_ranking`` preset); its
            ``num_models`` is DD-Ranking's ``num_eval``; its ``soft_labels`` and ``controls`` are set here.
        label_type: ``hard`` (LRS-hard: the set's own hard labels) or ``soft`` (LRS-soft: ``soft_labels``).
        soft_labels: the soft-label protocol of ``label_type: soft`` (default: DATM's, sce at T = 1, one per image).
        scores: ``lrs`` and/or ``ars``.
        lrs_lambda, ars_lambda: DD-Ranking's weights (0.5).
        units: ``fraction`` (the definition) or ``percent`` (``ddranking``'s code).
        real_hard_accuracy: the whole-real-data accuracy (%) when already measured (DD-Ranking keeps such a cache
            for ImageNet); None = train ``classifier.whole_set`` here.
        syn_hard_accuracy: with ``label_type: soft``, the set's hard-label accuracies (%, one per run) when already
            measured by a hard-label run of this evaluator with the same classifier protocol and seed (its
            ``readings[r]["accuracies"]["hard"]["set"]``), keyed by reading: ``final``, and ``max_over_epochs`` when
            ``classifier.test_every`` is set. LRS-soft reads only these of the hard-label trainings, so giving them
            skips retraining identical networks (a third of a soft-label evaluation). None = train them here.
    """

    classifier: ClassifierConfig = field(default_factory=_dd_ranking_classifier)
    label_type: str = "hard"
    soft_labels: SoftLabelConfig = field(default_factory=lambda: SoftLabelConfig(**PRESETS["dd_ranking_soft"][
        "soft_labels"]))
    scores: list[str] = field(default_factory=lambda: list(SCORES))
    lrs_lambda: float = 0.5
    ars_lambda: float = 0.5
    units: str = "fraction"
    real_hard_accuracy: float | None = None
    syn_hard_accuracy: dict[str, list[float]] | None = None

    def __post_init__(self) -> None:
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"unknown label_type '{self.label_type}'; choose from {list(LABEL_TYPES)}")
        bad = [s for s in self.scores if s not in SCORES]
        if bad or not self.scores:
            raise ValueError(f"scores must be a non-empty subset of {list(SCORES)}, got {self.scores}")
        if self.units not in UNITS:
            raise ValueError(f"unknown units '{self.units}'; choose from {list(UNITS)}")
        if self.syn_hard_accuracy is not None:
            need = ["final"] + (["max_over_epochs"] if self.classifier.test_every else [])
            if self.label_type != "soft" or self.real_hard_accuracy is None:
                raise ValueError("syn_hard_accuracy replaces the hard-label trainings only with label_type: soft and "
                                 "a given real_hard_accuracy (a hard-label run needs its random subset and whole set)")
            bad = [r for r in need if len(self.syn_hard_accuracy.get(r, [])) != self.classifier.num_models]
            if bad:
                raise ValueError(f"syn_hard_accuracy needs {self.classifier.num_models} accuracies (one per run) for "
                                 f"each of {need}; wrong or missing: {bad}")


@EVALUATORS.register("dd_ranking")
class DDRankingEvaluator(Evaluator):
    """LRS (headline, per run) and ARS of a set, with every accuracy they are made of."""

    Config = DDRankingConfig

    def needs(self, meta: Mapping[str, Any]) -> EvalNeeds:
        return EvalNeeds(test=True, train=True)

    def _classifier(self, **changes: Any) -> ClassifierEvaluator:
        cfg = self.config.classifier
        reported = list(cfg.reported_as)
        if cfg.test_every and "max_over_epochs" not in reported:
            reported.append("max_over_epochs")
        return ClassifierEvaluator(dataclasses.replace(cfg, reported_as=reported, **changes), device=self.device,
                                   seed=self.seed)

    def run(self, synset: SyntheticSet, data: EvalData) -> EvalResult:
        cfg = self.config
        soft = cfg.soft_labels if cfg.label_type == "soft" else None
        runs: dict[str, EvalResult] = {}
        # The set and the random subset with hard labels, and the whole real training split (acc_real_hard).
        given_hard = cfg.syn_hard_accuracy is not None
        if not given_hard:
            hard_controls = ["random_subset"] + (["whole_set"] if cfg.real_hard_accuracy is None else [])
            runs["hard"] = self._classifier(soft_labels=None, controls=hard_controls).evaluate(synset, data)
        runs["any"] = runs["hard"] if soft is None else self._classifier(
            soft_labels=soft, controls=["random_subset"]).evaluate(synset, data)
        if "ars" in cfg.scores:
            no_aug = dataclasses.replace(cfg.classifier.train, augment="none")
            runs["no_aug"] = self._classifier(soft_labels=soft, controls=["random_subset"], train=no_aug).evaluate(
                synset, data)

        readings: dict[str, dict[str, Any]] = {}
        for reading in ("final", "max_over_epochs"):
            acc = {name: _accuracies(r, reading) for name, r in runs.items()}
            if any(a is None for a in acc.values()):
                continue
            if given_hard:
                acc["hard"] = {"set": list(cfg.syn_hard_accuracy[reading]), "random_subset": None}
            real_hard = cfg.real_hard_accuracy if cfg.real_hard_accuracy is not None else _accuracies(
                _control(runs["hard"], "whole_set"), reading)
            out: dict[str, Any] = {}
            if "lrs" in cfg.scores:
                out["lrs"] = label_robust_score(real_hard, acc["hard"]["set"], acc["any"]["set"],
                                                acc["any"]["random_subset"], lam=cfg.lrs_lambda, units=cfg.units)
            if "ars" in cfg.scores:
                out["ars"] = augmentation_robust_score(acc["any"]["set"], acc["any"]["random_subset"],
                                                       acc["no_aug"]["set"], acc["no_aug"]["random_subset"],
                                                       lam=cfg.ars_lambda, units=cfg.units)
            out["accuracies"] = {name: a for name, a in acc.items()}
            out["accuracies"]["real_hard"] = real_hard
            readings[reading] = out

        final = readings["final"]
        metric, values = ("label_robust_score", final["lrs"]["label_robust_score"]) if "lrs" in cfg.scores else \
            ("augmentation_robust_score", final["ars"]["augmentation_robust_score"])
        details: dict[str, Any] = {
            "label_type": cfg.label_type, "units": cfg.units, "lrs_lambda": cfg.lrs_lambda,
            "ars_lambda": cfg.ars_lambda, "num_eval": cfg.classifier.num_models, "readings": readings,
            "trainings": {name: r.to_dict() for name, r in runs.items()},
            "hard_label_trainings": "given (syn_hard_accuracy): measured by an earlier hard-label run" if given_hard
            else "trained here",
            "controls": {"random_subset": {**_control(runs["any"], "random_subset"), "unit": "% accuracy"},
                         "whole_set": {**_control(runs["hard"], "whole_set"), "unit": "% accuracy"}
                         if cfg.real_hard_accuracy is None else
                         {"mean": cfg.real_hard_accuracy, "what": "given (real_hard_accuracy)", "unit": "% accuracy"}},
            "components": _components(final, cfg.scores), "value_unit": "run",
            "deviations_from_ddranking": [
                "learning rate selected on a validation split of the real training data (ddranking: on the test "
                "split)", "explicit seeds (ddranking: wall-clock seeds)",
                f"scores from accuracies as {cfg.units}s" + (" (ddranking's code: percentages)"
                                                            if cfg.units == "fraction" else ""),
                "headline reading: final accuracies (ddranking: max over test checkpoints, under 'readings')"],
        }
        if "lrs" in cfg.scores and "ars" in cfg.scores:
            details["augmentation_robust_score"] = final["ars"]["augmentation_robust_score_mean"]
        return EvalResult(metric, list(values), details)


def _components(final: Mapping[str, Any], scores: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the headline score is made of, in its own units, printed under it: the set's accuracies (%), HLR and
    IOR (percentage points, as DD-Ranking defines them) and ARS."""
    acc = final["accuracies"]

    def stats(values: Sequence[float], unit: str) -> dict[str, Any]:
        r = EvalResult("", list(values))
        return {"mean": r.mean, "std": r.std, "unit": unit}

    out = {"set accuracy": stats(acc["any"]["set"], "%")}
    if acc["hard"]["set"] != acc["any"]["set"]:
        out["set accuracy, hard labels"] = stats(acc["hard"]["set"], "%")
    if "lrs" in scores:
        lrs = final["lrs"]
        out["HLR (whole split - set, hard labels)"] = {"mean": lrs["hard_label_recovery_mean"],
                                                       "std": lrs["hard_label_recovery_std"], "unit": "points"}
        out["IOR (set - random subset)"] = {"mean": lrs["improvement_over_random_mean"],
                                            "std": lrs["improvement_over_random_std"], "unit": "points"}
    if "ars" in scores and "lrs" in scores:
        ars = final["ars"]
        out["ARS"] = {"mean": ars["augmentation_robust_score_mean"], "std": ars["augmentation_robust_score_std"]}
    return out


def _control(result: EvalResult, name: str) -> dict[str, Any]:
    return result.details["controls"][name]


def _accuracies(result: EvalResult | Mapping[str, Any], reading: str) -> Any:
    """``{"set": [...], "random_subset": [...]}`` of a classifier result, or the whole-set mean for a control
    entry; None when the reading was not recorded."""
    if isinstance(result, EvalResult):
        sets = _reading(result.values, result.details, reading)
        rdm = _reading(result.details["controls"]["random_subset"]["values"],
                       result.details["controls"]["random_subset"], reading) \
            if "random_subset" in result.details.get("controls", {}) else None
        if sets is None:
            return None
        return {"set": sets, "random_subset": rdm}
    values = _reading(result["values"], result, reading)
    return None if values is None else sum(values) / len(values)


def _reading(finals: list[float], details: Mapping[str, Any], reading: str) -> list[float] | None:
    if reading == "final":
        return list(finals)
    rep = details.get("reported_as", {}).get("max_over_epochs")
    return None if rep is None else list(rep["values"])
