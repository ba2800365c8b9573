"""Re-scores the committed CIFAR-10 sets under four evaluation protocols, every score beside its controls (issue #14).

Sets: the committed DataDAM sets (``benchmarks/results/sets/datadam_{paper,official}_cifar10_ipc{1,10}.pt``) and
random real subsets of the same sizes (``random_ipc{1,10}``, drawn here with the ``random`` synthesizer, seed 0).
The trajectory-matching sets of ``mtt_ast_cifar10_10k.md`` (``mtt_{mtt,ast}_ipc{1,10}``: ZCA-whitened, not committed,
made by ``benchmarks/mtt_cifar10.py``) are scored when named; their random-subset controls are real images whitened
with the set's own ZCA.

Protocols (each a classifier preset or the ``dd_ranking`` evaluator; the network is the instance-norm ConvNet-3 of
the papers for ``common`` and ``dd_ranking``, DataDAM's batch-norm ConvNet for ``datadam_official``):

- ``common``: DC's recipe (SGD 0.01, momentum 0.9, wd 5e-4, batch 256, DSA, x0.1 at half), final test accuracy of
  each network, mean ± std; control: a random real subset with the set's per-class counts (new draw per network,
  same recipe and seeds);
- ``dd_ranking``: DD-Ranking's hard-label protocol (StepLR at half with momentum kept, DSA, lr searched over its grid
  on a 5,000-image validation split of the training data), its label-robust (LRS) and augmentation-robust (ARS)
  scores per run, from final accuracies (headline) and from the max over every-10-epoch test checkpoints (what
  ``ddranking`` computes, labelled; ``--dd-ranking-test-every`` spaces those checkpoints, 10 as ``ddranking``);
- ``dd_ranking_soft``: DD-Ranking's soft-label protocol: the same trainings, the set and its random subset learning
  from a teacher's soft labels (DD-Ranking's DATM criterion: soft cross-entropy at T = 1, one label per unaugmented
  image); LRS-soft and ARS-soft. The teacher is a ``ddistill.classifier`` file (``--teacher``, made by
  ``benchmarks/teacher_cifar10.py``) whose encoding must be the set's;
- ``datadam_official``: DataDAM's evaluation (batch-norm ConvNet, batch 64, 1800 (+1) epochs, x0.1 at epoch 901),
  with its "best model" habit as a labelled reported-as number;
- ``mtt_official``: MTT's evaluation (instance-norm ConvNet-3 at the set's learned rate, batch 256, DSA, 1000 (+1)
  epochs, x0.1 at epoch 501), on the trajectory-matching sets only (the others store no learned rate); its random
  subset is trained at the same learned rate.

The whole real training split, trained once (the bound, and DD-Ranking's ``acc_real_hard``), is the last row.

Budgets are reduced for the CPU (``--epochs`` for ``common`` / ``dd_ranking``, ``--models`` networks per score,
``--whole-epochs``; ``datadam_official`` keeps its 1801 epochs but with ``--models`` networks and only on the IPCs of
``--official-ipc``; ``dd_ranking`` only on ``--dd-ranking-ipc``); the results file states every budget. Each cell is
cached in ``--work`` so an interrupted run resumes. The committed results are those of::

    python benchmarks/evaluation_cifar10.py --out benchmarks/results/evaluation_cifar10
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

SETS = {
    "datadam_paper_ipc1": "benchmarks/results/sets/datadam_paper_cifar10_ipc1.pt",
    "datadam_paper_ipc10": "benchmarks/results/sets/datadam_paper_cifar10_ipc10.pt",
    "datadam_official_ipc1": "benchmarks/results/sets/datadam_official_cifar10_ipc1.pt",
    "datadam_official_ipc10": "benchmarks/results/sets/datadam_official_cifar10_ipc10.pt",
    # The official preset's IPC 10 set after 3000 iterations (datadam_cifar10_ipc10_3000it.md; issue #15).
    "datadam_official_3000it_ipc10": "benchmarks/results/sets/datadam_3000it/datadam_official_cifar10_ipc10.pt",
    # Trajectory-matching sets of the 10k-image, 15-epoch comparison (mtt_ast_cifar10_10k.md; issue #15), from one
    # plain MTT expert and one AST expert, ZCA-whitened as MTT distils CIFAR-10. Not committed (38 MB each: they carry
    # the ZCA matrix); ``benchmarks/mtt_cifar10.py --work runs/mtt10k`` makes them (the commands are in its docstring).
    "mtt_mtt_ipc1": "runs/mtt10k/sets/mtt_mtt_ipc1.pt",
    "mtt_mtt_ipc10": "runs/mtt10k/sets/mtt_mtt_ipc10.pt",
    "mtt_ast_ipc1": "runs/mtt10k/sets/mtt_ast_ipc1.pt",
    "mtt_ast_ipc10": "runs/mtt10k/sets/mtt_ast_ipc10.pt",
    # The plain-MTT IPC 10 set made again by the same commands (expert + distill stages, seed 0) after the set above
    # was lost with a machine: bf16 + compile experts on another CPU do not reproduce it bit for bit (expert test
    # accuracy 53.38 % against 53.40 %), so it is scored as a set of its own, never mixed with the lost set's cells.
    # Made by the two commands of ``mtt_ast_cifar10_10k`` (``--recipes mtt``; distill ``--ipc 10 --recipe mtt``) with
    # ``--work runs/mtt10k``, then copied here.
    "mtt_mtt_r2_ipc10": "runs/mtt10k_r2/sets/mtt_mtt_ipc10.pt",
    # Both plain-MTT sets made a third time (stop 28: the r2 set was lost too), from one new expert, by the same
    # commands with ``--work runs/mtt10k_r3`` (distill ``--no-random --models 1``: the evaluation below scores them).
    # Committed without their ZCA matrix (``zca_sets.py strip``): load_set fits it again and checks its sha256. Their
    # soft-label teacher is fitted on the same ZCA (teacher_cifar10.py --zca, teacher_cifar10_zca_r3.md).
    "mtt_mtt_r3_ipc1": "benchmarks/results/sets/mtt_mtt_r3_cifar10_ipc1.pt",
    "mtt_mtt_r3_ipc10": "benchmarks/results/sets/mtt_mtt_r3_cifar10_ipc10.pt",
    # The AST-expert sets made a second time (stop 30: the first lived in runs/mtt10k and was lost with a machine) by
    # the AST commands of ``mtt_ast_cifar10_10k`` with ``--work runs/mtt10k_r3`` (experts ``--threads 2``; distill
    # ``--no-random --models 1``), committed without their ZCA matrix like the two above.
    "mtt_ast_r3_ipc1": "benchmarks/results/sets/mtt_ast_r3_cifar10_ipc1.pt",
    "mtt_ast_r3_ipc10": "benchmarks/results/sets/mtt_ast_r3_cifar10_ipc10.pt",
    "random_ipc1": None,
    "random_ipc10": None,
}
PROTOCOLS = ("common", "dd_ranking", "dd_ranking_soft", "datadam_official", "mtt_official")
#: The protocols scored by the ``dd_ranking`` evaluator (LRS / ARS), and the label type of each.
DD_RANKING = {"dd_ranking": "hard", "dd_ranking_soft": "soft"}
#: The teacher of ``dd_ranking_soft`` (``benchmarks/teacher_cifar10.py`` makes it).
TEACHER = "benchmarks/results/sets/dd_ranking_teacher_cifar10.pt"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # The default is the committed run's set list; the 3000-iteration and the trajectory-matching sets are scored by
    # naming them.
    p.add_argument("--sets", nargs="*", default=[n for n in SETS if "3000it" not in n and not n.startswith("mtt_")],
                   choices=list(SETS))
    # dd_ranking_soft needs a teacher file: scored only when named.
    p.add_argument("--protocols", nargs="*", default=[p for p in PROTOCOLS if p != "dd_ranking_soft"],
                   choices=list(PROTOCOLS))
    p.add_argument("--teacher", default=TEACHER, help="the soft-label teacher of dd_ranking_soft (a "
                   "ddistill.classifier file with the set's encoding; benchmarks/teacher_cifar10.py makes the default)")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--dataset", default="cifar10_jpeg", help="dataset name (digits: a quick check of the script with "
                   "random sets only)")
    p.add_argument("--official-epochs", type=int, default=1801, help="epochs of datadam_official (its code: 1801)")
    p.add_argument("--models", type=int, default=3, help="networks per score (and per control)")
    p.add_argument("--epochs", type=int, default=300, help="epochs of the common and dd_ranking protocols")
    p.add_argument("--whole-epochs", type=int, default=10, help="epochs of the whole-training-set network")
    p.add_argument("--dd-ranking-ipc", type=int, nargs="*", default=[1],
                   help="IPCs scored with dd_ranking and dd_ranking_soft")
    p.add_argument("--dd-ranking-test-every", type=int, default=10,
                   help="epochs between the test checkpoints of dd_ranking's max-over-epochs reading (ddranking: 10)")
    p.add_argument("--official-ipc", type=int, nargs="*", default=[1], help="IPCs scored with datadam_official")
    p.add_argument("--mtt-epochs", type=int, default=1001, help="epochs of mtt_official (its code: 1001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/evaluation_cifar10")
    p.add_argument("--out", default="benchmarks/results/evaluation_cifar10")
    p.add_argument("--accept-zca-refit", action="store_true",
                   help="score a set committed without its ZCA matrix even when the matrix fitted here differs from "
                        "the set's in its last bits (another CPU type); each such cell records the mismatch and the "
                        "table marks it. Off: a mismatch stops the run")
    p.add_argument("--report-only", action="store_true", help="write the tables and plot from --work")
    p.add_argument("--cells-from", default=None,
                   help="a results JSON of this script: its cells and whole-split network become --work's cache "
                        "(cells already in --work are kept), so new cells are added to a committed table without "
                        "re-running it")
    return p.parse_args(argv)


def _ipc(name: str) -> int:
    return int(name.rsplit("ipc", 1)[1])


_RESTORED: dict[str, object] = {}  # stripped ZCA sets with their matrix fitted again (one fit per set and run)


def load_set(name: str, real, data_root: str | None = None, accept_zca_refit: bool = False):
    from ddistill.synset import SyntheticSet
    from synthesizers import SYNTHESIZERS

    if SETS[name] is not None:
        if not Path(SETS[name]).exists():
            raise SystemExit(f"set {name!r}: {SETS[name]} does not exist (see the comment above SETS for the command "
                             f"that makes it)")
        synset = SyntheticSet.load(SETS[name])
        if "zca_refit" in synset.meta:  # committed without its ZCA matrix (zca_sets.py): fit it again, checked
            if name not in _RESTORED:
                here = str(Path(__file__).resolve().parent)
                if here not in sys.path:
                    sys.path.insert(0, here)
                from zca_sets import restore

                _RESTORED[name] = restore(synset, data_root, accept_other_bits=accept_zca_refit)
            return _RESTORED[name]
        return synset
    cls = SYNTHESIZERS.get("random")
    return cls(cls.Config(ipc=_ipc(name)), seed=0).fit(real)


def _classifier(preset: str, args: argparse.Namespace, **overrides):
    from ddistill.utils.perf import PerfConfig
    from evaluators.classifier import ClassifierEvaluator

    base = {"num_models": args.models, "progress": False, "perf": PerfConfig(threads=args.threads)}
    base.update(overrides)
    return ClassifierEvaluator.config_from_preset(preset, **base)


def run_cell(name: str, protocol: str, args: argparse.Namespace, real, test, whole: dict) -> dict:
    from ddistill.data import EvalData
    from ddistill.io import machine_info
    from evaluators.classifier import ClassifierEvaluator
    from evaluators.dd_ranking import DDRankingConfig, DDRankingEvaluator

    synset = load_set(name, real, args.data, args.accept_zca_refit)
    data = EvalData(train=real, test=test)
    if synset.meta["encoding"] != real.encoding.to_meta():
        data = encoded_data(synset, args, real, test)
    e = args.epochs
    start = time.perf_counter()
    if protocol == "common":
        cfg = _classifier("common", args, model="convnet", model_kwargs={}, train={"epochs": e})
        res = ClassifierEvaluator(cfg, seed=args.seed).evaluate(synset, data)
    elif protocol in DD_RANKING:
        clf = _classifier("dd_ranking", args, model="convnet", model_kwargs={}, test_every=args.dd_ranking_test_every,
                          train={"epochs": e, "lr_decay_at": e // 2})
        soft = {}
        if DD_RANKING[protocol] == "soft":
            teacher = check_teacher(args.teacher, synset)
            soft = {"label_type": "soft", "soft_labels": dataclasses.replace(DDRankingConfig().soft_labels,
                                                                             teacher=teacher),
                    "syn_hard_accuracy": hard_cell_accuracies(name, args, clf, synset)}
        cfg = DDRankingConfig(classifier=clf, real_hard_accuracy=whole["mean"], **soft)
        res = DDRankingEvaluator(cfg, seed=args.seed).evaluate(synset, data)
    elif protocol == "mtt_official":
        cfg = _classifier("mtt_official", args, model="convnet", model_kwargs={}, train={"epochs": args.mtt_epochs})
        res = ClassifierEvaluator(cfg, seed=args.seed).evaluate(synset, data)
    else:
        cfg = _classifier("datadam_official", args, train={"epochs": args.official_epochs})
        res = ClassifierEvaluator(cfg, seed=args.seed).evaluate(synset, data)
    out = res.to_dict()
    out["seconds"] = time.perf_counter() - start
    out["argv"] = sys.argv[1:]  # the invocation that scored this cell (cells of several invocations share --work)
    out["machine"] = machine_info()
    out["data"] = args.data
    out["set_sha256"] = set_digest(synset)
    if "zca_refit_mismatch" in synset.meta:  # scored with this machine's refit of the set's ZCA (--accept-zca-refit)
        out["zca_refit_mismatch"] = synset.meta["zca_refit_mismatch"]
    out["config"] = json.loads(json.dumps(_plain(cfg), default=str))
    if protocol in DD_RANKING and DD_RANKING[protocol] == "soft":
        out["teacher"] = teacher_record(cfg.soft_labels)
        out["teacher"]["on_set"] = teacher_on_set(cfg.soft_labels.teacher, synset)
    return out


_ENCODED: dict[str, object] = {}  # the last re-encoded split, keyed by its encoding (sets of one ZCA share it)


def encoded_data(synset, args: argparse.Namespace, real, test):
    """The real splits encoded as a ZCA set is (trajectory matching), so its controls draw real images in the set's
    input space. Re-encoding 50,000 images takes about a minute: the last encoding is kept for the next cell."""
    import hashlib

    from ddistill.data import DataSpec, Encoding, EvalNeeds, load_eval_data

    enc = Encoding.from_meta(synset.meta["encoding"], synset.tensors)
    digest = hashlib.sha256(json.dumps(enc.to_meta(), sort_keys=True, default=str).encode())
    for k, t in sorted(enc.tensors().items()):
        digest.update(k.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    key = digest.hexdigest()
    if key not in _ENCODED:
        _ENCODED.clear()
        _ENCODED[key] = load_eval_data(DataSpec(name=args.dataset, root=args.data), EvalNeeds(test=True, train=True),
                                       encoding=enc, loaded=(real, test))
    return _ENCODED[key]


def hard_cell_accuracies(name: str, args: argparse.Namespace, clf, synset) -> dict | None:
    """The set's hard-label accuracies from its ``dd_ranking`` cell in ``--work`` when retraining them here would
    give the same networks: the same classifier protocol *and* performance settings (threads, bf16, channels_last
    and compile change the floating-point results), the same seed, CPU model and torch version, the same data and the
    same set (its digest, where the cell recorded one). LRS-soft reads only these of the hard-label trainings.
    None (retrain) otherwise."""
    from ddistill.io import machine_info

    path = Path(args.work) / f"{name}__dd_ranking.json"
    if not path.exists():
        return None
    cell = json.loads(path.read_text())
    ours = json.loads(json.dumps(_plain(clf), default=str))
    theirs = (cell.get("config") or {}).get("classifier") or {}
    here, there = machine_info(), cell.get("machine") or {}
    same = (
        {k: v for k, v in ours.items() if k != "progress"} == {k: v for k, v in theirs.items() if k != "progress"}
        and cell["trainings"]["hard"].get("seed") == args.seed
        and (here.get("cpu"), here.get("torch")) == (there.get("cpu"), there.get("torch"))
        # Cells scored before cells recorded their data and set digest: the committed data and sets of the table.
        and cell.get("data", args.data) == args.data
        and cell.get("set_sha256", set_digest(synset)) == set_digest(synset))
    return {r: v["accuracies"]["hard"]["set"] for r, v in cell["readings"].items()} if same else None


def set_digest(synset) -> str:
    """sha256 of a set's images and labels (which set a cell scored)."""
    import hashlib

    h = hashlib.sha256()
    for t in (synset.x, synset.y):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def file_digest(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def teacher_on_set(teacher_path: str, synset) -> dict:
    """How the teacher labels the set's own images: the fraction it assigns to the image's class and its mean
    probability of that class (soft labels that contradict the class teach another class)."""
    import torch

    from ddistill.classifier_file import load_classifier
    from ddistill.data import Encoding

    net, _ = load_classifier(teacher_path, encoding=Encoding.from_meta(synset.meta["encoding"], synset.tensors))
    with torch.no_grad():
        prob = torch.cat([net(x).softmax(1) for x in synset.x.split(256)])
    y = synset.y if synset.y.dim() == 1 else synset.y.argmax(1)
    return {"agrees_with_class": float((prob.argmax(1) == y).float().mean()),
            "mean_prob_of_class": float(prob[torch.arange(len(y)), y].mean()), "images": int(len(y))}


def add_teacher_on_set(path: Path, name: str, protocol: str, args: argparse.Namespace, real) -> None:
    """Adds :func:`teacher_on_set` to a cached soft-label cell scored before cells recorded it."""
    cell = json.loads(path.read_text())
    if DD_RANKING.get(protocol) != "soft" or "on_set" in (cell.get("teacher") or {}):
        return
    cell["teacher"]["on_set"] = teacher_on_set(cell["teacher"]["path"],
                                               load_set(name, real, args.data, args.accept_zca_refit))
    path.write_text(json.dumps(cell))


def check_cached_teacher(path: Path, protocol: str, args: argparse.Namespace) -> None:
    """A cached soft-label cell scored with another teacher than ``--teacher`` is never passed off as its score."""
    if DD_RANKING.get(protocol) != "soft" or not Path(args.teacher).exists():
        return
    used = (json.loads(path.read_text()).get("teacher") or {}).get("sha256")
    if used != file_digest(args.teacher):
        raise SystemExit(f"{path} was scored with another teacher than --teacher {args.teacher}; delete that cell to "
                         f"re-score it, or use another --work")


def check_teacher(path: str, synset) -> str:
    """``path`` when it is a classifier file with the set's encoding; otherwise one line saying what is wrong."""
    from ddistill.classifier_file import ClassifierFileError, load_classifier
    from ddistill.data import Encoding

    if not Path(path).exists():
        raise SystemExit(f"--teacher {path} does not exist; `python benchmarks/teacher_cifar10.py` makes it")
    try:
        load_classifier(path, encoding=Encoding.from_meta(synset.meta["encoding"], synset.tensors))
    except ClassifierFileError as e:
        raise SystemExit(f"--teacher: {e}") from None
    return path


def teacher_record(soft) -> dict:
    """What the report says of a soft-label cell's teacher: its file, recipe, test accuracy and the label protocol."""
    from ddistill.classifier_file import load_classifier

    _, header = load_classifier(soft.teacher)
    return {"path": soft.teacher, "sha256": file_digest(soft.teacher),
            "what": (header.get("recipe") or {}).get("what", header.get("model")),
            "test_accuracy": header.get("test_accuracy"),
            "soft_labels": f"{soft.criterion} at T = {soft.temperature:g}, mode {soft.mode}"}


def _plain(obj):
    from ddistill.config import to_dict

    return to_dict(obj)


def run_whole(args: argparse.Namespace, real, test) -> dict:
    from ddistill.utils.train import TrainRecipe
    from evaluators.classifier import ClassifierEvaluator

    cfg = _classifier("common", args, model="convnet", model_kwargs={}, num_models=1, controls=[],
                      train=TrainRecipe(epochs=args.whole_epochs, augment="none"))
    start = time.perf_counter()
    res = ClassifierEvaluator(cfg, seed=args.seed).evaluate_real(real, test)
    return {**res.to_dict(), "seconds": time.perf_counter() - start}


def cells(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for protocol in args.protocols:
        for name in args.sets:
            if protocol in DD_RANKING and _ipc(name) not in args.dd_ranking_ipc:
                continue
            if protocol == "datadam_official" and _ipc(name) not in args.official_ipc:
                continue
            if protocol == "mtt_official" and not name.startswith("mtt_"):
                continue  # only a trajectory-matching set stores the learned rate this recipe trains with
            out.append((name, protocol))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.cells_from:
        seed_work(Path(args.cells_from), work)
    if not args.report_only:
        import torch

        from ddistill.data import DataSpec, load_data

        torch.set_num_threads(args.threads)
        spec = DataSpec(name=args.dataset, root=args.data if args.dataset != "digits" else None)
        t = time.perf_counter()
        real, test = load_data(spec)
        print(f"loaded {args.dataset} in {time.perf_counter() - t:.1f} s", flush=True)
        whole_path = work / "whole.json"
        if not whole_path.exists():
            whole_path.write_text(json.dumps(run_whole(args, real, test)))
        whole = json.loads(whole_path.read_text())
        print(f"whole training split: {whole['mean']:.2f} ({whole['seconds']:.0f} s)", flush=True)
        for name, protocol in cells(args):
            path = work / f"{name}__{protocol}.json"
            if path.exists():
                check_cached_teacher(path, protocol, args)
                add_teacher_on_set(path, name, protocol, args, real)
                continue
            print(f"{name} / {protocol} ...", flush=True)
            cell = run_cell(name, protocol, args, real, test, whole)
            path.write_text(json.dumps(cell))
            print(f"  {cell['metric']} {cell['mean']:.4f} ({cell['seconds']:.0f} s)", flush=True)
    report(args, work)


def seed_work(results_json: Path, work: Path) -> None:
    """Writes the cells and the whole-split network of a results JSON into ``work``, as if scored there; a cell or
    whole-split file already in ``work`` is left as it is."""
    saved = json.loads(results_json.read_text())
    files = {work / "whole.json": saved["whole_set"]}
    for protocol, by_set in saved["results"].items():
        for name, cell in by_set.items():
            # Cells scored before cells recorded their machine ran on the machine of the saved report.
            files[work / f"{name}__{protocol}.json"] = {"machine": saved.get("machine"), **cell}
    for path, payload in files.items():
        if not path.exists():
            path.write_text(json.dumps(payload))


# -- report -----------------------------------------------------------------------------------------------------
def _pm(mean: float, std: float | None, digits: int = 2) -> str:
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _ipcs(results: dict, protocol: str) -> list[int] | str:
    """The IPCs of the cells scored under ``protocol`` (not this invocation's options: cells of several invocations
    share the work directory)."""
    return sorted({_ipc(name) for name in results.get(protocol, {})}) or "none"


def _machines(results: dict, current: dict) -> str:
    """The CPUs the cells were scored on (a cell without a record: this report's machine)."""
    seen = sorted({(c.get("machine") or current).get("cpu") or "unknown CPU"
                   for by_set in results.values() for c in by_set.values()})
    return " and ".join(seen) if seen else str(current.get("cpu"))


def _threads(results: dict, default: int) -> str:
    """The torch threads the cells were scored with (from each cell's config), e.g. "2" or "1 or 2"."""
    seen = sorted({((c.get("config") or {}).get("perf") or {}).get("threads") or default
                   for by_set in results.values() for c in by_set.values()})
    return " or ".join(str(t) for t in seen) if seen else str(default)


def _dd_ranking_every(results: dict, protocol: str = "dd_ranking") -> str:
    """The test-checkpoint spacing of ``protocol``'s cells (from each cell's config), e.g. "10" or "10 or 50"."""
    seen = sorted({((c.get("config") or {}).get("classifier") or {}).get("test_every", 10)
                   for c in results.get(protocol, {}).values()})
    return " or ".join(str(t) for t in seen)


def report(args: argparse.Namespace, work: Path) -> None:
    from ddistill.io import machine_info, write_json

    whole = json.loads((work / "whole.json").read_text())
    results: dict[str, dict[str, dict]] = {}
    order = {name: i for i, name in enumerate(SETS)}
    for path in sorted(work.glob("*__*.json"), key=lambda p: order.get(p.stem.split("__")[0], len(order))):
        name, protocol = path.stem.split("__")
        results.setdefault(protocol, {})[name] = json.loads(path.read_text())
    # Every invocation whose cells are in --work (cells scored before argv was recorded: the default invocation).
    invocations = sorted({" ".join(cell.get("argv", ["--out", args.out])) for proto in results.values()
                          for cell in proto.values()})
    command = "; ".join(f"python benchmarks/evaluation_cifar10.py {a}" for a in invocations)
    payload = {"benchmark": "evaluation_cifar10", "command": command, "machine": machine_info(),
               "data": args.data, "seed": args.seed, "models": args.models, "epochs": args.epochs,
               "whole_epochs": args.whole_epochs, "whole_set": whole, "results": results}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), payload)

    lines = [
        "# Evaluating the committed CIFAR-10 sets: the papers' and the field's protocols, each score beside its "
        "controls",
        "",
        f"Command: `{command}`. Data: {args.dataset} (`{args.data}`), its whole training split "
        f"(controls, validation splits) and its test split. Machine: {_machines(results, payload['machine'])}, "
        f"{payload['machine'].get('cores')} cores shared with other jobs, torch {payload['machine'].get('torch')}, "
        f"{_threads(results, args.threads)} threads. Seed {args.seed} for every evaluator (networks, data order, random subsets).",
        "",
        f"Budget (reduced for the CPU; the paper budgets are the presets, e.g. `evaluator.preset=datadam_official`): "
        f"{args.models} networks per score and per control; `common`, `dd_ranking` and `dd_ranking_soft` "
        f"{args.epochs} epochs (papers: "
        f"1000); `datadam_official` {args.official_epochs} epochs (its code: 1801) and {args.models} networks (official: 10), IPC "
        f"{_ipcs(results, 'datadam_official')} only (the cells present below); " + " and ".join(
            f"`{p}` IPC {_ipcs(results, p)}" for p in DD_RANKING if p in results) + " only (its lr search trains "
        "every grid rate "
        f"for the set and for the random subset, with and without augmentation). Whole training split: one network, "
        f"{args.whole_epochs} epochs, no augmentation: {whole['mean']:.2f} % ({whole['seconds'] / 60:.0f} min).",
        "",
    ]
    if "common" in results:
        lines += ["## Common protocol (DC recipe, final accuracy of each network)", "",
                  "| set | accuracy % | random real subset, same size % | gain (points) | minutes |",
                  "|---|---|---|---:|---:|"]
        for name, r in results["common"].items():
            c = r["controls"]["random_subset"]
            lines.append(f"| {name} | {_pm(r['mean'], r['std'])} | {_pm(c['mean'], c['std'])} | "
                         f"{r['mean'] - c['mean']:+.2f} | {r['seconds'] / 60:.0f} |")
        lines.append(f"| whole training split | {whole['mean']:.2f} | | | {whole['seconds'] / 60:.0f} |")
        lines.append("")
        if any(name.startswith("mtt_") for name in results["common"]):
            lines += ["`mtt_*` rows: ZCA-whitened trajectory-matching sets (`mtt_ast_cifar10_10k.md`), trained at the "
                      "protocol's fixed rate, not their learned one; their random subsets are real images whitened "
                      "with the set's own ZCA (so the set and its control see the same input space).", ""]
    for protocol in DD_RANKING:
        if protocol in results:
            lines += dd_ranking_lines(protocol, results)
    if "datadam_official" in results:
        lines += ["## DataDAM's official evaluation recipe", "",
                  "| set | accuracy % (final, honest) | reported as best model (DataDAM's 'top') | random real subset % | "
                  "gain | minutes |", "|---|---|---:|---|---:|---:|"]
        for name, r in results["datadam_official"].items():
            c = r["controls"]["random_subset"]
            best = r.get("reported_as", {}).get("best_model", {}).get("value")
            lines.append(f"| {name} | {_pm(r['mean'], r['std'])} | {best:.2f} | {_pm(c['mean'], c['std'])} | "
                         f"{r['mean'] - c['mean']:+.2f} | {r['seconds'] / 60:.0f} |")
        lines.append("")
    if "mtt_official" in results:
        lines += ["## MTT's official evaluation recipe (the set's learned rate; its code: 1000 (+1) epochs)", "",
                  "| set | learned lr | epochs | accuracy % (final) | random real subset at the same rate % | gain | "
                  "minutes |", "|---|---:|---:|---|---|---:|---:|"]
        for name, r in results["mtt_official"].items():
            c = r["controls"]["random_subset"]
            lines.append(f"| {name} | {r['lr']:.4g} | {r['epochs']} | {_pm(r['mean'], r['std'])} | "
                         f"{_pm(c['mean'], c['std'])} | "
                         f"{r['mean'] - c['mean']:+.2f} | {r['seconds'] / 60:.0f} |")
        lines.append("")
    lines += zca_refit_lines(results)
    missing = [p for p in PROTOCOLS if p not in results]
    if missing:
        lines += ["## Not scored", "", *(f"- `{p}`: no cell in `{work}`: this protocol was not scored by the "
                                         f"invocations above (a cell is written only when it finishes)."
                                         for p in missing), ""]
    lines += ["## What this shows", "", *what_this_shows(results, whole), ""]
    reading = out.parent / f"{out.name}.reading.md"  # a person's reading of the numbers, kept across regenerations
    if reading.exists():
        lines += [f"## Reading (hand-written from the numbers above; `{reading.name}`)", "",
                  reading.read_text().strip(), ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    plot(results, whole, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")


def zca_refit_lines(results: dict) -> list[str]:
    """The cells scored with ``--accept-zca-refit`` where the refit differed from the set's ZCA matrix, one line
    each, so such a score never looks like the others without saying so. Empty when there are none."""
    refit = [(p, n, r["zca_refit_mismatch"]) for p, by_set in results.items() for n, r in by_set.items()
             if "zca_refit_mismatch" in r]
    if not refit:
        return []
    return ["## Cells scored with another machine's fit of the set's ZCA (`--accept-zca-refit`)", "",
            *(f"- `{n}` / `{p}`: the set's ZCA matrix (sha256 {m['set_zca_w_sha256'][:12]}) did not refit bit for "
              f"bit on {m['refit_cpu']} (sha256 {m['refit_zca_w_sha256'][:12]}); the set's images were whitened by "
              "its own matrix, this cell's real data (controls, test split) by the refit."
              for p, n, m in refit), ""]


def dd_ranking_lines(protocol: str, results: dict) -> list[str]:
    """The table of a ``dd_ranking`` / ``dd_ranking_soft`` protocol: the set and its random subset under the
    protocol's labels, the selected rates, and DD-Ranking's scores (final and max-over-epochs readings)."""
    soft = DD_RANKING[protocol] == "soft"
    lines = [f"## DD-Ranking protocol ({'soft labels from a teacher' if soft else 'hard labels'}, lr searched on a "
             "validation split)", "",
             "Scores with accuracies as fractions (DD-Ranking's definition, in [0, 1]); `acc_real_hard` = the "
             "whole-training-split row. *final*: each network's last-epoch accuracy (the honest reading); "
             f"*max*: its best test checkpoint (every {_dd_ranking_every(results, protocol)} epochs; `ddranking`: 10), "
             "what `ddranking` computes -- labelled, never the headline. HLR = real minus set (hard labels; lower is "
             "better), IOR = set minus random subset"
             + (" (both with the teacher's soft labels)." if soft else "."), ""]
    if soft:
        # A set's teacher sees the set's inputs: the ZCA-whitened trajectory-matching sets have a teacher of their own.
        teachers: dict[str, list[str]] = {}
        for name, r in results[protocol].items():
            t = {k: v for k, v in (r.get("teacher") or {}).items() if k != "on_set"}
            teachers.setdefault(json.dumps(t, sort_keys=True), []).append(name)
        for key, names in sorted(teachers.items()):
            t = json.loads(key)
            acc = t.get("test_accuracy")
            lines += [f"Teacher of {', '.join(f'`{n}`' for n in names)}: `{t.get('path')}` (sha256 "
                      f"{str(t.get('sha256'))[:12]}), {t.get('what')}; "
                      "test accuracy "
                      + (f"{acc:.2f} %" if acc is not None else "not recorded") + " (`acc_real_hard` is the "
                      "whole-split network of the hard-label table, not the teacher). Soft labels: "
                         f"{t.get('soft_labels')}.", ""]
    hard_col = (" set, hard labels % (final) | teacher on the set's images: argmax = class / p(class) |"
                if soft else "")
    lines += ["| set | set acc % (final / max) | random subset % (final / max) |" + hard_col + " selected lr (set / "
              "subset) | HLR | IOR | LRS final | LRS max | ARS final | ARS max | minutes |",
              "|---|---|---|" + ("---|---|" if soft else "") + "---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results[protocol].items():
        fin, mx = r["readings"]["final"], r["readings"].get("max_over_epochs")
        acc, acc_m = fin["accuracies"], (mx or {}).get("accuracies")
        # "any" = the protocol's label type (the same training as "hard" under hard labels).
        run = r["trainings"]["any"]
        lr_set = run.get("lr_search", {}).get("selected_lr")
        lr_rdm = run["controls"]["random_subset"].get("lr_search", {}).get("selected_lr")
        # A trajectory-matching set is trained at its learned rate (not searched), as DD-Ranking uses syn_lr.
        learned = "not searched" in run.get("lr_search", {}).get("selected_on", "")
        lr_set = f"{lr_set:.4g}" + (" (learned)" if learned else "") if lr_set is not None else None

        def mean(v):
            return sum(v) / len(v)

        set_acc = f"{mean(acc['any']['set']):.2f} / " + (f"{mean(acc_m['any']['set']):.2f}" if acc_m else "-")
        rdm_acc = f"{mean(acc['any']['random_subset']):.2f} / " + (
            f"{mean(acc_m['any']['random_subset']):.2f}" if acc_m else "-")
        if soft:  # the hard-label accuracies HLR reads, and where they come from
            given = str(r.get("hard_label_trainings", "")).startswith("given")
            # Retrained here, the hard-label networks can differ from the set's dd_ranking cell by float order (another
            # CPU, other threads): say which, so two tables never seem to disagree unexplained.
            rdm_acc += f" | {mean(acc['hard']['set']):.2f}" + (" (from its `dd_ranking` cell)" if given
                                                               else " (retrained in this cell)")
            on = (r.get("teacher") or {}).get("on_set")
            rdm_acc += (f" | {100 * on['agrees_with_class']:.0f} % / {on['mean_prob_of_class']:.2f}" if on else " | -")
        lrs, ars = fin["lrs"], fin.get("ars")
        lines.append(
            f"| {name} | {set_acc} | {rdm_acc} | {lr_set} / {lr_rdm} | {lrs['hard_label_recovery_mean']:.2f} | "
            f"{lrs['improvement_over_random_mean']:+.2f} | {_pm(lrs['label_robust_score_mean'], lrs['label_robust_score_std'], 4)} | "
            f"{mx['lrs']['label_robust_score_mean']:.4f} | "
            f"{_pm(ars['augmentation_robust_score_mean'], ars['augmentation_robust_score_std'], 4) if ars else '-'} | "
            f"{mx['ars']['augmentation_robust_score_mean']:.4f} | {r['seconds'] / 60:.0f} |"
            if mx else f"| {name} | {set_acc} | {rdm_acc} | {lr_set} / {lr_rdm} | | | | | | | |")
    lines.append("")
    return lines


def what_this_shows(results: dict, whole: dict) -> list[str]:
    """Sentences computed from the numbers (no claim the table does not carry)."""
    out = []
    for protocol, rows in results.items():
        for name, r in rows.items():
            if name.startswith("random"):  # a random set against other random draws: a check of the control
                out.append(random_row_check(protocol, name, r))
                continue
            if protocol in DD_RANKING:
                lrs = r["readings"]["final"]["lrs"]
                ior, std = lrs["improvement_over_random_mean"], lrs["improvement_over_random_std"]
                verdict = "beats" if ior > std else "does not beat"
                out.append(f"- `{protocol}` / {name}: {verdict} its random subset under DD-Ranking's protocol "
                           f"(IOR {ior:+.2f} ± {std:.2f} points); LRS {lrs['label_robust_score_mean']:.4f}.")
                continue
            c = r["controls"]["random_subset"]
            gain, noise = r["mean"] - c["mean"], max(r["std"], c["std"])
            verdict = "beats" if gain > noise else "does not beat (within one std of)"
            out.append(f"- `{protocol}` / {name}: {r['mean']:.2f} % {verdict} the random real subset of the same "
                       f"size ({c['mean']:.2f} %, gain {gain:+.2f} points, larger std {noise:.2f}); whole split "
                       f"{whole['mean']:.2f} %.")
    for name, r in results.get("datadam_official", {}).items():
        best = r.get("reported_as", {}).get("best_model", {}).get("value")
        if best is not None:
            out.append(f"- DataDAM's best-model habit adds {best - r['mean']:+.2f} points to {name}'s honest mean "
                       f"under its own recipe.")
    return out


def random_row_check(protocol: str, name: str, r: dict) -> str:
    """A random set (one draw, seed 0) against its control (a new draw per network): the two should tie within the
    spread of draws; a gap larger than that says the protocol treats equal sets unequally."""
    if protocol in DD_RANKING:
        lrs = r["readings"]["final"]["lrs"]
        gain, noise = lrs["improvement_over_random_mean"], lrs["improvement_over_random_std"]
        acc = r["readings"]["final"]["accuracies"]["any"]
        mine, draws = sum(acc["set"]) / len(acc["set"]), acc["random_subset"]
    else:
        c = r["controls"]["random_subset"]
        gain, noise, draws, mine = r["mean"] - c["mean"], max(r["std"], c["std"]), c.get("values", []), r["mean"]
    if noise != noise:  # NaN: a single network or draw has no std
        verdict = "(no std to compare with)"
    else:
        verdict = "ties it (within one std)" if abs(gain) <= noise else f"differs by more than one std ({noise:.2f})"
    spread = (f"; the control's own draws span {min(draws):.2f}-{max(draws):.2f} % and the set's {mine:.2f} lies "
              + ("inside" if min(draws) <= mine <= max(draws) else "outside") + " that span") if draws else ""
    return (f"- `{protocol}` / {name} (one random draw, seed 0) against its random subset (a new draw per network): "
            f"{gain:+.2f} points, {verdict}{spread}.")


def _bars(protocol: str, rows: dict) -> dict[str, tuple[float, float, float, float]]:
    """Per set: (set mean, std, random-subset mean, std) in %; DD-Ranking cells read their final accuracies under
    the protocol's labels."""
    import statistics

    def ms(v: list[float]) -> tuple[float, float]:
        return statistics.fmean(v), statistics.pstdev(v)  # population std, as EvalResult.std

    out = {}
    for name, r in rows.items():
        if protocol in DD_RANKING:
            acc = r["readings"]["final"]["accuracies"]["any"]
            out[name] = (*ms(acc["set"]), *ms(acc["random_subset"]))
        else:
            c = r["controls"]["random_subset"]
            out[name] = (r["mean"], r["std"], c["mean"], c["std"])
    return out


def plot(results: dict, whole: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PROTOCOLS if p in results]
    if not panels:
        return
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6 * cols, 4 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, protocol in zip(axes.flat, panels):
        bars = _bars(protocol, results[protocol])
        names = list(bars)
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [bars[n][0] for n in names], 0.4, yerr=[bars[n][1] for n in names],
               label="set")
        ax.bar([x + 0.2 for x in xs], [bars[n][2] for n in names], 0.4, yerr=[bars[n][3] for n in names],
               label="random real subset")
        ax.axhline(whole["mean"], color="k", ls="--", lw=1, label="whole training split")
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        ax.set_title(protocol + (" (final accuracies)" if protocol in DD_RANKING else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

if __name__ == "__main__":
    main()
