"""Safe output paths: checked before any work, written atomically, never deleting what hwsim did not write.

* `check_output_dir` / `check_output_file`: called by a command before it starts work, so that a read-only
  directory, a file where a directory should be (or the reverse), a path through a file, or a disk without room
  is one line on stderr and exit status 2 instead of a traceback after minutes of compute. Missing parent
  directories are fine: they are created when the output is written.
* `atomic_write_bytes` / `atomic_write_text` / `atomic_dir`: the output appears complete under its final name or
  not at all. Temporaries are hidden siblings named ``.NAME.tmp-PID``; those left by a run that was killed (its
  PID no longer alive) are removed by the next write of the same NAME (`clean_stale_temps`).
* `claim_dir`: a build directory is owned through a marker file listing what hwsim wrote there; a later build
  removes only those files, and a directory holding files of someone else is refused.
* `output_error`: an OSError met while writing, as a `SpecError` with one line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from base.errors import SpecError

__all__ = [
    "check_output_dir",
    "check_output_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_dir",
    "clean_stale_temps",
    "output_error",
    "claim_dir",
    "OwnedDir",
    "OWNER_FILE",
    "MIN_FREE_BYTES",
]

MIN_FREE_BYTES = 1 << 20  # below this much free space no output is attempted
OWNER_FILE = ".hwsim-owner.json"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


def output_error(exc: OSError, path: str | Path, flag: str = "output") -> SpecError:
    """A one-line SpecError for an OSError met while writing `path` (disk full, read-only, permission...)."""
    advice = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "the file system is read-only; write elsewhere",
        errno.EACCES: "permission denied; write elsewhere or fix the permissions",
        errno.EPERM: "permission denied; write elsewhere or fix the permissions",
        errno.ENOTDIR: "a path component is a file, not a directory; choose another path",
        errno.EISDIR: "it is a directory; give a file name",
        errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
        errno.EFBIG: "the file is too large for this file system; write elsewhere",
    }
    why = exc.strerror or str(exc)
    return SpecError(f"cannot write {flag} {path}: {why}; {advice.get(exc.errno or 0, 'check the path')}")


def _nearest_existing(path: Path, flag: str) -> Path:
    """The closest ancestor of `path` (or `path` itself) that exists; SpecError if it is not a directory."""
    probe = path
    while True:
        # one stat per step: a directory made meanwhile by a sibling job (a parallel sweep) must not read as a file
        try:
            st = os.stat(probe)
            exists, is_dir = True, stat.S_ISDIR(st.st_mode)
        except FileNotFoundError:
            exists, is_dir = probe.is_symlink(), False  # a dangling link is in the way too
        except NotADirectoryError:
            exists, is_dir = False, False  # a file further up; the next step names it
        except OSError as exc:  # e.g. ENAMETOOLONG
            raise output_error(exc, path, flag) from None
        if exists:
            if probe != path and not is_dir:
                raise SpecError(f"{flag} {path}: {probe} is a file, not a directory; choose another path")
            return probe
        if probe.parent == probe:  # pragma: no cover - the root always exists
            return probe
        probe = probe.parent


def _check_writable_dir(d: Path, path: Path, flag: str, need_bytes: int) -> None:
    if not os.access(d, os.W_OK | os.X_OK):
        ro = ""
        with contextlib.suppress(OSError):
            if os.statvfs(d).f_flag & getattr(os, "ST_RDONLY", 1):
                ro = " (read-only file system)"
        raise SpecError(f"{flag} {path}: directory {d} is not writable{ro}; choose another path or fix the permissions")
    try:
        free = shutil.disk_usage(d).free
    except OSError:  # pragma: no cover - statvfs failing on an existing directory
        return
    need = max(need_bytes, MIN_FREE_BYTES)
    if free < need:
        raise SpecError(
            f"{flag} {path}: only {free:,} bytes free on its file system (about {need:,} needed); "
            "free some space or write elsewhere"
        )


def check_output_dir(path: str | Path, *, flag: str = "--out", need_bytes: int = 0) -> Path:
    """Check, before any work, that `path` can be created (with missing parents) or written into as a
    directory with about `need_bytes` free; SpecError otherwise. Creates nothing. Returns `path` as a Path."""
    p = Path(path)
    if str(path) == "" or "\0" in str(path):
        raise SpecError(f"{flag}: give a directory path")
    base = _nearest_existing(p, flag)
    if base == p and not p.is_dir():
        raise SpecError(f"{flag} {p}: a file is in the way (a directory is needed); choose another path")
    _check_writable_dir(base, p, flag, need_bytes)
    return p


def check_output_file(
    path: str | Path, *, flag: str = "--out", suffixes: tuple[str, ...] = (), need_bytes: int = 0
) -> Path:
    """Check, before any work, that the file `path` can be written (replacing a regular file there); `suffixes`
    (e.g. (".png", ".pdf")) are the accepted file types. SpecError otherwise. Creates nothing."""
    p = Path(path)
    if str(path) == "" or "\0" in str(path):
        raise SpecError(f"{flag}: give a file path")
    if p.is_dir():
        example = p / f"plot{suffixes[0]}" if suffixes else p / "out"
        raise SpecError(f"{flag} {p} is a directory; give a file name, e.g. {example}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise SpecError(
            f"{flag} {p}: the file type must be one of {', '.join(suffixes)} (e.g. "
            f"{p.with_suffix(suffixes[0]) if p.name else 'plot' + suffixes[0]})"
        )
    if p.exists() and not p.is_file():
        raise SpecError(f"{flag} {p} exists and is not a regular file (a device, FIFO or socket); choose another path")
    base = p.parent if p.is_file() else _nearest_existing(p, flag)  # the file is replaced within its directory
    _check_writable_dir(base, p, flag, need_bytes)
    return p


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # exists, owned by someone else
    return True


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove the hidden temporaries ``.NAME.tmp-PID`` / ``.NAME.old-PID`` next to `path` whose process is gone
    (an interrupted earlier write of the same NAME). Returns what was removed; temporaries of live processes stay."""
    p = Path(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(p.parent if str(p.parent) else "."))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if not m or m["name"] != p.name or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, *, flag: str = "output") -> Path:
    """Write `data` to `path` atomically (temporary sibling, fsync, rename); parents are created. An OSError
    becomes a one-line SpecError and no temporary is left."""
    p = Path(path)
    tmp = p.parent / f".{p.name}.tmp-{os.getpid()}"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(p)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise output_error(exc, p, flag) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | Path, text: str, *, flag: str = "output") -> Path:
    """`atomic_write_bytes` of UTF-8 `text`."""
    return atomic_write_bytes(path, text.encode("utf-8"), flag=flag)


