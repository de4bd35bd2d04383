"""SoftmaxUnit: the exact latencies of engine/timing.py and bit exactness against engine/datapath.py.

The testbench drives a cycle-by-cycle command schedule (the engine's tightest legal one: scans back to back, the
update SCAN_LATENCY after the last scan, the first exp UPDATE_LATENCY + 1 after the update, exps back to back) and
records every output in every cycle; the checks then look at the exact cycles where each result must (and must not
yet) be visible. Inputs not sampled in a cycle carry random junk.
"""

import numpy as np
import pytest
from enginesim import run_comb

from engine.datapath import EngineHead, exp2_fixed, run_engine, scale_scores
from engine.timing import EXP_LATENCY, L_LATENCY, SCAN_LATENCY, UPDATE_LATENCY
from engine.widths import EXP_FRAC_BITS, SHIFT_CLAMP
from rtl.softmax import SoftmaxUnit

SB = 20
S_MIN, S_MAX = -(1 << (SB - 1)), (1 << (SB - 1)) - 1
GAP = 40  # cycles between a block's last exp and the next block's start (the engine's guarantee)


def golden_head(blocks):
    """blocks: [(s int[64], g bool[64], mant, shift)] -> per block (Mnew, rescale, p int[64], l after the block),
    following engine.datapath.run_engine's online softmax."""
    out, M, l, first = [], 0, 0, True
    for s, g, mant, sh in blocks:
        x = scale_scores(s, mant, sh)
        xmax = int(scale_scores(np.array([s[g].max()]), mant, sh)[0])
        mblk = (xmax + (1 << EXP_FRAC_BITS) - 1) >> EXP_FRAC_BITS
        mnew = mblk if first else max(M, mblk)
        delta = 0 if first else mnew - M
        l_before = l
        l >>= min(delta, SHIFT_CLAMP)
        M, first = mnew, False
        p = np.where(g, exp2_fixed(np.maximum((M << EXP_FRAC_BITS) - x, 0)), 0).astype(np.int64)
        l += int(p.sum())
        out.append(dict(M=M, rescale=min(delta, SHIFT_CLAMP), p=p, l_before=l_before, l_shifted=l - int(p.sum()), l=l))
    return out


def schedule_heads(heads, L, rng, *, update_delay=SCAN_LATENCY):
    """Cycle-by-cycle commands for heads run back to back. Returns (cmds {cycle: dict}, events, n_cycles)."""
    n = 64 // L
    cmds, events, c = {}, [], 0
    for h, blocks in enumerate(heads):
        cmds[c] = {"head_start": 1}
        c += 1
        for b, (s, g, mant, sh) in enumerate(blocks):
            cmds[c] = {"blk_start": 1, "mant": mant, "shift": sh}
            c += 1
            scan_order = rng.permutation(n)
            scans = []
            for ch in scan_order:
                cmds[c] = {"scan": 1, "s": s[ch * L : (ch + 1) * L], "g": g[ch * L : (ch + 1) * L]}
                scans.append((c, ch))
                c += 1
            t_upd = c - 1 + update_delay
            cmds[t_upd] = {"update": 1}
            c = t_upd + UPDATE_LATENCY + 1
            exps = []
            for ch in rng.permutation(n):
                cmds[c] = {"exp": 1, "chunk": int(ch), "s": s[ch * L : (ch + 1) * L], "g": g[ch * L : (ch + 1) * L]}
                exps.append((c, int(ch)))
                c += 1
            events.append(dict(head=h, block=b, scans=scans, update=t_upd, exps=exps))
            c = c - 1 + GAP
    return cmds, events, c + L_LATENCY + 2


