"""Mirage on ogbg-molbace: distinct computation trees and frequent tree-sets per class, from the library and from
official-style tree label strings under two child orderings. Measures why the library mines 4 + 9 tree-sets where
the official log reports 8 + 9.

At the official molbace config (L = 3 hops, absolute supports {0: 150, 1: 104}, OGB scaffold training split) it
counts per class the training graphs, the distinct L-hop computation trees and the frequent tree-sets (sizes and
supports), three ways:

- ``library``: the Mirage synthesizer's own steps (the dataset's discretiser, ``computation_tree_ids``,
  ``graph_transactions``, ``mine_per_class``);
- ``strings_sorted``: a label-string routine written here after the format of the official ``pygcanl.cpp``
  (node "atom-type-id atom-tuple-id", each child as "bond-id <child string>", closed by "$"), children in plain
  string order (a total order; the official code since commit 9509bdd, "Sorting bug fixed", 2024-01-24);
- ``strings_prefix_comparator``: the same strings, children ordered by the comparator of the official code before
  9509bdd: token by token, numerically, and "not less" as soon as the first string reaches a "$". It therefore reads
  each child only up to the end of its first root-to-leaf path; two different children that agree there compare
  equal both ways, and the insertion sort that libstdc++'s std::sort runs on <= 16 elements leaves them in the
  molecule's neighbour order, so one tree can get several strings. Which children tie depends on the integer ids,
  so this variant runs twice: ids numbered as the official ``data_utils.get_label_maps`` does (``enumerate`` over a
  Python set of the values of all graphs in dataset order; CPython does not salt int / tuple hashes, so the order
  is reproducible for a given CPython version) and, as a sensitivity check, in sorted value order
  (``..._sorted_ids``). The plain sort does not depend on the numbering; it uses the official one.

The string variants are mined with the library's miner (``pattern_growth``). Nothing is asserted: the output records
whether ``strings_sorted`` gives the library's partition of nodes into trees and its tree-sets, and what the old
comparator gives, next to the official log's figures (6,083 / 3,686 trees, 8 + 9 tree-sets). Deterministic (no RNG).

    python benchmarks/mirage_treeset_count.py
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

# The official log (github.com/idea-iitd/Mirage, ogbg-molbace/outputs/ogbg-molbace_{2..7}_log.txt, all equal).
OFFICIAL_LOG = {
    "unique_trees": {"0": 6083, "1": 3686}, "tree_sets": {"0": 8, "1": 9},
    "source": "github.com/idea-iitd/Mirage ogbg-molbace/outputs/ogbg-molbace_{2..7}_log.txt "
              "('Unique trees in class 0: 6083, in class 1: 3686', 'Patterns mined in class 0: 8 (thresh: 150), in "
              "class 1: 9 (thresh: 104)'), committed in c8f1b6c (2023-10-09), before the comparator fix 9509bdd "
              "(2024-01-24) of ogbg-molbace/pygcanl/pygcanl.cpp get_can_lab_tree",
}
STD_SORT_INSERTION_MAX = 16  # libstdc++ _S_threshold: std::sort on at most 16 elements is one insertion sort


def prefix_less(a: str, b: str) -> bool:
    """The pre-9509bdd child comparator: numeric token by token; "not less" at the first "$" of ``a``."""
    for s, t in zip(a.split(), b.split()):
        if s == "$":
            return False
        if t == "$":
            return True
        if s != t:
            return int(s) < int(t)
    return False  # not reached: every string ends with "$"


def std_sort_small(items: list[str], less) -> list[str]:
    """libstdc++ std::sort of <= 16 elements (__insertion_sort: front test, then linear insertion)."""
    if len(items) > STD_SORT_INSERTION_MAX:
        raise ValueError(f"{len(items)} children: std::sort would not be a single insertion sort")
    v = list(items)
    for i in range(1, len(v)):
        val = v[i]
        if less(val, v[0]):
            v[1:i + 1] = v[:i]
            v[0] = val
        else:
            j = i
            while less(val, v[j - 1]):
                v[j] = v[j - 1]
                j -= 1
            v[j] = val
    return v


VARIANTS = {  # name: (child ordering, id numbering)
    "strings_sorted": ("sorted", "official"),
    "strings_prefix_comparator": ("prefix", "official"),
    "strings_prefix_comparator_sorted_ids": ("prefix", "sorted"),
}
ORDERINGS = {"sorted": sorted, "prefix": lambda kids: std_sort_small(kids, prefix_less)}


def label_maps(graphs, numbering: str) -> dict[str, dict]:
    """Integer ids of atom types, atom tuples and bond tuples over ``graphs``: ``official`` numbers each set in its
    CPython iteration order after inserting the values graph by graph (``data_utils.get_label_maps``), ``sorted``
    in sorted value order."""
    atoms, tuples, bonds = set(), set(), set()
    for g in graphs:
        rows = g.x.tolist()
        atoms.update(r[0] for r in rows)
        tuples.update(map(tuple, rows))
        bonds.update(map(tuple, g.edge_attr.tolist()))
    order = list if numbering == "official" else sorted
    return {name: {v: i for i, v in enumerate(order(s))}
            for name, s in (("atom", atoms), ("tuple", tuples), ("bond", bonds))}


def dataset_order(data, root: Path) -> list:
    """All graphs in the dataset's own index order (the loader keeps each split sorted by index)."""
    import pandas as pd

    split_dir = root / "ogbg_molbace" / "split" / "scaffold"
    graphs: dict[int, object] = {}
    for part, gs in (("train", data.train), ("valid", data.val), ("test", data.test)):
        idx = sorted(pd.read_csv(split_dir / f"{part}.csv.gz", header=None).values[:, 0].tolist())
        graphs.update(zip(idx, gs))
    return [graphs[i] for i in sorted(graphs)]


