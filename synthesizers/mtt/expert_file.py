"""Expert trajectories on disk: the flat-parameter layout, the self-describing ``ddistill.experts`` file, the merge of
sharded runs, and a lazily loading :class:`ExpertBuffer` over a folder of files (MTT, Cazenavette et al., CVPR 2022,
``buffer.py`` / ``distill.py``).

An *expert* is a network trained on the real training set; its *trajectory* is the flat parameter vector theta*_t
recorded at initialisation and after every epoch (``epochs + 1`` snapshots). Training them is
:mod:`synthesizers.mtt.experts`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from ddistill import __version__
from ddistill.io import atomic_torch_save, load_artifact

__all__ = ["ExpertBuffer", "ExpertFile", "ExpertFileError", "HEADER_KEYS", "ParamLayout", "STORAGE_DTYPES",
           "expert_paths", "load_flat_", "merge_expert_files"]

FORMAT = "ddistill.experts"
VERSION = 1

#: Storage dtypes of trajectories (bf16 halves the 6.5 GB of 100 CIFAR-10 ConvNet-3 experts).
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------
# Flat parameter vectors
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamLayout:
    """How a flat parameter vector splits into a module's named parameters (``named_parameters`` order).

    Args:
        names: parameter names, e.g. ``("blocks.0.conv.weight", ...)``.
        shapes: one shape per name.

    Shape:
        flat vectors: (P,) with P = sum of the shapes' element counts.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def numel(self) -> int:
        return sum(self.numels)

    def flatten(self, module: nn.Module) -> Tensor:
        """Detached float32 CPU copy of ``module``'s parameters as one vector. Shape: (P,)."""
        # reshape (not view) copies channels_last conv weights into logical order.
        return torch.cat([p.detach().reshape(-1).float().cpu() for p in module.parameters()])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` shaped like the parameters, for ``torch.func.functional_call`` (keeps the graph)."""
        if flat.dim() != 1 or flat.numel() != self.numel:
            raise ValueError(f"flat parameter vector has shape {tuple(flat.shape)}, expected ({self.numel},)")
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.numels), self.shapes)}

    def slices(self) -> list[tuple[str, slice, tuple[int, ...]]]:
        """``(name, slice into the flat vector, shape)`` per parameter."""
        out, start = [], 0
        for n, s, k in zip(self.names, self.shapes, self.numels):
            out.append((n, slice(start, start + k), s))
            start += k
        return out


@torch.no_grad()
def load_flat_(module: nn.Module, flat: Tensor) -> nn.Module:
    """Copies the flat vector ``flat`` (P,) into ``module``'s parameters in place; returns the module."""
    layout = ParamLayout.from_module(module)
    for p, v in zip(module.parameters(), layout.unflatten(flat.to(torch.float32)).values()):
        p.copy_(v.to(p.device, p.dtype))
    return module


# ---------------------------------------------------------------------------------------------------------------
# The on-disk format
# ---------------------------------------------------------------------------------------------------------------
class ExpertFileError(ValueError):
    """A file is not a readable ddistill expert file (foreign, truncated, inconsistent or from a newer version)."""


#: Keys that must agree between files of one run (and between shards being merged).
HEADER_KEYS = ("model", "model_kwargs", "model_args", "param_names", "param_shapes", "encoding", "dataset", "seed",
               "expert_config", "storage_dtype")


@dataclass
class ExpertFile:
    """A group of expert trajectories with everything needed to use them: the architecture (to rebuild the student
    for ``functional_call``), the parameter layout, the data encoding (ZCA or not: mixing them silently ruins a
    distillation), the dataset, the run seed and the training recipe.

    On disk (``torch.save``, loads with ``weights_only=True``)::

        {"format": "ddistill.experts", "version": 1, "model", "model_kwargs", "model_args", "param_names",
         "param_shapes", "encoding", "dataset", "seed", "expert_config", "storage_dtype", "expert_indices",
         "trajectories": [[flat tensor per snapshot] per expert], "test_accuracy": [float | None per expert],
         "ddistill_version"}

    Args:
        model, model_kwargs: registered network and overrides.
        model_args: ``{"in_channels", "num_classes", "image_size"}`` of the network.
        param_names, param_shapes: the flat-vector layout (``named_parameters`` order).
        encoding: ``Encoding.to_meta()`` of the data the experts saw (incl. the ZCA flag and eps).
        dataset: dataset name.
        seed: run seed (expert i is reproducible from (seed, i)).
        expert_config: the :class:`ExpertConfig` as a dict.
        expert_indices: run-level index of each expert, ascending.
        trajectories: per expert, ``epochs + 1`` flat vectors (float32 or bfloat16).
        test_accuracy: per expert, final test accuracy in % (None if not measured).
    """

    model: str
    model_kwargs: dict[str, Any]
    model_args: dict[str, Any]
    param_names: list[str]
    param_shapes: list[list[int]]
    encoding: dict[str, Any]
    dataset: str
    seed: int
    expert_config: dict[str, Any]
    expert_indices: list[int] = field(default_factory=list)
    trajectories: list[list[Tensor]] = field(default_factory=list)
    test_accuracy: list[float | None] = field(default_factory=list)
    storage_dtype: str = "float32"

    # -- content -------------------------------------------------------------------------------------------------
    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(tuple(self.param_names), tuple(tuple(s) for s in self.param_shapes))

    @property
    def num_epochs(self) -> int | None:
        return len(self.trajectories[0]) - 1 if self.trajectories else None

    def header(self) -> dict[str, Any]:
        """The run-describing keys, in canonical JSON form (lists, not tuples), so headers compare by content.

        The JSON round trip also gives the saved pickle a canonical object structure: pickle output depends on
        which strings are shared objects, and without it a merged file would hold the same data in other bytes.
        """
        return json.loads(json.dumps({k: getattr(self, k) for k in HEADER_KEYS}))

    def add(self, index: int, trajectory: Sequence[Tensor], test_accuracy: float | None = None) -> None:
        """Appends expert ``index`` (kept in ascending index order)."""
        if index in self.expert_indices:
            raise ValueError(f"expert {index} is already in this file")
        dtype = STORAGE_DTYPES[self.storage_dtype]
        numel = self.layout.numel
        snaps = []
        for t in trajectory:
            if t.dim() != 1 or t.numel() != numel:
                raise ValueError(f"snapshot of shape {tuple(t.shape)} does not match the layout ({numel},)")
            snaps.append(t.detach().to("cpu", dtype).clone())
        if self.trajectories and len(snaps) != len(self.trajectories[0]):
            raise ValueError(f"expert {index} has {len(snaps)} snapshots, the file's experts have "
                             f"{len(self.trajectories[0])}")
        pos = sum(1 for i in self.expert_indices if i < index)
        self.expert_indices.insert(pos, int(index))
        self.trajectories.insert(pos, snaps)
        self.test_accuracy.insert(pos, None if test_accuracy is None else float(test_accuracy))

    def trajectory(self, position: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """The ``position``-th expert of the file as one tensor. Shape: (epochs + 1, P)."""
        return torch.stack([t.to(dtype) for t in self.trajectories[position]])

    def build_model(self, flat: Tensor | None = None, *, device: torch.device | str = "cpu") -> nn.Module:
        """The expert architecture, with the parameters ``flat`` (P,) if given."""
        from ddistill.models import create_model

        args = dict(self.model_args)
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
            model = create_model(self.model, in_channels=args["in_channels"], num_classes=args["num_classes"],
                                 image_size=tuple(args["image_size"]), **self.model_kwargs).to(device)
        if list(ParamLayout.from_module(model).names) != list(self.param_names):
            raise ExpertFileError(f"model '{self.model}' no longer has the parameters recorded in the expert file")
        return load_flat_(model, flat) if flat is not None else model

    # -- I/O -----------------------------------------------------------------------------------------------------
    def to_blob(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **self.header(), "expert_indices": list(self.expert_indices),
                "trajectories": self.trajectories, "test_accuracy": list(self.test_accuracy),
                "ddistill_version": __version__}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the file atomically (temp file + rename): an interrupted save never truncates a good file."""
        return atomic_torch_save(self.to_blob(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False) -> "ExpertFile":
        """Reads and validates an expert file; ``mmap`` maps tensors lazily instead of reading them.

        Raises:
            FileNotFoundError: no file at ``path``.
            ExpertFileError: foreign or truncated file, newer format version, or inconsistent content.
        """
        blob = load_artifact(path, format=FORMAT, what="expert file", max_version=VERSION,
                             required=(*HEADER_KEYS, "expert_indices", "trajectories", "test_accuracy"),
                             error=ExpertFileError, mmap=mmap,
                             hint=" MTT's replay_buffer_*.pt lists must be converted first.")
        out = cls(**{k: blob[k] for k in HEADER_KEYS}, expert_indices=list(blob["expert_indices"]),
                  trajectories=[list(t) for t in blob["trajectories"]], test_accuracy=list(blob["test_accuracy"]))
        out.validate(path)
        return out

    def validate(self, where: str | os.PathLike = "expert file") -> None:
        """Raises :class:`ExpertFileError` if the content is inconsistent."""
        n = len(self.expert_indices)
        if len(self.trajectories) != n or len(self.test_accuracy) != n:
            raise ExpertFileError(f"{where}: {n} expert indices but {len(self.trajectories)} trajectories and "
                                  f"{len(self.test_accuracy)} accuracies")
        if len(set(self.expert_indices)) != n or list(self.expert_indices) != sorted(self.expert_indices):
            raise ExpertFileError(f"{where}: expert indices must be unique and ascending, got {self.expert_indices}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ExpertFileError(f"{where}: unknown storage dtype {self.storage_dtype!r}")
        numel = self.layout.numel
        lengths = {len(t) for t in self.trajectories}
        if len(lengths) > 1:
            raise ExpertFileError(f"{where}: experts have different numbers of snapshots {sorted(lengths)}")
        for i, traj in zip(self.expert_indices, self.trajectories):
            for t in traj:
                if not isinstance(t, Tensor) or t.dim() != 1 or t.numel() != numel:
                    raise ExpertFileError(f"{where}: expert {i} has a snapshot that is not a ({numel},) vector")


def _header_mismatch(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in HEADER_KEYS if a.get(k) != b.get(k)]


def merge_expert_files(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                       require_complete: bool = True) -> Path:
    """Merges expert files of one run (e.g. the shards of ``scripts/train_experts.py``) into one file.

    The result is exactly the file one unsharded run writes: the same header and the experts in ascending index
    order with the same tensors.

    Args:
        paths: files to merge (any order).
        out: the merged file (written atomically).
        require_complete: the indices must be exactly 0..N-1 (no expert missing, e.g. from an unfinished shard).

    Raises:
        ExpertFileError: files from different runs (differing header keys are named), duplicated experts, or
            missing experts when ``require_complete``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("merge_expert_files needs at least one file")
    files = [ExpertFile.load(p, mmap=True) for p in paths]
    first = files[0]
    for p, f in zip(paths[1:], files[1:]):
        bad = _header_mismatch(first.header(), f.header())
        if bad:
            raise ExpertFileError(f"{p} and {paths[0]} come from different runs: they differ in {bad}")
    owner: dict[int, Path] = {}
    entries = []
    for p, f in zip(paths, files):
        for i, traj, acc in zip(f.expert_indices, f.trajectories, f.test_accuracy):
            if i in owner:
                raise ExpertFileError(f"expert {i} is in both {owner[i]} and {p}")
            owner[i] = p
            entries.append((i, traj, acc))
    entries.sort(key=lambda e: e[0])
    indices = [e[0] for e in entries]
    if require_complete and indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        raise ExpertFileError(f"experts {missing} are missing (unfinished shard?); pass require_complete=False to "
                              f"merge anyway")
    merged = ExpertFile(**first.header(), expert_indices=indices, trajectories=[e[1] for e in entries],
                        test_accuracy=[e[2] for e in entries])
    merged.validate(out)
    return merged.save(out)


# ---------------------------------------------------------------------------------------------------------------
# Lazy access to many files
# ---------------------------------------------------------------------------------------------------------------
def expert_paths(path: str | os.PathLike) -> list[Path]:
    """The expert files at ``path``: the file itself, or the ``*.pt`` files of a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.pt") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no expert files (*.pt) in {path}; train them with scripts/train_experts.py")
        return files
    raise FileNotFoundError(f"no expert file or folder at {path}; train experts with scripts/train_experts.py")


class ExpertBuffer:
    """Expert trajectories spread over many files, read one file at a time (MTT's default, non-``load_all`` mode).

    Sampling follows MTT's ``distill.py``: files are visited in a random order, the experts of the current file in
    a random order, and the order is redrawn when every file has been used. All draws come from the caller's
    generator, and :meth:`state_dict` captures the position, so a resumed distillation sees the same experts.
    Files are memory-mapped, so only the snapshots that are actually read cost memory.

    Args:
        path: an expert file or a folder of them (all from one run).
        max_experts: use only experts with index < max_experts (ablations, CPU budgets).
        mmap: memory-map files instead of reading them whole.
    """

    def __init__(self, path: str | os.PathLike, *, max_experts: int | None = None, mmap: bool = True) -> None:
        self.path = Path(path)
        self.mmap = mmap
        self.files: list[tuple[Path, list[int]]] = []
        header: dict[str, Any] | None = None
        owner: dict[int, Path] = {}
        epochs: int | None = None
        for p in expert_paths(path):
            f = ExpertFile.load(p, mmap=True)
            if header is None:
                header, header_path = f.header(), p
            else:
                bad = _header_mismatch(header, f.header())
                if bad:
                    raise ExpertFileError(f"{p} and {header_path} come from different runs: they differ in {bad}")
            for i in f.expert_indices:
                if i in owner:
                    raise ExpertFileError(f"expert {i} is in both {owner[i]} and {p}; keep one of the files")
                owner[i] = p
            if f.num_epochs is not None:
                if epochs is not None and f.num_epochs != epochs:
                    raise ExpertFileError(f"{p} holds {f.num_epochs}-epoch experts, other files {epochs}-epoch")
                epochs = f.num_epochs
            keep = [pos for pos, i in enumerate(f.expert_indices) if max_experts is None or i < max_experts]
            if keep:
                self.files.append((p, keep))
        if not self.files or header is None or epochs is None:
            raise ExpertFileError(f"no experts in {path}" + (f" with index < {max_experts}" if max_experts else ""))
        self.header = header
        self.num_epochs: int = epochs
        self._file_order: list[int] = []
        self._file_pos = -1
        self._expert_order: list[int] = []
        self._expert_pos = 0
        self._loaded: tuple[int, ExpertFile] | None = None

    @property
    def num_experts(self) -> int:
        return sum(len(k) for _, k in self.files)

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(tuple(self.header["param_names"]), tuple(tuple(s) for s in self.header["param_shapes"]))

    def _file(self, j: int) -> ExpertFile:
        if self._loaded is None or self._loaded[0] != j:
            self._loaded = None  # drop the previous file before mapping the next
            self._loaded = (j, ExpertFile.load(self.files[j][0], mmap=self.mmap))
        return self._loaded[1]

    def sample(self, generator: torch.Generator) -> tuple[int, list[Tensor]]:
        """Next expert: ``(run-level index, epochs + 1 flat snapshots)`` (stored dtype, CPU, possibly mmapped)."""
        if self._expert_pos >= len(self._expert_order):
            if self._file_pos + 1 >= len(self._file_order):
                self._file_order = torch.randperm(len(self.files), generator=generator).tolist()
                self._file_pos = -1
            self._file_pos += 1
            n = len(self.files[self._file_order[self._file_pos]][1])
            self._expert_order = torch.randperm(n, generator=generator).tolist()
            self._expert_pos = 0
        j = self._file_order[self._file_pos]
        pos = self.files[j][1][self._expert_order[self._expert_pos]]
        self._expert_pos += 1
        f = self._file(j)
        return f.expert_indices[pos], f.trajectories[pos]

    def state_dict(self) -> dict[str, Any]:
        return {"file_order": list(self._file_order), "file_pos": self._file_pos,
                "expert_order": list(self._expert_order), "expert_pos": self._expert_pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if any(j >= len(self.files) for j in state["file_order"]):
            raise ValueError("expert buffer state refers to files that are not there any more")
        self._file_order = [int(j) for j in state["file_order"]]
        self._file_pos = int(state["file_pos"])
        self._expert_order = [int(j) for j in state["expert_order"]]
        self._expert_pos = int(state["expert_pos"])

    def __repr__(self) -> str:
        return (f"ExpertBuffer({str(self.path)!r}, files={len(self.files)}, experts={self.num_experts}, "
                f"epochs={self.num_epochs}, model={self.header['model']!r})")
