"""Result files of the official DC / DSA / DM code (VICO-UoE/DatasetCondensation) and of DataDAM: ``res_*.pt``.

Both write ``torch.save({'data': data_save, 'accs_all_exps': accs_all_exps}, path)``:

- DC/DSA/DM (``res_<DC|DSA|DM>_<dataset>_<model>_<ipc>ipc.pt``): ``data_save`` holds one ``[image_syn, label_syn]``
  pair per finished experiment (``--num_exp``, 5 by default), appended after the experiment's last iteration.
- DataDAM (``res_DataDAM_<dataset>_<model>_<ipc>ipc_.pt``): a pair is appended at every evaluation point, so the list
  holds snapshots over iterations (the first one is the initialisation), oldest first.

Images are float32 (K*ipc, C, H, W), class-major, normalised with the dataset's mean/std; DataDAM with ``--zca``
whitens the *normalised* images (kornia ``ZCAWhitening(eps=0.1)`` fitted on the whole normalised training split).
Labels are int64 class indices. ``accs_all_exps`` maps evaluation models to test accuracies (numpy floats).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..synset import SyntheticSet
from ._base import IMPORTERS, Foreign, Importer, ImportOptions, InteropError, Target, build_set, load_foreign

__all__ = ["DCResultImporter", "evaluation_network"]

#: ``res_<method>_<dataset>_<model>_<ipc>ipc[_].pt``, as the official codes name their result files.
_NAME = re.compile(r"^res_(?P<method>[A-Za-z]+)_(?P<dataset>.+)_(?P<model>[A-Za-z0-9]+)_(?P<ipc>\d+)ipc_?\.pt$")


def evaluation_network(file_name: str) -> tuple[str, dict[str, Any]] | None:
    """The ddistill network the official code distilled and evaluated the file's set with, from its name: DC/DSA/DM's
    ``ConvNet`` is DC's instance-norm ConvNet, depth 3 at every image size (``get_default_convnet_setting``; ddistill's
    ``convnet`` would pick depth 4 at 64 px, so the depth is stated), ``ConvNetD<n>`` the same at depth n;
    DataDAM's ``get_network('ConvNet')`` builds a batch-norm one, ``ConvNetBN`` is batch norm in every code. None for
    any other name (not guessed)."""
    m = _NAME.match(file_name)
    if m is None:
        return None
    method, model = m["method"].lower(), m["model"]
    deep = re.fullmatch(r"ConvNetD(\d)", model)
    if model == "ConvNetBN" or (model == "ConvNet" and method == "datadam"):
        return "convnet", {"norm": "batchnorm", "depth": 3}
    if method in ("dc", "dsa", "dm") and (model == "ConvNet" or deep):
        return "convnet", {"depth": int(deep[1]) if deep else 3}
    return None


@IMPORTERS.register("dc_res")
class DCResultImporter(Importer):
    """One ``[images, labels]`` pair of an official DC/DSA/DM/DataDAM ``res_*.pt``."""

    reads = "res_<method>_<dataset>_<model>_<ipc>ipc.pt; --experiment K picks the pair (default 0)"
    encoding = ("mean/std-normalised; with --zca (DataDAM) mean/std-normalised then ZCA-whitened (kornia, eps 0.1, "
                "fitted on the whole normalised training split); hard labels")
    zca_after_normalize = True
    takes_experiment = True

    def read(self, paths: list[Path], target: Target, options: ImportOptions) -> SyntheticSet:
        if len(paths) != 1 or paths[0].is_dir():
            raise InteropError("dc_res import reads one res_*.pt file")
        path = paths[0]
        blob = load_foreign(path, "DC/DSA/DM/DataDAM result file")
        pairs = _pairs(blob, path)
        datadam = path.name.lower().startswith("res_datadam")
        if options.experiment is None and datadam and len(pairs) > 1:
            raise InteropError(f"{path.name} holds {len(pairs)} DataDAM snapshots (one per evaluation point, oldest "
                               f"first, the first is the initialisation), not one set per experiment; pass "
                               f"--experiment -1 for the latest or --experiment K")
        k = 0 if options.experiment is None else int(options.experiment)
        if not -len(pairs) <= k < len(pairs):
            raise InteropError(f"{path.name} holds {len(pairs)} [images, labels] pair(s) (--experiment 0.."
                               f"{len(pairs) - 1}, or negative from the end); --experiment {k} is out of range")
        index = k % len(pairs)
        x, y = pairs[index]
        entry = f"data[{index}]"
        files = {"images": path.with_name(f"{path.name}:{entry}[0]"),
                 "labels": path.with_name(f"{path.name}:{entry}[1]")}
        extra: dict[str, Any] = {"source_file": str(path), "experiment": index, "pairs_in_file": len(pairs),
                                 "pairs_are": "snapshots over evaluation points (DataDAM)" if datadam
                                 else "one per experiment (DC/DSA/DM)"}
        accs = _accuracies(blob)
        if accs:
            extra["accs_all_exps"] = accs
        assumed = [f"{entry} of {len(pairs)} taken" + (" (default: the first experiment)"
                                                        if options.experiment is None else "")]
        if datadam and len(pairs) == 1:
            # Which iteration the only snapshot was taken at is not in the file: the official default evaluation
            # points start at iteration 0 (the initialisation), ``--eval_mode final`` keeps only the last one.
            assumed.append("the file's only DataDAM snapshot: the iteration it was taken at is not recorded (with the "
                           "official default evaluation points it is the initialisation, iteration 0)")
        if options.lr is None:
            assumed.append("no learned lr (these methods train evaluation nets with a fixed rate)")
        network = evaluation_network(path.name)
        if network is None:
            assumed.append(f"evaluation network unknown from the file name {path.name!r}: none recorded (name one with "
                           f"evaluator.model / evaluator.model_kwargs)")
        foreign = Foreign(_tensor(x, path, entry, "images"), _tensor(y, path, entry, "labels"), None, files)
        synset = build_set(self.name, foreign, target, options, extra=extra, assumed=assumed)
        synset.meta["imported"]["files"] = {"result": str(path)}
        if network is not None:  # so an evaluation without evaluator.model trains the network the code used
            synset.meta["eval_model"], synset.meta["eval_model_kwargs"] = network
        return synset


def _pairs(blob: Any, path: Path) -> list[tuple[Any, Any]]:
    what = f"{path.name} is not an official DC/DSA/DM/DataDAM result file"
    if not isinstance(blob, dict) or "data" not in blob:
        found = sorted(map(str, blob)) if isinstance(blob, dict) else type(blob).__name__
        raise InteropError(f"{what}: expected a dict with a 'data' list of [images, labels] pairs, found {found}")
    data = blob["data"]
    if not isinstance(data, (list, tuple)) or not data:
        raise InteropError(f"{what}: 'data' should be a non-empty list of [images, labels] pairs, found "
                           f"{type(data).__name__}" + (" (empty)" if isinstance(data, (list, tuple)) else ""))
    pairs = []
    for i, pair in enumerate(data):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise InteropError(f"{what}: data[{i}] should be an [images, labels] pair, found "
                               f"{type(pair).__name__}" + (f" of length {len(pair)}" if isinstance(pair, (list, tuple))
                                                            else ""))
        pairs.append((pair[0], pair[1]))
    return pairs


def _tensor(obj: Any, path: Path, entry: str, what: str):
    import torch

    if not isinstance(obj, torch.Tensor):
        raise InteropError(f"{path.name}: {entry} {what} should be a tensor, found {type(obj).__name__}")
    return obj.detach()


def _accuracies(blob: dict[str, Any]) -> dict[str, list[float]]:
    """``accs_all_exps`` as plain floats (numpy scalars are not JSON-able); entries that are not numbers are skipped."""
    accs = blob.get("accs_all_exps")
    out: dict[str, list[float]] = {}
    if isinstance(accs, dict):
        for model, values in accs.items():
            if isinstance(values, (list, tuple)):
                nums = []
                for v in values:
                    try:
                        nums.append(float(v))
                    except (TypeError, ValueError):
                        continue
                out[str(model)] = nums
    return out
