"""benchmarks/kv_bitmap_probe.py: refuses what is not a pack before loading anything, and writes nothing."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_refuses_a_directory_that_is_not_a_pack(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("kv_bitmap_probe", ROOT / "benchmarks" / "kv_bitmap_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "a").mkdir()
    out = tmp_path / "probe.json"
    assert mod.main([str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a pack" in err[0] and "qat_device.py pack" in err[0]
    assert not out.exists()
