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
import os
import re
import stat
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from base.errors import HwsimError, SpecError

__all__ = [
    "rng",
    "from_mapping",
    "read_yaml",
    "read_json",
    "parse_yaml",
    "parse_json",
    "read_text_file",
    "check_plain",
    "short",
    "clip",
    "to_plain",
    "INT_LIMIT",
    "MAX_DEPTH",
    "MAX_VALUES",
    "MAX_YAML_BYTES",
    "MAX_JSON_BYTES",
]

T = TypeVar("T")


def rng(
    *, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None, doc: str = ""
) -> dict[str, Any]:
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
        raise SpecError(f"{where}: {short(value)} is not a finite number; give a finite value")
    bad = (
        (meta.get("gt") is not None and not value > meta["gt"])
        or (meta.get("ge") is not None and not value >= meta["ge"])
        or (meta.get("lt") is not None and not value < meta["lt"])
        or (meta.get("le") is not None and not value <= meta["le"])
    )
    if bad:
        raise SpecError(f"{where}: {short(value)} is out of range; it must be {_range_text(meta)}")


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
        raise SpecError(f"{where}: expected {_type_name(tp)}, got {short(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise SpecError(f"{where}: {short(value)} is not allowed; use one of {', '.join(repr(a) for a in allowed)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {
            _convert(key_tp, k, f"{where}.{clip(k, 40)}", {}): _convert(val_tp, v, f"{where}.{clip(k, 40)}", meta)
            for k, v in value.items()
        }
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
            raise SpecError(f"{where}: expected true or false, got {short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) <= INT_LIMIT:
                value = int(value)
            else:
                raise SpecError(f"{where}: expected an integer, got {short(value)}")
        if abs(value) > INT_LIMIT:
            raise SpecError(f"{where}: {short(value)} is out of range; integers are limited to {INT_LIMIT}")
        check_range(value, meta, where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {short(value)}")
        if isinstance(value, int) and abs(value) > INT_LIMIT:
            raise SpecError(f"{where}: {short(value)} is out of range; give a smaller number")
        value = float(value)
        check_range(value, meta, where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {short(value)}")
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
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise SpecError(f"{where}: unknown key {short(unknown[0])}; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"{where}: missing key {name!r}; add it ({_type_name(hints[name])})")
            continue
        kwargs[name] = _convert(
            hints[name], data[name], f"{where}: {name}" if ":" not in where else f"{where}.{name}", f.metadata
        )
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


# ---- hardened reading of spec, manifest and config files -----------------------------------------------------
# Every file a user can name (model/hardware/scheme/platform/policy/workload YAML, config.json, artifact manifest,
# FPGA build report) is read by `read_yaml` / `read_json` below, so the guards live in one place: a regular file
# only (no FIFO, device or directory, which would block or never end), a size cap, UTF-8 text, no duplicate keys,
# bounded nesting and alias expansion, integers within 64 bits, finite numbers, and messages that quote a bounded
# excerpt of any value.
MAX_YAML_BYTES = 32 << 10  # pure-Python YAML takes seconds on tens of KB of nested flow lists; specs are < 6 KB
MAX_JSON_BYTES = 8 << 20  # a 70B model's artifact manifest is < 1 MB; parsing 8 MB of numbers takes seconds
MAX_DEPTH = 32  # nesting of mappings/lists (specs nest 3-6 deep); PyYAML slows with depth x size
MAX_VALUES = 1_000_000  # values after alias expansion (a YAML "billion laughs" expands to 10^9)
INT_LIMIT = 2**63 - 1  # the largest integer any spec field may hold (int64)
_MAX_INT_DIGITS = 19  # digits of INT_LIMIT: longer literals are refused before int() (which is quadratic)


def short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to about `limit` characters, computed in bounded time (for error messages: a value may be a
    huge string or an alias-expanded structure)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 2, 4, 4, 4, 4
    r.maxstring = r.maxother = r.maxlong = max(limit, 8)
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = 80) -> str:
    """`text` cut to at most `limit` characters (with "..." where cut), for quoting user text in messages."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text_file(
    path: str | Path, *, max_bytes: int = MAX_YAML_BYTES, what: str = "file", error: type[HwsimError] = SpecError
) -> str:
    """The UTF-8 text of the regular file `path` (at most `max_bytes` bytes), else `error` with a one-line reason.

    Opens without blocking and checks the opened file itself (fstat), so a FIFO, /dev/zero, a socket or a
    directory is refused instead of hanging or reading forever.
    """
    text_path = str(path)
    try:
        fd = os.open(text_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{clip(text_path, 200)}: no such {what}; check the path") from None
    except PermissionError:
        raise error(f"{clip(text_path, 200)}: permission denied; make the {what} readable") from None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(f"{clip(text_path, 200)}: cannot open the {what} ({why}); check the path") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{text_path}: is a directory; give the path of a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{text_path}: not a regular file (a FIFO, device or socket); give the path of a {what}")
        if st.st_size > max_bytes:
            raise error(
                f"{text_path}: {st.st_size:,} bytes is too large for a {what} (limit {max_bytes:,} "
                "bytes); check the path"
            )
        chunks, total = [], 0
        while total <= max_bytes:
            try:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            except BlockingIOError:  # pragma: no cover - regular files never block
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise error(f"{text_path}: more than {max_bytes:,} bytes, too large for a {what}; check the path")
    except OSError as exc:
        raise error(f"{text_path}: cannot read the {what} ({exc.strerror or exc}); check the path") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{text_path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the "
            f"{what} as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


class _Refused(Exception):
    """A guard of the YAML loader tripped (message without the file name)."""


def _yaml_loader():
    """A yaml.SafeLoader subclass with the guards of this module.

    * ``1e9`` / ``2.5e-3`` are floats (YAML 1.2 style; PyYAML's 1.1 rules need a dot and a signed exponent);
    * YAML 1.1 base-60 numbers (``2:4`` read as 124) are refused with the advice to quote them;
    * integers beyond 64 bits, and finite-looking floats that overflow, are refused;
    * duplicate keys, nesting beyond MAX_DEPTH and tags other than the plain-data ones are refused.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        def __init__(self, stream) -> None:
            super().__init__(stream)
            self._depth = 0

        def compose_node(self, parent, index):
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise _Refused(f"nested deeper than {MAX_DEPTH} levels at line {mark.line + 1}; flatten it")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node)
                    try:
                        if key in seen:
                            raise _Refused(
                                f"duplicate key {short(key)} at line {key_node.start_mark.line + 1} "
                                f"(first at line {seen[key]}); keep one"
                            )
                        seen[key] = key_node.start_mark.line + 1
                    except TypeError:
                        continue
            return super().construct_mapping(node, deep=deep)

        def construct_undefined(self, node):
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            raise _Refused(
                f"unsupported tag {short(tag)} at line {node.start_mark.line + 1}; spec files hold plain "
                "data only (mappings, lists, strings, numbers, true/false, null)"
            )

    def sexagesimal(loader, node, kind: str) -> None:
        try:
            read = (yaml.SafeLoader.construct_yaml_int if kind == "integer" else yaml.SafeLoader.construct_yaml_float)(
                loader, node
            )
            as_what = f" the base-60 {kind} {short(read)}"
        except (ValueError, OverflowError):
            as_what = f" a base-60 {kind}"
        raise _Refused(
            f"line {node.start_mark.line + 1}: unquoted {clip(node.value)} is read by YAML 1.1 as"
            f'{as_what}; quote it ("{clip(node.value)}") if it is text such as a 2:4 pattern'
        )

    def construct_int(loader, node):
        text = str(node.value)
        if ":" in text:
            sexagesimal(loader, node, "integer")
        if len(text.lstrip("+-").replace("_", "")) > _MAX_INT_DIGITS + 2:
            raise _Refused(
                f"line {node.start_mark.line + 1}: integer {short(text)} is out of range (limit "
                f"{INT_LIMIT}); give a smaller value"
            )
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
        if abs(value) > INT_LIMIT:
            raise _Refused(
                f"line {node.start_mark.line + 1}: integer {short(text)} is out of range (limit "
                f"{INT_LIMIT}); give a smaller value"
            )
        return value

    def construct_float(loader, node):
        text = str(node.value)
        if ":" in text:
            sexagesimal(loader, node, "number")
        value = yaml.SafeLoader.construct_yaml_float(loader, node)
        if math.isinf(value) and "inf" not in text.lower():
            raise _Refused(
                f"line {node.start_mark.line + 1}: number {short(text)} overflows a 64-bit float; give a smaller value"
            )
        return value

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    Loader.add_constructor("tag:yaml.org,2002:float", construct_float)
    Loader.add_constructor(None, Loader.construct_undefined)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


def check_plain(data: Any, where: str, error: type[HwsimError] = SpecError) -> Any:
    """`data` itself if it nests at most MAX_DEPTH deep and holds at most MAX_VALUES values counting every alias
    expansion (shared sub-structures count each time they are reached), else `error`. Iterative: no recursion."""
    stack = [(data, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise error(
                f"{where}: more than {MAX_VALUES:,} values after expanding aliases (an alias bomb?); "
                "write the data out plainly"
            )
        if isinstance(value, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise error(
                    f"{where}: nested deeper than {MAX_DEPTH} levels (or an alias refers to itself); flatten it"
                )
            items = value.values() if isinstance(value, dict) else value
            if isinstance(value, dict):
                stack.extend((k, depth + 1) for k in value if isinstance(k, tuple))
            stack.extend((v, depth + 1) for v in items)
    return data


def parse_yaml(text: str, where: str, error: type[HwsimError] = SpecError) -> Any:
    """Parse YAML text with every guard of `read_yaml`; `where` names the source in messages."""
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise error(f"{where}: {exc}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to read; flatten it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        why = f" ({clip(problem)})" if isinstance(problem, str) else ""
        raise error(f"{where}: malformed YAML{pos}{why}; fix the syntax") from None
    except (ValueError, OverflowError) as exc:  # a scalar PyYAML could not convert (e.g. a bad date)
        raise error(f"{where}: a value cannot be read ({clip(str(exc))}); fix or quote it") from None
    return check_plain(data, where, error)


def parse_json(text: str, where: str, error: type[HwsimError] = SpecError) -> Any:
    """Parse JSON text strictly: no duplicate keys, no NaN/Infinity, integers within 64 bits, finite numbers,
    bounded nesting."""

    count = [0]

    def counted() -> None:  # numbers and objects, counted as they are parsed: a flood stops early
        count[0] += 1
        if count[0] > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES:,} values; this is not a spec file")

    def pairs(items: list[tuple[str, Any]]) -> dict:
        counted()
        out: dict = {}
        for k, v in items:
            if k in out:
                raise _Refused(f"duplicate key {short(k)}; keep one")
            out[k] = v
        return out

    def parse_int(s: str) -> int:
        counted()
        if len(s.lstrip("-")) > _MAX_INT_DIGITS or abs(int(s)) > INT_LIMIT:
            raise _Refused(f"integer {short(s, 30)} is out of range (limit {INT_LIMIT}); give a smaller value")
        return int(s)

    def parse_float(s: str) -> float:
        counted()
        value = float(s)
        if not math.isfinite(value):
            raise _Refused(f"number {short(s, 30)} overflows a 64-bit float; give a smaller value")
        return value

    def parse_constant(s: str) -> float:
        raise _Refused(f"{s} is not valid JSON; give a finite number")

    try:
        data = json.loads(
            text, object_pairs_hook=pairs, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant
        )
    except _Refused as exc:
        raise error(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{where}: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); fix the syntax"
        ) from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to read; flatten it") from None
    return check_plain(data, where, error)


def read_yaml(path: str | Path, *, max_bytes: int = MAX_YAML_BYTES, error: type[HwsimError] = SpecError) -> Any:
    """Parse a YAML spec file with every guard (see `read_text_file`, `parse_yaml`); `error` (SpecError by default)
    with a one-line message otherwise."""
    return parse_yaml(read_text_file(path, max_bytes=max_bytes, what="YAML file", error=error), str(path), error)


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, error: type[HwsimError] = SpecError) -> Any:
    """Parse a JSON file with every guard (see `read_text_file`, `parse_json`); `error` (SpecError by default)
    with a one-line message otherwise."""
    return parse_json(read_text_file(path, max_bytes=max_bytes, what="JSON file", error=error), str(path), error)


def to_plain(obj: Any) -> Any:
    """A spec dataclass (or nesting of them) as plain JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
