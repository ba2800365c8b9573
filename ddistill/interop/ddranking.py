"""DD-Ranking inputs: ``images.pt``, ``labels.pt``, ``lr.pt`` (NUS-HPC-AI-Lab/DD-Ranking ``compute_metrics``).

- ``images.pt``: a float (K*ipc, C, H, W) tensor, class-major (the first ipc rows are class 0), in the space of the
  evaluator's real data: normalised with the dataset mean/std, or with ``use_zca`` [0, 1] pixels whitened by kornia's
  ``ZCAWhitening(eps=0.1)`` fitted on the whole training split. Never raw pixels; no resizing.
- ``labels.pt``: (N, K) float soft labels, treated as logits (softmax with a temperature inside the loss); or (N,)
  int64 hard labels. Without it DD-Ranking assumes class-major hard labels.
- ``lr.pt``: the learned rate, a float or a scalar tensor.

The exporter writes the same three files (plus ``README.txt`` and ``ddistill_export.json``); importing its folder gives
back bit-identical tensors.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..synset import SyntheticSet
from ._base import EXPORT_MARKER, EXPORTERS, IMPORTERS, ExportReport, Exporter, Foreign, Importer, ImportOptions, \
    Target, as_tensor, build_set, check_export_record, class_major_order, encoding_sentence, export_record, \
    load_foreign, read_lr_file, write_file, write_json_file
from .mtt import resolve_files

__all__ = ["DDRankingExporter", "DDRankingImporter"]


@IMPORTERS.register("ddranking")
class DDRankingImporter(Importer):
    """A DD-Ranking input folder (or its files)."""

    reads = "images.pt [labels.pt] [lr.pt] (or their folder)"
    encoding = ("mean/std-normalised, or with --zca [0, 1] pixels ZCA-whitened (kornia, eps 0.1, fitted on the whole "
                "training split); labels (N, K) logits (soft) or (N,) class indices (hard); none = class-major")

    def read(self, paths: list[Path], target: Target, options: ImportOptions) -> SyntheticSet:
        files = resolve_files(paths, default_suffix="", fmt="ddranking")
        record = check_export_record(files["images"].parent, target, self.name)
        x = as_tensor(load_foreign(files["images"], "DD-Ranking images"), files["images"], "the images")
        y = as_tensor(load_foreign(files["labels"], "DD-Ranking labels"), files["labels"], "the labels") \
            if "labels" in files else None
        lr = read_lr_file(files, options)
        extra = {"export_record": EXPORT_MARKER} if record is not None else {}
        return build_set(self.name, Foreign(x, y, lr, files), target, options, extra=extra)


@EXPORTERS.register("ddranking")
class DDRankingExporter(Exporter):
    """``images.pt`` / ``labels.pt`` / ``lr.pt`` for DD-Ranking's ``compute_metrics``."""

    writes = "images.pt, labels.pt, lr.pt (if the set has a learned lr), README.txt, ddistill_export.json"
    encoding = ("the set's own encoding, unchanged (mean/std, or ZCA: set use_zca); class-major; labels.pt = logits "
                "for soft sets, class indices for hard ones")

    def fill(self, synset: SyntheticSet, folder: Path) -> ExportReport:
        order = class_major_order(synset)
        x = synset.x[order].detach().cpu().contiguous()
        labels_kind = synset.meta.get("labels", "hard")
        notes: list[str] = []
        if labels_kind == "soft":
            if "y_logits" in synset.tensors:
                y = synset.tensors["y_logits"][order]
                label_note = "the logits the set was imported with (tensors['y_logits'])"
            else:
                p = synset.y[order].float()
                y = torch.log(p.clamp_min(torch.finfo(torch.float32).tiny))
                label_note = "log of the set's soft-label probabilities (softmax gives them back at temperature 1)"
                notes.append("labels.pt holds log-probabilities: DD-Ranking's temperature T rescales them (softmax(log "
                             "p / T) is p only at T = 1)")
        else:
            y = synset.y[order].long()
            label_note = "class indices"
        y = y.detach().cpu().contiguous()
        write_file(folder / "images.pt", lambda f: torch.save(x, f))
        write_file(folder / "labels.pt", lambda f: torch.save(y, f))
        files = ["images.pt", "labels.pt"]
        if "lr" in synset.tensors:
            lr = synset.tensors["lr"].detach().cpu().reshape(()).clone()
            write_file(folder / "lr.pt", lambda f: torch.save(lr, f))
            files.append("lr.pt")
        enc = synset.meta["encoding"]
        dataset = synset.meta["dataset"]
        if enc.get("zca") and enc.get("normalize"):
            notes.append("the set is ZCA-whitened after mean/std normalisation (DataDAM); DD-Ranking's use_zca whitens "
                         "raw [0, 1] pixels, so it cannot encode its real data like these images: export png instead")
        record = export_record(synset, self.name, files=files, order="class-major", label_file=label_note,
                               use_zca=bool(enc.get("zca")))
        write_json_file(folder / EXPORT_MARKER, record)
        ipc = record["ipc"]
        per_class = f"ipc {ipc}" if ipc else f"per-class counts {record['images_per_class']}"
        zca_flag = " --zca" if enc.get("zca") else ""
        readme = [
            f"DD-Ranking inputs exported by ddistill {record['ddistill_version']} from a {dataset} set "
            f"({record['synthesizer']}).",
            "",
            f"images.pt  {str(x.dtype).replace('torch.', '')} {tuple(x.shape)}, class-major ({per_class}).",
            f"           Encoding: {encoding_sentence(enc, dataset)}.",
            f"           In DD-Ranking: use_zca: {'true' if enc.get('zca') else 'false'}.",
            f"labels.pt  {tuple(y.shape)} {str(y.dtype).replace('torch.', '')}: {label_note}.",
        ]
        if "lr.pt" in files:
            readme.append(f"lr.pt      the learned learning rate, {float(synset.tensors['lr']):.6g} (pass as syn_lr).")
        readme += ["", "Load with torch.load(path, weights_only=True). ddistill_export.json holds the same facts; "
                   f"`ddistill import ddranking <this folder> --dataset {dataset}{zca_flag}` reads the folder back."]
        readme += [f"Note: {n}" for n in notes]
        write_file(folder / "README.txt", lambda f: f.write(("\n".join(readme) + "\n").encode()))
        return ExportReport(folder, [*files, "README.txt", EXPORT_MARKER], notes)
