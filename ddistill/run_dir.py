"""The run directory of ``ddistill distill``: where a run's files live, who owns it, and what may happen to it.

Guarantees (see the README, "Guarantees"):

- a run name is one plain path component: a run never writes outside ``out_dir``;
- a run directory is locked (``fcntl.flock`` on ``.lock``) while a run owns it: a second run with the same name fails
  at once instead of interleaving files; the lock goes away with the process, also after ``kill -9``;
- a directory that holds a run (finished or interrupted) is never reused without ``--resume`` or ``--overwrite``;
- ``--resume`` first compares the requested config with the recorded ``config.yaml`` and refuses any difference but
  the ones that cannot change the set made so far (more iterations, checkpoint frequency, evaluation settings), so
  the record of how a set was made is never rewritten into a lie.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .io import remove_stale_temporaries

__all__ = ["ARTEFACTS", "RunDir", "RunDirError", "check_run_name", "config_differences"]

#: The files a run writes (``--overwrite`` removes exactly these; anything else in the folder is left alone).
ARTEFACTS = ("config.yaml", "synset.pt", "checkpoint.pt", "results.json", "log.jsonl", "grid.png")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class RunDirError(ValueError):
    """A run directory cannot be used as asked (name, lock, existing run, resume mismatch)."""


def check_run_name(name: Any) -> str:
    """The run name if it is one safe path component: letters, digits and ``._=+-``, not starting with a dot."""
    if not isinstance(name, str) or not name:
        raise RunDirError(f"config key 'name' must be a non-empty string, got {name!r}")
    if not _NAME.match(name) or name in (".", ".."):
        raise RunDirError(f"config key 'name' must be one folder name (letters, digits and . _ - + =, not starting with "
                          f"a dot, no '/'), got {name!r}: the run directory is out_dir/name")
    return name


#: Keys that may differ between the recorded and the requested config when resuming, with the rule they follow.
RESUMABLE_CHANGES = {
    "synthesizer.iterations": "more iterations (never fewer)",
    "synthesizer.checkpoint_every": "any value",
    "synthesizer.progress": "any value",
    "synthesizer.perf.threads": "any value",
    "evaluator": "any evaluation setting",
    "eval_every": "any value",
    "grid": "any value",
}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def config_differences(recorded: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """The differences between two resolved run configs that a resume may not make, as ``key (recorded R,
    requested Q)`` strings (empty: resuming is allowed)."""
    a, b = _flatten(recorded), _flatten(requested)
    bad = []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key, "<absent>"), b.get(key, "<absent>")
        if old == new or key.split(".")[0] == "evaluator":
            continue
        if old == "<absent>" and new is None:  # an optional setting added after the run was made, left unset
            continue
        if key == "synthesizer.iterations":
            if isinstance(old, int) and isinstance(new, int) and new >= old:
                continue
        elif key in RESUMABLE_CHANGES:
            continue
        bad.append(f"{key} (recorded {old!r}, requested {new!r})")
    return bad


@dataclass
class RunDir:
    """``out_dir/name`` and the state of the run in it.

    Args:
        path: the run directory.
    """

    path: Path

    @classmethod
    def for_run(cls, out_dir: str | os.PathLike, name: Any) -> "RunDir":
        return cls(Path(out_dir) / check_run_name(name))

    def file(self, name: str) -> Path:
        return self.path / name

    def existing(self) -> list[str]:
        """The run artefacts present (in :data:`ARTEFACTS` order)."""
        return [n for n in ARTEFACTS if (self.path / n).exists()]

    def state(self) -> str:
        """``"empty"``, ``"finished"`` (a set and its results), ``"interrupted"`` (a checkpoint or a config without a
        set) or ``"partial"`` (other run files)."""
        files = set(self.existing())
        if not files:
            return "empty"
        if {"synset.pt", "results.json"} <= files:
            return "finished"
        if "checkpoint.pt" in files or "config.yaml" in files:
            return "interrupted"
        return "partial"

    def describe(self) -> str:
        return f"{self.state()} run ({', '.join(self.existing())})"

    def recorded_config(self) -> dict[str, Any] | None:
        path = self.path / "config.yaml"
        if not path.exists():
            return None
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path} cannot be read ({type(e).__name__}); it is the record of how the run was made: "
                              f"restore it, or pass --overwrite to start the run again") from None
        return data if isinstance(data, dict) else None

    def check_resume(self, requested: dict[str, Any]) -> None:
        """Raises :class:`RunDirError` naming every recorded setting the resume would change."""
        recorded = self.recorded_config()
        if recorded is None:
            return
        bad = config_differences(recorded, requested)
        if bad:
            allowed = ", ".join(f"{k} ({rule})" for k, rule in RESUMABLE_CHANGES.items())
            raise RunDirError(f"cannot resume {self.path}: the requested config differs from the recorded one in "
                              f"{'; '.join(bad)}. A resume may change only {allowed}; start a new run (another name= "
                              f"or --overwrite) for anything else")

    def clear(self) -> list[str]:
        """Removes the run's artefacts (``--overwrite``); returns their names."""
        removed = self.existing()
        for n in removed:
            (self.path / n).unlink()
        return removed

    def lock(self) -> "RunLock":
        return RunLock(self.path)


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run dir>/.lock`` held for the life of the ``with`` block (released by
    the kernel if the process dies). Stale temporary files of atomic writes interrupted by a kill are removed once the
    lock is held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / ".lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = ""
            try:
                owner = os.read(fd, 64).decode().strip()
            except OSError:
                pass
            os.close(fd)
            raise RunDirError(f"{self.path} is in use by another ddistill run" + (f" (pid {owner})" if owner else "")
                              + "; wait for it to finish or choose another name=") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        remove_stale_temporaries(self.path)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

