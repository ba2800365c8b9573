"""Typed configuration: ``@dataclass`` configs filled from YAML files and ``a.b=c`` overrides.

Strict by design: an unknown key is an error that lists the valid keys, and values are coerced to the
field's declared type (PyYAML 6 reads ``1e-3`` as the *string* '1e-3'; ``float('1e-3')`` fixes that).
"""
from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Reads a YAML file (or starts empty) and applies ``a.b=c`` overrides (values parsed as YAML)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text (UTF-8) YAML file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level, not {type(data).__name__}")
    for item in overrides:
        set_override(data, item)
    return data


def set_override(data: dict[str, Any], item: str) -> None:
    """Applies one ``a.b.c=value`` override in place."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. synthesizer.ipc=10)")
    key, raw = item.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = _parse_value(raw)


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str = "") -> T:
    """Builds dataclass ``cls`` from ``data``: unknown keys raise, values are coerced to field types,
    nested dataclass fields are built recursively."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_of(hints[name])
        if sub is not None and isinstance(value, Mapping):
            # A nested config given as a mapping overrides the fields it names on top of the field's *default*
            # (e.g. the graph evaluator's Adam recipe), not on top of the nested class's own defaults.
            default = _field_default(fields[name])
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                value = merge(sub, to_dict(default), value)
        kwargs[name] = _coerce(value, hints[name], f"{where + '.' if where else ''}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # one candidate (an optional block): its own message says what is wrong
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: {value!r} fits none of {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        if isinstance(value, (Mapping, list, tuple)) or value is None:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        if isinstance(value, bool) and tp is not str:
            raise ConfigError(f"{where}: expected {tp.__name__}, got a boolean")
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def merge(cls: type, base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``updates`` for dataclass ``cls``: values of fields that are themselves dataclasses
    (nested configs such as a training recipe) are merged key by key; every other value is replaced."""
    out = dict(base)
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    for key, value in updates.items():
        sub = _dataclass_of(hints.get(key))
        if sub is not None and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
            out[key] = merge(sub, out[key], value)
        else:
            out[key] = value
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None if f.default is dataclasses.MISSING else f.default


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass in ``tp`` (``Recipe`` or ``Recipe | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def config_from_preset(cls: type[T], presets: Mapping[str, Mapping[str, Any]], preset: str | None,
                       overrides: Mapping[str, Any], *, where: str) -> T:
    """Config ``cls`` from the named preset, then ``overrides`` (strict: unknown keys and unknown presets raise).

    A config with a ``preset`` field records the preset's name there.
    """
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise KeyError(f"unknown preset '{preset}' for {where}; choose from {sorted(presets)}")
        values = merge(cls, {}, presets[preset])
        if "preset" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
            values["preset"] = preset
    return from_dict(cls, merge(cls, values, overrides), where=where)


def build_component(registry: Any, spec: Mapping[str, Any] | None, kind: str) -> tuple[Any, Any]:
    """``(class, typed config)`` from a config block ``{name: <registry name>, preset?: <name>, **fields}``."""
    spec = dict(spec or {})
    if "name" not in spec:
        raise ConfigError(f"{kind} needs a name; choose from {registry.names()}")
    name = spec.pop("name")
    cls = registry.get(name)
    preset = spec.pop("preset", None)
    presets = getattr(cls, "presets", {}) or {}
    if preset is not None and not presets:
        having = [n for n in registry.names() if getattr(registry.get(n), "presets", None)]
        raise ConfigError(f"the {name} {kind} has no presets (preset '{preset}'); {kind}s with presets: {having}")
    return cls, config_from_preset(cls.Config, presets, preset, spec, where=kind)


def differences(base: Any, config: Any) -> dict[str, Any]:
    """The fields of ``config`` whose values differ from ``base``'s (two configs of one dataclass, or their dicts), as
    dotted keys with nested configs flattened: ``{"train.epochs": 20, "num_models": 1}``."""

    def walk(x: Mapping[str, Any], y: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in y.items():
            # A mapping field with other keys (a preset's model_kwargs emptied, a NAS space with fewer keys) is
            # shown whole: walking only its present keys would hide what was removed.
            if isinstance(v, Mapping) and isinstance(x.get(k), Mapping) and set(v) == set(x[k]):
                out.update(walk(x[k], v, f"{prefix}{k}."))
            elif x.get(k) != v:
                out[f"{prefix}{k}"] = v
        return out

    return walk(to_dict(base), to_dict(config), "")


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (recursively), for dumping the resolved config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dumps(obj: Any) -> str:
    """A config (dataclass or dict) as YAML, keys in declaration order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def dump(obj: Any, path: str | Path) -> None:
    """Writes :func:`dumps` of ``obj`` to ``path`` atomically."""
    from .io import atomic_write

    atomic_write(path, lambda f: f.write(dumps(obj)), binary=False)
