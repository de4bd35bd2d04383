"""The attention-engine cycle model (hwsim/cyclesim/attention_engine.py) against the RTL and its golden model.

* exactness: zero cycle difference on every head recorded from Verilator in tests/data/rtl_cycles.json;
* event-driven run == the controller stepped cycle by cycle, on random dense / bitmap / Λ heads;
* functional mode == engine.datapath.run_engine, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from base.errors import SpecError
from engine.datapath import run_engine
from engine.host import prepare_head
from engine.workloads import HeadSpec
from engine.workloads import random_head as spec_head
from hwsim.cyclesim.attention_engine import BlockWork, EngineModel, HeadWork, head_work
from quant.formats._bits import pack_tiles, to_codes

RTL_CYCLES_JSON = Path(__file__).resolve().parents[1] / "data" / "rtl_cycles.json"


def random_head(rng: np.random.Generator, D: int, T: int, *, sparse: bool, sink: int = 0, window=None):
    """A random KV4 head (dense int4, or bitmap tiles at a random sparsity) through the golden model's host side."""
    q = rng.integers(-128, 128, D)
    k = rng.integers(-8, 8, (T, D))
    v = rng.integers(-8, 8, (T, D))
    ks = rng.uniform(0.01, 0.1, (-(-T // 64), D))
    vs = rng.uniform(0.01, 0.1, (T, D // 64))
    kw = dict(sink=sink, window=window, k_group_size=64)
    if not sparse:
        return prepare_head(q, 0.05, k, ks, v, vs, **kw)
    keepk = rng.random((T, D)) < rng.uniform(0, 1)
    keepv = rng.random((T, D)) < rng.uniform(0, 1)
    k, v = np.where(keepk, k, 0), np.where(keepv, v, 0)
    nb = -(-T // 64)
    kp = np.zeros((nb * 64, D), int)
    kp[:T] = k
    kk = np.zeros((nb * 64, D), bool)
    kk[:T] = keepk
    to_tiles = lambda a: a.reshape(nb, 64, D).transpose(0, 2, 1).reshape(-1, 64)  # noqa: E731  K tiles: [nb*D, 64]
    kt = pack_tiles(to_tiles(kk), to_codes(to_tiles(kp), 4), 4)
    vt = pack_tiles(keepv.reshape(-1, 64), to_codes(v.reshape(-1, 64), 4), 4)
    return prepare_head(
        q,
        0.05,
        None,
        ks,
        None,
        vs,
        k_tiles=(kt[0].reshape(nb, D), kt[1]),
        v_tiles=(vt[0].reshape(T, D // 64), vt[1]),
        context=T,
        **kw,
    )


def _cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        D = int(rng.choice([64, 128]))
        L = int(rng.choice([2, 4, 8, 16, 32, 64]))
        T = int(rng.integers(1, 400))
        lam = rng.random() < 0.5
        sink, window = (int(rng.integers(0, 6)), int(rng.integers(1, 200))) if lam else (0, None)
        yield i, D, L, random_head(rng, D, T, sparse=bool(rng.random() < 0.5), sink=sink, window=window)


@pytest.mark.parametrize("i,D,L,head", list(_cases(24, 7)), ids=lambda x: str(x) if isinstance(x, int) else None)
def test_event_driven_equals_stepped_and_functional_equals_golden(i, D, L, head):
    eng = EngineModel(D, L)
    w = head_work(head)
    fast = eng.run(w)  # vectorised over the whole head
    assert fast.cycles == eng.run_stepped(w)
    per_block = eng.run(HeadWork(w.head_dim, w.blocks))  # runs of identical blocks, one event per phase
    assert (per_block.cycles, per_block.phase_cycles, per_block.lane_ops, per_block.block_starts) == (
        fast.cycles,
        fast.phase_cycles,
        fast.lane_ops,
        fast.block_starts,
    )
    func = eng.run(w, engine_head=head, functional=True)
    assert func.cycles == fast.cycles
    assert np.array_equal(func.output, run_engine(head))  # bit for bit


def test_extreme_values_functional():
    rng = np.random.default_rng(3)
    D, T = 128, 300
    q = np.where(rng.random(D) < 0.5, -128, 127)
    k = np.where(rng.random((T, D)) < 0.5, -8, 7)
    v = np.where(rng.random((T, D)) < 0.5, -8, 7)
    head = prepare_head(q, 1.0, k, np.full((5, D), 0.2), v, np.full((T, 2), 0.3), k_group_size=64)
    out = EngineModel(D, 16).run(head_work(head), engine_head=head, functional=True).output
    assert np.array_equal(out, run_engine(head))


def test_dense_block_cycles_by_hand():
    # D=128, L=8, full dense block: BLK 3 + KRUN 128*8 + KDRAIN 11 + SCAN 8 + UPD 5 + UWAIT 6 + EXP 8 + EWAIT 9
    # + VRUN 64*2*8; tail: normaliser start 1 + DIV 38 + output pipeline 4 + 128 beats
    eng = EngineModel(128, 8)
    w = HeadWork(128, (BlockWork.uniform(128, 64, 64, 64),) * 3)
    assert eng.run(w).cycles == 3 * (3 + 1024 + 11 + 8 + 5 + 6 + 8 + 9 + 1024) + 1 + 38 + 4 + 128
    # an empty K tile (bitmap with no kept value) still costs its header cycle
    assert eng.block_phases(BlockWork.uniform(128, 1, 0, 0))["KRUN"] == 128


def test_late_blocks_only_add_waits():
    eng = EngineModel(64, 32)
    w = HeadWork(64, (BlockWork.uniform(64, 64, 64, 64),) * 4)
    free = eng.run(w)
    per = (free.cycles - sum(eng.tail_phases().values())) // 4
    late = eng.run(w, arrivals=[0, per, 5 * per, 5 * per])
    assert late.wait_cycles == 3 * per and late.cycles == free.cycles + late.wait_cycles
    assert late.block_starts == (0, per, 5 * per, 6 * per)


def test_parameter_checks():
    with pytest.raises(SpecError, match="lanes must be a power of two"):
        EngineModel(128, 128)
    with pytest.raises(SpecError, match="head_dim must be 64 or 128"):
        EngineModel(96, 8)


# ---- exactness against the RTL under Verilator ----------------------------------------------------------------
# tests/data/rtl_cycles.json (written by tests/cocotb/regen_rtl_cycles.py): {"entries": [{"head_dim",
# "lanes", "spec" (engine.workloads.HeadSpec), "n_blocks", "sparse", "sel" (hex per block), "k_counts" [B][D],
# "v_counts" [B][n_sel_b][G], "cycles_formula", "cycles_measured" (Verilator, stall-free drivers)}]}
def _load_rtl_cycles() -> list[dict]:
    data = json.loads(RTL_CYCLES_JSON.read_text())
    return data["entries"] if isinstance(data, dict) else data


def _entry_work(e: dict) -> HeadWork:
    """The beats of a recorded head from its per-tile counts (no regeneration needed)."""
    D = int(e["head_dim"])
    G = D // 64
    blocks = []
    for nk, nv, sel in zip(e["k_counts"], e["v_counts"], e["sel"]):
        nv = np.asarray(nv, dtype=np.int64).reshape(-1, G)
        assert nv.shape[0] == bin(int(sel, 16)).count("1")  # one V row per selected token
        blocks.append(BlockWork(nk=np.asarray(nk, dtype=np.int64), nv=nv))
    return HeadWork(D, tuple(blocks))


def test_zero_cycle_difference_against_verilator():
    entries = _load_rtl_cycles()
    assert len(entries) >= 20
    diffs = [
        EngineModel(int(e["head_dim"]), int(e["lanes"])).run(_entry_work(e)).cycles - int(e["cycles_measured"])
        for e in entries
    ]
    assert diffs == [0] * len(entries)


def test_recorded_heads_regenerate_to_the_same_beats():
    """The recorded counts are those of the head its spec regenerates; the functional mode on a few of them."""
    for e in _load_rtl_cycles()[:6]:
        head = spec_head(HeadSpec(**e["spec"]))
        w = head_work(head)
        ref = _entry_work(e)
        assert [b.key() for b in w.blocks] == [b.key() for b in ref.blocks]
        eng = EngineModel(int(e["head_dim"]), int(e["lanes"]))
        run = eng.run(w, engine_head=head, functional=True)
        assert run.cycles == int(e["cycles_measured"])
        assert np.array_equal(run.output, run_engine(head))
