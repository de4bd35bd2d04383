"""AttentionEngine: decode attention of one query head over an int4 (dense or bitmap-sparse) KV stream.

Top of the RTL (single clock domain ``sync``, synchronous reset). Streams (``amaranth.lib.stream``, payload
layouts in rtl/layouts.py, beat order in rtl/streams.py):

* ``blk``  in : :class:`~rtl.layouts.BlockHeader`, one per 64-token block sent (Λ selection, score scale);
* ``tile`` in : :class:`~rtl.layouts.TileHeader`, one per K/V tile (bitmap + folded query element / V scale);
* ``val``  in : ``lanes`` packed int4 values per beat;
* ``out``  out: :class:`~rtl.layouts.OutBeat`, D int16 outputs per head.

Every ``ready`` and the ``out`` payload/valid depend on registered state only (never on a ``valid`` of the same
cycle); input payloads are expected from registers (the header popcounts start from them). Datapath and rounding:
engine/datapath.py (bit exact). Phases and cycle counts: engine/cycles.py; pipeline depths: engine/timing.py.

Pipelined for the 100 MHz ECP5 target (measured Fmax in fpga/TIMING.md): no register-to-register path has more than a
few LUT levels plus one carry chain or one multiply.

* Tile headers: accepted -> Popcount64 (2 stages: value count -> last beat index, empty flag) -> a 4-entry FIFO.
  ``tile.ready`` is a credit (FIFO level + headers in flight < 4), so one header per cycle flows without stalls.
* Block header: accepted in BLK; its popcount(sel) runs in BLK1-BLK2 (dense K tiles stream the sel tokens).
* Beat pipeline (K and V): the controller issues a beat (tile header at the FIFO head + one values beat) in cycle t;
  S1 registers it with the one-hot of its V token; the BitmapDecoder (4 stages) turns (bitmap, beat) into hit/lane
  while the token's p is read from the softmax unit (S2-S3, a one-hot AND-OR in two stages), p' = p*sv is multiplied
  (S3 operand, S4 product registers of one DSP), rounded and muxed with the K multiplicand (S5); the ScatterNetwork
  routes the L int4 values to their positions (S5 registers them with the decoder's 4th stage; S6-S9, rtl/scatter.py),
  a MacArray of 64 lanes multiplies each position's value by the multiplicand (delayed beside the network, one copy per
  MAC_GROUP positions) into the position's product register (S10), and each Accumulator entry registers its gated
  product and adds it (visible from t + BEAT_LATENCY). Multiplying after the scatter keeps the network 4 bits wide.
* V tokens: the one-hot current/next selected token and the rest of ``sel`` are registers; advancing finds the next
  one-hot with one 64-bit carry chain. The token's p is read by the beat pipeline (S2-S3), not by the controller,
  so no path runs from the FSM state through a 64-bit one-hot mux into a p register.
* SoftmaxUnit commands and its score/gate/chunk inputs are registered; the controller waits the unit latencies of
  engine/timing.py between phases (KDRAIN, SWAIT, UWAIT, EWAIT). Normalizer as in rtl/normalizer.py.
"""

from __future__ import annotations

from functools import reduce

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from engine.params import TILE, check_head_dim, check_lanes
from engine.timing import BEAT_LATENCY, BLK_CYCLES, EWAIT_CYCLES, SCAN_LATENCY, UPDATE_LATENCY, softmax_lanes
from engine.widths import ACC_BITS, MULT_BITS, PROD_BITS, SCORE_BITS
from rtl.accumulator import ADD_LATENCY, GROUP, SHIFT_LATENCY, SHIFT_STEPS_MAX, Accumulator
from rtl.bitmap_decoder import DECODER_LATENCY, BitmapDecoder
from rtl.dsp import RegisteredMul
from rtl.layouts import (
    BlockHeader,
    OutBeat,
    TileHeader,
    checking,
    products_layout,
    raw_values_shape,
    replica,
    values_layout,
)
from rtl.mac_array import MacArray
from rtl.normalizer import ACC_READ_FROM, Normalizer
from rtl.popcount import POPCOUNT_LATENCY, Popcount64
from rtl.scatter import SCATTER_LATENCY, ScatterNetwork
from rtl.softmax import SoftmaxUnit
from rtl.unpacker import Unpacker

