"""One tiny registry type used for every pluggable kind (models, datasets, augmentations,
synthesizers, evaluators), in the style of timm/torchvision registries."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable


class Registry:
    """Maps lower-case names to constructors for one kind of component.

    Args:
        kind: human-readable name of the kind ("model", "dataset", ...) used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``, lower-cased).

        A registered class that declares a ``name`` attribute gets the key stamped on it (``cls.name == key``), so
        components know their registry name without repeating it.
        """

        def wrap(obj: Any) -> Any:
            key = (name or obj.__name__).lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._entries[key] = obj
            if isinstance(obj, type) and hasattr(obj, "name"):
                obj.name = key
            return obj

        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        """Returns the constructor registered as ``name``; unknown names list the valid choices."""
        try:
            return self._entries[name.lower()]
        except (KeyError, AttributeError):
            raise KeyError(f"unknown {self.kind} '{name}'; choose from {self.names()}") from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self, filter: str | None = None) -> list[str]:
        """Sorted registered names, optionally only those matching the shell-style pattern ``filter``
        (e.g. ``"convnet_d*"``)."""
        names = sorted(self._entries)
        return fnmatch.filter(names, filter) if filter else names

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
