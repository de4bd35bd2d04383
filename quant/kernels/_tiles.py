"""Compiled tile kernels (numba) that compute decode attention straight from the packed KV bytes.

A compressed chunk of 64 tokens is decoded row by row from its packed bytes (a K row: one channel's 64 tokens; a V
row: one token's channels) into the cache's exact dequantized float32 values, which are multiplied with the query
rows at once; nothing is expanded to a dense or CSR copy. Working memory: the packed cache plus one tile.

* QuantKV (KIVI int b): 16 bytes at a time, lanes unpacked with vector shifts, sign-extended, interleaved,
  converted and multiplied by the group's fp16 scale (exact: a code times an fp16 scale fits float32).
* BitmapKV, fp16 values: each 64-bit bitmap expands its tile's packed fp16 values to their positions 16 lanes at a
  time (AVX-512 `vexpandps` after `vcvtph2ps`; the portable `llvm.masked.expandload` where the CPU lacks AVX-512,
  and for the last tiles of a buffer, where a full 32-byte load could run past its end).
* BitmapKV, int values: for each 16 positions, the 16 codes from the next kept one onwards are read as one integer
  (shifted to the code's bit), split into lanes by constant shifts, converted, scaled and expanded the same way, all
  in registers (a compact buffer read back at unaligned offsets stalls on store-to-load forwarding); the walk over
  the set bits with count-trailing-zeros where a tile's scale group is narrower than the tile, and for the last
  tiles of a buffer.

One query row per head (a decode step without GQA) has its own small kernels that decode and multiply in registers,
with two accumulators (even / odd rows) so that consecutive rows' sums do not wait on each other. For fp16 bitmap
tiles a whole chunk is one intrinsic whose sums never leave the registers (64 scores; V rows of up to 128 channels)
and whose products are fused multiply-adds: the expansion already keeps the vector shuffle unit busy, and storing
and reloading the sums per tile with a separate multiply and add costs 15-25% more time. Several rows (GQA groups)
use each decoded row from L1; many rows (a GQA group wider than ROW_PATH_ROWS) decode a chunk into one tile first.

Tiles of a tiled section are stored back to back in the walk order (head, chunk, row), so the payload offset of each
tile is the running sum of the previous tiles' lengths (popcount * bits / 8, byte-padded): nothing is precomputed.
Products and sums are float32, as in the torch kernels these replace (quant.kernels.attention states the bounds).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["quant_scores", "quant_apply_v", "bitmap_scores", "bitmap_apply_v"]

TILE = 64  # tokens of a chunk = elements of a bitmap tile (quant.scheme.CHUNK_TOKENS, BITMAP_TILE)


# ---- LLVM intrinsics ----------------------------------------------------------------------------------------------
@intrinsic
def _half_to_float(typingctx, x):
    """float32 value of the fp16 bit pattern x (uint16): an exact widening."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def _popcount(typingctx, x):
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _cttz(typingctx, x):
    """Index of the lowest set bit of a non-zero uint64."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


def _host_has_avx512() -> bool:
    from llvmlite import binding

    try:
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # no feature detection on this platform
        return False


_AVX512 = _host_has_avx512()


_I16, _I64 = ir.IntType(16), ir.IntType(64)
_V16I16 = ir.VectorType(_I16, 16)
_M16 = ir.VectorType(ir.IntType(1), 16)
_V16F32 = ir.VectorType(ir.FloatType(), 16)
_V16F16 = ir.VectorType(ir.HalfType(), 16)


def _ir_expand16(builder, sp, mask16, safe: bool):
    """IR: 16 float32 lanes, lane i the next fp16 value read from the bytes at `sp` (i8*) iff bit i of the i16
    `mask16` is set, else 0. safe=True reads exactly popcount(mask) values (`llvm.masked.expandload`); safe=False
    reads 32 bytes whatever the mask (the caller guarantees they exist) and expands in registers (AVX-512
    `vexpandps`), about twice as fast on this CPU. Without AVX-512 both are the portable masked expand-load."""
    m = builder.bitcast(mask16, _M16)
    if safe or not _AVX512:
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_V16I16, [_I16.as_pointer(), _M16, _V16I16]),
            "llvm.masked.expandload.v16i16",
        )
        v = builder.call(fn, [builder.bitcast(sp, _I16.as_pointer()), m, ir.Constant(_V16I16, None)])
        return builder.fpext(builder.bitcast(v, _V16F16), _V16F32)
    ld = builder.load(builder.bitcast(sp, _V16I16.as_pointer()))
    ld.align = 1
    x = builder.fpext(builder.bitcast(ld, _V16F16), _V16F32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V16F32, [_V16F32, _V16F32, _M16]), "llvm.x86.avx512.mask.expand.v16f32"
    )
    return builder.call(fn, [x, ir.Constant(_V16F32, None), m])


def _ir_fma(builder, a, x, acc):
    """IR: acc + a * x, one rounding (`llvm.fma`: the FMA instruction where the CPU has one)."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V16F32, [_V16F32, _V16F32, _V16F32]), "llvm.fma.v16f32"
    )
    return builder.call(fn, [a, x, acc])


def _ir_vec_ptr(builder, arr, index):
    """IR: <16 x float>* to element `index` of a float32 array struct."""
    return builder.bitcast(builder.gep(arr.data, [index]), _V16F32.as_pointer())


def _ir_tile_fma16(builder, pay, off, bm, a, accs):
    """IR: accs[s] = fma(a, lanes 16s..16s+15 of the fp16 tile with bitmap `bm` (i64) packed at byte `off` of
    `pay`, accs[s]) for s < 4, accumulators being allocas (registers after mem2reg). Fast reads: the caller
    guarantees 128 bytes from `off`. Returns the next tile's offset."""
    for s in range(4):
        mm = builder.trunc(builder.lshr(bm, ir.Constant(_I64, 16 * s)), _I16)
        x = _ir_expand16(builder, builder.gep(pay.data, [off]), mm, False)
        builder.store(_ir_fma(builder, a, x, builder.load(accs[s])), accs[s])
        off = builder.add(off, builder.shl(builder.zext(builder.ctpop(mm), _I64), ir.Constant(_I64, 1)))
    return off


