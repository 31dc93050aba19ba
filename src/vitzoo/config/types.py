"""Values from YAML and the command line -> the types RunConfig's annotations declare.

A field's type is read from its annotation, once (``int``, ``float | None``, ``list[float]``, ``dict``):
there is no second declaration to disagree with it. Command-line values arrive as strings, and PyYAML
reads ``5e-4`` (no dot) as a string too, so numbers are parsed from strings here.
"""
from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from vitzoo.errors import ConfigError

_NULL_WORDS = ("null", "none", "~")
_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")
_DESCRIBED = {"bool": "a boolean (true/false/1/0/yes/no)", "int": "an integer", "float": "a number",
              "str": "a string", "floats": "a list of numbers", "dict": "a mapping"}


@dataclass(frozen=True)
class Kind:
    """What a field holds: ``base`` in bool|int|float|str|floats|dict, and whether null is allowed."""

    base: str
    nullable: bool

    def describe(self) -> str:
        return _DESCRIBED[self.base] + (" or null" if self.nullable else "")


def kind_of(annotation: Any) -> Kind:
    """``float | None`` -> Kind('float', True); ``list[float]`` -> Kind('floats', False)."""
    args = typing.get_args(annotation)
    nullable = type(None) in args
    if nullable:
        (annotation,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(annotation) or annotation
    if origin is list:
        return Kind("floats", nullable)
    base = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}.get(origin)
    if base is None:  # pragma: no cover - a schema author's mistake, caught by the tests
        raise TypeError(f"unsupported config annotation {annotation!r}")
    return Kind(base, nullable)


def bad_value(key: str, kind: Kind, value: Any, where: str, extra: str = "") -> ConfigError:
    return ConfigError(f"config key '{key}' ({where}): expected {kind.describe()}, got {value!r}{extra}")


def coerce(kind: Kind, value: Any, key: str, where: str) -> Any:
    """One YAML/CLI value -> the typed value, or a ConfigError naming the key, its source and the type."""
    if isinstance(value, str) and kind.base in ("floats", "dict") and value.strip()[:1] in "[{":
        value = _yaml_text(kind, value, key, where)
    is_null_word = isinstance(value, str) and value.strip().lower() in _NULL_WORDS
    if value is None or (is_null_word and (kind.nullable or kind.base not in ("str", "dict"))):
        if kind.nullable:
            return None
        if kind.base == "dict":
            return {}
        raise bad_value(key, kind, value, where)
    return _COERCE[kind.base](kind, value, key, where)


def _yaml_text(kind: Kind, text: str, key: str, where: str) -> Any:
    """A mapping or list written on the command line: JSON first (PyYAML reads '{"a":1}' as one key
    'a:1' without the space YAML needs after ':'), else YAML flow style ('{a: 1}')."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise bad_value(key, kind, text, where, " (not valid YAML)") from None


def _bool(kind: Kind, value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise bad_value(key, kind, value, where)


def _number(kind: Kind, value: Any, key: str, where: str) -> int | float:
    if isinstance(value, bool):
        raise bad_value(key, kind, value, where)
    try:
        num = float(value) if isinstance(value, str) else value
        if not isinstance(num, (int, float)) or math.isnan(num):
            raise ValueError
    except ValueError:
        raise bad_value(key, kind, value, where) from None
    if kind.base == "float":
        return float(num)
    if float(num).is_integer():
        return int(num)
    raise bad_value(key, kind, value, where)


def _str(kind: Kind, value: Any, key: str, where: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise bad_value(key, kind, value, where)


def _floats(kind: Kind, value: Any, key: str, where: str) -> list[float]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, (list, tuple)) or not value:
        raise bad_value(key, kind, value, where)
    return [_number(Kind("float", False), v, key, where) for v in value]


def _dict(kind: Kind, value: Any, key: str, where: str) -> dict:
    if isinstance(value, str):
        value = _yaml_text(kind, value, key, where)
    if not isinstance(value, dict):
        raise bad_value(key, kind, value, where)
    glued = next((k for k, v in value.items() if v is None and ":" in str(k)), None)
    if glued is not None:  # YAML reads {depth:2} as the key 'depth:2' with no value
        name, _, number = str(glued).partition(":")
        raise ConfigError(f"config key '{key}' ({where}): '{glued}' reads as one key with no value in YAML; "
                          f"put a space after the colon: {{{name}: {number}}}")
    try:  # plain data only: it goes into checkpoint meta (weights_only loading)
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise bad_value(key, kind, value, where, " (values must be plain numbers/strings/lists)") from None


_COERCE = {"bool": _bool, "int": _number, "float": _number, "str": _str, "floats": _floats, "dict": _dict}