__all__ = ["AttentionEngine", "TILE_FIFO_DEPTH"]

TILE_FIFO_DEPTH = 4  # tile headers: FIFO entries (covers the 2 popcount stages in flight + one per cycle)
MAC_LATENCY = 1  # the position multipliers' product register after the scatter network
P_GROUP = 16  # tokens per partial AND-OR of the V token's p (S2)

# the stage counts this controller is written for (engine/timing.py is the contract; these tie it to the code)
assert POPCOUNT_LATENCY == BLK_CYCLES - 1
assert BEAT_LATENCY == 1 + DECODER_LATENCY + SCATTER_LATENCY + MAC_LATENCY + ADD_LATENCY
# the output accumulators' rescale (rescale_stb in the last UWAIT cycle) takes up to SHIFT_STEPS_MAX steps, one per
# edge from the edge SHIFT_LATENCY - 1 after it; the first V beat is issued >= 1 (EXP) + EWAIT_CYCLES cycles after
# UWAIT and adds at the edge BEAT_LATENCY - 1 after its issue, so its add comes after the last step
assert SHIFT_LATENCY - 2 + SHIFT_STEPS_MAX <= 1 + EWAIT_CYCLES + BEAT_LATENCY
# the normaliser starts the cycle after the last V beat's issue and first reads the output accumulators
# ACC_READ_FROM cycles later; that beat's add is visible BEAT_LATENCY cycles after its issue
assert ACC_READ_FROM >= BEAT_LATENCY - 1


def _lowest(x: Signal) -> tuple:
    """(one-hot lowest set bit of x, x without it): one shared carry chain x - 1."""
    dec = x - 1
    return x & ~dec[: len(x)], x & dec[: len(x)]


class AttentionEngine(wiring.Component):
    """Decode attention engine. ``head_dim``: 64 or 128; ``lanes``: MAC lanes, a power of two in [2, 64]."""

    def __init__(self, *, head_dim: int, lanes: int):
        with checking(self):
            self.head_dim = check_head_dim(head_dim)
            self.lanes = check_lanes(lanes)
        super().__init__(
            {
                "blk": In(stream.Signature(BlockHeader)),
                "tile": In(stream.Signature(TileHeader)),
                "val": In(stream.Signature(raw_values_shape(lanes))),
                "out": Out(stream.Signature(OutBeat)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        L, D = self.lanes, self.head_dim
        G = D // TILE
        nch = TILE // L  # values beats of a full tile
        E = softmax_lanes(L)  # softmax scan/exp lanes
        nsc = TILE // E  # SCAN / EXP chunks per block
        lb = L.bit_length() - 1
        m.submodules.unpack = unpack = Unpacker(lanes=L)
        m.submodules.tpop = tpop = Popcount64()
        m.submodules.spop = spop = Popcount64()
        hw = TileHeader.as_shape().size
        bw = len(Signal(range(nch)))  # a beat index within a tile (0 bits at 64 lanes: one beat per tile)
        m.submodules.fifo = fifo = SyncFIFO(width=hw + bw + 1, depth=TILE_FIFO_DEPTH)
        m.submodules.dec = dec = BitmapDecoder(lanes=L)
        m.submodules.mac = mac = MacArray(lanes=TILE)  # one multiplier per tile position, after the scatter network
        m.submodules.scat = scat = ScatterNetwork(lanes=L)
        m.submodules.sacc = sacc = Accumulator(entries=TILE, width=SCORE_BITS, shift=False)  # cleared per block
        m.submodules.oacc = oacc = Accumulator(entries=D, width=ACC_BITS)
        m.submodules.smax = sm = SoftmaxUnit(lanes=E)
        m.submodules.norm = norm = Normalizer(head_dim=D)

        wiring.connect(m, wiring.flipped(self.val), unpack.i)
        wiring.connect(m, norm.o, wiring.flipped(self.out))

        # ---- tile headers: popcount (2 stages) -> FIFO entry {header, last beat index, empty} -------------------
        t1_v, t2_v = Signal(), Signal()
        t1_h, t2_h = Signal(hw), Signal(hw)
        m.d.comb += [
            self.tile.ready.eq(fifo.level + t1_v + t2_v < TILE_FIFO_DEPTH),
            tpop.x.eq(self.tile.payload.bitmap),
        ]
        m.d.sync += [
            t1_v.eq(self.tile.valid & self.tile.ready),
            t1_h.eq(self.tile.payload.as_value()),
            t2_v.eq(t1_v),
            t2_h.eq(t1_h),
        ]

        def last_beat(count):  # index of a tile's last values beat: max(0, ceil(count / L) - 1)
            return Mux(count == 0, 0, (count - 1) >> lb)[:bw]

        m.d.comb += [
            fifo.w_data.eq(Cat(t2_h, last_beat(tpop.count), tpop.count == 0)),
            fifo.w_en.eq(t2_v),
        ]
        hdr = Signal(TileHeader)
        m.d.comb += hdr.eq(fifo.r_data[:hw])
        h_lastbeat, h_empty = fifo.r_data[hw : hw + bw], fifo.r_data[hw + bw]

        # ---- block registers --------------------------------------------------------------------------------------
        sel = Signal(TILE)
        mant = Signal(16)
        shift = Signal(6)
        sparse = Signal()
        blast = Signal()
        head_first = Signal(init=1)
        # a dense tile's bitmap / last beat index / empty flag in the current phase (K: the sel tokens, V: all 64
        # channels), so the issue stage muxes on `sparse` only and no FSM state decode lies on its paths
        dense_bm = Signal(TILE)
        dense_last = Signal(range(nch))
        dense_empty = Signal()
        beat = Signal(range(nch))
        kd = Signal(range(D))
        vg = Signal(range(G))
        chunk = Signal(range(nsc))
        # copies of chunk (replica counters, one per 4 softmax lanes) select the score words, so that no one register
        # drives the 20 * E mux LUTs of that select
        chunk_sel = [replica(range(nsc), name=f"chunk_sel{i}") for i in range(max(1, E // 4))]
        chunks = [chunk] + chunk_sel  # every copy counts like chunk
        wait = Signal(4)
        m.d.comb += spop.x.eq(self.blk.payload.sel)

        # ---- issue stage ------------------------------------------------------------------------------------------
        in_k, in_v = Signal(), Signal()  # registers: the FSM is in KRUN / VRUN (set on entry, cleared on exit)
        eff_bm = Signal(TILE)
        eff_last = Signal(range(nch))
        eff_empty = Signal()
        # the issue control reads its own copy of `sparse` (the other drives the 64 bitmap muxes by S1), so that the
        # go logic is not at the end of the bitmap muxes' long net
        sparse_c = replica(name="sparse_c")
        m.d.comb += [
            eff_bm.eq(Mux(sparse, hdr.bitmap, dense_bm)),
            eff_last.eq(Mux(sparse_c, h_lastbeat, dense_last)),
            eff_empty.eq(Mux(sparse_c, h_empty, dense_empty)),
        ]
        run = in_k | in_v
        go = Signal()
        tlast = Signal()
        m.d.comb += [
            unpack.o.ready.eq(run & fifo.r_rdy & ~eff_empty),
            go.eq(run & fifo.r_rdy & (eff_empty | unpack.o.valid)),
            tlast.eq(beat == eff_last),
        ]

        # ---- V token sequencer: one-hot current/next selected token, rest of sel -----------------------------------
        cur_iso, nxt_iso, rest = Signal(TILE), Signal(TILE), Signal(TILE)
        nxt_zero = Signal()
        rest_low, rest_rest = _lowest(rest)
        adv = Signal()  # V phase: the current token's last tile beat is issued
        vlast = Signal()  # register: in VRUN at the token's last V group (in_v & vg == G - 1), kept with vg and in_v
        m.d.comb += adv.eq(vlast & go & tlast)

        # ---- beat pipeline S1..S10 --------------------------------------------------------------------------------
        # S1 registers the beat with the one-hot of its V token; S2-S3 read that token's p (AND-OR over p_all, no
        # controller state on the path); S4 p * sv; S5 rounds p' and picks the multiplicand and registers the values,
        # with the decoder's fourth stage; S6..S9 the scatter network; S10 the 64 position products
        s1_v, s1_k, s1_bm, s1_beat = Signal(), Signal(), Signal(TILE), Signal(range(nch))
        s1_vals, s1_mult, s1_iso, s1_vg = Signal(values_layout(L)), Signal(8), Signal(TILE), Signal(range(G))
        m.d.sync += [
            s1_v.eq(go),
            s1_k.eq(in_k),
            s1_bm.eq(eff_bm),
            s1_beat.eq(beat),
            s1_vals.eq(unpack.o.payload),
            s1_mult.eq(hdr.mult),
            s1_iso.eq(cur_iso),
            s1_vg.eq(vg),
        ]
        m.d.comb += [dec.bitmap.eq(s1_bm), dec.beat.eq(s1_beat)]
        # p: S2 ORs each group of P_GROUP tokens' (p & one-hot) into a partial register, S3 ORs the partials into the
        # operand register of the p * sv multiplier (RegisteredMul), whose product register is S4 (one 64-token AND-OR
        # in one stage would be 4 LUT levels behind the one-hot); S5 rounds p' and picks the multiplicand. (The
        # multiplicand is first used in S9, so these stages cost no cycle.)
        s2_v, s2_k, s2_vals, s2_mult, s2_vg = Signal(), Signal(), Signal(values_layout(L)), Signal(8), Signal(range(G))
        s2_pp = [Signal(8, name=f"s2_pp{q}") for q in range(TILE // P_GROUP)]
        m.d.sync += [s2_v.eq(s1_v), s2_k.eq(s1_k), s2_vals.eq(s1_vals), s2_mult.eq(s1_mult), s2_vg.eq(s1_vg)]
        m.d.sync += [
            pp.eq(
                reduce(
                    lambda a, b: a | b,
                    [sm.p_all[i] & s1_iso[i].replicate(8) for i in range(q * P_GROUP, (q + 1) * P_GROUP)],
                )
            )
            for q, pp in enumerate(s2_pp)
        ]
        m.submodules.pv_mul = pv_mul = RegisteredMul(unsigned(8), unsigned(8))  # S3 operands, S4 product
        m.d.comb += [
            pv_mul.a.eq(reduce(lambda a, b: a | b, s2_pp)),
            pv_mul.a_en.eq(1),
            pv_mul.b.eq(s2_mult),
            pv_mul.b_en.eq(1),
        ]
        s3_v, s3_k, s3_vals, s3_mult, s3_vg = Signal(), Signal(), Signal(values_layout(L)), Signal(8), Signal(range(G))
        m.d.sync += [s3_v.eq(s2_v), s3_k.eq(s2_k), s3_vals.eq(s2_vals), s3_mult.eq(s2_mult), s3_vg.eq(s2_vg)]
        s4_v, s4_k, s4_vals, s4_mult, s4_vg = Signal(), Signal(), Signal(values_layout(L)), Signal(8), Signal(range(G))
        m.d.sync += [s4_v.eq(s3_v), s4_k.eq(s3_k), s4_vals.eq(s3_vals), s4_mult.eq(s3_mult), s4_vg.eq(s3_vg)]
        s5_v, s5_k, s5_vg = Signal(), Signal(), Signal(range(G))
        s5_vals = Signal(values_layout(L))
        s5_b = Signal(MULT_BITS)
        m.d.sync += [
            s5_v.eq(s4_v),
            s5_k.eq(s4_k),
            s5_vg.eq(s4_vg),
            s5_vals.eq(s4_vals),
            s5_b.eq(Mux(s4_k, s4_mult.as_signed(), ((pv_mul.p + 128) >> 8)[:8])),
        ]
        m.d.comb += [scat.hit.eq(dec.hit), scat.lane.eq(dec.lane), scat.data.eq(s5_vals)]
        # the multiplicand waits beside the network (S6..S8) and reaches the position multipliers from one register
        # copy per MAC_GROUP positions (S9)
        b = s5_b
        for n in range(SCATTER_LATENCY - 1):
            y = Signal(MULT_BITS, name=f"s{6 + n}_b")
            m.d.sync += y.eq(b)
            b = y
        s9 = 5 + SCATTER_LATENCY
        b_copies = [replica(MULT_BITS, name=f"s{s9}_b{c}") for c in range(mac.copies)]
        m.d.sync += [c.eq(b) for c in b_copies]
        m.d.comb += [mac.a.eq(scat.val)] + [mac.b[c].eq(x.as_signed()) for c, x in enumerate(b_copies)]
        s10 = s9 + MAC_LATENCY
        prod = Signal(products_layout(TILE), name=f"s{s10}_prod")
        hit = Signal(TILE, name=f"s{s10}_hit")
        m.d.sync += [prod.eq(mac.prod), hit.eq(scat.hit_o)]
        # S6..S9: the beat's kind and V group travel beside the scatter network; S10 decodes them into the accumulators'
        # add enables, one register copy per accumulator GROUP (score: K beats; output group g: V beats of V group g)
        x_v, x_k, x_vg = s5_v, s5_k, s5_vg
        for n in range(SCATTER_LATENCY + MAC_LATENCY - 1):
            y_v, y_k = Signal(name=f"s{6 + n}_v"), Signal(name=f"s{6 + n}_k")
            y_vg = Signal(range(G), name=f"s{6 + n}_vg")
            m.d.sync += [y_v.eq(x_v), y_k.eq(x_k), y_vg.eq(x_vg)]
            x_v, x_k, x_vg = y_v, y_k, y_vg
        k_add = [replica(name=f"s{s10}_kadd{c}") for c in range(TILE // GROUP)]
        v_add = [replica(name=f"s{s10}_vadd{c}") for c in range(D // GROUP)]
        m.d.sync += [a.eq(x_v & x_k) for a in k_add]
        m.d.sync += [a.eq(x_v & ~x_k & (x_vg == c * GROUP // TILE)) for c, a in enumerate(v_add)]
        vw = PROD_BITS * TILE
        m.d.comb += [
            sacc.add_en.eq(Cat(k_add)),
            sacc.hit.eq(hit & sel),
            sacc.val.eq(prod),
            oacc.add_en.eq(Cat(v_add)),
        ]
        for g in range(G):
            m.d.comb += [
                oacc.hit[g * TILE : (g + 1) * TILE].eq(hit),
                oacc.val.as_value()[g * vw : (g + 1) * vw].eq(prod.as_value()),
            ]

        # ---- softmax unit: registered commands and inputs ---------------------------------------------------------
        scan_req, exp_req, upd_req = Signal(), Signal(), Signal()
        s_r = Signal(SCORE_BITS * E)
        gate_r = Signal(E)
        chunk_r = Signal(range(nsc))
        scan_r, exp_r, upd_r = Signal(), Signal(), Signal()
        m.d.sync += [
            scan_r.eq(scan_req),
            exp_r.eq(exp_req),
            upd_r.eq(upd_req),
            s_r.eq(
                Cat(
                    *[
                        Cat(*[sacc.acc[c * E + i] for c in range(nsc)]).word_select(
                            chunk_sel[i * len(chunk_sel) // E], SCORE_BITS
                        )
                        for i in range(E)
                    ]
                )
            ),  # acc[chunk * E + i]
            gate_r.eq(sel.word_select(chunk, E)),
            chunk_r.eq(chunk),
        ]
        m.d.comb += [
            sm.scan.eq(scan_r),
            sm.exp.eq(exp_r),
            sm.update.eq(upd_r),
            sm.s.as_value().eq(s_r),
            sm.gate.eq(gate_r),
            sm.chunk.eq(chunk_r),
            sm.mant.eq(mant),
            sm.shift.eq(shift),
            oacc.shift_en.eq(sm.rescale_stb),
            oacc.shift.eq(sm.rescale),
            norm.l.eq(sm.l),
            norm.acc.eq(oacc.acc),
        ]
        norm_start = Signal()
        # BLK1's strobes come from registers set when the block header is accepted (they fan out to every
        # accumulator group; decoding them from the FSM state put state -> head_first -> clear on a long net)
        blk_stb, head_stb = Signal(), Signal()
        m.d.sync += [norm_start.eq(0), blk_stb.eq(0), head_stb.eq(0)]
        m.d.comb += [
            norm.start.eq(norm_start),
            sacc.clear.eq(blk_stb),
            sm.blk_start.eq(blk_stb),
            oacc.clear.eq(head_stb),
            sm.head_start.eq(head_stb),
        ]

        with m.FSM(init="BLK"):
            with m.State("BLK"):
                m.d.comb += self.blk.ready.eq(1)
                with m.If(self.blk.valid):
                    p = self.blk.payload
                    m.d.sync += [
                        sel.eq(p.sel),
                        mant.eq(p.score_mant),
                        shift.eq(p.score_shift),
                        sparse.eq(p.sparse),
                        sparse_c.eq(p.sparse),
                        blast.eq(p.last),
                        beat.eq(0),
                        kd.eq(0),
                        dense_bm.eq(p.sel),
                        blk_stb.eq(1),
                        head_stb.eq(head_first),
                    ]
                    m.next = "BLK1"
            with m.State("BLK1"):  # blk_stb (and head_stb on a head's first block): clear, start the softmax block
                sel_low, sel_rest = _lowest(sel)
                m.d.sync += [cur_iso.eq(sel_low), rest.eq(sel_rest), head_first.eq(0)]
                m.next = "BLK2"
            with m.State("BLK2"):  # spop.count = popcount(sel) now
                m.d.sync += [
                    dense_last.eq(last_beat(spop.count)),
                    dense_empty.eq(spop.count == 0),
                    in_k.eq(1),
                    nxt_iso.eq(rest_low),
                    rest.eq(rest_rest),
                    nxt_zero.eq(rest == 0),
                ]
                m.next = "KRUN"
            with m.State("KRUN"):
                with m.If(go):
                    with m.If(tlast):
                        m.d.comb += fifo.r_en.eq(1)
                        m.d.sync += [beat.eq(0), kd.eq(kd + 1)]
                        with m.If(kd == D - 1):
                            m.d.sync += [wait.eq(BEAT_LATENCY - 2), in_k.eq(0)]
                            m.next = "KDRAIN"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("KDRAIN"):  # the last K beats reach the score accumulators
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += [c.eq(0) for c in chunks]
                    m.next = "SCAN"
            with m.State("SCAN"):
                m.d.comb += scan_req.eq(1)
                m.d.sync += [c.eq(c + 1) for c in chunks]
                with m.If(chunk == nsc - 1):
                    m.d.sync += [c.eq(0) for c in chunks] + [wait.eq(SCAN_LATENCY - 2)]
                    m.next = "SWAIT"
            with m.State("SWAIT"):  # the last scan reaches the block max
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "UPD"
            with m.State("UPD"):
                m.d.comb += upd_req.eq(1)
                m.d.sync += wait.eq(UPDATE_LATENCY - 1)
                m.next = "UWAIT"
            with m.State("UWAIT"):  # the new M reaches the exp lanes (rescale_stb shifts oacc meanwhile)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "EXP"
            with m.State("EXP"):
                m.d.comb += exp_req.eq(1)
                m.d.sync += [c.eq(c + 1) for c in chunks]
                with m.If(chunk == nsc - 1):
                    m.d.sync += [c.eq(0) for c in chunks] + [wait.eq(EWAIT_CYCLES - 1)]
                    m.next = "EWAIT"
            with m.State("EWAIT"):  # p_all and l land (engine/timing.py: EWAIT_CYCLES)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += [
                        beat.eq(0),
                        vg.eq(0),
                        in_v.eq(1),
                        vlast.eq(G == 1),
                        dense_bm.eq((1 << TILE) - 1),
                        dense_last.eq(nch - 1),
                        dense_empty.eq(0),
                    ]
                    m.next = "VRUN"
            with m.State("VRUN"):
                with m.If(go):
                    with m.If(tlast):
                        m.d.comb += fifo.r_en.eq(1)
                        m.d.sync += beat.eq(0)
                        with m.If(vlast):  # = adv; the token registers advance outside the FSM (below)
                            m.d.sync += [vg.eq(0), vlast.eq(G == 1)]
                            with m.If(nxt_zero):
                                m.d.sync += [in_v.eq(0), vlast.eq(0)]
                                with m.If(blast):
                                    m.d.sync += [norm_start.eq(1), head_first.eq(1)]
                                    m.next = "NORM"
                                with m.Else():
                                    m.next = "BLK"
                        with m.Else():
                            m.d.sync += [vg.eq(vg + 1), vlast.eq(vg == G - 2 if G > 1 else 0)]
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("NORM"):
                with m.If(norm.done):
                    m.next = "BLK"
        # the V token advance, decoded from registers and `go` only (no FSM state on the clock enable of the 3 x 64
        # token registers; vlast implies VRUN)
        with m.If(adv):
            m.d.sync += [cur_iso.eq(nxt_iso), nxt_iso.eq(rest_low), rest.eq(rest_rest), nxt_zero.eq(rest == 0)]
        return m