def simulate(L, cmds, n_cycles, rng):
    """Run the schedule; returns per-cycle records (l, m, rescale, rescale_stb, p_all as int[64])."""
    dut = SoftmaxUnit(lanes=L)
    rec = []
    mask = (1 << SB) - 1

    def pack(vals):
        return sum((int(v) & mask) << (SB * j) for j, v in enumerate(vals))

    async def tb(ctx):
        mant, sh = 0, 0
        for c in range(n_cycles):
            cmd = cmds.get(c, {})
            for name in ("head_start", "blk_start", "scan", "update", "exp"):
                ctx.set(getattr(dut, name), cmd.get(name, 0))
            mant, sh = cmd.get("mant", mant), cmd.get("shift", sh)
            ctx.set(dut.mant, mant)
            ctx.set(dut.shift, sh)
            if "s" in cmd:
                ctx.set(dut.s.as_value(), pack(cmd["s"]))
                ctx.set(dut.gate, sum(1 << j for j in range(L) if cmd["g"][j]))
            else:  # junk on lanes nobody samples
                ctx.set(dut.s.as_value(), pack(rng.integers(S_MIN, S_MAX + 1, L)))
                ctx.set(dut.gate, sum(int(b) << j for j, b in enumerate(rng.random(L) < 0.5)))
            ctx.set(dut.chunk, cmd.get("chunk", int(rng.integers(0, 64 // L))))
            pa = ctx.get(dut.p_all.as_value())
            rec.append(
                dict(
                    l=ctx.get(dut.l),
                    m=ctx.get(dut.m),
                    rescale=ctx.get(dut.rescale),
                    stb=ctx.get(dut.rescale_stb),
                    p=[(pa >> (8 * i)) & 255 for i in range(64)],
                )
            )
            await ctx.tick()

    run_comb(dut, tb)
    return rec


def check_heads(heads, L, seed=0):
    """Simulate heads on the tightest schedule and check every contract latency and every value exactly."""
    rng = np.random.default_rng(seed)
    cmds, events, n_cycles = schedule_heads(heads, L, rng)
    rec = simulate(L, cmds, n_cycles, rng)
    gold = [golden_head(blocks) for blocks in heads]
    strobes = [c for c, r in enumerate(rec) if r["stb"]]
    assert strobes == [ev["update"] + UPDATE_LATENCY for ev in events]  # one cycle each, exactly t + 6
    for ev in events:
        g = gold[ev["head"]][ev["block"]]
        tu = ev["update"]
        ts = tu + UPDATE_LATENCY
        where = f"head {ev['head']} block {ev['block']}"
        assert rec[ts]["rescale"] == g["rescale"], where
        assert rec[ts]["l"] == g["l_before"] and rec[ts + 1]["l"] == g["l_shifted"], where
        assert rec[ts]["m"] == rec[tu]["m"] and rec[ts + 1]["m"] == g["M"], where
        l_run = g["l_shifted"]
        for te, ch in ev["exps"]:
            sl = slice(ch * L, (ch + 1) * L)
            before, after = rec[te + EXP_LATENCY - 1]["p"], rec[te + EXP_LATENCY]["p"]
            assert before[sl] == rec[te]["p"][sl], where  # not yet written one cycle early
            assert after[sl] == g["p"][sl].tolist(), f"{where} chunk {ch}"
            assert after[: ch * L] == before[: ch * L] and after[(ch + 1) * L :] == before[(ch + 1) * L :]
            assert rec[te + L_LATENCY - 1]["l"] == l_run, where
            l_run += int(g["p"][sl].sum())
            assert rec[te + L_LATENCY]["l"] == l_run, where
        assert l_run == g["l"]
        last = ev["exps"][-1][0]
        assert rec[last + EXP_LATENCY]["p"] == g["p"].tolist(), where
    return rec, events


def rand_block(rng, kind):
    g = rng.random(64) < rng.choice([0.1, 0.6, 1.0])
    g[rng.integers(64)] = True  # the engine never sends an empty block
    if kind == "normal":
        s = rng.integers(-3000, 3000, 64)
        mant, sh = int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(10, 25))
    else:
        s = rng.integers(S_MIN, S_MAX + 1, 64)
        s[rng.random(64) < 0.2] = S_MIN
        s[rng.random(64) < 0.2] = S_MAX
        mant = int(rng.choice([0, 65535, int(rng.integers(0, 1 << 16))]))
        sh = int(rng.integers(0, 64))
    return s, g, mant, sh


@pytest.mark.parametrize("L", [2, 8, 16, 64])  # 16: the engine's widest softmax unit (scan radices 2, 2, 2)
def test_latencies_and_bit_exact_random_blocks(L):
    rng = np.random.default_rng(L)
    nb = {2: 3, 8: 4, 16: 4, 64: 4}[L]
    heads = [[rand_block(rng, "normal") for _ in range(nb)], [rand_block(rng, "extreme") for _ in range(nb)]]
    check_heads(heads, L, seed=L)


@pytest.mark.parametrize("L", [2, 8, 64])
def test_extremes_clamp_first_block_and_shifts(L):
    """Rescale clamped at SHIFT_CLAMP, a first block with a huge max (m_valid: rescale 0), mant 0 and 65535, every
    shift 0..63 across the blocks, scores at both ends of the 20-bit range."""
    rng = np.random.default_rng(100 + L)
    g = np.ones(64, dtype=bool)
    lo = np.full(64, -5000)
    hi = rng.integers(S_MAX - 100, S_MAX + 1, 64)
    hi[3] = S_MAX
    blocks = [
        (lo, g, 65535, 8),  # M = ceil(-5000 * 65535 / 2^16) < 0
        (hi, g, 65535, 0),  # Mblk - M huge: clamp at 31
        (np.full(64, S_MIN), g, 65535, 0),  # min scores: no rescale, every p = 0
        (rng.integers(S_MIN, S_MAX + 1, 64), g, 0, 5),
    ]  # mant 0: X = 0
    first_big = [(hi, g, 65535, 0), (lo, g, 65535, 63)]  # first block rescale 0 although Mblk - 0 is huge
    shifts = list(range(64))
    rng.shuffle(shifts)
    sweeps = [
        [rand_block(rng, "extreme")[:2] + (int(rng.choice([0, 65535, 40000])), sh) for sh in shifts[k : k + 16]]
        for k in range(0, 64, 16)
    ]
    heads = [blocks, first_big] + sweeps
    gold = [golden_head(h) for h in heads]
    assert gold[0][1]["rescale"] == SHIFT_CLAMP and gold[1][0]["rescale"] == 0  # the cases are really exercised
    assert {sh for h in heads for (_, _, _, sh) in h} == set(range(64))
    check_heads(heads, L, seed=L)


@pytest.mark.parametrize("L", [8])
def test_scan_one_cycle_early_is_not_seen(L):
    """The update at last scan + SCAN_LATENCY sees the last scan (checked above); at + SCAN_LATENCY - 1 it does not."""
    rng = np.random.default_rng(7)
    s = rng.integers(-1000, 1000, 64)
    g = np.ones(64, dtype=bool)
    heads = [[(s, g, 65535, 8)]]
    cmds, events, n_cycles = schedule_heads(heads, L, np.random.default_rng(1), update_delay=SCAN_LATENCY - 1)
    last_chunk = events[0]["scans"][-1][1]
    s[last_chunk * L] = 30000  # (the schedule holds views of s)  # the unique block max sits in the last scanned chunk
    rec = simulate(L, cmds, n_cycles, rng)
    ts = events[0]["update"] + UPDATE_LATENCY
    early = golden_head([(np.where(np.arange(64) // L == last_chunk, -1000, s), g, 65535, 8)])[0]["M"]
    assert rec[ts + 1]["m"] == early != golden_head(heads[0])[0]["M"]


def test_against_run_engine_trace():
    """Scores, masks and scales of a real EngineHead through the unit reproduce run_engine's p, M, l."""
    rng = np.random.default_rng(3)
    B, D, L = 3, 64, 8
    sel = np.array([int(rng.integers(1, 1 << 63)) for _ in range(B)], dtype=np.uint64)
    head = EngineHead(
        sel=sel,
        block=np.arange(B),
        score_mant=rng.integers(1 << 15, 1 << 16, B),
        score_shift=rng.integers(14, 20, B),
        qk=rng.integers(-127, 128, (B, D)).astype(np.int8),
        k=rng.integers(-8, 8, (B, 64, D)).astype(np.int8),
        v=rng.integers(-8, 8, (B, 64, D)).astype(np.int8),
        sv=rng.integers(0, 256, (B, 64, 1)).astype(np.uint8),
    )
    _, tr = run_engine(head, trace=True)
    g = head.sel_bits()
    blocks = [(tr.scores[b], g[b], int(head.score_mant[b]), int(head.score_shift[b])) for b in range(B)]
    rec, events = check_heads([blocks], L)
    for b, ev in enumerate(events):
        ts = ev["update"] + UPDATE_LATENCY
        assert rec[ts + 1]["m"] == tr.running_max[b]
        assert rec[ts]["rescale"] == min(tr.delta[b], SHIFT_CLAMP)
        assert rec[ev["exps"][-1][0] + EXP_LATENCY]["p"] == tr.p[b].tolist()
    assert rec[events[-1]["exps"][-1][0] + L_LATENCY]["l"] == tr.l
