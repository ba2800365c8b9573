"""Frequent tree-set mining for Mirage (Gupta et al., ICLR 2024), step 5 of the method.

Every training graph is a *transaction*: the set of its computation-tree ids. Per class c, Mirage keeps every
itemset (set of trees) contained in at least theta_c graphs of that class, with its support count. The official
code calls ``pyfpgrowth.find_frequent_patterns`` with an absolute count per class and keeps all frequent
itemsets (not only closed / maximal ones); its NCI1 script also drops itemsets frequent in both classes.

Two exact backends, selected through :data:`MINERS`:

- ``"mlxtend"``: ``mlxtend.frequent_patterns.fpgrowth`` on a boolean transaction x item frame. Items below the
  threshold are removed first (they cannot be in any frequent itemset), which keeps the dense frame small;
- ``"pattern_growth"``: a compact pure-Python FP-growth (:func:`pattern_growth`) for databases whose frame would
  not fit in memory.

``"auto"`` (default) uses mlxtend when the filtered frame has at most :data:`AUTO_DENSE_CELLS` cells.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from ddistill.registry import Registry

#: ``miner(transactions, min_count, max_len) -> {sorted itemset tuple: support count}``
MINERS = Registry("itemset miner")

#: Largest (transactions x frequent items) boolean frame the "auto" backend hands to mlxtend (~100 MB).
AUTO_DENSE_CELLS = 100_000_000


def resolve_support(value: float, num_transactions: int) -> int:
    """Absolute support count of a threshold: values >= 1 are counts, values in (0, 1) fractions of the class's
    transactions (rounded up, so "at least 10 %" stays at least 10 %)."""
    if not value > 0:
        raise ValueError(f"support thresholds must be > 0 (a count >= 1 or a fraction in (0, 1)), got {value}")
    if value >= 1:
        if float(value) != int(value):
            raise ValueError(f"a support count must be an integer, got {value}; use a fraction < 1 for proportions")
        return int(value)
    return max(1, math.ceil(value * num_transactions - 1e-9))


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------
def pattern_growth(transactions: Iterable[Iterable[int]], min_count: int,
                   max_len: int | None = None) -> dict[tuple[int, ...], int]:
    """All itemsets contained in at least ``min_count`` transactions, with their support counts (FP-growth).

    This is FP-growth's recursion (Han et al., SIGMOD 2000) on *conditional databases* stored as a Counter of
    identical transactions instead of a prefix tree (merging duplicates is what the tree's shared prefixes buy;
    computation-tree transactions repeat a lot). Items are ranked by descending support (ties by item); the
    conditional database of item i holds, for every transaction containing i, its items ranked before i. Every
    frequent itemset is then produced exactly once, from its lowest-ranked item.

    Args:
        transactions: sets of hashable integer items (duplicates inside one transaction are ignored).
        min_count: absolute support threshold (>= 1).
        max_len: largest itemset size to report (None: no limit).

    Returns:
        ``{itemset as a sorted tuple: support}``.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    db = Counter(tuple(sorted(set(t))) for t in transactions)
    out: dict[tuple[int, ...], int] = {}
    _grow(list(db.items()), min_count, (), out, max_len)
    return out


