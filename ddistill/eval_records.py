"""The evaluations of a synthetic set, kept side by side: every ``ddistill evaluate`` writes one record keyed by its
evaluator, its resolved config and its seed (``<set folder>/evaluations/<evaluator>-<config hash>-seed<k>.json``) --
and, when the set was evaluated on other data than it records (``dataset.*`` overrides), by those overrides too -- and
the summaries ``evaluations.csv`` / ``evaluations.md`` beside the set list them all. An evaluation with another
config never replaces an earlier one; the same evaluation (same config and seed) replaces its own record.

Several sets may share a folder (``benchmarks/results/sets/``): a set file not named ``synset.pt`` (a run's set) keys
its records by its file name too, so one set's evaluation never replaces another's. Every record stores the sha256 of
the set file it scored, and the summaries say of each record whether the file is still that set (``--overwrite`` of a
run replaces ``synset.pt`` but leaves the evaluations of the old set, which are then marked as such).
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
from pathlib import Path
from typing import Any

from .io import atomic_write, write_json

__all__ = ["DISPLAY_FIELDS", "data_overrides", "file_sha256", "record_key", "summarise", "write_record"]

#: DataSpec fields that say where the data are, not which data: a set scored on the same archive moved elsewhere (or
#: read through a store of it) is the same evaluation.
LOCATION_FIELDS = ("root", "download", "store")

_COLUMNS = ("evaluator", "config_hash", "seed", "metric", "mean", "std", "n", "setup", "controls", "data", "set",
            "time", "record")
#: The set file of a run directory: its records keep the keys they had before set names keyed records.
RUN_SET = "synset.pt"


#: Config fields that change only what is displayed, never a number: an evaluation that differs in them is the same
#: evaluation (it replaces its record). Hashed at the evaluators' default (True), so keys made before this rule stand.
DISPLAY_FIELDS = {"progress": True}


def record_key(evaluator: str, config: dict[str, Any], seed: int, data: dict[str, Any] | None = None,
               set_name: str | None = None, device: str | None = None) -> str:
    """``<evaluator>-<12 hex of the hash>-seed<seed>``, hashing the config in canonical JSON (display-only fields,
    :data:`DISPLAY_FIELDS`, at their default wherever they are), with ``data`` (the ``dataset.*`` overrides of an
    evaluation on other data than the set's own) beside it when given: a set scored on another test split is another
    evaluation, not a replacement. ``set_name``: the set's file name, part of the hash unless it is a run's
    ``synset.pt``. ``device``: part of the hash unless it is the CPU (another device gives other floating-point
    results, so a GPU evaluation never replaces a CPU one). Without any of them the key is the config's alone."""
    config = _display_at_default(config)
    keyed: Any = config if not data else {"config": config, "data": data}
    if device is not None and device.split(":")[0] != "cpu":
        keyed = {"device": device.split(":")[0], "evaluated": keyed}
    if set_name is not None and set_name != RUN_SET:
        keyed = {"set": set_name, "evaluated": keyed}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{evaluator}-{digest}-seed{seed}"


def _display_at_default(block: Any) -> Any:
    """``block`` with every :data:`DISPLAY_FIELDS` entry, at any depth (``dd_ranking``'s ``classifier.progress``),
    set to its default."""
    if isinstance(block, dict):
        return {k: DISPLAY_FIELDS[k] if k in DISPLAY_FIELDS else _display_at_default(v) for k, v in block.items()}
    if isinstance(block, list):
        return [_display_at_default(v) for v in block]
    return block


def data_overrides(recorded: dict[str, Any], used: dict[str, Any]) -> dict[str, Any]:
    """The fields of the data an evaluation used (a ``DataSpec`` as a dict) that differ from the data the set records,
    location fields (:data:`LOCATION_FIELDS`) aside; {} for the set's own data."""
    return {k: v for k, v in used.items() if k not in LOCATION_FIELDS and recorded.get(k) != v}


def write_record(set_path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Writes ``record`` (with ``evaluator``, ``config``, ``seed`` and optionally ``data_overrides``, ``device`` and
    ``key_config``, the config as the key hashes it when it differs from ``config``: e.g. the set's own network
    hashed as unnamed, ``evaluators.base.record_config``) under its key and refreshes the summaries; returns the
    record's path."""
    set_path = Path(set_path)
    folder = set_path.parent
    record = {**record, "set_file": set_path.name, "set_sha256": file_sha256(set_path)}
    key = record_key(record["evaluator"], record.get("key_config", record["config"]), record["seed"],
                     record.get("data_overrides"), set_path.name, record.get("device"))
    path = write_json(folder / "evaluations" / f"{key}.json", {**record, "key": key})
    summarise(folder)
    return path


def file_sha256(path: str | os.PathLike) -> str | None:
    """sha256 of a file's bytes; None when it cannot be read (a record is still written)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _set_state(rec: dict[str, Any], folder: Path, digests: dict[str, str | None]) -> str:
    """``<file>`` when the file is still the set the record scored, ``<file> (replaced since)`` when it is not,
    ``<file> (not checked)`` for records written before records kept the set's digest."""
    name = rec.get("set_file") or Path(str(rec.get("synset", RUN_SET))).name
    if "set_sha256" not in rec:
        return f"{name} (not checked)"
    if name not in digests:
        digests[name] = file_sha256(folder / name)
    return name if digests[name] == rec["set_sha256"] else f"{name} (replaced since)"


def _row(path: Path, digests: dict[str, str | None] | None = None) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ev = rec.get("evaluation") or {}
    if "pool" in rec:
        ev = {"metric": "pool", "mean": None, "std": None, "values": [v.get("mean") for v in rec["pool"].values()]}
    return {"evaluator": rec.get("evaluator"), "config_hash": rec.get("key", "").split("-")[-2] if rec.get("key") else "",
            "seed": rec.get("seed"), "metric": ev.get("metric"), "mean": ev.get("mean"), "std": ev.get("std"),
            "n": len(ev.get("values") or []), "setup": rec.get("setup", ""),
            "controls": _controls(ev.get("controls") or {}),
            "data": _overrides(rec.get("data_overrides") or {}),
            "set": _set_state(rec, path.parent.parent, {} if digests is None else digests),
            "time": rec.get("time", ""), "record": str(path.relative_to(path.parent.parent))}


def _overrides(over: dict[str, Any], prefix: str = "dataset.") -> str:
    """``dataset.key=value`` for each override (nested keys dotted); empty for the set's own data."""
    out = []
    for k, v in sorted(over.items()):
        out += [_overrides(v, f"{prefix}{k}.")] if isinstance(v, dict) else [f"{prefix}{k}={v}"]
    return " ".join(out)


def _controls(controls: dict[str, Any]) -> str:
    """``name=mean±std`` for every control (the score's context travels with it into the summaries)."""
    out = []
    for name, c in sorted(controls.items()):
        mean = c.get("mean") if isinstance(c, dict) else None
        if isinstance(mean, (int, float)):
            std = c.get("std")
            out.append(f"{name}={mean:.2f}" + (f"±{std:.2f}" if isinstance(std, (int, float)) else ""))
        else:
            out.append(name)
    return "; ".join(out)


def summarise(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Rebuilds ``evaluations.csv`` and ``evaluations.md`` in ``folder`` from every record in ``folder/evaluations``."""
    folder = Path(folder)
    digests: dict[str, str | None] = {}  # each set file hashed once per summary
    rows = [r for r in (_row(p, digests) for p in sorted((folder / "evaluations").glob("*.json"))) if r is not None]
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write(folder / "evaluations.csv", lambda f: f.write(buf.getvalue()), binary=False)

    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in _COLUMNS) + " |" for r in rows]
    md_path = atomic_write(folder / "evaluations.md", lambda f: f.write("\n".join(lines) + "\n"), binary=False)
    return csv_path, md_path