@contextlib.contextmanager
def atomic_dir(out: str | Path, *, overwrite: bool = False, flag: str = "--out", is_ours=None) -> Iterator[Path]:
    """Build a directory atomically: yields a temporary sibling ``.NAME.tmp-PID`` to fill; on success it is
    renamed to `out` (an existing `out` is replaced only with `overwrite` and only if `is_ours(out)` says it is
    one of ours); on any exception (SIGTERM included, which the CLI turns into an exception) it is removed.
    OSErrors become one-line SpecErrors."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise SpecError(f"{flag} {out} already exists; choose another path or pass --force")
    if out.exists() and is_ours is not None and not is_ours(out):
        raise SpecError(f"{flag} {out} exists and was not written by hwsim; refusing to replace it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise output_error(exc, out, flag) from None
    try:
        yield tmp
        if out.exists():  # overwrite: move the old one aside, put the new one in, drop the old one
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        _fsync_dir(out.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(exc, out, flag) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class OwnedDir:
    """A build directory and the names hwsim wrote in it (see `claim_dir`).

    `prepare()` creates the directory and removes what an earlier build recorded as its own; `commit()` records
    every entry now present except those that were there and not ours (`foreign`).
    """

    def __init__(self, path: Path, tool: str, previous: set[str], foreign: set[str]) -> None:
        self.path, self.tool, self.previous, self.foreign = path, tool, previous, foreign

    def _record(self, files: set[str], complete: bool) -> None:
        doc = {
            "tool": self.tool,
            "complete": complete,
            "files": sorted(files),
            "foreign": sorted(self.foreign),
            "note": "written by hwsim: a later build in this directory removes only the files listed here",
        }
        atomic_write_text(self.path / OWNER_FILE, json.dumps(doc, indent=1) + "\n", flag="build directory")

    def prepare(self) -> OwnedDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for name in sorted(self.previous):
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
        except OSError as exc:
            raise output_error(exc, self.path, "build directory") from None
        self._record(set(), complete=False)
        return self

    def commit(self) -> None:
        try:
            now = set(os.listdir(self.path))
        except OSError as exc:
            raise output_error(exc, self.path, "build directory") from None
        self._record(now - self.foreign - {OWNER_FILE}, complete=True)


def claim_dir(path: str | Path, tool: str, *, flag: str = "--out") -> OwnedDir:
    """Check (creating and deleting nothing) that `path` may be used as the build directory of `tool`.

    Allowed: a missing or empty directory; one with hwsim's marker (what it lists as written by an earlier
    build will be replaced, anything else stays); one holding only sub-directories (kept). A directory holding
    files hwsim did not write is refused: a build must never delete a user's file.
    """
    from base.specio import read_json

    p = Path(path)
    check_output_dir(p, flag=flag)
    if not p.exists():
        return OwnedDir(p, tool, set(), set())
    try:
        entries = set(os.listdir(p))
    except OSError as exc:
        raise output_error(exc, p, flag) from None
    if OWNER_FILE in entries:
        doc = read_json(p / OWNER_FILE, max_bytes=1 << 20)
        ok = (
            isinstance(doc, dict)
            and isinstance(doc.get("files"), list)
            and isinstance(doc.get("foreign"), list)
            and all(
                isinstance(x, str) and x and "/" not in x and x not in (".", "..")
                for x in doc["files"] + doc["foreign"]
            )
        )
        if not ok:
            raise SpecError(f"{flag} {p}: {OWNER_FILE} is not hwsim's marker; give a new or empty directory")
        foreign = set(doc["foreign"]) & entries
        if doc.get("complete") is True:
            previous = set(doc["files"]) & entries
        else:  # an interrupted build: everything but the files that were there before it is its output
            previous = entries - foreign - {OWNER_FILE}
        foreign |= entries - previous - {OWNER_FILE}
        return OwnedDir(p, tool, previous, foreign)
    files = sorted(e for e in entries if not (p / e).is_dir() or (p / e).is_symlink())
    if files:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise SpecError(
            f"{flag} {p} already holds files hwsim did not write ({shown}); give a new or empty "
            "directory (a build replaces only files it wrote itself)"
        )
    return OwnedDir(p, tool, set(), entries)
