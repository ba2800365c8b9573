"""DD-Ranking's label-robust (LRS) and augmentation-robust (ARS) scores, on hand-computed cases.

Reference values: n(x) = (e^x - e^-1) / (e - e^-1) gives n(-1) = 0, n(0) = 1 / (e + 1), n(1) = 1 and the floor
n(-inf) = -1 / (e^2 - 1). The ``ddranking 0.2.0`` constants at the bottom are what its own ``compute_metrics`` returned
for the same per-run accuracies (see benchmarks/results/ddranking_compat.md, "Score formulas checked against
ddranking 0.2.0").
"""
import math

import pytest

from ddistill.utils.robust_scores import augmentation_robust_score, label_robust_score, normalised_exp

FLOOR = -0.15651764274966568  # -1 / (e^2 - 1): the percent variant's lower bound


def approx(x, rel=1e-12, tol=1e-12):
    return pytest.approx(x, rel=rel, abs=tol)


def test_normalised_exp_anchor_points():
    assert normalised_exp(-1.0) == approx(0.0)
    assert normalised_exp(0.0) == approx(1 / (math.e + 1))  # = 0.26894142137
    assert normalised_exp(1.0) == approx(1.0)
    assert normalised_exp(0.1) == approx(0.31368734174706575)
    assert normalised_exp(-1e3) == approx(FLOOR)


# ---- fraction units (our default): the score lives in [0, 1] -------------------------------------------------------

def test_fraction_alpha_minus_one_gives_zero_and_plus_one_gives_one():
    # alpha = 0.5 * IOR/100 - 0.5 * HLR/100: HLR = 100, IOR = -100 -> -1; HLR = -100, IOR = 100 -> +1
    worst = label_robust_score(100.0, [0.0], [0.0], [100.0])
    best = label_robust_score(0.0, [100.0], [100.0], [0.0])
    assert worst["units"] == "fraction"
    assert worst["label_robust_score_mean"] == approx(0.0)
    assert best["label_robust_score_mean"] == approx(1.0)
    # lam = 1 keeps only IOR: +100 points -> alpha = 1
    assert label_robust_score(50.0, [50.0], [100.0], [0.0], lam=1.0)["label_robust_score_mean"] == approx(1.0)


def test_fraction_variant_stays_in_unit_interval():
    grid = [0.0, 12.5, 50.0, 87.5, 100.0]
    for real in grid:
        for syn in grid:
            for rdm in grid:
                lrs = label_robust_score(real, [syn], [syn], [rdm])["label_robust_score_mean"]
                ars = augmentation_robust_score([syn], [rdm], [real], [rdm])["augmentation_robust_score_mean"]
                assert -1e-12 <= lrs <= 1 + 1e-12 and -1e-12 <= ars <= 1 + 1e-12


def test_fraction_equal_accuracies_give_one_over_e_plus_one():
    out = label_robust_score(42.0, [42.0, 42.0], [30.0, 31.0], [30.0, 31.0])
    assert out["hard_label_recovery_mean"] == 0 and out["improvement_over_random_mean"] == 0
    assert out["label_robust_score_mean"] == approx(0.26894142136999516)
    assert out["label_robust_score_std"] == approx(0.0)


# ---- percent units (ddranking 0.2.0's code) --------------------------------------------------------------------------

def test_percent_variant_hlr30_ior10():
    # HLR = 30, IOR = 10 points: alpha = 0.5 * 10 - 0.5 * 30 = -10
    out = label_robust_score(80.0, [50.0], [45.0], [35.0], units="percent")
    assert out["units"] == "percent"
    assert out["hard_label_recovery_mean"] == approx(30.0) and out["improvement_over_random_mean"] == approx(10.0)
    assert out["label_robust_score_mean"] == approx(-0.1564983269380378)


def test_percent_variant_floor_and_unbounded_top():
    low = label_robust_score(100.0, [0.0], [0.0], [100.0], units="percent")["label_robust_score_mean"]
    assert low == approx(FLOOR) and low > FLOOR - 1e-15
    assert label_robust_score(100.0, [0.0], [0.0], [100.0])["label_robust_score_mean"] == approx(0.0)  # fraction
    # alpha = 2.5 in percent units is far above 1
    ars = augmentation_robust_score([60.0], [50.0], [40.0], [45.0], units="percent")
    assert ars["augmentation_robust_score_mean"] == approx(5.026634836414654)


# ---- aggregation ------------------------------------------------------------------------------------------------------

def test_per_run_scores_are_averaged_not_the_score_of_the_means():
    # run 1: alpha = -1 (LRS 0), run 2: alpha = +1 (LRS 1); mean HLR = mean IOR = 0 would give n(0) = 0.2689
    out = label_robust_score([100.0, 0.0], [0.0, 100.0], [0.0, 100.0], [100.0, 0.0])
    assert out["label_robust_score"] == [approx(0.0), approx(1.0)]
    assert out["label_robust_score_mean"] == approx(0.5)
    assert out["label_robust_score_std"] == approx(0.5)
    assert out["hard_label_recovery"] == [100.0, -100.0] and out["improvement_over_random"] == [-100.0, 100.0]
    assert out["hard_label_recovery_mean"] == approx(0.0) and out["hard_label_recovery_std"] == approx(100.0)
    assert out["label_robust_score_mean"] != approx(1 / (math.e + 1))


