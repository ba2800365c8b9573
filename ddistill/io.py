"""Everything ddistill writes to or reads from disk goes through here: atomic writes, JSON / JSONL records, and the
versioned, self-describing artefacts (synthetic sets, expert trajectories, teachers, checkpoints).

Every artefact is a ``torch.save``d dict ``{"format": "ddistill.<kind>", "version": int, ...}`` that loads with
``torch.load(..., weights_only=True)``: nothing read from disk can execute code. :func:`load_artifact` checks the
envelope (readable, right format, not from a newer version, required keys present) and raises the caller's error type
with one line naming the file and the problem.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import torch

__all__ = ["ArtifactError", "JSONLLogger", "WriteError", "remove_stale_temporaries", "apply_umask", "atomic_torch_save", "atomic_write", "git_sha",
           "fsync_dir", "load_artifact", "machine_info", "move_folder_into_place", "save_artifact", "write_json"]


class ArtifactError(ValueError):
    """A file is not a readable ddistill artefact of the expected kind (foreign, truncated, newer, incomplete)."""


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, ...); the previous version is left intact."""


#: Suffix of the temporary files of :func:`atomic_write`.
TMP_SUFFIX = ".tmp"


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------
def apply_umask(path: str | os.PathLike) -> None:
    """``mkstemp`` creates 0600 files; give the final file the permissions a plain ``open`` would."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, binary: bool = True) -> Path:
    """Calls ``write(file)`` on a temporary file in the destination folder, fsyncs it, then ``os.replace``s it over
    ``path``: readers see the old file or the new one, never a half-written one. The temporary file is removed if
    anything fails.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise WriteError(_write_failure(path, e)) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power loss only once the folder is synced
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise WriteError(_write_failure(path, e)) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def move_folder_into_place(tmp: Path, out: Path, *, what: str = "folder") -> None:
    """Renames the finished folder ``tmp`` (beside ``out``, same file system) to ``out`` without losing the old one.

    A non-empty ``out`` is first moved aside, into a temporary folder beside it, and deleted only once the new folder
    is in place; if the rename fails it is put back, or, when something else took ``out`` meanwhile, left aside and
    named in the error. An empty ``out`` is removed first (``rename`` cannot replace a folder portably). Readers see
    the old folder or the new one; ``out`` is briefly absent between the two renames. The caller decides beforehand
    whether ``out`` is its to replace, and removes ``tmp`` if this raises. Failures are a :class:`WriteError` naming
    ``what`` (e.g. "store", "export").
    """
    old: Path | None = None
    try:
        if out.exists() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
        if out.is_dir():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException as e:
        kept = ""
        if old is not None and (old / "previous").exists():
            if out.exists():  # something else took the place meanwhile: keep the previous folder, say where
                kept = f"; the previous {what} is kept at {old / 'previous'}"
            else:
                os.replace(old / "previous", out)
        if old is not None and not kept:
            shutil.rmtree(old, ignore_errors=True)
        if isinstance(e, OSError):
            raise WriteError(f"could not move the new {what} into {out} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}){kept}") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)


def fsync_dir(folder: Path) -> None:
    """Syncs a folder's entries (a rename in it survives a power loss only then); a no-op where folders cannot be
    opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform can open a directory; the data itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failure(path: Path, e: BaseException) -> str:
    """One line on why ``path`` could not be written (torch reports a full disk as a cryptic zip-writer error)."""
    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        free = shutil.disk_usage(path.parent).free
        space = f"; {free / 2**20:.0f} MiB free on that disk" if free < 2**30 else ""
    except OSError:
        space = ""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES)):
        reason = "permission denied (read-only folder?)"
    return f"could not write {path}: {reason}{space}. The previous file, if any, is unchanged"


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files that :func:`atomic_write` leaves only when its process is killed mid-write
    (``.<name>.<random>.tmp``); call it while holding the folder's lock. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, indented JSON write (tensors become lists, paths strings)."""

    def dump(f: IO[Any]) -> None:
        json.dump(obj, f, indent=2, default=_jsonable)
        f.write("\n")

    return atomic_write(path, dump, binary=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)


class JSONLLogger:
    """Appends one JSON object per line (``log.jsonl``); safe to reopen when a run resumes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **record: Any) -> None:
        record.setdefault("time", round(time.time(), 3))
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Versioned artefacts
# ---------------------------------------------------------------------------------------------------------------
def save_artifact(obj: dict[str, Any], path: str | os.PathLike, *, format: str, version: int) -> Path:
    """Writes ``{"format": format, "version": version, **obj}`` atomically."""
    return atomic_torch_save({"format": format, "version": int(version), **obj}, path)


def load_artifact(path: str | os.PathLike, *, format: str, what: str, max_version: int = 1,
                  required: Sequence[str] = (), error: type[Exception] = ArtifactError,
                  hint: str = "", mmap: bool = False) -> dict[str, Any]:
    """Reads an artefact written by :func:`save_artifact` with ``weights_only=True``.

    Args:
        path: the file.
        format: the expected ``"format"`` value (e.g. ``"ddistill.synset"``).
        what: how the artefact is named in messages ("synthetic set", "expert file", ...).
        max_version: the newest version this code reads.
        required: keys that must be present besides ``format``/``version``.
        error: the exception type raised for a bad file (a subclass of ValueError).
        hint: appended to the "wrong format" message (e.g. how to convert a foreign file).
        mmap: memory-map the tensors instead of reading them (large trajectory files).

    Raises:
        FileNotFoundError: no file at ``path``.
        error: the file is unreadable (truncated, not a torch file, unsafe pickle), of another format, from a newer
            version, or lacks required keys. The message names the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pt"))[:5]
        raise FileNotFoundError(f"{path} is a folder; a {what} is a file" + (
            f" (.pt files in it: {', '.join(found)})" if found else " (the folder holds no .pt file)"))
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    with open(path, "rb") as f:
        head = f.read(2)
    # torch files are zip archives ("PK"), or pickles (protocol byte 0x80) from torch's legacy format: anything
    # else (a text file, an image) gets a plain message, not the unpickler's KeyError on its first byte.
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise error(f"{path} is not a ddistill {what}: " + ("the file is empty" if not head else
                                                           "not a torch file (neither a zip archive nor a pickle)"))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for truncated, foreign or unsafe pickles
        first = str(e).splitlines()[0] if str(e) else ""
        raise error(f"{path} is not a readable ddistill {what} (truncated or not a torch file?): "
                    f"{type(e).__name__}: {first}") from None
    if not isinstance(blob, dict) or blob.get("format") != format:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise error(f"{path} is not a ddistill {what} (format {found!r}, expected {format!r})." + hint)
    version = blob.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise error(f"{path} has a malformed format version {version!r} (expected an integer <= {max_version}); "
                    f"the file is damaged or was not written by ddistill")
    if version > max_version:
        raise error(f"{path} has {what} format version {version}, this ddistill reads versions <= {max_version}; "
                    f"upgrade ddistill")
    missing = [k for k in required if k not in blob]
    if missing:
        raise error(f"{path} lacks {missing}; it is not a complete ddistill {what}")
    return blob


# ---------------------------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------------------------
def git_sha(path: str | os.PathLike = ".") -> str | None:
    """The commit checked out at ``path`` (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """What a benchmark result must state about where it ran."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }
