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
from typing import Sequence

from base.errors import HwsimError

__all__ = ["main", "OneLineArgumentParser"]


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (plus exit status 2), without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="hwsim", description=(
        "Hardware/software co-design of long-context LLM inference: compress a model, estimate it on hardware, "
        "build and check the RTL, simulate offload."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    sub.required = True
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except HwsimError as exc:
        msg = " ".join(str(exc).split())
        sys.stderr.write(f"hwsim: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("hwsim: interrupted\n")
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