def tree_strings(g, maps: dict[str, dict], hops: int, order) -> list[str]:
    """Label string of every node's depth-``hops`` computation tree (every neighbour is a child, the BFS parent
    included), children joined in ``order``. Neighbours in edge_index order, duplicate edges and self-loops
    skipped (the official adjacency list)."""
    rows = g.x.tolist()
    heads = [f"{maps['atom'][r[0]]} {maps['tuple'][tuple(r)]}" for r in rows]
    adj: list[list[int]] = [[] for _ in rows]
    bond: dict[tuple[int, int], int] = {}
    for (u, v), attr in zip(g.edge_index.t().tolist(), g.edge_attr.tolist()):
        if u == v or (u, v) in bond:
            continue
        bond[(u, v)] = bond[(v, u)] = maps["bond"][tuple(attr)]
        adj[u].append(v)
        adj[v].append(u)
    cur = [f"{h} $" for h in heads]
    for _ in range(hops):
        cur = [" ".join([heads[v], *order([f"{bond[(v, u)]} {cur[u]}" for u in adj[v]]), "$"])
               for v in range(len(rows))]
    return cur


def itemset_rows(found: dict, to_library: dict[int, int], table) -> list[dict]:
    """Tree-sets best first, each with its trees as library ids and their node counts."""
    rows = []
    for items, support in sorted(found.items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0])):
        lib = [to_library[i] for i in items]
        rows.append({"size": len(items), "support": support, "library_trees": lib,
                     "distinct_trees": len(set(lib)), "tree_nodes": [table.size(t) for t in lib]})
    return rows


def itemset_counter(summary: dict) -> Counter:
    """A class's tree-sets as a multiset of (sorted library tree ids, support): comparable across variants."""
    return Counter((tuple(sorted(t["library_trees"])), t["support"]) for t in summary["itemsets"])


