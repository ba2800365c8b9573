"""Where decoded datasets are cached: ``$DDISTILL_CACHE`` or ``~/.cache/ddistill``."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir() -> Path:
    path = Path(os.environ.get("DDISTILL_CACHE", Path.home() / ".cache" / "ddistill"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*parts: object) -> str:
    """Short stable hash of the parts (paths, sizes, mtimes, options) that identify a cached file."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on the file ``lock`` (created if absent) for the block.

    Two processes that fill the same cache entry (two benchmarks started together, say) take turns: without it the
    one finishing last replaced the folder the first was already reading, and the first died on a missing file.
    Callers check again, inside the block, whether the entry appeared while they waited. Where ``fcntl`` does not
    exist (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_once(target: Path, *, complete: Callable[[Path], bool], fill: Callable[[Path], None]) -> Path:
    """Builds the cache folder ``target`` once, atomically, and returns it.

    ``fill(tmp)`` writes the folder's files, checks them and writes the completion marker that ``complete(folder)``
    looks for, in a temporary folder beside ``target``; the temporary folder is renamed to ``target`` only when
    ``fill`` returned, so an interrupted or failed build leaves nothing a later run would trust (the temporary
    folder is removed). Processes building the same entry take turns (:func:`exclusive` on
    ``.<name>.lock`` beside it), and one that waited reuses the entry the other finished instead of replacing a
    folder that process may be reading. A ``target`` without a valid marker (an interrupted build of an older
    version) is replaced: it is a cache entry, never a user's folder.
    """
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / f".{target.name}.lock"):
        if complete(target):
            return target  # another process built it while this one waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            fill(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
