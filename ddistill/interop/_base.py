"""What every importer and exporter shares: the registries, the target dataset of an import, safe loading of foreign
files, the checks that turn foreign tensors into a validated :class:`~ddistill.synset.SyntheticSet`, and the atomic
writing of an export folder.

Foreign files are read with ``torch.load(..., weights_only=True)`` like every ddistill artefact: a file that holds
Python objects other than tensors, containers and numbers is refused, never executed. The only globals allowed beyond
torch's defaults are numpy's scalar reconstructors (the official DC/DSA/DM/DataDAM result files store their
accuracies as numpy floats), which rebuild a number from its bytes and run no code.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, ClassVar

import torch
from torch import Tensor

from ..data.encoding import Encoding
from ..data.info import DatasetInfo
from ..io import WriteError, fsync_dir, apply_umask, move_folder_into_place
from ..registry import Registry
from ..synset import SyntheticSet, SyntheticSetError

__all__ = ["EXPORTERS", "EXPORT_MARKER", "IMPORTERS", "ExportReport", "Exporter", "ImportOptions", "Importer",
           "InteropError", "Target", "build_set", "load_foreign", "load_target", "read_lr_file", "write_folder"]

IMPORTERS = Registry("importer")
EXPORTERS = Registry("exporter")

#: The file every export folder holds: what was exported, in which encoding. ``--overwrite`` replaces only folders
#: that hold it (a folder a user made is never deleted).
EXPORT_MARKER = "ddistill_export.json"
EXPORT_FORMAT = "ddistill.export"


class InteropError(ValueError):
    """A foreign file or folder cannot be imported, or a set cannot be exported; the message names the file and the
    problem in one line."""


# ---------------------------------------------------------------------------------------------------------------
# The dataset a foreign set belongs to
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """The real dataset a foreign set was distilled from: its facts and the encoding its tensors are in.

    Args:
        info: classes, image shape, mean/std of the dataset.
        encoding: how the foreign tensors encode pixels (mean/std, or ZCA fitted on the whole training split).
        spec: how to reload the dataset (a :class:`~ddistill.data.DataSpec`), recorded as ``meta["data"]`` so that
            ``ddistill evaluate`` finds the test split; None for hand-made targets (tests).
    """

    info: DatasetInfo
    encoding: Encoding
    spec: Any = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.encoding.shape)  # type: ignore[return-value]

    def describe_encoding(self) -> str:
        """One phrase saying which space the tensors are in (for ``meta["imported"]["assumed"]``)."""
        enc, name = self.encoding, self.info.name
        mean_std = f"mean {_fmt(enc.mean)}, std {_fmt(enc.std)}"
        if enc.zca is None:
            return f"images normalised with the {name} {mean_std}"
        first = f"normalised with the {name} {mean_std}, then " if enc.normalize else "[0, 1] pixels "
        return (f"{first}ZCA-whitened (kornia ZCAWhitening, eps {enc.zca.eps:g}) with the transform ddistill fits on "
                f"{name}'s whole training split")


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def load_target(dataset: str, *, root: str | None = None, zca: bool = False, zca_eps: float = 0.1,
                zca_after_normalize: bool = False, kwargs: dict[str, Any] | None = None) -> Target:
    """Loads the training split of ``dataset`` for its facts and its encoding (and fits its ZCA with ``zca``).

    Args:
        dataset: image dataset registry name (``ddistill list datasets``).
        root: its folder.
        zca: the foreign tensors are ZCA-whitened; the transform is the one ddistill fits on the whole training split
            (kornia's estimator, ``zca_eps``), as :func:`ddistill.data.load_data` does.
        zca_after_normalize: whiten mean/std-normalised pixels (DataDAM) instead of [0, 1] pixels (MTT, DD-Ranking).
        kwargs: loader options (``dataset.kwargs``).
    """
    from ..data.image import DatasetFilesMissing
    from ..data.spec import DataSpec, is_graph_dataset, load_split, make_encoding

    if is_graph_dataset(dataset):
        raise InteropError(f"'{dataset}' is a graph dataset; only image sets can be imported")
    spec = DataSpec(name=dataset, root=root, zca=zca, zca_eps=zca_eps, kwargs=dict(kwargs or {}))
    try:
        train = load_split(spec, "train")
    except (FileNotFoundError, ValueError) as e:
        need = "its classes, image shape and normalisation" + (" and to fit its ZCA" if zca else "")
        # The data layer's remedy names dataset.download, an option of distill/evaluate, not of import: keep its
        # problem only; ``where`` is import's own remedy.
        why = e.problem if isinstance(e, DatasetFilesMissing) else _first_line(e)
        where = f"--root {root} does not hold it" if root else "pass --root DIR, the folder that holds it"
        raise InteropError(f"importing needs the {dataset} training split ({need}); {why} ({where})") from None
    normalize = zca_after_normalize if zca else True
    return Target(train.info, make_encoding(train, zca=zca, zca_eps=zca_eps, normalize=normalize), spec)


# ---------------------------------------------------------------------------------------------------------------
# Importers and exporters
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ImportOptions:
    """Choices of an import that the files do not state.

    Args:
        experiment: which ``[images, labels]`` pair of a result file holding several (DC/DSA/DM/DataDAM); negative
            indices count from the end; None = the format's default.
        lr: the learned learning rate, for formats that do not save it (MTT, AST); overrides a saved one.
    """

    experiment: int | None = None
    lr: float | None = None


class Importer:
    """Reads one foreign format into a :class:`SyntheticSet`.

    Class attributes (shown by ``ddistill import --help`` and the README):
        name: registry key (stamped by the registry).
        reads: the files it reads.
        encoding: the space the foreign tensors are in.
        zca_after_normalize: with ``--zca``, the foreign code whitened mean/std-normalised pixels (DataDAM) rather
            than [0, 1] pixels (MTT, DATM, DD-Ranking).
        takes_experiment: ``--experiment`` applies.
    """

    name: ClassVar[str] = ""
    reads: ClassVar[str] = ""
    encoding: ClassVar[str] = ""
    zca_after_normalize: ClassVar[bool] = False
    takes_experiment: ClassVar[bool] = False

    def read(self, paths: list[Path], target: Target, options: ImportOptions) -> SyntheticSet:
        raise NotImplementedError


@dataclass
class ExportReport:
    """What an export wrote: the folder, its files, and notes the user must read (e.g. information the format
    cannot hold)."""

    out: Path
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Exporter:
    """Writes a :class:`SyntheticSet` as a folder another code base reads.

    Class attributes: ``name`` (registry key), ``writes`` (the files), ``encoding`` (the space they are in).
    """

    name: ClassVar[str] = ""
    writes: ClassVar[str] = ""
    encoding: ClassVar[str] = ""

    def fill(self, synset: SyntheticSet, folder: Path) -> ExportReport:
        """Writes the files into the (new, empty) ``folder``."""
        raise NotImplementedError

    def export(self, synset: SyntheticSet, out: str | os.PathLike, *, overwrite: bool = False) -> ExportReport:
        """Writes the set into ``out`` atomically: into a temporary folder beside it, renamed into place when every
        file is written. An existing non-empty ``out`` is refused unless ``overwrite`` (and then only when it is a
        folder ddistill exported)."""
        check_exportable(synset, self.name)
        report: list[ExportReport] = []
        path = write_folder(out, lambda folder: report.append(self.fill(synset, folder)), overwrite=overwrite)
        report[0].out = path
        return report[0]


def check_exportable(synset: SyntheticSet, fmt: str) -> None:
    """An image set with class labels and a recorded encoding, or an InteropError naming what is missing."""
    meta = synset.meta
    if meta.get("kind", "image") != "image":
        raise InteropError(f"{fmt} export writes image sets; this set is a {meta.get('kind')} set")
    labels = meta.get("labels", "hard")
    if labels not in ("hard", "soft"):
        raise InteropError(f"{fmt} export needs class labels; this set has {labels} targets")
    if not isinstance(meta.get("encoding"), dict):
        raise InteropError("the set records no encoding (meta['encoding']), so its pixels cannot be interpreted")


def hard_labels(synset: SyntheticSet) -> Tensor:
    y = synset.y
    return y.argmax(1) if y.dim() == 2 else y.long()


def class_major_order(synset: SyntheticSet) -> Tensor:
    """Indices sorting the set by class, keeping the set's order within a class (stable)."""
    return torch.argsort(hard_labels(synset), stable=True)


def export_record(synset: SyntheticSet, exporter: str, **extra: Any) -> dict[str, Any]:
    """The contents of :data:`EXPORT_MARKER`: what was exported, from which set, in which encoding."""
    meta = synset.meta
    y = hard_labels(synset)
    k = int(meta["num_classes"])
    counts = torch.bincount(y, minlength=k).tolist() if y.numel() else [0] * k
    from .. import __version__

    return {
        "format": EXPORT_FORMAT, "version": 1, "exporter": exporter, "ddistill_version": __version__,
        "dataset": meta["dataset"], "num_classes": k, "class_names": list(meta.get("class_names") or []),
        "images": int(synset.x.shape[0]), "images_per_class": counts,
        "ipc": counts[0] if counts and len(set(counts)) == 1 else None,
        "labels": meta.get("labels", "hard"), "encoding": meta["encoding"],
        "lr": float(synset.tensors["lr"]) if "lr" in synset.tensors else None,
        "synthesizer": meta.get("synthesizer"), "data": meta.get("data"), **extra,
    }


def encoding_sentence(encoding: dict[str, Any], dataset: str) -> str:
    """How a set's ``meta["encoding"]`` maps pixels to tensors, in words (export READMEs)."""
    mean_std = f"mean {_fmt(tuple(encoding['mean']))} / std {_fmt(tuple(encoding['std']))}"
    if not encoding.get("zca"):
        return f"x = (pixel - mean) / std per channel, pixels in [0, 1], with the {dataset} {mean_std}"
    first = f"normalised with {mean_std}, then" if encoding.get("normalize") else "[0, 1] pixels"
    return (f"{first} ZCA-whitened (kornia ZCAWhitening fitted on {dataset}'s whole training split, "
            f"eps {encoding.get('zca_eps')})")


# ---------------------------------------------------------------------------------------------------------------
# Reading foreign files
# ---------------------------------------------------------------------------------------------------------------
def _numpy_scalar_globals() -> list[Any]:
    """numpy's scalar and dtype reconstructors (data only), under numpy 2 and numpy 1 module names."""
    try:
        import numpy as np
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        try:
            import numpy as np
            from numpy.core.multiarray import scalar  # type: ignore[no-redef]
        except ImportError:
            return []
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                          np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                     "Int8DType", "UInt8DType", "BoolDType"):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