def _grow(db: list[tuple[tuple[int, ...], int]], min_count: int, suffix: tuple[int, ...],
          out: dict[tuple[int, ...], int], max_len: int | None) -> None:
    counts: Counter[int] = Counter()
    for items, c in db:
        for i in items:
            counts[i] += c
    frequent = sorted((i for i, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
    if not frequent:
        return
    rank = {i: r for r, i in enumerate(frequent)}
    bases: dict[int, Counter[tuple[int, ...]]] = {i: Counter() for i in frequent}
    for items, c in db:
        kept = sorted((i for i in items if i in rank), key=rank.__getitem__)
        for p in range(1, len(kept)):
            bases[kept[p]][tuple(kept[:p])] += c
    for i in frequent:
        itemset = suffix + (i,)
        out[tuple(sorted(itemset))] = counts[i]
        if (max_len is None or len(itemset) < max_len) and bases[i]:
            _grow(list(bases[i].items()), min_count, itemset, out, max_len)


def _frequent_items(transactions: Sequence[Sequence[int]], min_count: int) -> list[int]:
    counts: Counter[int] = Counter()
    for t in transactions:
        counts.update(set(t))
    return sorted(i for i, c in counts.items() if c >= min_count)


@MINERS.register("pattern_growth")
def _mine_python(transactions: Sequence[Sequence[int]], min_count: int,
                 max_len: int | None = None) -> dict[tuple[int, ...], int]:
    return pattern_growth(transactions, min_count, max_len)


@MINERS.register("mlxtend")
def _mine_mlxtend(transactions: Sequence[Sequence[int]], min_count: int,
                  max_len: int | None = None) -> dict[tuple[int, ...], int]:
    import pandas as pd
    from mlxtend.frequent_patterns import fpgrowth

    n = len(transactions)
    if n == 0 or min_count > n:
        return {}
    items = _frequent_items(transactions, min_count)
    if not items:
        return {}
    col = {item: j for j, item in enumerate(items)}
    onehot = np.zeros((n, len(items)), dtype=bool)
    for r, t in enumerate(transactions):
        cols = [col[i] for i in set(t) if i in col]
        onehot[r, cols] = True
    frame = pd.DataFrame(onehot, columns=items)
    # mlxtend takes a fraction and turns it into ceil(fraction * n); (count - 0.5) / n makes that exactly `count`
    # despite float rounding, and `support >= fraction` then means support count >= min_count.
    found = fpgrowth(frame, min_support=(min_count - 0.5) / n, use_colnames=True, max_len=max_len)
    return {tuple(sorted(int(i) for i in s)): int(round(f * n)) for f, s in zip(found["support"], found["itemsets"])}


def _mlxtend_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("pandas", "mlxtend"))


@MINERS.register("auto")
def _mine_auto(transactions: Sequence[Sequence[int]], min_count: int,
               max_len: int | None = None) -> dict[tuple[int, ...], int]:
    cells = len(transactions) * len(_frequent_items(transactions, min_count))
    # mlxtend only where it is installed (it is an optional extra with pandas); both return the same itemsets.
    backend = "mlxtend" if cells <= AUTO_DENSE_CELLS and _mlxtend_installed() else "pattern_growth"
    return MINERS.get(backend)(transactions, min_count, max_len)


def mine_frequent_itemsets(transactions: Sequence[Sequence[int]], min_count: int, *, max_len: int | None = None,
                           backend: str = "auto") -> dict[tuple[int, ...], int]:
    """All frequent itemsets of one transaction database: ``{sorted itemset: support count}``.

    Args:
        transactions: sets of integer items.
        min_count: absolute support threshold.
        max_len: largest itemset size (None: unbounded).
        backend: registry name in :data:`MINERS` (``auto``, ``mlxtend``, ``pattern_growth``).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    return MINERS.get(backend)(transactions, min_count, max_len)


# --------------------------------------------------------------------------------------------
# per-class mining (the Mirage step)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassPatterns:
    """Frequent itemsets of one class, best first.

    Args:
        label: the class.
        threshold: absolute support count used.
        num_transactions: graphs of this class.
        itemsets: ``(sorted itemset, support)`` pairs ordered by support (desc), size (desc), then itemset.
        dropped_shared: itemsets removed because another class also had them frequent.
        truncated: itemsets cut by ``max_itemsets``.
    """

    label: int
    threshold: int
    num_transactions: int
    itemsets: list[tuple[tuple[int, ...], int]]
    dropped_shared: int = 0
    truncated: int = 0


def per_class_support(support: float | Sequence[float] | Mapping[int, float], classes: Sequence[int]
                      ) -> dict[int, float]:
    """One threshold per class from a scalar (all classes), a sequence indexed by class (one value: all classes) or a
    class -> threshold mapping; values stay as given (counts >= 1 or fractions < 1, see :func:`resolve_support`)."""
    classes = sorted(classes)
    if isinstance(support, Mapping):
        missing = [c for c in classes if c not in support]
        if missing:
            raise ValueError(f"no support threshold for classes {missing}; give one per class {classes}")
        return {c: float(support[c]) for c in classes}
    if isinstance(support, (int, float)):
        return {c: float(support) for c in classes}
    values = [float(v) for v in support]
    if len(values) == 1:
        values = values * (max(classes) + 1)
    if len(values) <= max(classes):
        raise ValueError(f"{len(values)} support thresholds for classes {classes}; give one or one per class")
    return {c: values[c] for c in classes}


def mine_per_class(transactions_by_class: Mapping[int, Sequence[Sequence[int]]],
                   support: float | Sequence[float] | Mapping[int, float], *, drop_shared: bool = False,
                   max_len: int | None = None, max_itemsets: int | None = None,
                   backend: str = "auto") -> dict[int, ClassPatterns]:
    """Per-class frequent itemset mining (Mirage step 5), any number of classes.

    Args:
        transactions_by_class: class -> its graphs' tree-id sets.
        support: one threshold for all classes, a sequence indexed by class, or a class -> threshold mapping;
            each is a count (>= 1) or a fraction (< 1) of that class's graphs (:func:`resolve_support`).
        drop_shared: drop itemsets frequent in more than one class (the official NCI1 script's filter).
        max_len: largest itemset size.
        max_itemsets: keep at most this many itemsets per class (best first); None keeps all, as the official code.
        backend: see :func:`mine_frequent_itemsets`.
    """
    classes = sorted(transactions_by_class)
    per_class = per_class_support(support, classes)

    found: dict[int, dict[tuple[int, ...], int]] = {}
    thresholds: dict[int, int] = {}
    for c in classes:
        db = transactions_by_class[c]
        thresholds[c] = resolve_support(per_class[c], len(db))
        found[c] = mine_frequent_itemsets(db, thresholds[c], max_len=max_len, backend=backend)

    shared: set[tuple[int, ...]] = set()
    if drop_shared:
        seen: Counter[tuple[int, ...]] = Counter()
        for c in classes:
            seen.update(found[c].keys())
        shared = {s for s, k in seen.items() if k > 1}

    out = {}
    for c in classes:
        kept = [(s, k) for s, k in found[c].items() if s not in shared]
        kept.sort(key=lambda sk: (-sk[1], -len(sk[0]), sk[0]))
        cut = 0
        if max_itemsets is not None and len(kept) > max_itemsets:
            cut = len(kept) - max_itemsets
            kept = kept[:max_itemsets]
        out[c] = ClassPatterns(c, thresholds[c], len(transactions_by_class[c]), kept,
                               dropped_shared=len(found[c]) - len([s for s in found[c] if s not in shared]),
                               truncated=cut)
    return out


__all__ = ["MINERS", "ClassPatterns", "mine_frequent_itemsets", "mine_per_class", "pattern_growth",
           "per_class_support", "resolve_support"]
