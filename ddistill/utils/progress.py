"""Progress bars that stay out of log files: drawn only when stderr is a terminal (tqdm's ``disable=None``), so
output redirected to a file or a pipe holds no control codes."""
from __future__ import annotations

from typing import Any, Iterable

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str | None = None, total: int | None = None,
                 enabled: bool | str = True, **kwargs: Any) -> Any:
    """``tqdm(iterable, ...)`` shown when ``enabled`` and stderr is a terminal; a string ``enabled`` is the label.

    Other keyword arguments go to tqdm (``initial``, ``leave``, ``unit``, ...); ``mininterval`` defaults to 1 s.
    """
    if isinstance(enabled, str):
        desc = desc or enabled
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, **kwargs)
