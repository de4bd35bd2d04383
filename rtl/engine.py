"""AttentionEngine: decode attention of one query head over an int4 (dense or bitmap-sparse) KV stream.

Top of the RTL (single clock domain ``sync``, synchronous reset). Streams (``amaranth.lib.stream``, payload
layouts in rtl/layouts.py, beat order in rtl/streams.py):

* ``blk``  in : :class:`~rtl.layouts.BlockHeader`, one per 64-token block sent (Λ selection, score scale);
* ``tile`` in : :class:`~rtl.layouts.TileHeader`, one per K/V tile (bitmap + folded query element / V scale);
* ``val``  in : ``lanes`` packed int4 values per beat;
* ``out``  out: :class:`~rtl.layouts.OutBeat`, D int16 outputs per head.

Every ``ready`` and the ``out`` payload/valid depend on registered state only (never on a ``valid`` of the same
cycle). Datapath and rounding: quant/fixedpoint.py (bit exact). Phases and cycle counts: rtl/cycles.py.

Submodules: Unpacker (val bus -> int4 lanes), a 2-entry tile-header FIFO, BitmapDecoder (lane -> position
assignment), MacArray (L int4 x 9-bit multipliers shared by the K and the V phase), two Accumulators (64 score
registers, D output registers), SoftmaxUnit (max, rescale, exp lanes, l), Normalizer (reciprocal, output).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from quant.fixedpoint import ACC_BITS, SCORE_BITS
from rtl.accumulator import Accumulator
from rtl.bitmap_decoder import BitmapDecoder
from rtl.layouts import (TILE, BlockHeader, OutBeat, TileHeader, check_head_dim, check_lanes, checking,
                         raw_values_shape)
from rtl.mac_array import MacArray
from rtl.normalizer import Normalizer
from rtl.softmax import SoftmaxUnit
from rtl.unpacker import Unpacker

__all__ = ["AttentionEngine"]


class AttentionEngine(wiring.Component):
    """Decode attention engine. ``head_dim``: 64 or 128; ``lanes``: MAC lanes, a power of two in [2, 64]."""

    def __init__(self, *, head_dim: int, lanes: int):
        with checking(self):
            self.head_dim = check_head_dim(head_dim)
            self.lanes = check_lanes(lanes)
        super().__init__({
            "blk": In(stream.Signature(BlockHeader)),
            "tile": In(stream.Signature(TileHeader)),
            "val": In(stream.Signature(raw_values_shape(lanes))),
            "out": Out(stream.Signature(OutBeat)),
        })

    def elaborate(self, platform):
        m = Module()
        L, D = self.lanes, self.head_dim
        G = D // TILE
        nch = TILE // L
        m.submodules.unpack = unpack = Unpacker(lanes=L)
        m.submodules.fifo = fifo = SyncFIFO(width=TileHeader.as_shape().size, depth=2)
        m.submodules.dec = dec = BitmapDecoder(lanes=L)
        m.submodules.mac = mac = MacArray(lanes=L)
        m.submodules.sacc = sacc = Accumulator(entries=TILE, width=SCORE_BITS, lanes=L)
        m.submodules.oacc = oacc = Accumulator(entries=D, width=ACC_BITS, lanes=L)
        m.submodules.smax = sm = SoftmaxUnit(lanes=L)
        m.submodules.norm = norm = Normalizer(head_dim=D)

        wiring.connect(m, wiring.flipped(self.val), unpack.i)
        wiring.connect(m, norm.o, wiring.flipped(self.out))
        m.d.comb += [
            fifo.w_data.eq(self.tile.payload.as_value()),
            fifo.w_en.eq(self.tile.valid),
            self.tile.ready.eq(fifo.w_rdy),
        ]
        hdr = Signal(TileHeader)
        m.d.comb += hdr.eq(fifo.r_data)

        # block registers
        sel = Signal(TILE)
        mant = Signal(16)
        shift = Signal(6)
        sparse = Signal()
        blast = Signal()
        head_first = Signal(init=1)
        beat = Signal(range(nch))
        kd = Signal(range(D))
        chunk = Signal(range(nch))
        vrem = Signal(TILE)
        vg = Signal(range(G))

        in_k = Signal()
        in_v = Signal()
        # tile decode (K: bitmap or sel; V: bitmap or all channels)
        ones = Const((1 << TILE) - 1, TILE)
        m.d.comb += [
            dec.bitmap.eq(Mux(sparse, hdr.bitmap, Mux(in_k, sel, ones))),
            dec.beat.eq(beat),
        ]
        need_val = dec.count != 0
        run = in_k | in_v
        go = Signal()
        m.d.comb += [
            unpack.o.ready.eq(run & fifo.r_rdy & need_val),
            go.eq(run & fifo.r_rdy & (~need_val | unpack.o.valid)),
        ]

        # V-phase token (lowest set bit of vrem) and its p' = (p * sv + 128) >> 8
        tok = Signal(range(TILE))
        for i in reversed(range(TILE)):
            with m.If(vrem[i]):
                m.d.comb += tok.eq(i)
        p_t = sm.p_all.as_value().word_select(tok, 8)
        pv = Signal(8)
        m.d.comb += pv.eq((p_t * hdr.mult + 128) >> 8)
        m.d.comb += [
            mac.a.eq(unpack.o.payload),
            mac.b.eq(Mux(in_k, hdr.mult.as_signed(), pv)),
        ]
        m.d.comb += [
            sacc.add_en.eq(in_k & go),
            sacc.hit.eq(dec.hit & sel),
            sacc.lane.eq(dec.lane),
            sacc.prod.eq(mac.prod),
            oacc.add_en.eq(in_v & go),
            oacc.prod.eq(mac.prod),
        ]
        for g in range(G):
            m.d.comb += [
                oacc.hit[g * TILE:(g + 1) * TILE].eq(Mux(vg == g, dec.hit, 0)),
                oacc.lane.as_value()[g * dec.lane.as_value().shape().width:
                                     (g + 1) * dec.lane.as_value().shape().width].eq(dec.lane.as_value()),
            ]

        # softmax unit inputs: the current chunk of L scores
        m.d.comb += [
            sm.s.eq(sacc.acc.as_value().word_select(chunk, SCORE_BITS * L)),
            sm.gate.eq(sel.word_select(chunk, L)),
            sm.mant.eq(mant),
            sm.shift.eq(shift),
            sm.chunk.eq(chunk),
            oacc.shift.eq(sm.rescale),
            norm.l.eq(sm.l),
            norm.acc.eq(oacc.acc),
        ]

        with m.FSM(init="BLK"):
            with m.State("BLK"):
                m.d.comb += self.blk.ready.eq(1)
                with m.If(self.blk.valid):
                    p = self.blk.payload
                    m.d.sync += [sel.eq(p.sel), mant.eq(p.score_mant), shift.eq(p.score_shift),
                                 sparse.eq(p.sparse), blast.eq(p.last), beat.eq(0), kd.eq(0),
                                 head_first.eq(0)]
                    m.d.comb += [sacc.clear.eq(1), sm.blk_start.eq(1)]
                    with m.If(head_first):
                        m.d.comb += [sm.head_start.eq(1), oacc.clear.eq(1)]
                    m.next = "KRUN"
            with m.State("KRUN"):
                m.d.comb += in_k.eq(1)
                with m.If(go):
                    with m.If(dec.last):
                        m.d.comb += fifo.r_en.eq(1)
                        m.d.sync += [beat.eq(0), kd.eq(kd + 1)]
                        with m.If(kd == D - 1):
                            m.d.sync += chunk.eq(0)
                            m.next = "SCAN"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("SCAN"):
                m.d.comb += sm.scan.eq(1)
                m.d.sync += chunk.eq(chunk + 1)
                with m.If(chunk == nch - 1):
                    m.d.sync += chunk.eq(0)
                    m.next = "UPD"
            with m.State("UPD"):
                m.d.comb += [sm.update.eq(1), oacc.shift_en.eq(1)]
                m.next = "EXP"
            with m.State("EXP"):
                m.d.comb += sm.exp.eq(1)
                m.d.sync += chunk.eq(chunk + 1)
                with m.If(chunk == nch - 1):
                    m.d.sync += [chunk.eq(0), vrem.eq(sel), vg.eq(0), beat.eq(0)]
                    m.next = "VRUN"
            with m.State("VRUN"):
                m.d.comb += in_v.eq(1)
                with m.If(go):
                    with m.If(dec.last):
                        m.d.comb += fifo.r_en.eq(1)
                        m.d.sync += beat.eq(0)
                        with m.If(vg == G - 1):
                            rest = vrem & (vrem - 1)
                            m.d.sync += [vg.eq(0), vrem.eq(rest)]
                            with m.If(rest == 0):
                                with m.If(blast):
                                    m.d.comb += norm.start.eq(1)
                                    m.d.sync += head_first.eq(1)
                                    m.next = "NORM"
                                with m.Else():
                                    m.next = "BLK"
                        with m.Else():
                            m.d.sync += vg.eq(vg + 1)
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("NORM"):
                with m.If(norm.done):
                    m.next = "BLK"
        return m
