"""Where decoded datasets are cached: ``$DDISTILL_CACHE`` or ``~/.cache/ddistill``."""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
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
