"""Bit widths and fixed-point formats of the attention engine's datapath (engine/datapath.py defines what they
hold; the RTL sizes its registers from them).

Widths: q.k score ``s`` signed 20; scaled score ``X`` signed 37; running max ``M`` signed 30; p and p' unsigned 8;
``l`` unsigned 28; output accumulators signed 32; reciprocal ``Q`` unsigned 38; output ``o`` signed 16. A context of at
most MAX_CONTEXT (engine/params.py) tokens keeps every accumulator exact (``|acc| <= 2032 * 2^20 < 2^31``,
``l <= 255 * 2^20 < 2^28``).
"""

from __future__ import annotations

import math

__all__ = [
    "VALUE_BITS",
    "QK_BITS",
    "SV_BITS",
    "MULT_BITS",
    "PROD_BITS",
    "SCORE_BITS",
    "MANT_BITS",
    "MAX_SHIFT",
    "SCALED_BITS",
    "EXP_FRAC_BITS",
    "EXP_TABLE_BITS",
    "EXP_SHIFT_MAX",
    "P_BITS",
    "P_MAX",
    "EXP2_TABLE",
    "SHIFT_CLAMP",
    "L_BITS",
    "ACC_BITS",
    "RECIP_SHIFT",
    "RECIP_BITS",
    "OUT_BITS",
    "OUT_FRAC_BITS",
]

VALUE_BITS = 4  # K and V values: int4
QK_BITS = 8  # the folded query element: int8
SV_BITS = 8  # the V-tile scale: uint8
MULT_BITS = 9  # lane multiplicand: int8 (K) or uint8 (V) as signed 9
PROD_BITS = 13  # int4 x signed 9
SCORE_BITS = 20  # q.k score: |s| <= 128 * 8 * 128 = 2^17
MANT_BITS = 16  # score-scale mantissa, normalised to [2^15, 2^16)
MAX_SHIFT = 63  # score-scale shift (6 bits)
SCALED_BITS = 37  # X = (s * mant) >> shift
EXP_FRAC_BITS = 8  # F: fractional bits of the log2-domain score X
EXP_TABLE_BITS = 5  # fraction bits that index the exp2 table (32 entries)
P_BITS = 8  # p and p' = (p * sv + 2^7) >> 8 are uint8
P_MAX = 255  # p is uint8; 255 represents 1.0 (the scale cancels in the normalisation)
#: exp2 integer shifts are clamped here: the largest table entry (252) shifted by 9 with rounding is 0
EXP_SHIFT_MAX = 9
EXP2_TABLE = tuple(
    int(math.floor(P_MAX * 2.0 ** (-(r + 0.5) / (1 << EXP_TABLE_BITS)) + 0.5)) for r in range(1 << EXP_TABLE_BITS)
)
SHIFT_CLAMP = 31  # rescale shifts are clamped here (acc is 32-bit signed, l 28-bit unsigned)
L_BITS = 28  # softmax denominator l
ACC_BITS = 32  # output accumulators
RECIP_SHIFT = 44  # Q = floor(2^RECIP_SHIFT / l)
RECIP_BITS = 38  # quotient bits of the restoring division (l >= 128 => Q < 2^37)
OUT_BITS = 16  # output o: int16
OUT_FRAC_BITS = 8  # OF: fractional bits of the int16 output