def load_foreign(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; an InteropError in one line for a missing, unreadable or
    code-bearing file.

    Args:
        path: the file.
        what: what it should hold, for messages ("MTT images", "a DC result file").
    """
    if not path.is_file():
        raise InteropError(f"no {what} at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated, foreign or unsafe pickles
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise InteropError(f"{path} holds Python objects other than tensors and numbers ({found.group(1)}); "
                               f"refused: loading it could run code (foreign files are read with weights_only=True). "
                               f"Re-save the tensors alone with torch.save(tensor, ...)") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = detail.group(1).strip() if detail else f"{type(e).__name__}: {_first_line(e)}"
        raise InteropError(f"{path} is not a readable torch file (truncated, a plain pickle, or another format?): "
                           f"{reason}") from None


def _first_line(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


def as_tensor(obj: Any, path: Path, what: str) -> Tensor:
    """``obj`` if it is a tensor (detached), else an InteropError naming the file and what it holds."""
    if not isinstance(obj, Tensor):
        raise InteropError(f"{path.name} should hold {what} as one tensor but holds a {type(obj).__name__}")
    return obj.detach()


def read_lr(obj: Any, path: Path) -> Tensor:
    """A learned learning rate from a file's contents: a scalar tensor or a number -> 0-d float32 tensor."""
    if isinstance(obj, Tensor):
        if obj.numel() != 1 or not (obj.is_floating_point() or obj.dtype in (torch.int32, torch.int64)):
            raise InteropError(f"{path.name} should hold one learning rate (a scalar tensor) but holds a "
                               f"{tuple(obj.shape)} {str(obj.dtype).replace('torch.', '')} tensor")
        lr = obj.detach().reshape(()).to(torch.float32)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        lr = torch.tensor(float(obj), dtype=torch.float32)
    else:
        raise InteropError(f"{path.name} should hold one learning rate but holds a {type(obj).__name__}")
    check_lr(float(lr), path.name)
    return lr


def read_lr_file(files: dict[str, Path], options: ImportOptions) -> Tensor | None:
    """The learned rate in ``files["lr"]`` (None without one). With ``--lr`` the file only informs the record, so a
    bad one is ignored rather than refused."""
    if "lr" not in files:
        return None
    if options.lr is None:
        return read_lr(load_foreign(files["lr"], "learned learning rate"), files["lr"])
    try:
        return read_lr(load_foreign(files["lr"], "learned learning rate"), files["lr"])
    except InteropError:
        return None


def check_lr(value: float, source: str) -> None:
    if not value == value or value in (float("inf"), float("-inf")) or value <= 0:
        raise InteropError(f"{source} gives the learning rate {value!r}; a learning rate must be a positive finite "
                           f"number")


# ---------------------------------------------------------------------------------------------------------------
# Foreign tensors -> a validated SyntheticSet
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Foreign:
    """Tensors read from foreign files, with the names of the files they came from (for messages and meta).

    Args:
        x: images (N, C, H, W).
        y: labels: (N,) class indices, (N, K) logits, or None (class-major order assumed).
        lr: learned learning rate (0-d) or None.
        files: ``{"images": path, "labels": path, "lr": path}`` of the files read.
    """

    x: Tensor
    y: Tensor | None
    lr: Tensor | None
    files: dict[str, Path]


def build_set(fmt: str, foreign: Foreign, target: Target, options: ImportOptions, *,
              extra: dict[str, Any] | None = None, assumed: list[str] | None = None) -> SyntheticSet:
    """Checks the foreign tensors against the target dataset and each other and returns a validated set whose
    metadata states the encoding, the label kind, where each tensor came from and what was assumed.

    Hard labels: an integer (N,) tensor (or a float one holding whole numbers). Soft labels: an (N, K) float tensor
    of logits (DATM, DD-Ranking); the set's ``y`` is their softmax (temperature 1: the targets DATM's soft
    cross-entropy and ddistill's ``soft`` criterion use) and the logits are kept bit for bit as ``y_logits``.
    """
    files = foreign.files
    img_name = files["images"].name
    lab_name = files["labels"].name if "labels" in files else None
    info, k = target.info, int(target.info.num_classes)
    x = foreign.x.detach()
    if x.dim() != 4:
        raise InteropError(f"{img_name} holds a {tuple(x.shape)} tensor; images must be (N, C, H, W)")
    if not x.is_floating_point():
        raise InteropError(f"{img_name} holds {str(x.dtype).replace('torch.', '')} images; expected float tensors "
                           f"in the dataset's encoding (not raw 0-255 pixels)")
    if x.shape[0] == 0:
        raise InteropError(f"{img_name} holds no images")
    if tuple(x.shape[1:]) != target.shape:
        raise InteropError(f"{img_name} holds {tuple(x.shape)} images but {info.name} images are {target.shape} "
                           f"(C, H, W): wrong --dataset?")
    if not torch.isfinite(x).all():
        raise InteropError(f"{img_name} holds NaN or Inf values")
    x = x.to(torch.float32).contiguous()
    n = int(x.shape[0])
    assumed = list(assumed or [])
    assumed.insert(0, f"tensors in the {info.name} encoding: {target.describe_encoding()}")
    tensors: dict[str, Tensor] = {"x": x}
    imported: dict[str, Any] = {"format": fmt, "files": {role: str(p) for role, p in files.items()}}

    y = foreign.y
    if y is None:
        if n % k:
            raise InteropError(f"{img_name} holds {n} images and there is no labels file; class-major labels need a "
                               f"multiple of {info.name}'s {k} classes")
        tensors["y"] = torch.arange(k).repeat_interleave(n // k)
        labels = "hard"
        imported["labels"] = "class-major default"
        assumed.append(f"no labels file: labels assumed class-major, [0]*{n // k} + [1]*{n // k} + ... "
                       f"(the order MTT, AST, DC and DD-Ranking use)")
    else:
        y = y.detach()
        rows = int(y.shape[0]) if y.dim() else 0
        if y.dim() not in (1, 2) or rows != n:
            held = f"{rows} labels" if y.dim() in (1, 2) else f"a {tuple(y.shape)} tensor"
            raise InteropError(f"{img_name} holds {tuple(x.shape)} images but {lab_name} holds {held}")
        if y.dim() == 1:
            tensors["y"] = _hard_labels(y, lab_name, k, info.name)
            labels = "hard"
            imported["labels"] = "hard (from file)"
        else:
            if not y.is_floating_point():
                raise InteropError(f"{lab_name} holds a ({n}, {y.shape[1]}) {str(y.dtype).replace('torch.', '')} "
                                   f"tensor; (N, K) labels must be float logits")
            if int(y.shape[1]) != k:
                raise InteropError(f"{lab_name} holds soft labels over {y.shape[1]} classes but {info.name} has {k}")
            if not torch.isfinite(y).all():
                raise InteropError(f"{lab_name} holds NaN or Inf values")
            logits = y.to(torch.float32).contiguous()
            tensors["y"] = torch.softmax(logits, dim=1)
            tensors["y_logits"] = logits
            labels = "soft"
            imported["labels"] = "soft (logits from file)"
            assumed.append(f"{lab_name} holds logits (DATM / DD-Ranking): y = softmax(logits) at temperature 1; the "
                           f"logits are kept as tensors['y_logits']")

    learned = ["x"]
    if options.lr is not None:
        check_lr(float(options.lr), "--lr")
        tensors["lr"] = torch.tensor(float(options.lr), dtype=torch.float32)
        imported["lr"] = "--lr"
        if foreign.lr is not None:
            assumed.append(f"--lr {options.lr:g} replaces the rate {float(foreign.lr):g} in {files['lr'].name}")
    elif foreign.lr is not None:
        tensors["lr"] = foreign.lr
        imported["lr"] = files["lr"].name if "lr" in files else "file"
        learned.append("lr")
    else:
        imported["lr"] = None
    if labels == "soft":
        learned.append("y")
    tensors.update(target.encoding.tensors())

    hard = tensors["y"] if labels == "hard" else tensors["y"].argmax(1)
    counts = torch.bincount(hard, minlength=k).tolist()
    from .. import __version__
    from ..config import to_dict

    imported.update(extra or {})
    imported["assumed"] = assumed
    meta: dict[str, Any] = {
        "synthesizer": f"imported:{fmt}",
        "kind": "image",
        "dataset": info.name,
        "num_classes": k,
        "class_names": list(info.class_names),
        "ipc": counts[0] if len(set(counts)) == 1 else None,
        "encoding": target.encoding.to_meta(),
        "labels": labels,
        "learned": sorted(learned),
        "ddistill_version": __version__,
        "imported": imported,
    }
    if target.spec is not None:
        meta["data"] = to_dict(target.spec)
    synset = SyntheticSet(tensors, meta)
    try:
        synset.validate()
    except SyntheticSetError as e:  # pragma: no cover - the checks above should catch everything first
        raise InteropError(f"{img_name}: {e}") from None
    return synset


def _hard_labels(y: Tensor, name: str | None, k: int, dataset: str) -> Tensor:
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise InteropError(f"{name} holds (N,) float labels that are not whole numbers; hard labels must be class "
                               f"indices")
    elif y.dtype == torch.bool or y.is_complex():
        raise InteropError(f"{name} holds {str(y.dtype).replace('torch.', '')} labels; hard labels must be integers")
    y = y.to(torch.int64)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        raise InteropError(f"{name} holds labels in [{lo}, {hi}] but {dataset} has {k} classes (0..{k - 1})")
    return y.contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Writing an export folder atomically
# ---------------------------------------------------------------------------------------------------------------
def write_file(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes one file of a (temporary) export folder and fsyncs it; a WriteError in one line on failure."""
    try:
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        reason = "no space left on the device" if getattr(e, "errno", None) == 28 else _first_line(e)
        raise WriteError(f"could not write {path}: {reason}") from None


def write_json_file(path: Path, obj: Any) -> None:
    write_file(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_folder(out: str | os.PathLike, fill: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Runs ``fill(folder)`` on a new temporary folder beside ``out``, then renames it to ``out``.

    Readers never see a half-written folder (while a previous export is swapped out, ``out`` is briefly absent); the
    temporary folder is removed, and a replaced export restored, if anything fails. An existing non-empty ``out`` is refused unless ``overwrite``, and even then only when it holds
    :data:`EXPORT_MARKER` (a folder ddistill exported): a folder a user made is never deleted.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise InteropError(f"{out} exists and is not a folder; choose another --out")
        if any(out.iterdir()):
            if not overwrite:
                raise InteropError(f"{out} already exists and is not empty; pass --overwrite to replace it, or choose "
                                   f"another --out")
            if not (out / EXPORT_MARKER).is_file():
                raise InteropError(f"{out} is not a folder ddistill exported (no {EXPORT_MARKER}); --overwrite "
                                   f"replaces only those. Empty it yourself or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise WriteError(f"could not create a folder beside {out}: {_first_line(e)}") from None
    try:
        fill(tmp)
        mask = os.umask(0)
        os.umask(mask)
        for folder in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
            os.chmod(folder, 0o777 & ~mask)
            fsync_dir(folder)
        for file in (p for p in tmp.rglob("*") if p.is_file()):
            apply_umask(file)
        move_folder_into_place(tmp, out, what="export")
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(f"could not write {out}: {_first_line(e)}; the previous folder, if any, is unchanged") \
                from None
        raise
    return out


def check_export_record(folder: Path, target: Target, fmt: str) -> dict[str, Any] | None:
    """When ``folder`` holds a ddistill export record, checks that it was exported from ``target``'s dataset in the
    encoding the import assumes (an InteropError naming the difference); returns the record, or None."""
    path = folder / EXPORT_MARKER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InteropError(f"{path} is not readable JSON: {_first_line(e)}") from None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        return None
    name = target.info.name
    if record.get("dataset") not in (None, name):
        raise InteropError(f"{path.name} says this folder was exported from a {record['dataset']} set, not {name}: "
                           f"pass --dataset {record['dataset']}")
    enc = record.get("encoding") or {}
    if fmt != "png":  # PNG pixels are de-normalised: any encoding reads them
        want = target.encoding.to_meta()
        if bool(enc.get("zca")) != bool(want["zca"]):
            flag = "pass --zca" if enc.get("zca") else "drop --zca"
            raise InteropError(f"{path.name} says the tensors are {'' if enc.get('zca') else 'not '}ZCA-whitened: "
                               f"{flag}")
        if enc.get("zca") and bool(enc.get("normalize")) != bool(want["normalize"]):
            raise InteropError(f"{path.name} says the tensors were whitened "
                               f"{'after' if enc.get('normalize') else 'without'} mean/std normalisation, which the "
                               f"{fmt} importer does not assume; import the PNG export instead")
        if enc.get("zca") and enc.get("zca_eps") is not None and float(enc["zca_eps"]) != float(want["zca_eps"]):
            raise InteropError(f"{path.name} says the ZCA eps is {enc['zca_eps']}: pass --zca-eps {enc['zca_eps']}")
    return record
