"""Helpers shared by CLI subcommands: JSON output, rich tables, number formatting, bounded argument types."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

__all__ = [
    "print_json",
    "fmt_bytes",
    "fmt_time",
    "fmt_energy",
    "console",
    "esc",
    "positive_int",
    "bounded_int",
    "int_list",
    "MAX_COUNT",
    "MAX_LIST",
]

MAX_COUNT = 2**31 - 1  # the largest count a flag accepts (tokens, batch, windows...); commands may limit further
MAX_LIST = 64  # values in a comma-separated list flag


def print_json(data: Any) -> None:
    """One JSON document on stdout (NaN/inf become null so the output is valid JSON)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    json.dump(clean(data), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.3g} TB"


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_energy(j: float) -> str:
    """Energy with an adaptive SI unit: 1.08 kJ, 3.2 J, 12.5 mJ, 40 µJ."""
    for unit, scale in (("kJ", 1e3), ("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6)):
        if abs(j) >= scale:
            return f"{j / scale:.3g} {unit}"
    return f"{j * 1e9:.3g} nJ"


def console():
    from rich.console import Console

    return Console()


def esc(text: object) -> str:
    """`text` with rich markup escaped, for names such as ``[w2a8kv4]`` printed through a rich console."""
    from rich.markup import escape

    return escape(str(text))


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_int(text: str) -> int:
    t = text.strip()
    digits = t[1:] if t[:1] in "+-" else t
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise argparse.ArgumentTypeError(
            f"{_clip(text)!r} is not an integer" + (" (or far too large)" if digits.isdigit() else "")
        )
    return int(t)


def bounded_int(lo: int = 1, hi: int = MAX_COUNT):
    """argparse type factory: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        value = _parse_int(text)
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} must be >= {lo}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"{value} is too large; the limit is {hi:,}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer in 1..MAX_COUNT."""
    return bounded_int(1, MAX_COUNT)(text)


def int_list(text: str) -> list[int]:
    """argparse type: a comma-separated list of at most MAX_LIST integers in 1..MAX_COUNT."""
    parts = [x for x in text.split(",") if x.strip()]
    if len(parts) > MAX_LIST:
        raise argparse.ArgumentTypeError(f"{len(parts)} values given; at most {MAX_LIST}")
    try:
        values = [_parse_int(x) for x in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{_clip(text)!r} is not a comma-separated list of integers, e.g. 2,4,8"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{_clip(text)!r}: give integers >= 1, e.g. 2,4,8")
    if max(values) > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{max(values)} is too large; the limit is {MAX_COUNT:,}")
    return values
