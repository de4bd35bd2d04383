"""benchmarks/gpu_insitu.py and fidelity_gpu's repeatability read the committed device measurements on CPU."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "data"


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_insitu_data_has_provenance_clock_and_operator_sums():
    doc = json.loads((DATA / "gpu_insitu_h100-sxm.json").read_text())
    assert doc["provenance"]["device_name"].startswith("NVIDIA H100")
    for c in doc["cases"]:
        assert c["graph_s"] > 0 and c["isolated_here"] and 300 < c["clock_during_graph"]["sm_mhz_mean"] <= 2000
    b = doc["boundaries"][0]
    assert {"t_gg", "t_aa", "t_ga"} <= set(b)


def test_insitu_report_prints_every_case_and_boundary(capsys):
    mod = _load("gpu_insitu")
    mod.report(str(DATA / "gpu_insitu_h100-sxm.json"), None)
    out = capsys.readouterr().out
    doc = json.loads((DATA / "gpu_insitu_h100-sxm.json").read_text())
    assert "sustained 8192^3 GEMM" in out
    assert sum(line.startswith(("prefill ", "decode ")) for line in out.splitlines()) == len(doc["cases"])
    assert sum("us " in line for line in out.splitlines()) >= len(doc["boundaries"])


def test_hot_operator_times_bracket_the_pass_with_the_burst_ones(capsys):
    """The committed measurement itself: burst operator sums under each pass, power-limited ones over it."""
    doc = json.loads((DATA / "gpu_insitu_hot_h100-sxm.json").read_text())
    for c in doc["cases"]:
        burst, hot = sum(c["isolated_here"].values()), sum(c["isolated_hot"].values())
        assert burst < c["graph_s"] < hot, c["model"]
    _load("gpu_insitu").report(str(DATA / "gpu_insitu_hot_h100-sxm.json"), None)
    assert "ops hot" in capsys.readouterr().out


def test_repeatability_compares_leases_runs_and_operator_points():
    mod = _load("fidelity_gpu")
    rows = mod.repeatability()
    whats = [r["what"] for r in rows]
    assert any("lease 2 / lease 1" in w for w in whats)
    assert any("same GPU again" in w for w in whats)
    assert any("operator linear" in w for w in whats)
    for r in rows:
        assert r["n"] > 0 and 0 <= r["median_abs"] <= r["p90_abs"] <= r["max_abs"] < 1.0
