import numpy as np
import pytest
import torch

from base.errors import SpecError
from quant.artifact import load_artifact
from quant.evaluate import model_from_artifact, perplexity
from quant.scheme import CompressionScheme, get_scheme

# Packed path (reference kernels on the packed formats) vs fake quantization (torch), both run in float64 so that
# no int8 activation code flips across a rounding boundary because of float32 noise (one flip moves a logit by
# ~0.5 with SmolLM2's outlier activations). Same stored integers, same rules. The decode-attention kernels compute
# in float32 on the exact dequantized cache values, so the logits agree to float32 noise (measured: identical for
# accllm and mustafar70, max 8.4e-5 / mean 2e-6 for the int4 bitmap KV). Stated tolerance: max |logit difference|
# <= 1e-3, mean <= 1e-5 (logits span ~30).
MAX_ABS, MEAN_ABS = 1e-3, 1e-5
T = 100  # >= 64 + 32 tokens: the oldest chunk is compressed for the last queries

N_LAYERS = 1


def _window(tok):
    from models.data import eval_windows, read_wikitext2

    return eval_windows(tok, read_wikitext2("test", 3000), seq_len=T)[0]


@pytest.mark.parametrize(
    "scheme",
    [
        get_scheme("accllm").replace(attn_window=100),  # 2:4 W2 A8 KV4 Λ
        CompressionScheme(
            name="sp-kvbm",
            weight_bits=4,
            weight_group_size=64,
            weight_pruning="unstructured",
            weight_sparsity=0.5,
            kv_sparsity=0.7,
            kv_bits=4,
            kv_dense_recent=32,
        ),  # bitmap W, int4 bitmap KV
        get_scheme("mustafar70"),  # fp16 weights, fp16-valued bitmap KV
    ],
    ids=["accllm", "bitmapW4-kvbitmap4", "mustafar70"],
)
def test_packed_and_fake_paths_agree(tmp_path, scheme, compress_smollm2):
    from models.smollm import load_tokenizer

    path, _ = compress_smollm2(tmp_path / "a", scheme, N_LAYERS)
    art = load_artifact(path)
    w = torch.tensor([_window(load_tokenizer("smollm2-135m"))])
    with torch.no_grad():
        a = model_from_artifact(art, "packed").double()(w)[0]
        b = model_from_artifact(art, "fake").double()(w)[0]
    d = (a - b).abs()
    assert float(d.max()) <= MAX_ABS and float(d.mean()) <= MEAN_ABS, (float(d.max()), float(d.mean()))
    # and the compression is visible: the fake path differs from the same model without KV compression
    fake = model_from_artifact(art, "fake").double()
    fake.set_kv_codec(None)
    fake.set_attn_mask(None)
    if scheme.kv_compressed:
        with torch.no_grad():
            assert float((fake(w)[0] - b).abs().max()) > 1e-2


def test_24_kernel_equals_dense_conversion():
    from quant.evaluate import _packed_linear
    from quant.formats import Sparse24Weight
    from quant.kernels import w_a8_gemm

    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 64))
    sw = Sparse24Weight.from_float(w, bits=2, group_size=32)
    x = rng.standard_normal((5, 64))
    ref = w_a8_gemm(x, sw)  # the kernel's own 2:4 gather path
    got = _packed_linear(sw, 8)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, ref)


def test_unknown_path(tmp_path):
    with pytest.raises(SpecError, match="packed"):
        model_from_artifact(None, "int3")


def test_perplexity_result():
    from models.smollm import load_smollm2

    m, tok = load_smollm2(fresh=False)
    r = perplexity(m, [_window(tok)[:65]])
    assert r.n_tokens == 64 and r.n_windows == 1 and 1 < r.ppl < 1000


def test_packed_path_memory_flat_across_windows(tiny_checkpoint, tmp_path, monkeypatch):
    """Evaluating window after window through the packed path keeps no per-window state: traced memory after the
    third window equals that after the first (within 256 KiB). The probe itself is checked: keeping each layer's
    attention output alive (as a plan cache that never frees would) shows up as growth."""
    import tracemalloc

    import quant.kernels as kernels
    from cli import main

    out = tmp_path / "art"
    assert (
        main(
            [
                "compress",
                "--model",
                str(tiny_checkpoint),
                "--scheme",
                "mustafar70",
                "--out",
                str(out),
                "--calib-windows",
                "2",
                "--calib-len",
                "128",
            ]
        )
        == 0
    )
    model = model_from_artifact(load_artifact(out), "packed")
    rng = np.random.default_rng(0)
    wins = [[1, *rng.integers(3, 384, 256).tolist()] for _ in range(3)]

    def growth():
        perplexity(model, wins[:1])  # warm: kernels compiled, allocator pools filled
        tracemalloc.start()
        try:
            perplexity(model, wins[:1])
            first = tracemalloc.get_traced_memory()[0]
            perplexity(model, wins[1:])
            return tracemalloc.get_traced_memory()[0] - first
        finally:
            tracemalloc.stop()

    assert growth() < 256 * 1024
    kept = []
    real = kernels.window_attention

    def leaky(*a, **k):
        kept.append(real(*a, **k))
        return kept[-1]

    monkeypatch.setattr(kernels, "window_attention", leaky)
    model = model_from_artifact(load_artifact(out), "packed")
    assert growth() > 2 * 256 * 1024  # 2 layers x 2 windows x [2 heads, 257 tokens, 64] float32 = 526 KiB kept
