"""Output paths: checked before work, atomic writes, stale temporaries, owned build directories."""

import errno
import json
import os
import subprocess
import sys

import pytest

from base.errors import SpecError
from base.outputs import (
    OWNER_FILE,
    atomic_dir,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    claim_dir,
    clean_stale_temps,
    output_error,
)

root = os.geteuid() == 0


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # parents created later
    assert not (tmp_path / "new").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(SpecError, match="a file is in the way"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(SpecError, match=r"is a file, not a directory"):
        check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(SpecError, match="only .* bytes free"):
        check_output_dir(tmp_path / "x", need_bytes=1 << 62)


def test_a_directory_made_meanwhile_is_not_a_file(tmp_path, monkeypatch):
    # two sweep points check their outputs while a sibling job creates the common parent: the parent appears
    # right after the first look at it, and must then read as a directory, never as "a file in the way"
    parent = tmp_path / "sw"
    real_stat = os.stat
    looked = []

    def stat_then_sibling_mkdir(path, *args, **kwargs):
        try:
            return real_stat(path, *args, **kwargs)
        finally:
            if os.fspath(path) == os.fspath(parent) and not looked:
                looked.append(path)
                os.mkdir(parent)

    monkeypatch.setattr(os, "stat", stat_then_sibling_mkdir)
    assert check_output_dir(parent / "dot-d256-l256") == parent / "dot-d256-l256"
    assert looked and parent.is_dir()


@pytest.mark.skipif(root, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SpecError, match="is not writable"):
            check_output_dir(ro / "out")
        with pytest.raises(SpecError, match="is not writable"):
            check_output_file(ro / "plot.png", flag="--plot", suffixes=(".png",))
    finally:
        ro.chmod(0o700)


def test_check_output_file(tmp_path):
    with pytest.raises(SpecError, match=r"--plot .* is a directory; give a file name, e\.g\. .*plot\.png"):
        check_output_file(tmp_path, flag="--plot", suffixes=(".png",))
    with pytest.raises(SpecError, match=r"file type must be one of \.png"):
        check_output_file(tmp_path / "x.txt", flag="--plot", suffixes=(".png",))
    with pytest.raises(SpecError, match="not a regular file"):
        check_output_file("/dev/null", flag="--out")
    assert check_output_file(tmp_path / "a" / "b.png", suffixes=(".png",)).name == "b.png"


def test_output_error_is_one_line():
    msg = str(output_error(OSError(errno.ENOSPC, "No space left on device"), "/x/y", "--out"))
    assert msg == "cannot write --out /x/y: No space left on device; free some space or write elsewhere"


def test_atomic_write_full_disk_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SpecError, match="No space left on device; free some space"):
        atomic_write_text(target, "new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".art.tmp-{dead}"
    stale.mkdir()
    (stale / "weights.safetensors").write_text("half")
    live = tmp_path / f".art.tmp-{os.getppid()}"  # a live process: left alone
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead}"  # another output's temporary: not ours to judge
    other.mkdir()
    assert clean_stale_temps(tmp_path / "art") == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_atomic_dir(tmp_path):
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(SpecError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("boom")
    assert (out / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["art"]
    with pytest.raises(SpecError, match="not written by hwsim"):
        with atomic_dir(out, overwrite=True, is_ours=lambda p: False):
            pass


def test_claim_dir_never_deletes_foreign_files(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "report.json").write_text("my data")
    with pytest.raises(SpecError, match=r"already holds files hwsim did not write \(report\.json\)"):
        claim_dir(user, "hwsim fpga build")
    assert (user / "report.json").read_text() == "my data"

    out = tmp_path / "build"
    owned = claim_dir(out, "t").prepare()
    (out / "top.bit").write_text("1")
    (out / "seed-1").mkdir()
    owned.commit()
    assert json.loads((out / OWNER_FILE).read_text())["files"] == ["seed-1", "top.bit"]
    (out / "notes.txt").write_text("user's, added later")
    again = claim_dir(out, "t").prepare()
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "notes.txt"]
    (out / "top.bit").write_text("2")
    again.commit()
    third = claim_dir(out, "t").prepare()
    assert (out / "notes.txt").exists() and not (out / "top.bit").exists()
    third.commit()


def test_claim_dir_after_an_interrupted_build(tmp_path):
    out = tmp_path / "b"
    claim_dir(out, "t").prepare()
    (out / "half.json").write_text("x")  # the build died before commit()
    claim_dir(out, "t").prepare()
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE]


def test_claim_dir_allows_only_subdirectories(tmp_path):
    (tmp_path / "fpga-sweep").mkdir()
    owned = claim_dir(tmp_path, "t").prepare()
    owned.commit()
    assert (tmp_path / "fpga-sweep").is_dir()
    assert "fpga-sweep" not in json.loads((tmp_path / OWNER_FILE).read_text())["files"]


def test_bad_marker_refused(tmp_path):
    (tmp_path / OWNER_FILE).write_text('{"files": ["../../etc"], "foreign": []}')
    with pytest.raises(SpecError, match="not hwsim's marker"):
        claim_dir(tmp_path, "t")
