"""Sets made by other code bases in, ddistill sets out: ``ddistill import`` and ``ddistill export``.

Two registries, one entry per format (``ddistill list importers`` / ``ddistill list exporters``); each entry states the
files it reads or writes and the encoding they are in (its ``reads``/``writes`` and ``encoding`` attributes):

==============  ==========  ============================================================================================
format          direction   files and encoding
==============  ==========  ============================================================================================
``mtt``         import      MTT/AST/FTD/DATM ``images_best.pt`` [``labels_best.pt``] [``lr_best.pt``]: mean/std, or
                            [0, 1] pixels ZCA-whitened with ``--zca``; hard labels, DATM soft logits, or none
``dc_res``      import      DC/DSA/DM/DataDAM ``res_*.pt`` (``--experiment K``): mean/std, DataDAM ``--zca`` whitens the
                            normalised images; hard labels
``ddranking``   both        DD-Ranking ``images.pt`` / ``labels.pt`` / ``lr.pt``: mean/std or ZCA (``use_zca``),
                            class-major; labels = logits (soft) or class indices (hard)
``png``         both        ImageFolder of 8-bit PNGs (``00000_<class>/00000.png``): de-normalised pixels
==============  ==========  ============================================================================================

An imported set is a validated :class:`~ddistill.synset.SyntheticSet` in the encoding the foreign tensors are in: the
user names the dataset (its mean/std; with ``--zca`` the ZCA ddistill fits on its whole training split), and
``meta["imported"]`` records the format, the files, the experiment index and every assumption made.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..synset import SyntheticSet
from . import dc_res, ddranking, mtt, png_folder  # noqa: F401  (register the formats)
from ._base import EXPORT_MARKER, EXPORTERS, IMPORTERS, ExportReport, Exporter, Importer, ImportOptions, \
    InteropError, Target, load_target

__all__ = ["EXPORTERS", "EXPORT_MARKER", "IMPORTERS", "ExportReport", "Exporter", "Importer", "ImportOptions",
           "InteropError", "Target", "export_set", "import_set", "load_target"]


def import_set(fmt: str, paths: Sequence[str | os.PathLike], *, dataset: str | None = None, root: str | None = None,
               zca: bool = False, zca_eps: float = 0.1, experiment: int | None = None, lr: float | None = None,
               target: Target | None = None, kwargs: dict[str, Any] | None = None) -> SyntheticSet:
    """Reads a set saved by another code base (what ``ddistill import`` does).

    Args:
        fmt: importer name (``mtt``, ``dc_res``, ``ddranking``, ``png``); unknown names list the valid ones.
        paths: the folder or files to read.
        dataset: the dataset the set was distilled from (registry name); its training split is loaded for the
            classes, image shape, mean/std, and with ``zca`` to fit the ZCA.
        root: the dataset's folder.
        zca: the foreign tensors are ZCA-whitened.
        zca_eps: ZCA regularisation (0.1 in MTT, DATM, DataDAM and DD-Ranking).
        experiment: which pair of a ``res_*.pt`` file (dc_res only).
        lr: the learned learning rate, for formats that do not save one (overrides a saved one).
        target: the dataset facts and encoding, instead of loading ``dataset`` (tests, hand-made data).
        kwargs: the dataset loader's options.
    """
    importer_cls = IMPORTERS.get(fmt)
    importer: Importer = importer_cls()
    if experiment is not None and not importer.takes_experiment:
        takes = [n for n in IMPORTERS.names() if IMPORTERS.get(n).takes_experiment]
        raise InteropError(f"--experiment applies to result files holding several sets ({', '.join(takes)}), not to "
                           f"{importer.name}")
    if target is None:
        if not dataset:
            raise InteropError("importing needs the dataset the set was distilled from (--dataset NAME)")
        target = load_target(dataset, root=root, zca=zca, zca_eps=zca_eps,
                             zca_after_normalize=importer.zca_after_normalize, kwargs=kwargs)
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InteropError(f"no such file or folder: {', '.join(missing)}")
    return importer.read(paths, target, ImportOptions(experiment=experiment, lr=lr))


def export_set(synset: SyntheticSet | str | os.PathLike, fmt: str, out: str | os.PathLike, *,
               overwrite: bool = False) -> ExportReport:
    """Writes ``synset`` (a set or the path of a ``synset.pt``) as the folder ``out`` in format ``fmt`` (what
    ``ddistill export`` does). An existing non-empty ``out`` is refused unless ``overwrite`` (and then replaced only
    when ddistill exported it)."""
    exporter: Exporter = EXPORTERS.get(fmt)()
    if not isinstance(synset, SyntheticSet):
        synset = SyntheticSet.load(synset)
    return exporter.export(synset, Path(out), overwrite=overwrite)
