"""A small behaviour fingerprint on scikit-learn digits, to compare two trees of the project (run it with each tree
first on ``PYTHONPATH``): the sha1 of DM and DataDAM sets (paper batched / per-class, official), classifier scores with
their random-subset control, and the transfer evaluator's numbers with every control (the ``transfer`` case of
``tests/distributed_worker.py``, loaded from this script's own tree after the compared tree's modules are imported).

    PYTHONPATH=OLD_TREE python benchmarks/digits_equivalence.py --out before.json
    python benchmarks/digits_equivalence.py --out after.json --compare before.json

Explicit speed settings (no bf16, no compile, one thread), so only the code under test can change a number.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path


def fingerprint() -> dict:
    import torch

    import ddistill
    from ddistill.data import EvalData, load_real
    from ddistill.utils.perf import PerfConfig
    from ddistill.utils.train import TrainRecipe
    from evaluators import ClassifierConfig, ClassifierEvaluator
    from synthesizers import SYNTHESIZERS

    torch.set_num_threads(1)
    real, test = load_real("digits")
    fast = PerfConfig(channels_last=False, bf16=False, compile=False, threads=1)
    out: dict = {"ddistill": str(Path(ddistill.__file__).parent)}
    for name, preset, extra in [("dm", None, {}), ("datadam", "paper", {}), ("datadam", "official", {}),
                                ("datadam", "paper", {"batched": False})]:
        cls = SYNTHESIZERS.get(name)
        over = dict(ipc=3, iterations=5, batch_real=16, model="convnet", model_kwargs={"depth": 2, "width": 16},
                    perf=fast, **extra)
        cfg = cls.config_from_preset(preset, **over) if preset else cls.Config(**over)
        synset = cls(cfg, seed=1).fit(real)
        out[f"{name} {preset or ''} {extra}".strip()] = hashlib.sha1(synset.x.numpy().tobytes()).hexdigest()
    ev = ClassifierEvaluator(ClassifierConfig(model="convnet", model_kwargs={"depth": 2}, num_models=2, perf=fast,
                                              train=TrainRecipe(epochs=20), progress=False), seed=0)
    res = ev.evaluate(synset, EvalData(train=real, test=test))
    out["classifier"] = {"values": res.values, "random_subset": res.details["controls"]["random_subset"]["values"]}
    # The worker adds its own tree to sys.path, but the compared tree's modules are already imported and stay in use.
    spec = importlib.util.spec_from_file_location("_worker", Path(__file__).resolve().parents[1] / "tests" /
                                                  "distributed_worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    with tempfile.TemporaryDirectory() as tmp:
        out["transfer"] = {k: v.tolist() for k, v in worker._transfer(Path(tmp), 0).items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--compare", default=None, help="an earlier output: list the entries that differ")
    args = p.parse_args()
    result = fingerprint()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        keys = [k for k in result if k != "ddistill"]
        diff = [k for k in keys if before.get(k) != result[k]]
        print(f"{len(diff)} of {len(keys)} entries differ{': ' + ', '.join(diff) if diff else ''}")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