def class_summary(y, transactions, found_by_class, to_library, table) -> dict:
    out = {}
    for c, found in found_by_class.items():
        db = [t for t, k in zip(transactions, y) if k == c]
        sets = itemset_rows(found, to_library, table)
        out[str(c)] = {"graphs": len(db), "unique_trees": len({i for t in db for i in t}), "tree_sets": len(sets),
                       "sizes": dict(sorted(Counter(s["size"] for s in sets).items())),
                       "supports": [s["support"] for s in sets], "itemsets": sets}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/ogb", help="folder holding ogbg_molbace/")
    p.add_argument("--hops", type=int, default=3)
    p.add_argument("--support", type=int, nargs=2, default=[150, 104], help="absolute support of class 0 and 1")
    p.add_argument("--out", default="benchmarks/results/mirage_molbace_treesets")
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ddistill.data.graph import GraphPack, build_discretiser, load_graph_dataset
    from ddistill.io import machine_info, write_json
    from synthesizers.mirage.mining import mine_frequent_itemsets, mine_per_class
    from synthesizers.mirage.trees import TreeTable, computation_tree_ids, graph_transactions

    start = time.perf_counter()
    data = load_graph_dataset("ogbg_molbace", args.data)
    support = {0: args.support[0], 1: args.support[1]}
    # library: the steps of Mirage._prepare / _mine with the synthesizer's defaults (edge labels on, miner auto)
    pack = GraphPack.from_data_list(data.train)
    y = pack.y.numpy().reshape(-1).astype(int).tolist()
    disc = build_discretiser(data.info.discretiser, use_edge_labels=True).fit(pack)
    table = TreeTable()
    node_ids = computation_tree_ids(disc.node_labels(pack), pack.edge_index, disc.edge_labels(pack), args.hops,
                                    table)[args.hops].tolist()
    lib_tx = [t.tolist() for t in graph_transactions(np.asarray(node_ids), pack.ptr)]
    patterns = mine_per_class({c: [t for t, k in zip(lib_tx, y) if k == c] for c in support}, support)
    variants = {"library": class_summary(y, lib_tx, {c: dict(patterns[c].itemsets) for c in support},
                                         {t: t for t in node_ids}, table)}

    every = dataset_order(data, Path(args.data))
    maps = {numbering: label_maps(every, numbering) for numbering in ("official", "sorted")}
    checks: dict[str, dict] = {}
    ptr = pack.ptr.tolist()
    for name, (ordering, numbering) in VARIANTS.items():
        ids: dict[str, int] = {}
        node_strings = [s for g in data.train for s in tree_strings(g, maps[numbering], args.hops,
                                                                    ORDERINGS[ordering])]
        node_sid = [ids.setdefault(s, len(ids)) for s in node_strings]
        to_library, lib_to = {}, {}
        for sid, lid in zip(node_sid, node_ids):
            to_library.setdefault(sid, set()).add(lid)
            lib_to.setdefault(lid, set()).add(sid)
        tx = [sorted(set(node_sid[a:b])) for a, b in zip(ptr[:-1], ptr[1:])]
        found = {c: mine_frequent_itemsets([t for t, k in zip(tx, y) if k == c], support[c],
                                           backend="pattern_growth") for c in support}
        check = {"strings": len(ids), "every_string_is_one_library_tree": all(len(v) == 1 for v in to_library.values()),
                 "library_trees_with_several_strings": sum(len(v) > 1 for v in lib_to.values()),
                 "extra_strings": sum(len(v) - 1 for v in lib_to.values())}
        to_library = {s: min(v) for s, v in to_library.items()}
        variants[name] = class_summary(y, tx, found, to_library, table)
        check["tree_sets_equal_library"] = all(itemset_counter(variants[name][c]) == itemset_counter(
            variants["library"][c]) for c in ("0", "1"))
        checks[name] = check
    for name, v in variants.items():
        v["matches_official_log"] = all(v[c]["unique_trees"] == OFFICIAL_LOG["unique_trees"][c]
                                        and v[c]["tree_sets"] == OFFICIAL_LOG["tree_sets"][c] for c in ("0", "1"))
        v["counts_equal_library"] = all(v[c][k] == variants["library"][c][k] for c in ("0", "1")
                                        for k in ("graphs", "unique_trees", "tree_sets"))
    max_children = max(int(torch.bincount(g.edge_index[0], minlength=g.num_nodes).max()) for g in data.train
                       if g.edge_index.numel())
    dup = [t for t in variants["strings_prefix_comparator"]["0"]["itemsets"] if t["distinct_trees"] < t["size"]]
    split_tree = [dup[0]["library_trees"][0], dup[0]["tree_nodes"][0]] if dup else [None, None]
    result = {
        "benchmark": "mirage_treeset_count", "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "machine": machine_info(), "data": {"root": args.data, "dataset": "ogbg_molbace", "split": data.info.split,
                                            "train_graphs": len(data.train)},
        "hops": args.hops, "support": {str(c): k for c, k in support.items()},
        "max_children_per_node": max_children, "split_tree": split_tree, "variants": variants, "string_checks": checks,
        "official_log": OFFICIAL_LOG, "seconds": round(time.perf_counter() - start, 2),
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


