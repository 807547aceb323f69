"""Typed configuration: nested dataclasses, merged as defaults ← YAML ← ``--set key=value``.

Each component owns its dataclass (``TrainConfig`` in ``train.py``, a method's config in its
module); this module only knows how to build, override, validate and serialise them. Unknown
keys and values of the wrong type are rejected with the dotted name of the field.

Example:
    >>> @dataclass
    ... class Opt:
    ...     lr: float = 0.1
    >>> apply_overrides(Opt(), ["lr=0.5"]).lr
    0.5
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exdistill.errors import ConfigError

T = TypeVar("T")


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as plain JSON/YAML-friendly data."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def config_hash(obj: Any) -> str:
    """A short stable hash of a config, for caching and provenance.

    A config whose fields name files may define ``hash_view()``, the plain data to hash in
    their place (MTT: the experts' manifest digest, not their directory), so that copying the
    files elsewhere keeps the hash.
    """
    if hasattr(obj, "hash_view"):
        obj = obj.hash_view()
    text = json.dumps(to_dict(obj) if is_dataclass(obj) else obj, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _convert(value: Any, annotation: Any, name: str) -> Any:
    """Coerce a YAML/CLI value to the field's annotated type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if is_dataclass(annotation):
        if is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=f"{name}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError."""
    return merge(cls(), data, prefix)


def merge(obj: T, data: dict[str, Any], prefix: str = "") -> T:
    """A copy of ``obj`` with the (possibly nested) values of ``data`` applied."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    types_ = _field_types(type(obj))
    changes: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        name = prefix + key
        if key not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown config key '{name}' (known here: {known})")
        current = getattr(obj, key)
        if is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, prefix=f"{name}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            # A mapping field (e.g. EDD's base_config) is updated key by key, so overriding one
            # key keeps the rest of what defaults or a preset put there.
            changes[key] = _convert(_deep_update(current, value), types_[key], name)
        else:
            changes[key] = _convert(value, types_[key], name)
    return replace(obj, **changes)


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_update(out[k], v) if both else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x,y"]`` → ``{"a": {"b": 1}, "c": "x,y"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = value
    return tree


def apply_overrides(obj: T, items: list[str]) -> T:
    return merge(obj, parse_overrides(items))


def first_difference(old: Any, new: Any, name: str = "") -> str | None:
    """``"dotted.name: old → new"`` for the first value that differs, or ``None`` (nested dicts
    compared key by key; used to name what changed when a saved config is compared)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            diff = first_difference(old.get(key), new.get(key), f"{name}.{key}" if name else key)
            if diff:
                return diff
        return None
    return None if old == new else f"{name or 'config'}: {old!r} → {new!r}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds (for validate() methods)."""
    if not condition:
        raise ConfigError(message)


__all__ = [
    "apply_overrides",
    "config_hash",
    "dataclass",
    "from_dict",
    "load_yaml",
    "merge",
    "parse_overrides",
    "require",
    "to_dict",
]
