"""Typed configuration machinery: dataclasses from/to plain dicts, strict YAML loading, ``key=value`` overrides.

Generic: it knows nothing about models or datasets (their config classes live with them). Unknown keys
are errors (named in the message), values are parsed as YAML scalars, and nothing is ever evaluated as code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from madis_stereo.errors import ConfigError

__all__ = [
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load_yaml",
    "to_dict",
]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# generic dataclass <-> dict
# --------------------------------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-Python dict of a (nested) config dataclass; tuples become lists (YAML/JSON friendly)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string; it is a number to any reader
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(f"'{prefix}{k}'" for k in unknown)
        raise ConfigError(f"unknown config key(s) {names}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def yaml_error_text(err: yaml.YAMLError) -> str:
    """``:LINE:COLUMN: not valid YAML: PROBLEM (CONTEXT at line N)`` on one line, from a PyYAML error."""
    mark = getattr(err, "problem_mark", None)
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    detail = f" ({context} at line {context_mark.line + 1})" if context and context_mark is not None else ""
    return f"{where}: not valid YAML: {problem}{detail}"


# Largest number of values a config may expand to: YAML aliases can make a few bytes stand for billions
# of values (the "billion laughs"), which copying or validating would never finish.
MAX_YAML_VALUES = 100_000


def parse_yaml(text: str, source: str = "") -> Any:
    """``yaml.safe_load`` whose failures (syntax, nesting, alias bombs) raise ConfigError naming ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}{yaml_error_text(err)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    stack, seen = [data], 0
    while stack:  # count values as a copy would visit them (shared aliases count every time)
        node = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise ConfigError(f"{source}: YAML expands to more than {MAX_YAML_VALUES} values (aliases?)")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML must be UTF-8)") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (value parsed as YAML); return a new dict.

    Keys are validated strictly when the dict is turned into dataclasses with :func:`from_dict`.
    """
    out = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"unknown config key '{key}' in override {item!r}")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except ConfigError as err:
            if "not valid YAML" not in str(err):
                raise ConfigError(f"override {item!r}{err}") from None
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = _child(node, part, item)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
            node = child
        if isinstance(node, list):
            _list_index(node, parts[-1], item)
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return out


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {item!r}: '{part}' is not an index of a list of {len(node)}")
    return int(part)


def _child(node: dict | list, part: str, item: str) -> Any:
    """``node[part]``; in a list ``part`` is an index (``data.train.0.root=...``)."""
    if isinstance(node, list):
        return node[_list_index(node, part, item)]
    return node.get(part)


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