def write_markdown(r: dict, path: Path) -> None:
    v, chk, off = r["variants"], r["string_checks"], r["official_log"]
    names = {"library": "library (synthesizers/mirage)",
             "strings_sorted": "label strings, plain sort (official code since 9509bdd)",
             "strings_prefix_comparator": "label strings, pre-9509bdd comparator, official ids",
             "strings_prefix_comparator_sorted_ids": "label strings, pre-9509bdd comparator, sorted ids"}
    lines = [f"# Mirage tree-sets on ogbg-molbace (L = {r['hops']}, support {r['support']['0']} / "
             f"{r['support']['1']}, training graphs {v['library']['0']['graphs']} / {v['library']['1']['graphs']})",
             "", f"`{r['command']}` ({r['seconds']} s). Official log: {off['source']}.", "",
             "| variant | unique trees class 0 / 1 | tree-sets class 0 + 1 | matches official log? |",
             "|---|---|---|---|",
             f"| official log | {off['unique_trees']['0']:,} / {off['unique_trees']['1']:,} | "
             f"{off['tree_sets']['0']} + {off['tree_sets']['1']} | - |"]
    for key, label in names.items():
        c0, c1 = v[key]["0"], v[key]["1"]
        lines.append(f"| {label} | {c0['unique_trees']:,} / {c1['unique_trees']:,} | {c0['tree_sets']} + "
                     f"{c1['tree_sets']} | {'yes' if v[key]['matches_official_log'] else 'no'} |")
    s, b, bs = (chk[k] for k in ("strings_sorted", "strings_prefix_comparator", "strings_prefix_comparator_sorted_ids"))
    extra = {c: itemset_counter(v["strings_prefix_comparator"][c]) - itemset_counter(v["library"][c])
             for c in ("0", "1")}
    surplus = [v["strings_prefix_comparator"][c]["unique_trees"] - v["library"][c]["unique_trees"] for c in "01"]
    lines += ["", "Reading:", "",
              f"- The plain-sort strings give one string per library tree id "
              f"({s['every_string_is_one_library_tree'] and s['library_trees_with_several_strings'] == 0}) and the "
              f"library's tree-sets with the same supports ({s['tree_sets_equal_library']}): the library matches the "
              f"official code as fixed in 9509bdd.",
              f"- The pre-9509bdd comparator compares children only up to the first \"$\" (the end of their first "
              f"root-to-leaf path); children equal there keep the molecule's neighbour order (at most "
              f"{r['max_children_per_node']} children, so std::sort is one insertion sort). With the official ids "
              f"{b['library_trees_with_several_strings']} trees get several strings ({b['extra_strings']} extra) and "
              f"no string covers two trees ({b['every_string_is_one_library_tree']}), so the surplus of "
              f"{surplus[0]} / {surplus[1]} unique trees over the library is split trees only.",
              f"- Its {sum(sum(e.values()) for e in extra.values())} tree-sets beyond the library's are no new "
              f"patterns. In library tree ids (support) they are "
              + "; ".join(f"class {c}: " + ", ".join(f"{list(t)} ({k})" for (t, k), n in sorted(extra[c].items())
                                                    for _ in range(n)) for c in ("0", "1") if extra[c])
              + f": tree {r['split_tree'][0]} ({r['split_tree'][1]} nodes) has two strings, and the equal supports "
              "show that every graph holding it holds both, so each string and their pair become separate sets.",
              f"- Which children tie depends on the integer ids: with sorted ids the same comparator splits "
              f"{bs['library_trees_with_several_strings']} trees and gives "
              f"{v['strings_prefix_comparator_sorted_ids']['0']['unique_trees']:,} / "
              f"{v['strings_prefix_comparator_sorted_ids']['1']['unique_trees']:,} trees and "
              f"{v['strings_prefix_comparator_sorted_ids']['0']['tree_sets']} + "
              f"{v['strings_prefix_comparator_sorted_ids']['1']['tree_sets']} tree-sets; the official figures come "
              f"from the old comparator together with the official numbering.",
              "- The official 8 + 9 is therefore an artefact of the comparator fixed in 9509bdd, not a difference in "
              "data, split or mining; 4 + 9 (and the bytes that follow from it) is what the fixed code gives."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