def _expand16(safe: bool):
    """An intrinsic: dst[doff : doff+16] = float32 of the fp16 values read consecutively from the bytes src[soff:],
    one per set bit of the low 16 bits of `mask` (lane i takes the next value iff bit i is set, else 0); the reading
    rules of `_ir_expand16`."""

    @intrinsic
    def expand(typingctx, dst, doff, src, soff, mask):
        sig = types.none(dst, doff, src, soff, mask)

        def codegen(context, builder, signature, args):
            dstv, doffv, srcv, soffv, maskv = args
            da = context.make_array(signature.args[0])(context, builder, value=dstv)
            sa = context.make_array(signature.args[2])(context, builder, value=srcv)
            out = _ir_expand16(builder, builder.gep(sa.data, [soffv]), builder.trunc(maskv, _I16), safe)
            builder.store(out, _ir_vec_ptr(builder, da, doffv)).align = 4
            return context.get_dummy_value()

        return sig, codegen

    return expand


_expand16_safe, _expand16_fast = _expand16(True), _expand16(False)


def _expand16_axpy(safe: bool):
    """An intrinsic: acc[aoff : aoff+16] += a * (the 16 lanes `_expand16` would produce), in registers (no row
    buffer between the expansion and the product). Same reading rules as `_expand16`."""

    @intrinsic
    def expand_axpy(typingctx, acc, aoff, a, src, soff, mask):
        sig = types.none(acc, aoff, types.float32, src, soff, mask)

        def codegen(context, builder, signature, args):
            accv, aoffv, av, srcv, soffv, maskv = args
            da = context.make_array(signature.args[0])(context, builder, value=accv)
            sa = context.make_array(signature.args[3])(context, builder, value=srcv)
            x = _ir_expand16(builder, builder.gep(sa.data, [soffv]), builder.trunc(maskv, _I16), safe)
            dp = _ir_vec_ptr(builder, da, aoffv)
            cur = builder.load(dp)
            cur.align = 4
            builder.store(builder.fadd(cur, builder.fmul(_splat(builder, av, _V16F32), x)), dp).align = 4
            return context.get_dummy_value()

        return sig, codegen

    return expand_axpy


_expand16_axpy_safe, _expand16_axpy_fast = _expand16_axpy(True), _expand16_axpy(False)


@intrinsic
def _bitmap_dot16(typingctx, bf, b0, nd, pay, off, qf, q0, out, o0):
    """out[o0 : o0+64] = sum over j < nd of qf[q0+j] * (the fp16 bitmap tile bf[b0+j], packed from byte `off` of
    `pay`, tiles back to back): one chunk's scores for one query row. The 64 sums stay in registers for the whole
    walk (two sets, even and odd j, so consecutive tiles' products do not wait on each other), each product added
    with one rounding (FMA). Fast reads only: the caller guarantees off + 128 * nd <= len(pay). Returns the offset
    after the last tile."""
    sig = types.intp(bf, b0, nd, pay, off, qf, q0, out, o0)

    def codegen(context, builder, signature, args):
        bfv, b0v, ndv, payv, offv, qfv, q0v, outv, o0v = args
        ba, pa, qa, oa = (context.make_array(signature.args[i])(context, builder, value=args[i]) for i in (0, 3, 5, 7))
        zero = ir.Constant(_V16F32, [0.0] * 16)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(8)]
        for a in accs:  # allocas are hoisted to the entry block: zero them here, at every call
            builder.store(zero, a)
        offp = cgutils.alloca_once_value(builder, offv)
        one = ir.Constant(ndv.type, 1)

        def tile(j, sums):
            bm = builder.load(builder.gep(ba.data, [builder.add(b0v, j)]))
            a = _splat(builder, builder.load(builder.gep(qa.data, [builder.add(q0v, j)])), _V16F32)
            builder.store(_ir_tile_fma16(builder, pa, builder.load(offp), bm, a, sums), offp)

        with cgutils.for_range(builder, builder.lshr(ndv, one)) as loop:
            j = builder.shl(loop.index, one)
            tile(j, accs[:4])
            tile(builder.add(j, one), accs[4:])
        with builder.if_then(builder.trunc(ndv, ir.IntType(1))):  # odd nd: the last tile
            tile(builder.sub(ndv, one), accs[:4])
        for s in range(4):
            total = builder.fadd(builder.load(accs[s]), builder.load(accs[4 + s]))
            builder.store(total, _ir_vec_ptr(builder, oa, builder.add(o0v, ir.Constant(o0v.type, 16 * s)))).align = 4
        return builder.load(offp)

    return sig, codegen


def _bitmap_rows16(nt: int):
    """An intrinsic for V rows of `nt` fp16 bitmap tiles (64*nt channels): acc[a0 : a0+64*nt] += sum over t < 64 of
    pf[p0+t] * (row t: tiles bf[b0 + t*nt + j], j < nt, packed from byte `off` of `pay` in that order): one chunk of
    p.V for one query row, the 64*nt sums in registers over the chunk, FMA. Fast reads only: the caller guarantees
    off + 128 * 64 * nt <= len(pay). Returns the offset after the chunk."""

    @intrinsic
    def rows(typingctx, bf, b0, pay, off, pf, p0, acc, a0):
        sig = types.intp(bf, b0, pay, off, pf, p0, acc, a0)

        def codegen(context, builder, signature, args):
            bfv, b0v, payv, offv, pfv, p0v, accv, a0v = args
            ba, pa, fa, aa = (
                context.make_array(signature.args[i])(context, builder, value=args[i]) for i in (0, 2, 4, 6)
            )
            ptrs = [_ir_vec_ptr(builder, aa, builder.add(a0v, ir.Constant(a0v.type, 16 * i))) for i in range(4 * nt)]
            accs = [cgutils.alloca_once(builder, _V16F32) for _ in range(4 * nt)]
            for p, a in zip(ptrs, accs):
                cur = builder.load(p)
                cur.align = 4
                builder.store(cur, a)
            offp = cgutils.alloca_once_value(builder, offv)
            with cgutils.for_range(builder, ir.Constant(b0v.type, TILE)) as loop:
                t = loop.index
                a = _splat(builder, builder.load(builder.gep(fa.data, [builder.add(p0v, t)])), _V16F32)
                row = builder.add(b0v, builder.mul(t, ir.Constant(t.type, nt)))
                o = builder.load(offp)
                for j in range(nt):
                    bm = builder.load(builder.gep(ba.data, [builder.add(row, ir.Constant(row.type, j))]))
                    o = _ir_tile_fma16(builder, pa, o, bm, a, accs[4 * j : 4 * j + 4])
                builder.store(o, offp)
            for p, a in zip(ptrs, accs):
                builder.store(builder.load(a), p).align = 4
            return builder.load(offp)

        return sig, codegen

    return rows


