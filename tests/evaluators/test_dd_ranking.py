"""The DD-Ranking evaluator: LRS / ARS from the accuracies it stores, both readings, hard and soft labels."""
import pytest

from ddistill.data import EvalData
from ddistill.utils.robust_scores import augmentation_robust_score, label_robust_score
from ddistill.utils.train import TrainRecipe
from evaluators.classifier import ClassifierConfig, LRSearchConfig
from evaluators.dd_ranking import DDRankingConfig, DDRankingEvaluator
from synthesizers import SYNTHESIZERS

from tests._helpers import FAST


def _cfg(**kw):
    clf = ClassifierConfig(model="mlp", num_models=2, train=TrainRecipe(epochs=20, lr_decay_at=10, augment="dsa"),
                           test_every=5, lr_search=LRSearchConfig(grid=[0.01, 0.05], val_size=100),
                           whole_set=TrainRecipe(epochs=3, augment="none"), perf=FAST, progress=False)
    return DDRankingConfig(classifier=clf, **kw)


@pytest.fixture(scope="module")
def setup(digits_module):
    real, test = digits_module
    rnd = SYNTHESIZERS.get("random")
    return rnd(rnd.Config(ipc=3), seed=0).fit(real), EvalData(train=real, test=test)


@pytest.fixture(scope="module")
def digits_module():
    from ddistill.data import load_real

    return load_real("digits")


def test_scores_are_recomputable_from_the_stored_accuracies(setup):
    synset, data = setup
    res = DDRankingEvaluator(_cfg(), seed=0).evaluate(synset, data)
    assert res.metric == "label_robust_score" and len(res.values) == 2
    for reading in ("final", "max_over_epochs"):
        r = res.details["readings"][reading]
        acc = r["accuracies"]
        lrs = label_robust_score(acc["real_hard"], acc["hard"]["set"], acc["any"]["set"], acc["any"]["random_subset"])
        assert lrs["label_robust_score"] == r["lrs"]["label_robust_score"]
        ars = augmentation_robust_score(acc["any"]["set"], acc["any"]["random_subset"], acc["no_aug"]["set"],
                                        acc["no_aug"]["random_subset"])
        assert ars["augmentation_robust_score"] == r["ars"]["augmentation_robust_score"]
        assert all(0.0 <= v <= 1.0 for v in r["lrs"]["label_robust_score"])  # fractions: bounded
    final = res.details["readings"]["final"]["accuracies"]
    peak = res.details["readings"]["max_over_epochs"]["accuracies"]
    assert all(p >= f for p, f in zip(peak["hard"]["set"], final["hard"]["set"]))
    assert res.values == res.details["readings"]["final"]["lrs"]["label_robust_score"]
    assert any("validation split" in d for d in res.details["deviations_from_ddranking"])
    assert "control random_subset" in res.report()


def test_percent_units_and_soft_labels(setup):
    synset, data = setup
    res = DDRankingEvaluator(_cfg(label_type="soft", scores=["lrs"], units="percent"), seed=0).evaluate(synset, data)
    acc = res.details["readings"]["final"]["accuracies"]
    assert acc["any"]["set"] != acc["hard"]["set"]  # the soft-label trainings are separate runs
    assert res.details["trainings"]["any"]["soft_labels"]["criterion"] == "sce"
    assert set(res.details["trainings"]) == {"hard", "any"}  # no ARS: no augmentation-free runs
    with pytest.raises(ValueError, match="label_type"):
        DDRankingConfig(label_type="both")


def test_given_hard_label_accuracies_replace_identical_trainings(setup):
    """LRS-soft from the hard-label accuracies of an earlier hard run equals LRS-soft that retrains them."""
    synset, data = setup
    hard = DDRankingEvaluator(_cfg(scores=["lrs"], real_hard_accuracy=90.0), seed=0).evaluate(synset, data)
    given = {r: hard.details["readings"][r]["accuracies"]["hard"]["set"] for r in ("final", "max_over_epochs")}
    soft = dict(label_type="soft", scores=["lrs"], real_hard_accuracy=90.0)
    trained = DDRankingEvaluator(_cfg(**soft), seed=0).evaluate(synset, data)
    reused = DDRankingEvaluator(_cfg(**soft, syn_hard_accuracy=given), seed=0).evaluate(synset, data)
    assert "hard" not in reused.details["trainings"] and "hard" in trained.details["trainings"]
    for reading in ("final", "max_over_epochs"):
        assert reused.details["readings"][reading]["lrs"] == trained.details["readings"][reading]["lrs"]
    assert reused.details["hard_label_trainings"].startswith("given")
    with pytest.raises(ValueError, match="label_type: soft"):
        _cfg(syn_hard_accuracy=given, real_hard_accuracy=90.0)
    with pytest.raises(ValueError, match="one per run"):
        _cfg(**soft, syn_hard_accuracy={"final": [1.0]})
