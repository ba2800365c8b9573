"""Frequent itemset mining (Mirage step 5): known answers, backends against brute force, per-class options."""
from __future__ import annotations

import random
from itertools import combinations

import pytest

from synthesizers.mirage.mining import (MINERS, _mlxtend_installed, mine_frequent_itemsets, mine_per_class,
                                        pattern_growth, resolve_support)

# The FP-growth paper's example database (Han, Pei, Yin, SIGMOD 2000, Table 1), minimum support 3.
HAN_DB = ["facdgimp", "abcflmo", "bfhjo", "bcksp", "afcelpmn"]
HAN_FREQUENT = {
    "f": 4, "c": 4, "a": 3, "b": 3, "m": 3, "p": 3,
    "cf": 3, "af": 3, "fm": 3, "ac": 3, "cm": 3, "am": 3, "cp": 3,
    "acf": 3, "cfm": 3, "afm": 3, "acm": 3, "acfm": 3,
}


#: every registered backend; the mlxtend one is skipped where that optional extra is not installed
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(b == "mlxtend" and not _mlxtend_installed(),
                                                     reason="mlxtend not installed"))
            for b in MINERS.names()]


def _encode(db: list[str]) -> list[list[int]]:
    return [[ord(ch) for ch in t] for t in db]


def _decode(found: dict[tuple[int, ...], int]) -> dict[str, int]:
    return {"".join(sorted(chr(i) for i in s)): k for s, k in found.items()}


def _brute_force(db: list[list[int]], min_count: int) -> dict[tuple[int, ...], int]:
    sets = [set(t) for t in db]
    items = sorted(set().union(*sets)) if sets else []
    out = {}
    for r in range(1, len(items) + 1):
        for combo in combinations(items, r):
            k = sum(1 for t in sets if set(combo) <= t)
            if k >= min_count:
                out[combo] = k
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_textbook_example(backend):
    assert _decode(mine_frequent_itemsets(_encode(HAN_DB), 3, backend=backend)) == HAN_FREQUENT


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_match_brute_force(backend):
    rng = random.Random(1)
    for _ in range(25):
        n, m = rng.randint(1, 40), rng.randint(1, 9)
        p = rng.random()
        db = [[i for i in range(m) if rng.random() < p] for _ in range(n)]
        k = rng.randint(1, max(1, n // 2))
        assert mine_frequent_itemsets(db, k, backend=backend) == _brute_force(db, k)


def test_max_len_and_duplicates():
    db = _encode(HAN_DB) + [[ord("f"), ord("f")]]  # a repeated item counts once per transaction
    found = _decode(pattern_growth(db, 3, max_len=2))
    assert found["f"] == 5 and max(len(s) for s in found) == 2 and "acf" not in found
    assert mine_frequent_itemsets([[1, 2]], 2) == {}
    with pytest.raises(KeyError, match="choose from"):
        mine_frequent_itemsets(db, 3, backend="apriori")


def test_resolve_support():
    assert resolve_support(5, 100) == 5
    assert resolve_support(0.25, 10) == 3  # at least 25 %: rounded up
    assert resolve_support(0.3, 10) == 3  # float noise (0.3 * 10 = 3.0000000000000004) does not bump it to 4
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            resolve_support(bad, 10)


def test_per_class_thresholds_drop_shared_and_cap():
    by_class = {
        0: [[1, 2], [1, 2], [1, 3], [4]],
        1: [[1, 2], [1, 2, 5], [5]],
        2: [[6], [6, 1], [6]],
    }
    res = mine_per_class(by_class, [2, 0.5, 3])
    assert [res[c].threshold for c in range(3)] == [2, 2, 3]
    assert dict(res[0].itemsets) == {(1,): 3, (2,): 2, (1, 2): 2}
    assert dict(res[1].itemsets) == {(1,): 2, (2,): 2, (5,): 2, (1, 2): 2}
    assert dict(res[2].itemsets) == {(6,): 3}
    # best first: support desc, then larger sets, then item order
    assert res[1].itemsets == [((1, 2), 2), ((1,), 2), ((2,), 2), ((5,), 2)]

    shared = mine_per_class(by_class, 2, drop_shared=True)
    assert dict(shared[0].itemsets) == {} and shared[0].dropped_shared == 3  # {1}, {2}, {1,2} also frequent in 1
    assert dict(shared[1].itemsets) == {(5,): 2} and dict(shared[2].itemsets) == {(6,): 3}

    capped = mine_per_class(by_class, {0: 2, 1: 2, 2: 2}, max_itemsets=1)
    assert capped[1].itemsets == [((1, 2), 2)] and capped[1].truncated == 3
    with pytest.raises(ValueError, match="no support threshold"):
        mine_per_class(by_class, {0: 2})
    with pytest.raises(ValueError, match="one per class"):
        mine_per_class(by_class, [2, 2])
