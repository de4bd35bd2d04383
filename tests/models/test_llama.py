import torch

from models.llama import Llama, LlamaConfig, causal_mask
from quant.methods import KVCodec, LambdaMask

CFG = LlamaConfig(
    n_layers=2,
    d_model=32,
    n_heads=4,
    n_kv_heads=2,
    d_ff=48,
    vocab_size=50,
    rope_theta=10000.0,
    norm_eps=1e-5,
    max_seq_len=256,
)


def _model(seed=0):
    torch.manual_seed(seed)
    m = Llama(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.eval()


def test_shapes_and_tied_head():
    m = _model()
    ids = torch.randint(0, 50, (2, 7))
    assert m(ids).shape == (2, 7, 50)
    assert m.lm_head.weight is m.embed.weight


def test_causal():
    m = _model()
    ids = torch.randint(0, 50, (1, 12))
    ids2 = ids.clone()
    ids2[0, 8:] = (ids2[0, 8:] + 1) % 50
    a, b = m(ids), m(ids2)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_rope_relative_positions():
    # scores of rotated q/k depend only on the position difference
    from models.llama import apply_rope, rope_tables

    cos, sin = rope_tables(20, 8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)
    qs = apply_rope(q.expand(20, 8)[None, None], cos, sin)[0, 0]
    ks = apply_rope(k.expand(20, 8)[None, None], cos, sin)[0, 0]
    torch.testing.assert_close(qs[5] @ ks[2], qs[15] @ ks[12], rtol=1e-5, atol=1e-5)


def test_identity_codec_and_full_lambda_change_nothing():
    m = _model()
    ids = torch.randint(0, 50, (1, 100))
    ref = m(ids)
    m.set_kv_codec(KVCodec(dense_recent=8))  # bits 16, no sparsity: compressed store == dense
    torch.testing.assert_close(m(ids), ref, rtol=1e-5, atol=1e-5)
    m.set_kv_codec(None)
    m.set_attn_mask(LambdaMask(sink=0, window=100))
    torch.testing.assert_close(m(ids), ref, rtol=1e-5, atol=1e-5)


def test_lambda_changes_far_tokens_only():
    m = _model()
    ids = torch.randint(0, 50, (1, 40))
    ref = m(ids)
    m.set_attn_mask(LambdaMask(sink=2, window=10))
    out = m(ids)
    torch.testing.assert_close(out[:, :12], ref[:, :12], rtol=1e-5, atol=1e-5)  # nothing masked yet
    assert not torch.allclose(out[:, 20:], ref[:, 20:])


def test_attn_impl_hook_equivalent():
    m = _model()
    ids = torch.randint(0, 50, (1, 9))
    ref = m(ids)

    def impl(q, k, v, layer):
        rep = q.shape[1] // k.shape[1]
        return torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=causal_mask(q.shape[2])
        )

    for blk in m.blocks:
        blk.attn.attn_impl = impl
    torch.testing.assert_close(m(ids), ref, rtol=1e-5, atol=1e-5)
