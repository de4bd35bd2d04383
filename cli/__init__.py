"""The `hwsim` command line.

Subcommands live in modules ``cli/cmd_*.py``; each defines ``register(subparsers)`` (adding its parser with
``set_defaults(func=run)``) and ``run(args) -> int``. They are discovered at start-up, so adding a subcommand is adding
a file. Heavy libraries are imported inside ``run``, never at module level.

Errors caused by input (`HwsimError`) print one line on stderr and exit with status 2; so do argument errors.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from base.errors import HwsimError

__all__ = ["main", "OneLineArgumentParser"]


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (plus exit status 2), without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="hwsim",
        description=(
            "Hardware/software co-design of long-context LLM inference: compress a model, estimate it on hardware, "
            "build and check the RTL, simulate offload."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    sub.required = True
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(options that take one value, every option string) over the parser and all its subparsers."""
    valued: set[str] = set()
    every: set[str] = set()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            every.update(action.option_strings)
            if action.option_strings and action.nargs is None:
                valued.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return valued - (every - valued), every


def _join_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--gen -1e3`` as ``--gen=-1e3``: argparse takes a value starting with '-' for an option unless it looks
    like a plain negative number, and answers "expected one argument"; joined, the value reaches the option's own
    check, which names what is wrong with it."""
    valued, every = _option_strings(parser)
    out: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.extend(argv[i:])
            break
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            tok in valued
            and nxt is not None
            and nxt.startswith("-")
            and nxt != "-"
            and nxt.split("=", 1)[0] not in every
        ):
            out.append(f"{tok}={nxt}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _one_line(text: str, word_limit: int = 160) -> str:
    """`text` on one line, each overlong word (a pasted path or value) cut to `word_limit` characters."""
    return " ".join(w if len(w) <= word_limit else w[: word_limit - 3] + "..." for w in text.split())


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that atomic writes remove their temporaries on the way out."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 bad input, 130/143 interrupted/terminated)."""
    import signal
    import threading

    parser = build_parser()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum, frame):
            raise _Terminated

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        args = parser.parse_args(_join_dash_values(parser, sys.argv[1:] if argv is None else argv))
        return int(args.func(args) or 0)
    except HwsimError as exc:
        sys.stderr.write(f"hwsim: error: {_one_line(str(exc))}\n")
        return 2
    except OSError as exc:  # a file system error the command did not anticipate (disk full, read-only...)
        if isinstance(exc, BrokenPipeError):  # output piped into e.g. `head`: not an error of ours
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if exc.errno is None:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        sys.stderr.write(
            _one_line(
                f"hwsim: error:{where}: {exc.strerror or exc}; check the path, its permissions and the free space"
            )
            + "\n"
        )
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("hwsim: interrupted\n")
        return 130
    except _Terminated:
        sys.stderr.write("hwsim: terminated\n")
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
