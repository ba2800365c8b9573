"""Synthesizers and evaluators from other packages, discovered through package entry points.

A package that registers a component declares the module that registers it, e.g. in its ``pyproject.toml``::

    [project.entry-points."ddistill.synthesizers"]
    dc = "my_dc.synthesizer"          # importing it runs @SYNTHESIZERS.register("dc")

    [project.entry-points."ddistill.evaluators"]
    robustness = "my_eval.robustness"

Once the package is installed (``pip install -e .``), ``ddistill distill`` / ``evaluate`` / ``list`` import those
modules before they look a name up, so ``synthesizer: {name: dc}`` works from the command line. Nothing is imported
by ``import ddistill``; the Python API loads plugins when :func:`load_plugins` is called.
"""
from __future__ import annotations

import importlib.metadata as metadata

__all__ = ["GROUPS", "load_plugins"]

#: The entry-point groups read, one per plugin registry.
GROUPS = ("ddistill.synthesizers", "ddistill.evaluators")

_loaded: dict[str, str] = {}


def load_plugins() -> dict[str, str]:
    """Imports every module declared in :data:`GROUPS` (once per process); returns ``{entry point: module}``.

    Raises:
        ValueError: a declared module failed to import (the message names the entry point and the error).
    """
    for group in GROUPS:
        for ep in metadata.entry_points(group=group):
            key = f"{group}:{ep.name}"
            if key in _loaded:
                continue
            try:
                ep.load()
            except Exception as e:  # noqa: BLE001  (a broken plugin must not look like a ddistill bug)
                raise ValueError(f"the plugin entry point {ep.name!r} ({ep.value}) of group {group} failed to import: "
                                 f"{type(e).__name__}: {e}") from None
            _loaded[key] = ep.value
    return dict(_loaded)