def test_std_is_population_std():
    # HLR per run 10, 20, 30: population std sqrt(200 / 3) = 8.165 (the sample std would be 10)
    out = label_robust_score(60.0, [50.0, 40.0, 30.0], [50.0, 40.0, 30.0], [50.0, 40.0, 30.0])
    assert out["hard_label_recovery_mean"] == approx(20.0)
    assert out["hard_label_recovery_std"] == approx(8.16496580927726)
    assert out["improvement_over_random_std"] == approx(0.0)
    ars = augmentation_robust_score([60.0, 70.0], [50.0, 50.0], [50.0, 50.0], [50.0, 50.0])
    assert ars["with_aug_scores_mean"] == approx(15.0) and ars["with_aug_scores_std"] == approx(5.0)
    assert ars["without_aug_scores_std"] == approx(0.0)


def test_single_run_has_zero_std():
    out = augmentation_robust_score([55.0], [50.0], [45.0], [40.0])
    assert out["augmentation_robust_score_std"] == 0.0 and out["with_aug_scores_std"] == 0.0


def test_lam_weights_ior_against_hlr():
    # HLR = 20, IOR = 40 points; fraction alpha = lam * 0.4 - (1 - lam) * 0.2
    def lrs(lam):
        return label_robust_score(70.0, [50.0], [60.0], [20.0], lam=lam)["label_robust_score_mean"]
    assert lrs(0.5) == approx(0.31368734174706575)   # alpha = 0.1
    assert lrs(0.25) == approx(0.24819153796149165)  # alpha = -0.05
    assert lrs(1.0) == approx(0.47819269693938515)   # alpha = 0.4 (IOR only)
    assert lrs(0.0) == approx(0.19181877722087756)   # alpha = -0.2 (HLR only)


def test_ars_lam_weights_with_against_without_augmentation():
    # with-aug gap +10, without-aug gap -5 points; fraction beta = g * 0.10 + (1 - g) * (-0.05)
    def ars(g):
        return augmentation_robust_score([60.0], [50.0], [40.0], [45.0], lam=g)["augmentation_robust_score_mean"]
    assert ars(0.5) == approx(0.27971196885639504)   # beta = 0.025
    assert ars(0.8) == approx(0.29979068430743283)   # beta = 0.07
    out = augmentation_robust_score([60.0], [50.0], [40.0], [45.0])
    assert out["with_aug_scores"] == [10.0] and out["without_aug_scores"] == [-5.0]


def test_scalar_real_accuracy_equals_repeated_list():
    a = label_robust_score(56.5, [40.0, 41.0, 39.5], [45.0, 44.0, 46.0], [43.0, 44.5, 42.0])
    b = label_robust_score([56.5] * 3, [40.0, 41.0, 39.5], [45.0, 44.0, 46.0], [43.0, 44.5, 42.0])
    assert a == b


# ---- errors -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: label_robust_score(50.0, [40.0, 41.0], [45.0], [43.0, 44.0]),
    lambda: label_robust_score([50.0, 51.0, 52.0], [40.0, 41.0], [45.0, 46.0], [43.0, 44.0]),
    lambda: label_robust_score(50.0, [], [], []),
    lambda: augmentation_robust_score([50.0], [40.0, 41.0], [45.0], [43.0]),
    lambda: augmentation_robust_score([], [], [], []),
])
def test_mismatched_or_empty_runs_raise(call):
    with pytest.raises(ValueError, match="one accuracy per run"):
        call()


def test_unknown_units_raise():
    with pytest.raises(ValueError, match="unknown units"):
        label_robust_score(50.0, [40.0], [45.0], [43.0], units="percentage")
    with pytest.raises(ValueError, match="unknown units"):
        augmentation_robust_score([50.0], [40.0], [45.0], [43.0], units="")


# ---- numbers ddranking 0.2.0's own compute_metrics returned (percent units) -------------------------------------------

def test_matches_ddranking_label_robust_score_soft():
    out = label_robust_score([50.0] * 5, [49.2, 49.9, 50.3, 48.7, 49.5], [50.1, 51.0, 50.4, 49.8, 50.6],
                             [49.7, 50.2, 50.9, 49.0, 50.1], units="percent")
    assert out["hard_label_recovery_mean"] == approx(0.48) and out["hard_label_recovery_std"] == approx(0.552810998443408)
    assert out["improvement_over_random_mean"] == approx(0.40)
    assert out["improvement_over_random_std"] == approx(0.47749345545253186)
    assert out["label_robust_score_mean"] == approx(0.26225631096963825)
    assert out["label_robust_score_std"] == approx(0.0979899220855823)


def test_matches_ddranking_label_robust_score_hard():
    # LabelRobustScoreHard: the set's own labels are its hard labels, so acc_syn_any = acc_syn_hard
    out = label_robust_score([60.0, 60.5], [59.0, 59.8], [59.0, 59.8], [58.7, 59.9], lam=0.3, units="percent")
    assert out["label_robust_score"] == [approx(0.07465590949537518), approx(0.09642651318964053)]
    assert out["label_robust_score_mean"] == approx(0.08554121134250785)
    assert out["label_robust_score_std"] == approx(0.010885301847132677)


def test_matches_ddranking_augmentation_robust_score():
    out = augmentation_robust_score([51.2, 50.6, 51.9], [50.4, 50.9, 50.8], [48.3, 48.0, 48.9], [48.5, 47.6, 48.1],
                                    units="percent")
    assert out["augmentation_robust_score"] == [approx(0.4177920222153023), approx(0.2907551740505276),
                                                approx(0.9435959689880203)]
    assert out["with_aug_scores_mean"] == approx(0.5333333333333362)
    assert out["with_aug_scores_std"] == approx(0.6018490028422594)
    assert out["without_aug_scores_mean"] == approx(0.333333333333331)
    assert out["without_aug_scores_std"] == approx(0.4109609335312652)
    assert out["augmentation_robust_score_mean"] == approx(0.5507143884179501)
    assert out["augmentation_robust_score_std"] == approx(0.28260873124202124)
