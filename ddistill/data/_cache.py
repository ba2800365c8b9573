"""Where decoded datasets are cached: ``$DDISTILL_CACHE`` or ``~/.cache/ddistill``."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    path = Path(os.environ.get("DDISTILL_CACHE", Path.home() / ".cache" / "ddistill"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*parts: object) -> str:
    """Short stable hash of the parts (paths, sizes, mtimes, options) that identify a cached file."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]
