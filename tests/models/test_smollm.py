import math

import pytest
import torch

from base.errors import SpecError
from models.data import eval_windows, read_wikitext2
from models.smollm import load_smollm2, load_weights
from quant.evaluate import perplexity

# shared/data/README.md: 29.77 on the first 20 KB of WikiText-2 test, 512-token windows, BOS first, fp32
# dequantized weights. Our protocol (models.data.eval_windows: BOS + 512 text tokens per window, 20480 bytes)
# gives 30.10 here; the README's exact windowing (BOS counted in the 512 or not, partial last window) is not
# stated, and the variants we tried span 28.6-30.5. Tolerance: 3% of the reference.
REFERENCE_PPL = 29.77
TOLERANCE = 0.03


def test_loads_with_spec_dimensions():
    from models.spec import get_model

    m, tok = load_smollm2(fresh=False)
    spec = get_model("smollm2-135m")
    cfg = m.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff, cfg.vocab_size) == (
        spec.num_layers,
        spec.hidden_size,
        spec.num_heads,
        spec.num_kv_heads,
        spec.ffn_hidden_size,
        spec.vocab_size,
    )
    assert cfg.rope_theta == spec.rope_theta and cfg.tie_embeddings
    n = sum(p.numel() for p in m.parameters())
    assert abs(n - 134.5e6) < 0.1e6  # shared/data/README.md: 134.5 M parameters


def test_unknown_model_has_no_weights():
    with pytest.raises(SpecError, match="smollm2-135m"):
        load_weights("llama-2-7b")


def test_greedy_continuation_is_sensible():
    m, tok = load_smollm2(fresh=False)
    ids = tok.encode("The capital of France is", bos=True)
    with torch.no_grad():
        nxt = int(m(torch.tensor([ids]))[0, -1].argmax())
    assert tok.decode([nxt]).strip() == "Paris"


@pytest.mark.slow
def test_reference_perplexity_wikitext2_20kb():
    m, tok = load_smollm2(fresh=False)
    wins = eval_windows(tok, read_wikitext2("test", max_bytes=20480), seq_len=512)
    r = perplexity(m, wins)
    assert r.n_windows == 10
    assert math.isclose(r.ppl, REFERENCE_PPL, rel_tol=TOLERANCE), r.ppl
