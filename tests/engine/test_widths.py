"""Tests of engine/widths.py: the widths hold every value the datapath can produce (engine/datapath.py)."""

import math

from engine.params import MAX_CONTEXT, TILE
from engine.widths import (
    ACC_BITS,
    EXP2_TABLE,
    EXP_SHIFT_MAX,
    L_BITS,
    MULT_BITS,
    P_BITS,
    P_MAX,
    PROD_BITS,
    QK_BITS,
    RECIP_BITS,
    RECIP_SHIFT,
    SCORE_BITS,
    SV_BITS,
    VALUE_BITS,
)


def test_products_and_scores_fit():
    vmin, qmin = -(1 << (VALUE_BITS - 1)), -(1 << (QK_BITS - 1))
    assert vmin * qmin < (1 << (PROD_BITS - 1)) and vmin * ((1 << SV_BITS) - 1) >= -(1 << (PROD_BITS - 1))
    assert (1 << SV_BITS) - 1 < (1 << (MULT_BITS - 1))  # a uint8 p' is a positive signed-9 multiplicand
    assert 128 * 8 * 128 < (1 << (SCORE_BITS - 1))  # |s| <= head_dim * |k| * |qk|


def test_accumulators_fit_the_longest_context():
    assert P_MAX * MAX_CONTEXT < (1 << L_BITS)
    assert 2032 * MAX_CONTEXT < (1 << (ACC_BITS - 1))  # |p' * v| summed over the context, per channel
    assert MAX_CONTEXT % TILE == 0


def test_exp_table_and_reciprocal():
    assert len(EXP2_TABLE) == 32 and max(EXP2_TABLE) < (1 << P_BITS) and min(EXP2_TABLE) >= 128
    assert (max(EXP2_TABLE) + (1 << (EXP_SHIFT_MAX - 1))) >> EXP_SHIFT_MAX == 0  # a larger shift changes nothing
    assert math.floor(2**RECIP_SHIFT / 128) < (1 << RECIP_BITS)  # l >= 128: the quotient fits
