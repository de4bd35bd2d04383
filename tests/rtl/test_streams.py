import numpy as np

from engine.cycles import tile_value_counts
from engine.workloads import HeadSpec, random_head
from rtl.streams import decode_output, encode_head


def test_beat_counts_follow_tile_counts():
    for spec in (
        HeadSpec(seed=1, context=200, sink=2, window=30),
        HeadSpec(seed=2, head_dim=128, context=130, k_sparsity=0.7, v_sparsity=0.3),
    ):
        h = random_head(spec)
        L = 8
        s = encode_head(h, L)
        nk, nv = tile_value_counts(h)
        assert len(s.blk) == h.n_blocks
        assert len(s.tile) == h.n_blocks * h.head_dim + int(h.sel_bits().sum()) * (h.head_dim // 64)
        assert len(s.val) == int((-(-nk // L)).sum() + (-(-nv // L)).sum())
        assert (s.blk[-1] >> 87) & 1 and not any((b >> 87) & 1 for b in s.blk[:-1])


def test_first_k_tile_values_and_nibble_order():
    h = random_head(HeadSpec(seed=3, context=5))
    s = encode_head(h, 2)
    # dense head: tile (0, channel 0) streams tokens 0..4 of channel 0, two per beat, element 0 low nibble
    vals = [int(x) & 0xF for x in h.k[0, :5, 0]]
    assert s.val[:3] == [vals[0] | vals[1] << 4, vals[2] | vals[3] << 4, vals[4]]
    assert s.tile[0] >> 64 == int(h.qk[0, 0]) & 0xFF


def test_decode_output():
    d, last = decode_output([0xFFFF, 0x10005])
    assert d.tolist() == [-1, 5] and last == [0, 1]
    assert np.issubdtype(d.dtype, np.integer)