_bitmap_rows16_1, _bitmap_rows16_2 = _bitmap_rows16(1), _bitmap_rows16(2)


def _unpack16(bits, accumulate=False):
    """An intrinsic: dst[doff : doff + 128/bits] = scale * float32 of the sign-extended `bits`-bit codes packed
    LSB-first in the 16 bytes src[soff : soff+16] (one vector load, shifts, lane interleave, int -> float, one
    multiply: exact, a code times an fp16 scale fits float32's significand)."""

    @intrinsic
    def unpack(typingctx, dst, doff, src, soff, scale):
        sig = types.none(dst, doff, src, soff, types.float32)

        def codegen(context, builder, signature, args):
            dstv, doffv, srcv, soffv, scalev = args
            da = context.make_array(signature.args[0])(context, builder, value=dstv)
            sa = context.make_array(signature.args[2])(context, builder, value=srcv)
            i8 = ir.IntType(8)
            v8 = ir.VectorType(i8, 16)
            ld = builder.load(builder.bitcast(builder.gep(sa.data, [soffv]), v8.as_pointer()))
            ld.align = 1
            per = 8 // bits
            lanes = []
            for i in range(per):  # lane i: bits [i*bits, (i+1)*bits) of every byte, sign-extended
                left = 8 - bits * (i + 1)
                x = builder.shl(ld, ir.Constant(v8, [left] * 16)) if left else ld
                lanes.append(builder.ashr(x, ir.Constant(v8, [8 - bits] * 16)) if bits < 8 else x)
            while len(lanes) > 1:  # merge adjacent lanes: element per*b + i ends up from lane i, byte b
                w = lanes[0].type.count
                step = w // 16  # elements of one byte already grouped together in each vector
                mask = []
                for byte in range(16):
                    mask += [byte * step + e for e in range(step)] + [w + byte * step + e for e in range(step)]
                mty = ir.Constant(ir.VectorType(ir.IntType(32), 2 * w), mask)
                lanes = [builder.shuffle_vector(lanes[j], lanes[j + 1], mty) for j in range(0, len(lanes), 2)]
            v = lanes[0]
            n = v.type.count
            vty = ir.VectorType(ir.FloatType(), n)
            sc = builder.insert_element(ir.Constant(vty, None), scalev, ir.Constant(ir.IntType(32), 0))
            sc = builder.shuffle_vector(
                sc, ir.Constant(vty, None), ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n)
            )
            vf = builder.fmul(builder.sitofp(v, vty), sc)
            dp = builder.bitcast(builder.gep(da.data, [doffv]), ir.VectorType(ir.FloatType(), n).as_pointer())
            if accumulate:  # dst += scale * codes (scale = the caller's coefficient times the group's fp16 scale)
                cur = builder.load(dp)
                cur.align = 4
                vf = builder.fadd(cur, vf)
            builder.store(vf, dp).align = 4
            return context.get_dummy_value()

        return sig, codegen

    return unpack


_unpack16_s2, _unpack16_s4, _unpack16_s8 = _unpack16(2), _unpack16(4), _unpack16(8)
_unpack16_axpy_s2, _unpack16_axpy_s4, _unpack16_axpy_s8 = (_unpack16(2, True), _unpack16(4, True), _unpack16(8, True))


