"""Strict loading of spec dataclasses from YAML/JSON mappings.

One function builds any frozen spec dataclass from a plain mapping: it rejects unknown keys, missing keys, wrong
types and out-of-range values with a `SpecError` that names the file, the key, the problem and the allowed values.
Range constraints live next to each field as dataclass metadata::

    freq_hz: float = field(metadata=rng(gt=0))

Supported field types: int, float, str, bool, Literal[...], X | None, nested spec dataclasses, dict[str, T],
tuple[T, ...].
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

from base.errors import SpecError

__all__ = ["rng", "from_mapping", "read_yaml", "read_json", "to_plain"]

T = TypeVar("T")


def rng(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
        le: float | None = None, doc: str = "") -> dict[str, Any]:
    """Field metadata stating the allowed range of a number."""
    return {"gt": gt, "ge": ge, "lt": lt, "le": le, "doc": doc}


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = []
    for key, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]:g}")
    return " and ".join(parts)


def check_range(value: float, meta: Mapping[str, Any], where: str) -> None:
    """Raise SpecError if `value` violates the range in `meta`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: {value!r} is not a finite number; give a finite value")
    bad = ((meta.get("gt") is not None and not value > meta["gt"])
           or (meta.get("ge") is not None and not value >= meta["ge"])
           or (meta.get("lt") is not None and not value < meta["lt"])
           or (meta.get("le") is not None and not value <= meta["le"]))
    if bad:
        raise SpecError(f"{where}: {value!r} is out of range; it must be {_range_text(meta)}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is dict:
        return "a mapping"
    if origin is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where, meta)
            except SpecError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise SpecError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise SpecError(f"{where}: {value!r} is not allowed; use one of {', '.join(repr(a) for a in allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {_convert(key_tp, k, f"{where}.{k}", {}): _convert(val_tp, v, f"{where}.{k}", meta)
                for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]", meta) for i, v in enumerate(value))
        if len(value) != len(args):
            raise SpecError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]", meta) for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
                value = int(value)
            else:
                raise SpecError(f"{where}: expected an integer, got {value!r}")
        check_range(value, meta, where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        check_range(value, meta, where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported spec field type {tp!r}")  # a bug in a spec class, not user input


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build the frozen dataclass `cls` from `data`, strictly.

    `where` names the source for error messages (e.g. ``"hwsim/hardware/u280.yaml"``).
    Fields with defaults may be omitted; every other key must be a field of `cls`.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"{where}: missing key {name!r}; add it ({_type_name(hints[name])})")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}: {name}" if ":" not in where
                                else f"{where}.{name}", f.metadata)
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def _yaml_loader():
    """yaml.SafeLoader that also reads ``1e9`` / ``2.5e-3`` as floats (YAML 1.2 style; PyYAML's 1.1 rules need
    a dot and a signed exponent)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; SpecError on a missing file or bad syntax."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc.__class__.__name__}: {exc}); check the path") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: malformed YAML{pos}; fix the syntax") from None


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; SpecError on a missing file or bad syntax."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc.__class__.__name__}: {exc}); check the path") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SpecError(f"{path}: malformed JSON ({getattr(exc, 'msg', exc)}); fix the syntax") from None


def to_plain(obj: Any) -> Any:
    """A spec dataclass (or nesting of them) as plain JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
