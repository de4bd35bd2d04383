"""Read a GGUF file (llama.cpp's model format) into plain numpy arrays.

Uses the `gguf` package's reader and dequantizer. llama.cpp's converter permutes the rows of `attn_q` and `attn_k`
so that its RoPE kernel can rotate adjacent pairs; the HF/Meta layout rotates the two halves of each head. This
module undoes that permutation so that the returned q/k weights are in the layout `models.llama` expects
(rotate-half RoPE). Source of the inverse permutation: shared/data/README.md (verified against the reference
perplexity there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.errors import FormatError

__all__ = ["GGUFModel", "read_gguf", "read_gguf_metadata", "unpermute_qk"]


@dataclass(frozen=True)
class GGUFModel:
    """The content of a GGUF file: metadata (scalars, strings and arrays) and dequantized fp32 tensors.

    `tensors` maps the GGUF tensor name (e.g. `blk.0.attn_q.weight`) to an fp32 array of shape [rows, cols]
    = [out_features, in_features] for matrices. `tensor_types` keeps the original GGML type name (Q4_1, Q8_0, F32).
    """

    path: Path
    metadata: dict
    tensors: dict[str, np.ndarray]
    tensor_types: dict[str, str]


def _field_value(field):
    """Decode one GGUF metadata field into a Python value (str, int, float, bool or list thereof)."""
    import gguf

    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        sub = types[1] if len(types) > 1 else None
        vals = [field.parts[i] for i in field.data]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(v).decode("utf-8", errors="replace") for v in vals]
        return [v.tolist()[0] if hasattr(v, "tolist") and len(v) == 1 else v.tolist() for v in vals]
    part = field.parts[field.data[0]]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    v = part.tolist()
    v = v[0] if isinstance(v, list) and len(v) == 1 else v
    if types[0] == gguf.GGUFValueType.BOOL:
        return bool(v)
    return v


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's RoPE row permutation of a q or k projection.

    w: [rows, cols] with rows = n_head * head_dim. Returns the same shape in rotate-half layout.
    """
    rows, cols = w.shape
    if rows % (2 * n_head):
        raise FormatError(f"q/k weight with {rows} rows cannot hold {n_head} heads of even size; check head counts")
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _reader(path: Path):
    import gguf

    if not path.is_file():
        raise FormatError(f"GGUF file {path} does not exist; pass the path of a .gguf model file")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises assorted errors on bad files
        raise FormatError(f"{path} is not a readable GGUF file ({exc}); re-download or re-install the model") from exc


def read_gguf_metadata(path: str | Path) -> dict:
    """Only the metadata of a GGUF file (no tensor is dequantized)."""
    reader = _reader(Path(path))
    return {name: _field_value(f) for name, f in reader.fields.items()}


def read_gguf(path: str | Path, *, unpermute: bool = True) -> GGUFModel:
    """Read and dequantize every tensor of a GGUF file (fp32), undoing the q/k permutation of llama models."""
    import gguf

    path = Path(path)
    reader = _reader(path)
    metadata = {name: _field_value(f) for name, f in reader.fields.items()}
    arch = metadata.get("general.architecture", "llama")
    n_head = metadata.get(f"{arch}.attention.head_count")
    n_kv = metadata.get(f"{arch}.attention.head_count_kv", n_head)
    tensors: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        # GGUF lists dims fastest-first; numpy wants [rows, cols]
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        arr = np.ascontiguousarray(arr.reshape(shape), dtype=np.float32)
        if unpermute and arch == "llama":
            if t.name.endswith("attn_q.weight"):
                arr = unpermute_qk(arr, int(n_head))
            elif t.name.endswith("attn_k.weight"):
                arr = unpermute_qk(arr, int(n_kv))
        tensors[t.name] = arr
        types[t.name] = t.tensor_type.name
    return GGUFModel(path=path, metadata=metadata, tensors=tensors, tensor_types=types)