def _codes_expand(bits, axpy):
    """An intrinsic, in registers only: x = the 16 codes (`bits`-bit, LSB-first, sign-extended) that start at bit r
    (< 8) of byte src[soff] (reads up to 16 bytes from there) times `scale`, placed at the set bits of the low 16
    bits of `mask` (lane i takes the next code iff bit i is set, else 0); then dst[doff : doff+16] = x, or (axpy)
    dst[doff : doff+16] += a * x.

    The codes never pass through memory between the unpack and the expand: a buffer written by vector stores and
    read back at an unaligned offset stalls on every read (failed store-to-load forwarding), which made int bitmap
    tiles four times slower than fp16 ones."""

    @intrinsic
    def expand(typingctx, dst, doff, a, scale, src, soff, r, mask):
        sig = types.none(dst, doff, types.float32, types.float32, src, soff, r, mask)

        def codegen(context, builder, signature, args):
            dstv, doffv, av, scalev, srcv, soffv, rv, maskv = args
            da = context.make_array(signature.args[0])(context, builder, value=dstv)
            sa = context.make_array(signature.args[4])(context, builder, value=srcv)
            i32 = ir.IntType(32)
            v8 = ir.VectorType(ir.IntType(8), 16)
            f16 = ir.VectorType(ir.FloatType(), 16)
            m1 = ir.VectorType(ir.IntType(1), 16)
            v32 = ir.VectorType(i32, 16)
            sp = builder.gep(sa.data, [soffv])
            if bits == 8:
                ld = builder.load(builder.bitcast(sp, v8.as_pointer()))
                ld.align = 1
                sel = builder.sext(ld, v32)
            else:
                # the 16 codes as one integer (code r first: a scalar shift by r bits), its 32-bit words broadcast
                # to the lanes, each lane's code shifted to the top and arithmetic-shifted back (sign extension):
                # constant per-lane shifts, no per-r variants
                nw = 16 * bits // 32
                wide = ir.IntType(128 if bits == 4 else 64)
                ld = builder.load(builder.bitcast(sp, wide.as_pointer()))
                ld.align = 1
                x = builder.lshr(ld, builder.zext(builder.trunc(rv, ir.IntType(8)), wide))
                x = builder.bitcast(builder.trunc(x, ir.IntType(16 * bits)), ir.VectorType(i32, nw))
                w = builder.shuffle_vector(x, x, ir.Constant(v32, [k * bits // 32 for k in range(16)]))
                w = builder.shl(w, ir.Constant(v32, [32 - bits - (k * bits) % 32 for k in range(16)]))
                sel = builder.ashr(w, ir.Constant(v32, [32 - bits] * 16))
            x = builder.fmul(builder.sitofp(sel, f16), _splat(builder, scalev, f16))
            m = builder.bitcast(builder.trunc(maskv, ir.IntType(16)), m1)
            if _AVX512:
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(f16, [f16, f16, m1]), "llvm.x86.avx512.mask.expand.v16f32"
                )
                x = builder.call(fn, [x, ir.Constant(f16, None), m])
            else:  # portable: the masked expand-load from a stack copy
                tmp = cgutils.alloca_once(builder, f16)
                builder.store(x, tmp)
                fn = cgutils.get_or_insert_function(
                    builder.module,
                    ir.FunctionType(f16, [ir.FloatType().as_pointer(), m1, f16]),
                    "llvm.masked.expandload.v16f32",
                )
                x = builder.call(fn, [builder.bitcast(tmp, ir.FloatType().as_pointer()), m, ir.Constant(f16, None)])
            dp = builder.bitcast(builder.gep(da.data, [doffv]), f16.as_pointer())
            if axpy:
                cur = builder.load(dp)
                cur.align = 4
                x = builder.fadd(cur, builder.fmul(_splat(builder, av, f16), x))
            builder.store(x, dp).align = 4
            return context.get_dummy_value()

        return sig, codegen

    return expand


def _splat(builder, s, vty):
    v = builder.insert_element(ir.Constant(vty, None), s, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(
        v, ir.Constant(vty, None), ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)
    )


_cexp_s2, _cexp_s4, _cexp_s8 = _codes_expand(2, False), _codes_expand(4, False), _codes_expand(8, False)
_cexp_axpy_s2, _cexp_axpy_s4, _cexp_axpy_s8 = _codes_expand(2, True), _codes_expand(4, True), _codes_expand(8, True)


# ---- decoding rows ---------------------------------------------------------------------------------------------
# Hot loops index flat arrays with offsets (no slicing: a slice is a new array struct with reference counting).
# A decoded row holds the cache's exact dequantized values (scales applied while decoding), so the products with
# the queries are plain float32 axpy loops.
_LO16 = np.uint64(0xFFFF)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _scale_at(s16, s0, ng, gs, i):
    """fp16 scale of element i of a row (groups of gs elements), 1 for unscaled fp16 values (ng = 0)."""
    return np.float32(1.0) if ng == 0 else _half_to_float(s16[s0 + i // gs])


@njit(cache=True, nogil=True, inline="always")
def _bitmap_row16(bm, pay, off, dst, d0):
    """Decode one bitmap tile of fp16 values (64 positions, packed from byte `off` of `pay`) into dst[d0:d0+64], 0
    where the bit is clear. Returns the next tile's offset."""
    if off + 128 <= pay.shape[0]:  # every 32-byte read of the tile (from at most byte off + 96) is inside pay
        for j in range(4):
            m = (bm >> np.uint64(16 * j)) & _LO16
            _expand16_fast(dst, d0 + 16 * j, pay, off, m)
            off += 2 * _popcount(m)
        return off
    for j in range(4):
        m = (bm >> np.uint64(16 * j)) & _LO16
        if off + 32 <= pay.shape[0]:
            _expand16_fast(dst, d0 + 16 * j, pay, off, m)
        else:
            _expand16_safe(dst, d0 + 16 * j, pay, off, m)
        off += 2 * _popcount(m)
    return off


@njit(cache=True, nogil=True, inline="always")
def _bitmap_axpy16(bm, pay, off, a, acc, a0):
    """acc[a0 : a0+64] += a * (one fp16 bitmap tile, packed from byte `off` of `pay`). Returns the next offset."""
    if off + 128 <= pay.shape[0]:  # every 32-byte read of the tile (from at most byte off + 96) is inside pay
        for j in range(4):
            m = (bm >> np.uint64(16 * j)) & _LO16
            _expand16_axpy_fast(acc, a0 + 16 * j, a, pay, off, m)
            off += 2 * _popcount(m)
        return off
    for j in range(4):
        m = (bm >> np.uint64(16 * j)) & _LO16
        if off + 32 <= pay.shape[0]:
            _expand16_axpy_fast(acc, a0 + 16 * j, a, pay, off, m)
        else:
            _expand16_axpy_safe(acc, a0 + 16 * j, a, pay, off, m)
        off += 2 * _popcount(m)
    return off


@njit(cache=True, nogil=True, inline="always")
def _codes_expand16(bits, pay, off, i, m, sc, dst, d0):
    """dst[d0 : d0+16] = sc * (the codes number i, i+1, ... of the tile packed from byte `off`) at the set bits of
    the 16-bit mask m, 0 elsewhere (reads the 16 bytes holding code i onwards)."""
    if bits == 4:
        _cexp_s4(dst, d0, np.float32(0.0), sc, pay, off + (i >> 1), (i & 1) * 4, m)
    elif bits == 2:
        _cexp_s2(dst, d0, np.float32(0.0), sc, pay, off + (i >> 2), (i & 3) * 2, m)
    else:
        _cexp_s8(dst, d0, np.float32(0.0), sc, pay, off + i, 0, m)


@njit(cache=True, nogil=True, inline="always")
def _bitmap_axpy_int(bm, pay, off, bits, a, sc, acc, a0):
    """acc[a0 : a0+64] += a * (one int bitmap tile with one scale sc, packed from byte `off` of `pay`), decoded in
    registers. Needs off + 64 <= len(pay). Returns the next tile's offset."""
    i = 0
    for j in range(4):
        m = (bm >> np.uint64(16 * j)) & _LO16
        if bits == 4:
            _cexp_axpy_s4(acc, a0 + 16 * j, a, sc, pay, off + (i >> 1), (i & 1) * 4, m)
        elif bits == 2:
            _cexp_axpy_s2(acc, a0 + 16 * j, a, sc, pay, off + (i >> 2), (i & 3) * 2, m)
        else:
            _cexp_axpy_s8(acc, a0 + 16 * j, a, sc, pay, off + i, 0, m)
        i += _popcount(m)
    return off + (i * bits + 7) // 8


@njit(cache=True, nogil=True, inline="always")
def _bitmap_row(bm, pay, off, bits, dst, d0, s16, s0, ng, gs, e0):
    """Decode one bitmap tile (64 positions) whose packed values start at byte `off` of `pay` into dst[d0:d0+64]:
    fp16 values, or int codes times the scale of row element e0 + position; 0 where the bit is clear.
    Returns the next tile's offset."""
    if bits == 16:
        return _bitmap_row16(bm, pay, off, dst, d0)
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    k = 0
    if (ng == 0 or gs % TILE == 0) and off + 64 <= pay.shape[0]:
        # one scale for the whole tile: unpack and expand 16 positions at a time in registers
        sc = _scale_at(s16, s0, ng, gs, e0)
        i = 0
        for j in range(4):
            m = (bm >> np.uint64(16 * j)) & _LO16
            _codes_expand16(bits, pay, off, i, m, sc, dst, d0 + 16 * j)
            i += _popcount(m)
        return off + (i * bits + 7) // 8
    for i in range(TILE):
        dst[d0 + i] = 0.0
    if ng == 0 or gs % TILE == 0:  # one scale for the whole tile: no division per element
        sc = _scale_at(s16, s0, ng, gs, e0)
        while bm:
            t = _cttz(bm)
            pos = k * bits
            c = (np.int64(pay[off + (pos >> 3)]) >> (pos & 7)) & mask
            dst[d0 + t] = np.float32((c ^ half) - half) * sc
            bm &= bm - _ONE
            k += 1
        return off + (k * bits + 7) // 8
    while bm:
        t = _cttz(bm)
        pos = k * bits
        c = (np.int64(pay[off + (pos >> 3)]) >> (pos & 7)) & mask
        dst[d0 + t] = np.float32((c ^ half) - half) * _scale_at(s16, s0, ng, gs, e0 + t)
        bm &= bm - _ONE
        k += 1
    return off + (k * bits + 7) // 8


@njit(cache=True, nogil=True, inline="always")
def _codes_vec(src, b0, nb, bits, dst, d0, s16, s0, ng, gs):
    """The codes packed in nb bytes (a multiple of 16) from byte b0 of `src`, sign-extended and times their group's
    fp16 scale (constant over each 16 bytes: gs a multiple of 128 / bits) -> dst[d0 : d0 + nb*8/bits] (float32)."""
    if bits == 4:
        for b in range(0, nb, 16):
            sc = np.float32(1.0) if ng == 0 else _half_to_float(s16[s0 + (2 * b) // gs])
            _unpack16_s4(dst, d0 + 2 * b, src, b0 + b, sc)
    elif bits == 2:
        for b in range(0, nb, 16):
            sc = np.float32(1.0) if ng == 0 else _half_to_float(s16[s0 + (4 * b) // gs])
            _unpack16_s2(dst, d0 + 4 * b, src, b0 + b, sc)
    else:
        for b in range(0, nb, 16):
            sc = np.float32(1.0) if ng == 0 else _half_to_float(s16[s0 + b // gs])
            _unpack16_s8(dst, d0 + b, src, b0 + b, sc)


@njit(cache=True, nogil=True, inline="always")
def _codes_axpy(a, src, b0, nb, bits, acc, a0, s16, s0, gs):
    """acc[a0 : a0 + nb*8/bits] += a * (the codes of `_codes_vec`, scaled): decode and multiply in registers."""
    if bits == 4:
        for b in range(0, nb, 16):
            _unpack16_axpy_s4(acc, a0 + 2 * b, src, b0 + b, a * _half_to_float(s16[s0 + (2 * b) // gs]))
    elif bits == 2:
        for b in range(0, nb, 16):
            _unpack16_axpy_s2(acc, a0 + 4 * b, src, b0 + b, a * _half_to_float(s16[s0 + (4 * b) // gs]))
    else:
        for b in range(0, nb, 16):
            _unpack16_axpy_s8(acc, a0 + b, src, b0 + b, a * _half_to_float(s16[s0 + b // gs]))


@njit(cache=True, nogil=True, inline="always")
def _codes(src, b0, n, bits, dst, d0, s16, s0, ng, gs):
    """n codes packed LSB-first from byte b0 of `src`, sign-extended and times their group's fp16 scale
    -> dst[d0 : d0+n] (float32), one at a time (any group size)."""
    per = 8 // bits
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    for i in range(n):
        c = (np.int64(src[b0 + i // per]) >> ((i % per) * bits)) & mask
        dst[d0 + i] = np.float32((c ^ half) - half) * _scale_at(s16, s0, ng, gs, i)


def _vec_ok(n: int, bits: int, gs: int) -> bool:
    """Rows of n codes decode 16 bytes at a time with one scale per 16 bytes."""
    return (n * bits // 8) % 16 == 0 and gs % (128 // bits) == 0


@njit(cache=True, nogil=True, inline="always")
def _axpy(a, x, x0, y, y0, n):
    """y[y0 + i] += a * x[x0 + i], i < n."""
    for i in range(n):
        y[y0 + i] += a * x[x0 + i]


@njit(cache=True, nogil=True, inline="always")
def _any_nonzero(p, p0, n):
    for i in range(n):
        if p[p0 + i] != 0.0:
            return True
    return False


ROW_PATH_ROWS = 8  # up to this many query rows (a decode step's GQA group) each decoded row is used at once, from L1


# ---- whole-cache kernels --------------------------------------------------------------------------------------------
# K side: rows are channels of a chunk (64 tokens each); a chunk's scores for query row m are
# sum_d q[m, d] * row_d. V side: rows are tokens (D channels); out[m] += p[m, t] * row_t.
# Few query rows: each row is decoded into a 64/D-float buffer and used at once. Many rows (a wide GQA group): the
# chunk is decoded into one [D, 64] / [64, D] tile, then multiplied row by row with every query.


@njit(cache=True, nogil=True)
def _scores(kind, kq, kbm, bits, gs, ks16, ngk, q, need, out, vec):
    """Shared K-side driver. kind 0: QuantKV (kq [H, C, NB] packed codes); kind 1: BitmapKV (kbm [H, C, D, 1]
    bitmaps, kq = the tiles' payload). q [H, M, D] -> out [H, M, 64*C]."""
    h_dim, m_dim, d_dim = q.shape[0], q.shape[1], q.shape[2]
    c_dim = need.shape[0]
    tc = c_dim * TILE
    qf, of, sf = q.reshape(-1), out.reshape(-1), ks16.reshape(-1)
    kf = kq.reshape(-1)
    bf = kbm.reshape(-1)
    nb = TILE * bits // 8
    small = m_dim <= ROW_PATH_ROWS
    tile = np.empty(TILE if small else d_dim * TILE, np.float32)
    acc = np.empty(m_dim * TILE, np.float32)
    off = 0
    for h in range(h_dim):
        for c in range(c_dim):
            hc = h * c_dim + c
            if not need[c]:
                if kind == 1:
                    for d in range(d_dim):
                        off += (_popcount(bf[hc * d_dim + d]) * bits + 7) // 8
                for m in range(m_dim):
                    for t in range(TILE):
                        of[(h * m_dim + m) * tc + c * TILE + t] = 0.0
                continue
            acc[:] = 0.0
            for d in range(d_dim):
                r0 = 0 if small else d * TILE
                s0 = (hc * d_dim + d) * ngk
                if kind == 0 and vec:
                    _codes_vec(kf, (hc * d_dim + d) * nb, nb, bits, tile, r0, sf, s0, ngk, gs)
                elif kind == 0:
                    _codes(kf, (hc * d_dim + d) * nb, TILE, bits, tile, r0, sf, s0, ngk, gs)
                elif bits == 16:
                    off = _bitmap_row16(bf[hc * d_dim + d], kf, off, tile, r0)
                else:
                    off = _bitmap_row(bf[hc * d_dim + d], kf, off, bits, tile, r0, sf, s0, ngk, gs, 0)
                if small:
                    for m in range(m_dim):
                        _axpy(qf[(h * m_dim + m) * d_dim + d], tile, 0, acc, m * TILE, TILE)
            if not small:
                for m in range(m_dim):
                    for d in range(d_dim):
                        _axpy(qf[(h * m_dim + m) * d_dim + d], tile, d * TILE, acc, m * TILE, TILE)
            for m in range(m_dim):
                for t in range(TILE):
                    of[(h * m_dim + m) * tc + c * TILE + t] = acc[m * TILE + t]


@njit(cache=True, nogil=True)
def _apply(kind, vq, vbm, bits, gs, vs16, ngv, p, out, vec):
    """Shared V-side driver. kind 0: QuantKV (vq [H, C, NB]); kind 1: BitmapKV (vbm [H, C, 64, NT], vq = payload).
    p [H, M, 64*C] -> out [H, M, D] (overwritten). Chunks and tokens no query row weighs are not decoded."""
    h_dim, m_dim, d_dim = p.shape[0], p.shape[1], out.shape[2]
    tc = p.shape[2]
    c_dim = tc // TILE
    nt = vbm.shape[3] if kind == 1 else 1
    dp = nt * TILE if kind == 1 else d_dim
    pf, of, sf, vf, bf = p.reshape(-1), out.reshape(-1), vs16.reshape(-1), vq.reshape(-1), vbm.reshape(-1)
    nb = d_dim * bits // 8
    small = m_dim <= ROW_PATH_ROWS
    tile = np.empty(dp if small else TILE * dp, np.float32)
    of[:] = 0.0
    off = 0
    for h in range(h_dim):
        for c in range(c_dim):
            hc = h * c_dim + c
            used = False
            for m in range(m_dim):
                if _any_nonzero(pf, (h * m_dim + m) * tc + c * TILE, TILE):
                    used = True
                    break
            if not used:
                if kind == 1:
                    for i in range(TILE * nt):
                        off += (_popcount(bf[hc * TILE * nt + i]) * bits + 7) // 8
                continue
            for t in range(TILE):
                r0 = 0 if small else t * dp
                s0 = (hc * TILE + t) * ngv
                if kind == 0 and vec:
                    _codes_vec(vf, (hc * TILE + t) * nb, nb, bits, tile, r0, sf, s0, ngv, gs)
                elif kind == 0:
                    _codes(vf, (hc * TILE + t) * nb, d_dim, bits, tile, r0, sf, s0, ngv, gs)
                elif bits == 16:
                    for j in range(nt):
                        off = _bitmap_row16(bf[(hc * TILE + t) * nt + j], vf, off, tile, r0 + j * TILE)
                else:
                    for j in range(nt):
                        off = _bitmap_row(
                            bf[(hc * TILE + t) * nt + j], vf, off, bits, tile, r0 + j * TILE, sf, s0, ngv, gs, j * TILE
                        )
                if small:
                    for m in range(m_dim):
                        pt = pf[(h * m_dim + m) * tc + c * TILE + t]
                        if pt != 0.0:
                            _axpy(pt, tile, 0, of, (h * m_dim + m) * d_dim, d_dim)
            if not small:
                for m in range(m_dim):
                    for t in range(TILE):
                        pt = pf[(h * m_dim + m) * tc + c * TILE + t]
                        if pt != 0.0:
                            _axpy(pt, tile, t * dp, of, (h * m_dim + m) * d_dim, d_dim)


# ---- one query row (a decode step without GQA): decode and multiply in registers --------------------------------
# No row buffer between the decode and the product; two accumulators (even / odd rows) keep consecutive rows' sums
# independent. Kept apart from the general drivers so that each compiles to a small loop nest.


@njit(cache=True, nogil=True)
def _scores1_bitmap16(kbm, kpay, q, need, out):
    """_scores for fp16 BitmapKV and one query row per head: q [H, 1, D] -> out [H, 1, 64*C]."""
    h_dim, c_dim, d_dim = kbm.shape[0], kbm.shape[1], kbm.shape[2]
    bf, qf, of = kbm.reshape(-1), q.reshape(-1), out.reshape(-1)
    tc = c_dim * TILE
    n = kpay.shape[0]
    acc2 = np.empty(2 * TILE, np.float32)
    off = 0
    for h in range(h_dim):
        for c in range(c_dim):
            hc = h * c_dim + c
            if not need[c]:
                for d in range(d_dim):
                    off += 2 * _popcount(bf[hc * d_dim + d])
                for t in range(TILE):
                    of[h * tc + c * TILE + t] = 0.0
                continue
            if off + 128 * d_dim <= n:  # every tile's 32-byte reads are inside kpay
                off = _bitmap_dot16(bf, hc * d_dim, d_dim, kpay, off, qf, h * d_dim, of, h * tc + c * TILE)
                continue
            acc2[:] = 0.0  # the last chunks of the payload
            for d in range(d_dim):
                off = _bitmap_axpy16(bf[hc * d_dim + d], kpay, off, qf[h * d_dim + d], acc2, (d & 1) * TILE)
            for t in range(TILE):
                of[h * tc + c * TILE + t] = acc2[t] + acc2[TILE + t]


@njit(cache=True, nogil=True)
def _scores1_codes(kq, bits, gs, ks16, q, need, out):
    """_scores for QuantKV (16-byte vector decode) and one query row per head."""
    h_dim, c_dim, d_dim = kq.shape[0], kq.shape[1], q.shape[2]
    kf, sf, qf, of = kq.reshape(-1), ks16.reshape(-1), q.reshape(-1), out.reshape(-1)
    ngk = ks16.shape[3]
    nb = TILE * bits // 8
    tc = c_dim * TILE
    acc2 = np.empty(2 * TILE, np.float32)
    for h in range(h_dim):
        for c in range(c_dim):
            hc = h * c_dim + c
            if not need[c]:
                for t in range(TILE):
                    of[h * tc + c * TILE + t] = 0.0
                continue
            acc2[:] = 0.0
            for d in range(d_dim):
                _codes_axpy(
                    qf[h * d_dim + d],
                    kf,
                    (hc * d_dim + d) * nb,
                    nb,
                    bits,
                    acc2,
                    (d & 1) * TILE,
                    sf,
                    (hc * d_dim + d) * ngk,
                    gs,
                )
            for t in range(TILE):
                of[h * tc + c * TILE + t] = acc2[t] + acc2[TILE + t]


@njit(cache=True, nogil=True)
def _apply1_bitmap16(vbm, vpay, p, out):
    """_apply for fp16 BitmapKV and one query row per head: p [H, 1, 64*C] -> out [H, 1, D]."""
    h_dim, c_dim, nt, d_dim = vbm.shape[0], vbm.shape[1], vbm.shape[3], out.shape[2]
    bf, pf, of = vbm.reshape(-1), p.reshape(-1), out.reshape(-1)
    dp = nt * TILE
    tc = c_dim * TILE
    n = vpay.shape[0]
    acc2 = np.empty(2 * dp, np.float32)
    off = 0
    for h in range(h_dim):
        acc2[:] = 0.0
        for c in range(c_dim):
            hc = h * c_dim + c
            if not _any_nonzero(pf, h * tc + c * TILE, TILE):
                for i in range(TILE * nt):
                    off += 2 * _popcount(bf[hc * TILE * nt + i])
                continue
            if nt <= 2 and off + 128 * TILE * nt <= n:  # every tile's 32-byte reads are inside vpay
                if nt == 1:
                    off = _bitmap_rows16_1(bf, hc * TILE, vpay, off, pf, h * tc + c * TILE, acc2, 0)
                else:
                    off = _bitmap_rows16_2(bf, hc * TILE * 2, vpay, off, pf, h * tc + c * TILE, acc2, 0)
                continue
            for t in range(TILE):
                pt = pf[h * tc + c * TILE + t]
                for j in range(nt):
                    off = _bitmap_axpy16(bf[(hc * TILE + t) * nt + j], vpay, off, pt, acc2, (t & 1) * dp + j * TILE)
        for i in range(d_dim):
            of[h * d_dim + i] = acc2[i] + acc2[dp + i]


@njit(cache=True, nogil=True)
def _scores1_bitmap_int(kbm, kpay, bits, ks16, q, need, out):
    """_scores for int BitmapKV with one scale per tile (group size a multiple of 64) and one query row per head."""
    h_dim, c_dim, d_dim = kbm.shape[0], kbm.shape[1], kbm.shape[2]
    ngk = ks16.shape[3]
    bf, sf, qf, of = kbm.reshape(-1), ks16.reshape(-1), q.reshape(-1), out.reshape(-1)
    tc = c_dim * TILE
    n = kpay.shape[0]
    acc2 = np.empty(2 * TILE, np.float32)
    tile = np.empty(TILE, np.float32)
    off = 0
    for h in range(h_dim):
        for c in range(c_dim):
            hc = h * c_dim + c
            if not need[c]:
                for d in range(d_dim):
                    off += (_popcount(bf[hc * d_dim + d]) * bits + 7) // 8
                for t in range(TILE):
                    of[h * tc + c * TILE + t] = 0.0
                continue
            acc2[:] = 0.0
            for d in range(d_dim):
                r = hc * d_dim + d
                a = qf[h * d_dim + d]
                if off + 64 <= n:
                    off = _bitmap_axpy_int(bf[r], kpay, off, bits, a, _half_to_float(sf[r * ngk]), acc2, (d & 1) * TILE)
                else:  # the last tiles of the payload: no 16-byte read past its end
                    off = _bitmap_row(bf[r], kpay, off, bits, tile, 0, sf, r * ngk, ngk, TILE, 0)
                    _axpy(a, tile, 0, acc2, (d & 1) * TILE, TILE)
            for t in range(TILE):
                of[h * tc + c * TILE + t] = acc2[t] + acc2[TILE + t]


@njit(cache=True, nogil=True)
def _apply1_bitmap_int(vbm, vpay, bits, gs, vs16, p, out):
    """_apply for int BitmapKV with one scale per tile (gs a multiple of 64) and one query row per head."""
    h_dim, c_dim, nt, d_dim = vbm.shape[0], vbm.shape[1], vbm.shape[3], out.shape[2]
    ngv = vs16.shape[3]
    bf, sf, pf, of = vbm.reshape(-1), vs16.reshape(-1), p.reshape(-1), out.reshape(-1)
    dp = nt * TILE
    tc = c_dim * TILE
    n = vpay.shape[0]
    acc2 = np.empty(2 * dp, np.float32)
    tile = np.empty(TILE, np.float32)
    off = 0
    for h in range(h_dim):
        acc2[:] = 0.0
        for c in range(c_dim):
            hc = h * c_dim + c
            if not _any_nonzero(pf, h * tc + c * TILE, TILE):
                for i in range(TILE * nt):
                    off += (_popcount(bf[hc * TILE * nt + i]) * bits + 7) // 8
                continue
            for t in range(TILE):
                pt = pf[h * tc + c * TILE + t]
                s0 = (hc * TILE + t) * ngv
                for j in range(nt):
                    bm = bf[(hc * TILE + t) * nt + j]
                    a0 = (t & 1) * dp + j * TILE
                    if off + 64 <= n:
                        off = _bitmap_axpy_int(
                            bm, vpay, off, bits, pt, _half_to_float(sf[s0 + (j * TILE) // gs]), acc2, a0
                        )
                    else:  # the last tiles of the payload: no 16-byte read past its end
                        off = _bitmap_row(bm, vpay, off, bits, tile, 0, sf, s0, ngv, gs, j * TILE)
                        _axpy(pt, tile, 0, acc2, a0, TILE)
        for i in range(d_dim):
            of[h * d_dim + i] = acc2[i] + acc2[dp + i]


@njit(cache=True, nogil=True)
def _apply1_codes(vq, bits, gs, vs16, p, out):
    """_apply for QuantKV (16-byte vector decode) and one query row per head."""
    h_dim, c_dim, d_dim = vq.shape[0], vq.shape[1], out.shape[2]
    vf, sf, pf, of = vq.reshape(-1), vs16.reshape(-1), p.reshape(-1), out.reshape(-1)
    ngv = vs16.shape[3]
    nb = d_dim * bits // 8
    tc = c_dim * TILE
    acc2 = np.empty(2 * d_dim, np.float32)
    for h in range(h_dim):
        acc2[:] = 0.0
        for c in range(c_dim):
            hc = h * c_dim + c
            if not _any_nonzero(pf, h * tc + c * TILE, TILE):
                continue
            for t in range(TILE):
                pt = pf[h * tc + c * TILE + t]
                if pt != 0.0:
                    _codes_axpy(
                        pt, vf, (hc * TILE + t) * nb, nb, bits, acc2, (t & 1) * d_dim, sf, (hc * TILE + t) * ngv, gs
                    )
        for i in range(d_dim):
            of[h * d_dim + i] = acc2[i] + acc2[d_dim + i]


_NO_BITMAPS = np.zeros((0, 0, 0, 1), np.uint64)


def quant_scores(kq, ks16, bits, gs, q, need, out):
    """QuantKV scores. kq uint8 [H, C, 64*D*bits/8] (channel-major chunks), ks16 uint16 [H, C, D, G] (fp16 bits),
    q float32 [H, M, D], need bool [C] (chunks some query attends) -> out float32 [H, M, 64*C] (0 where not needed)."""
    if q.shape[1] == 1 and _vec_ok(TILE, bits, gs):
        _scores1_codes(kq, bits, gs, ks16, q, need, out)
    else:
        _scores(0, kq, _NO_BITMAPS, bits, gs, ks16, ks16.shape[3], q, need, out, _vec_ok(TILE, bits, gs))


def quant_apply_v(vq, vs16, bits, gs, p, out):
    """QuantKV p.V. vq uint8 [H, C, 64*D*bits/8] (token-major chunks), vs16 uint16 [H, C, 64, G], p float32
    [H, M, 64*C] -> out float32 [H, M, D] (overwritten)."""
    if p.shape[1] == 1 and _vec_ok(out.shape[2], bits, gs):
        _apply1_codes(vq, bits, gs, vs16, p, out)
    else:
        _apply(0, vq, _NO_BITMAPS, bits, gs, vs16, vs16.shape[3], p, out, _vec_ok(out.shape[2], bits, gs))


def bitmap_scores(kbm, kpay, bits, gs, ks16, q, need, out):
    """BitmapKV scores. kbm uint64 [H, C, D] (one tile per channel of a chunk), kpay uint8 (the tiles' packed values
    in that order), ks16 uint16 [H, C, D, G] (G = 0 for fp16 values), q float32 [H, M, D], need bool [C]
    -> out float32 [H, M, 64*C]."""
    if q.shape[1] == 1 and bits == 16:
        _scores1_bitmap16(kbm, kpay, q, need, out)
    elif q.shape[1] == 1 and gs % TILE == 0:
        _scores1_bitmap_int(kbm, kpay, bits, ks16, q, need, out)
    else:
        _scores(
            1,
            kpay,
            kbm.reshape(kbm.shape[0], kbm.shape[1], kbm.shape[2], 1),
            bits,
            gs,
            ks16,
            ks16.shape[3],
            q,
            need,
            out,
            False,
        )


def bitmap_apply_v(vbm, vpay, bits, gs, vs16, p, out):
    """BitmapKV p.V. vbm uint64 [H, C, 64, NT] (tile = 64 channels of one token), vpay uint8, vs16 uint16
    [H, C, 64, G], p float32 [H, M, 64*C] -> out float32 [H, M, D] (overwritten)."""
    if p.shape[1] == 1 and bits == 16:
        _apply1_bitmap16(vbm, vpay, p, out)
    elif p.shape[1] == 1 and gs % TILE == 0:
        _apply1_bitmap_int(vbm, vpay, bits, gs, vs16, p, out)
    else:
        _apply(1, vpay, vbm, bits, gs, vs16, vs16.shape[3], p, out, False)
