import numpy as np
import pytest

from base.errors import FormatError
from models.gguf import read_gguf_metadata, unpermute_qk


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute (the forward permutation the file stores)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head,head_dim", [(9, 64), (3, 64), (2, 8)])
def test_unpermute_inverts_llamacpp_permutation(n_head, head_dim):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n_head * head_dim, 12))
    np.testing.assert_array_equal(unpermute_qk(_llamacpp_permute(w, n_head), n_head), w)


def test_unpermute_rejects_odd_heads():
    with pytest.raises(FormatError, match="heads"):
        unpermute_qk(np.zeros((9, 4)), 2)


def test_metadata_of_shipped_model():
    from models.smollm import smollm2_gguf_path

    md = read_gguf_metadata(smollm2_gguf_path())
    assert md["general.architecture"] == "llama"
    assert md["llama.block_count"] == 30 and md["llama.embedding_length"] == 576
    assert md["llama.attention.head_count"] == 9 and md["llama.attention.head_count_kv"] == 3
    assert len(md["tokenizer.ggml.tokens"]) == 49152


def test_bad_file(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"not a gguf file at all")
    with pytest.raises(FormatError):
        read_gguf_metadata(p)
    with pytest.raises(FormatError, match="does not exist"):
        read_gguf_metadata(tmp_path / "missing.gguf")
