"""The compressed-model artifact: a directory holding `weights.safetensors` (packed tensors) and `manifest.json`.

Layout of the directory::

    manifest.json       format/version, model spec, compression scheme, per-tensor packed-format metadata and byte
                        counts, per-layer byte counts, KV statistics on calibration text, calibration provenance,
                        size and SHA-256 of weights.safetensors
    weights.safetensors flat uint8 arrays of the packed formats of quant.formats (key "<tensor>/<array>"), and
                        fp16 tensors for what stays fp16 (embedding, norms, projections kept at 16 bits)

Writing is atomic (base.outputs.atomic_dir): everything goes to a temporary sibling directory that is renamed into
place at the end, so a crash never leaves a half-written artifact under the final name, and a temporary left by a
killed run is removed by the next write. Every reader (`read_estimate_inputs` for `hwsim estimate`, `load_artifact`
for `hwsim eval`) goes through `verify_artifact`: the manifest's own SHA-256, its types, its tensors against the
model, the scheme and the packed formats' layouts, per-layer and total byte counts against the tensors, the
safetensors header against the manifest, the weights file's size and SHA-256. Any mismatch is a `FormatError`
naming the problem. No pickle anywhere (safetensors + JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import FormatError, SpecError
from base.specio import short

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactInfo",
    "read_estimate_inputs",
    "read_manifest",
    "check_manifest",
    "verify_artifact",
    "write_artifact",
    "load_artifact",
    "LoadedArtifact",
    "pack_linear",
    "read_artifact_file",
]

ARTIFACT_FORMAT = "hwsim.compressed-model"
ARTIFACT_VERSION = 2  # 2: the manifest carries its own SHA-256
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
FP16_FORMAT = "fp16"


# ---- estimate inputs (manifest only: fast, no torch) ----------------------------------------------------------
@dataclass(frozen=True)
class ArtifactInfo:
    """What `hwsim estimate --model DIR` needs from an artifact (read from manifest.json only; no torch).

    model: ModelSpec; scheme: CompressionScheme; layer_weight_bytes[l]: bytes of block l's linear layers as
    stored; layer_linear_bytes[l][name]: the same per projection; embedding_bytes, final_norm_bytes,
    layer_norm_bytes[l]; lm_head_bytes: None when the head is tied to the fp16 embedding; total_weight_bytes: every
    stored tensor; kv_sparsity_per_layer[l]: fraction of K/V elements pruned in layer l measured on calibration text
    (None when the scheme does not prune the KV cache); kv_stats: the manifest's full KV statistics (per layer, per
    KV head); calibration: provenance of the calibration text.
    """

    path: Path
    model: Any
    scheme: Any
    layer_weight_bytes: tuple[int, ...]
    layer_linear_bytes: tuple[dict[str, int], ...]
    layer_norm_bytes: tuple[int, ...]
    embedding_bytes: int
    final_norm_bytes: int
    lm_head_bytes: int | None
    total_weight_bytes: int
    kv_sparsity_per_layer: tuple[float, ...] | None
    kv_stats: dict
    calibration: dict

    def profile(self):
        """quant.measured.MeasuredProfile of this artifact (pass it as estimate(..., profile=...))."""
        from quant.measured import MeasuredProfile

        return MeasuredProfile(
            source=f"artifact {self.path}",
            layer_weight_bytes=self.layer_weight_bytes,
            lm_head_bytes=self.lm_head_bytes,
            kv_sparsity_per_layer=self.kv_sparsity_per_layer,
        )


def read_manifest(path: str | Path) -> dict:
    """The manifest of the artifact directory `path`, read by the hardened JSON reader and checked: format, version
    and its own SHA-256 (any edit of the manifest is refused). Types and consistency: `verify_artifact`."""
    from base.specio import read_json

    path = Path(path)
    mf = path / MANIFEST_FILE
    if not path.is_dir() or not mf.is_file():
        raise FormatError(
            f"{path} is not an artifact directory (no {MANIFEST_FILE}); write one with "
            "`hwsim compress --model M --scheme S --out DIR`"
        )
    manifest = read_json(mf, error=FormatError)
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise FormatError(f"{mf} is not a {ARTIFACT_FORMAT} manifest; write the artifact with `hwsim compress`")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise FormatError(
            f"{mf}: artifact version {short(manifest.get('version'))} is not supported (this hwsim "
            f"reads version {ARTIFACT_VERSION}); write it again with this hwsim"
        )
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise FormatError(
            f"{mf}: the manifest does not match its own SHA-256 (edited or damaged); write the "
            "artifact again with `hwsim compress`"
        )
    for key in ("model", "scheme", "tensors", "layers", "weights_file", "kv_stats", "calibration"):
        if key not in manifest:
            raise FormatError(f"{mf}: manifest lacks {key!r}; the artifact is truncated or corrupt, write it again")
    return manifest


def _manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without its own digest field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return ""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _specs_from_manifest(manifest: dict, where: str):
    from base.specio import from_mapping
    from models.spec import ModelSpec
    from quant.scheme import CompressionScheme

    try:
        return (
            from_mapping(ModelSpec, manifest["model"], f"{where} model"),
            from_mapping(CompressionScheme, manifest["scheme"], f"{where} scheme"),
        )
    except SpecError as exc:
        raise FormatError(f"{where}: {exc}") from exc


# ---- verification (one path for every reader of an artifact) ---------------------------------------------------
_DTYPE_BYTES = {"U8": 1, "F16": 2}
MAX_HEADER_BYTES = 100 << 20  # a safetensors header larger than this is not one of ours


def _bad(where: str, what: str) -> FormatError:
    return FormatError(f"{where}: {what}; the artifact is corrupt or edited, write it again with `hwsim compress`")


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 8 and all(_nonneg_int(x) for x in v)


def _prod(shape: list[int]) -> int:
    n = 1
    for x in shape:
        n *= x
    return n


def _expected_tensors(model) -> dict[str, list[int] | None]:
    """Tensor name -> fp16 shape of every tensor an artifact of `model` holds (None: a linear, packed or fp16)."""
    h, v = model.hidden_size, model.vocab_size
    out: dict[str, list[int] | None] = {"embed": [v, h], "norm": [h]}
    if not model.tied_embeddings:
        out["lm_head"] = [v, h]
    for i in range(model.num_layers):
        for lin in model.block_linears:
            out[f"blocks.{i}.{lin.name}"] = None
        out[f"blocks.{i}.attn_norm"] = [h]
        out[f"blocks.{i}.ffn_norm"] = [h]
    return out


def _schemes_for(scheme, op: str, layer: int) -> list:
    """The scheme(s) a stored linear may follow: per-operator settings where the scheme has them, and the global
    ones."""
    out = [scheme]
    for_op = getattr(scheme, "for_op", None)
    if for_op is not None:
        try:
            out.insert(0, for_op(op, layer))
        except SpecError:
            pass
    return out


def _check_linear(name: str, entry: dict, lin, schemes: list, where: str) -> None:
    """A linear's entry agrees with its shape and the scheme: fp16 when 16-bit dense, else the packed format of
    the scheme's pruning, with its bits and group size; arrays as the format's layout says; nbytes their sum."""
    from quant.formats import BitmapSparseWeight, GroupQuantWeight, Sparse24Weight

    fmt = entry["format"]
    meta = entry.get("meta")
    if fmt == FP16_FORMAT:
        ok = any(s.weight_bits == 16 and s.weight_pruning == "none" for s in schemes)
        if not ok:
            raise _bad(where, f"tensor {name!r} is stored fp16 but the scheme quantizes or prunes it")
        _check_fp16(name, entry, [lin.out_features, lin.in_features], where)
        return
    cls = _format_class(fmt)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise _bad(where, f"tensor {name!r} lacks its packed-format metadata (format {fmt})")
    if not all(_nonneg_int(meta.get(k)) for k in ("bits", "group_size", "out_features", "in_features")):
        raise _bad(
            where,
            f"tensor {name!r}: packed-format metadata bits, group_size, out_features and in_features "
            "must be integers >= 0",
        )
    bits = meta["bits"]
    by_pruning = {"none": GroupQuantWeight, "2:4": Sparse24Weight, "unstructured": BitmapSparseWeight}
    ok = False
    for s in schemes:
        want = by_pruning.get(s.weight_pruning)
        if (
            (want is None or want is cls)
            and bits == s.weight_bits
            and (cls is not Sparse24Weight or meta.get("index", "pattern") == s.weight_nm_index)
            and (bits == 16 and cls is not GroupQuantWeight or meta.get("group_size") == s.weight_group_size)
        ):
            ok = True
    if not ok:
        raise _bad(
            where,
            f"tensor {name!r} is {fmt} with {short(meta.get('bits'))}-bit values, group "
            f"{short(meta.get('group_size'))}; the scheme says {schemes[-1].weight_bits}-bit, group "
            f"{schemes[-1].weight_group_size}, pruning {schemes[-1].weight_pruning}",
        )
    if meta.get("out_features") != lin.out_features or meta.get("in_features") != lin.in_features:
        raise _bad(
            where,
            f"tensor {name!r} is {short(meta.get('out_features'))}x{short(meta.get('in_features'))}, "
            f"the model's {lin.name} is {lin.out_features}x{lin.in_features}",
        )
    layout = cls.layout(meta)  # FormatError on bad metadata
    expect: dict[str, int | tuple[int, int]] = {}
    for sec in layout:
        if sec.tiled:
            expect[f"{sec.name}.bitmaps"] = sec.n_tiles * 8
            expect[f"{sec.name}.values"] = (0, -(-sec.n_tiles * 64 * sec.bits // 8))
        else:
            expect[sec.name] = sec.nbytes
    arrays = entry["arrays"]
    if set(arrays) != set(expect):
        raise _bad(where, f"tensor {name!r} has arrays {short(sorted(arrays))}, its format has {sorted(expect)}")
    total = 0
    for k, a in arrays.items():
        if a["dtype"] != "U8" or len(a["shape"]) != 1:
            raise _bad(where, f"array {name}/{k} must be 1-D U8")
        n, want = a["shape"][0], expect[k]
        if (n != want) if isinstance(want, int) else not want[0] <= n <= want[1]:
            raise _bad(where, f"array {name}/{k} has {n} bytes, its format's layout says {want}")
        total += n
    if entry["nbytes"] != total:
        raise _bad(where, f"tensor {name!r} claims {short(entry['nbytes'])} bytes, its arrays hold {total}")


def _check_fp16(name: str, entry: dict, shape: list[int], where: str) -> None:
    arrays = entry["arrays"]
    if set(arrays) != {"fp16"} or arrays["fp16"]["dtype"] != "F16" or arrays["fp16"]["shape"] != shape:
        raise _bad(where, f"fp16 tensor {name!r} must be one F16 array of shape {shape}")
    if entry.get("shape", shape) != shape or entry["nbytes"] != 2 * _prod(shape):
        raise _bad(
            where, f"fp16 tensor {name!r} claims {short(entry['nbytes'])} bytes; {shape} in fp16 is {2 * _prod(shape)}"
        )


def check_manifest(m: dict, where: str):
    """Types and internal consistency of a manifest (read_manifest's result): every field the readers use, the
    tensor set against the model, each tensor against the scheme and its format, per-layer and total byte counts
    against the tensors, KV statistics against the model. Returns (ModelSpec, CompressionScheme)."""
    model, scheme = _specs_from_manifest(m, where)
    if (
        (model.ffn_type, model.norm, model.positional) != ("swiglu", "rmsnorm", "rope")
        or model.attention_bias
        or model.mlp_bias
        or model.head_dim * model.num_heads != model.hidden_size
    ):
        raise _bad(
            where,
            f"model {short(model.name)} is not a bias-free Llama-family model (SwiGLU, RMSNorm, RoPE, "
            "head_dim x heads = hidden_size), the only kind an artifact holds",
        )
    wf = m["weights_file"]
    if not (
        isinstance(wf, dict)
        and isinstance(wf.get("name"), str)
        and wf["name"] == WEIGHTS_FILE
        and _nonneg_int(wf.get("bytes"))
        and isinstance(wf.get("sha256"), str)
        and len(wf["sha256"]) == 64
    ):
        raise _bad(where, f"weights_file must be {{name: {WEIGHTS_FILE}, bytes, sha256}}")
    tensors = m["tensors"]
    if not isinstance(tensors, dict):
        raise _bad(where, "tensors must be a mapping")
    for name, e in tensors.items():
        if not (
            isinstance(e, dict)
            and isinstance(e.get("format"), str)
            and _nonneg_int(e.get("nbytes"))
            and isinstance(e.get("arrays"), dict)
            and e["arrays"]
            and all(
                isinstance(a, dict)
                and isinstance(a.get("dtype"), str)
                and a["dtype"] in _DTYPE_BYTES
                and _shape(a.get("shape"))
                for a in e["arrays"].values()
            )
        ):
            raise _bad(
                where,
                f"tensor entry {short(name)} must hold format, nbytes >= 0 and arrays of {{dtype: U8|F16, shape}}",
            )
    expected = _expected_tensors(model)
    if set(tensors) != set(expected):
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        raise _bad(
            where,
            f"tensors do not match a {model.num_layers}-layer {model.name} "
            f"(missing {short(missing)}, unexpected {short(extra)})",
        )
    lins = {lin.name: lin for lin in model.block_linears}
    for name, shape in expected.items():
        if shape is not None:
            if tensors[name]["format"] != FP16_FORMAT:
                raise _bad(where, f"tensor {name!r} must be fp16")
            _check_fp16(name, tensors[name], shape, where)
        else:
            _, layer, op = name.split(".")
            _check_linear(name, tensors[name], lins[op], _schemes_for(scheme, op, int(layer)), where)
    layers = m["layers"]
    if not isinstance(layers, list) or len(layers) != model.num_layers:
        raise _bad(
            where,
            f"manifest lists {len(layers) if isinstance(layers, list) else 'no'} layers for a "
            f"{model.num_layers}-layer model",
        )
    for i, l in enumerate(layers):
        if not (
            isinstance(l, dict)
            and isinstance(l.get("linears"), dict)
            and isinstance(l.get("act_bits"), dict)
            and _nonneg_int(l.get("norms"))
        ):
            raise _bad(where, f"layer {i} must hold linears, norms and act_bits")
        if set(l["linears"]) != set(lins) or set(l["act_bits"]) != set(lins):
            raise _bad(where, f"layer {i} must list the model's linears {sorted(lins)}")
        if not all(_nonneg_int(v) for v in (*l["linears"].values(), *l["act_bits"].values())):
            raise _bad(where, f"layer {i}: byte counts and activation bits must be integers >= 0")
        for n, nb in l["linears"].items():
            if nb != tensors[f"blocks.{i}.{n}"]["nbytes"]:
                raise _bad(where, f"per-layer byte count of blocks.{i}.{n} ({short(nb)}) disagrees with its tensor")
            if not any(l["act_bits"][n] == s.act_bits for s in _schemes_for(scheme, n, i)):
                raise _bad(
                    where,
                    f"blocks.{i}.{n} ran with {short(l['act_bits'][n])}-bit activations, the scheme "
                    f"says {scheme.act_bits}",
                )
        if l["norms"] != tensors[f"blocks.{i}.attn_norm"]["nbytes"] + tensors[f"blocks.{i}.ffn_norm"]["nbytes"]:
            raise _bad(where, f"per-layer norm bytes of layer {i} disagree with its tensors")
    totals = m.get("totals")
    if totals is not None:
        if not isinstance(totals, dict) or totals.get("weight_bytes") != sum(e["nbytes"] for e in tensors.values()):
            raise _bad(where, "totals.weight_bytes disagrees with the tensors")
    kv = m["kv_stats"]
    if not isinstance(kv, dict):
        raise _bad(where, "kv_stats must be a mapping")
    kv_layers = kv.get("layers")
    if kv_layers is not None:
        if not isinstance(kv_layers, list) or len(kv_layers) != model.num_layers:
            raise _bad(where, f"kv_stats.layers must list {model.num_layers} layers")
        for i, heads in enumerate(kv_layers):
            if not isinstance(heads, list) or len(heads) != model.num_kv_heads:
                raise _bad(where, f"kv_stats.layers[{i}] must list {model.num_kv_heads} KV heads")
            for h in heads:
                if not isinstance(h, dict) or not all(
                    isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool) and 0 <= h[k] <= 1
                    for k in ("k_density", "v_density")
                    if k in h or scheme.kv_sparsity > 0
                ):
                    raise _bad(where, f"kv_stats.layers[{i}] densities must be numbers in [0, 1]")
    if not isinstance(m["calibration"], dict):
        raise _bad(where, "calibration must be a mapping")
    return model, scheme


def _read_header(wf: Path, size: int) -> dict:
    """The safetensors header of `wf` (JSON), checked: offsets contiguous from 0 to the end of the file, each
    array's extent = dtype size x elements."""
    from base.specio import parse_json

    with open(wf, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(str(wf), "too short for a safetensors file")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(size - 8, MAX_HEADER_BYTES):
            raise _bad(str(wf), f"safetensors header length {n} does not fit the file")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(str(wf), "safetensors header is not UTF-8") from None
    header = parse_json(text, f"{wf} header", FormatError)
    if not isinstance(header, dict):
        raise _bad(str(wf), "safetensors header is not a mapping")
    spans = []
    sizes = {"U8": 1, "F16": 2, "F32": 4, "I64": 8, "U64": 8, "BF16": 2, "I8": 1, "I32": 4, "F64": 8, "BOOL": 1}
    for key, e in header.items():
        if key == "__metadata__":
            continue
        if not (
            isinstance(e, dict)
            and isinstance(e.get("dtype"), str)
            and e["dtype"] in sizes
            and _shape(e.get("shape"))
            and isinstance(e.get("data_offsets"), list)
            and len(e["data_offsets"]) == 2
            and all(_nonneg_int(x) for x in e["data_offsets"])
        ):
            raise _bad(str(wf), f"safetensors entry {short(key)} is malformed")
        a, b = e["data_offsets"]
        if b - a != sizes[e["dtype"]] * _prod(e["shape"]):
            raise _bad(str(wf), f"safetensors entry {short(key)} spans {b - a} bytes for shape {e['shape']}")
        spans.append((a, b))
    spans.sort()
    pos = 0
    for a, b in spans:
        if a != pos:
            raise _bad(str(wf), "safetensors data offsets overlap or leave gaps")
        pos = b
    if 8 + n + pos != size:
        raise _bad(str(wf), f"safetensors data ends at byte {8 + n + pos}, the file has {size}")
    return header


def verify_artifact(path: str | Path, *, verify_hash: bool = True) -> tuple[dict, Any, Any]:
    """Verify an artifact without loading its tensors: manifest (digest, types, consistency with the model, the
    scheme and the formats), weights file (regular file, size, safetensors header against the manifest, SHA-256).
    Every command that reads an artifact goes through this. Returns (manifest, ModelSpec, CompressionScheme)."""
    path = Path(path)
    m = read_manifest(path)
    where = str(path / MANIFEST_FILE)
    model, scheme = check_manifest(m, where)
    wf = path / m["weights_file"]["name"]
    if wf.is_symlink() or not wf.is_file():
        raise FormatError(f"{wf} is missing or not a regular file; the artifact is incomplete, write it again")
    size = wf.stat().st_size
    if size != m["weights_file"]["bytes"]:
        raise FormatError(
            f"{wf} has {size} bytes, the manifest says {m['weights_file']['bytes']}; the file is "
            "truncated or replaced, write the artifact again"
        )
    header = _read_header(wf, size)
    listed = {f"{name}/{k}": a for name, e in m["tensors"].items() for k, a in e["arrays"].items()}
    stored = {k for k in header if k != "__metadata__"}
    if stored != set(listed):
        diff = sorted(stored ^ set(listed))
        raise FormatError(
            f"{wf}: arrays {short(diff)} are in only one of the weights file and the manifest; "
            "artifact files do not belong together, write it again"
        )
    for key, a in listed.items():
        if header[key]["dtype"] != a["dtype"] or header[key]["shape"] != a["shape"]:
            raise FormatError(
                f"{wf}: array {key!r} is {header[key]['dtype']}{header[key]['shape']}, the manifest "
                f"says {a['dtype']}{a['shape']}; write the artifact again"
            )
    if verify_hash and _sha256(wf) != m["weights_file"]["sha256"]:
        raise FormatError(f"{wf} does not match the SHA-256 in the manifest; the file is corrupt, write it again")
    return m, model, scheme


def read_estimate_inputs(path: str | Path) -> ArtifactInfo:
    """ModelSpec, CompressionScheme, real byte counts and KV statistics of a verified artifact (no tensors
    loaded, no torch)."""
    path = Path(path)
    m, model, scheme = verify_artifact(path)
    layers = m["layers"]
    t = m["tensors"]
    kv = m["kv_stats"]
    sp = None
    if scheme.kv_sparsity > 0 and kv.get("layers"):
        sp = tuple(
            round(1 - sum((h["k_density"] + h["v_density"]) / 2 for h in heads) / len(heads), 6)
            for heads in kv["layers"]
        )
    return ArtifactInfo(
        path=path,
        model=model,
        scheme=scheme,
        layer_weight_bytes=tuple(int(sum(l["linears"].values())) for l in layers),
        layer_linear_bytes=tuple(dict(l["linears"]) for l in layers),
        layer_norm_bytes=tuple(int(l["norms"]) for l in layers),
        embedding_bytes=int(t["embed"]["nbytes"]),
        final_norm_bytes=int(t["norm"]["nbytes"]),
        lm_head_bytes=int(t["lm_head"]["nbytes"]) if "lm_head" in t else None,
        total_weight_bytes=int(sum(v["nbytes"] for v in t.values())),
        kv_sparsity_per_layer=sp,
        kv_stats=kv,
        calibration=m["calibration"],
    )


# ---- packing ------------------------------------------------------------------------------------------------------
def pack_linear(ql, scheme):
    """The packed format object (quant.formats) of one QuantLinear, or None if its weight stays fp16 dense."""
    import numpy as np

    from quant.formats import BitmapSparseWeight, GroupQuantWeight, Sparse24Weight
    from quant.formats._bits import pack_bits, pack_tiles
    from quant.scheme import BITMAP_TILE

    w = ql.weight.detach().double().numpy()
    rows, cols = w.shape
    quant = ql.bits < 16
    keep = ql.keep.numpy() if ql.keep is not None else None
    if quant:
        codes, scales, zeros = ql.codes.numpy(), ql.scales.numpy().astype(np.float16), ql.zeros.numpy()
    if ql.pruning == "none":
        if not quant:
            return None
        return GroupQuantWeight.from_codes(codes, scales, zeros, ql.bits, ql.group_size)
    if keep is None:
        raise FormatError("a pruned layer has no keep mask; quantize it again")
    gs = ql.group_size if quant else scheme.weight_group_size
    if ql.pruning == "2:4":
        if np.any(keep.reshape(rows, -1, 4).sum(axis=2) != 2):
            raise FormatError("2:4 layer's keep mask does not keep exactly 2 of every 4 columns")
        index = scheme.weight_nm_index
        if not quant:
            return Sparse24Weight.from_dense(w, keep, 16, gs, index)
        vals = codes[keep].reshape(rows, -1)
        return Sparse24Weight(
            ql.bits,
            gs,
            rows,
            cols,
            pack_bits(vals, ql.bits),
            Sparse24Weight.pack_indices(keep, index),
            scales,
            pack_bits(zeros, ql.bits),
            index,
        )
    # unstructured: bitmap tiles
    if not quant:
        return BitmapSparseWeight.from_dense(w, keep, 16, gs)
    n_tiles = -(-cols // BITMAP_TILE)
    pad = n_tiles * BITMAP_TILE - cols
    mt = np.pad(keep, ((0, 0), (0, pad))).reshape(-1, BITMAP_TILE)
    ct = np.pad(np.where(keep, codes, 0), ((0, 0), (0, pad))).reshape(-1, BITMAP_TILE)
    bitmaps, payload = pack_tiles(mt, ct, ql.bits)
    return BitmapSparseWeight(
        ql.bits, gs, rows, cols, bitmaps.reshape(rows, n_tiles), payload, scales, pack_bits(zeros, ql.bits)
    )


_FORMAT_CLASSES = ("GroupQuantWeight", "Sparse24Weight", "BitmapSparseWeight")


def _format_class(fmt: str):
    import quant.formats as F

    for name in _FORMAT_CLASSES:
        cls = getattr(F, name)
        if cls.FORMAT == fmt:
            return cls
    raise FormatError(
        f"unknown packed format {fmt!r} in manifest; known: "
        f"{', '.join(getattr(F, n).FORMAT for n in _FORMAT_CLASSES)}, {FP16_FORMAT}"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_artifact(
    out: str | Path,
    model,
    model_spec,
    scheme,
    *,
    kv_stats: dict,
    calibration: dict,
    reports: list[dict] | None = None,
    overwrite: bool = False,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write the compressed `model` (models.llama.Llama after quant.quantize) as an artifact directory `out`.

    Atomic: written to a temporary sibling directory, then renamed. An existing `out` is refused unless overwrite.
    `files`: further files stored beside the weights (e.g. the model's tokenizer.json), listed in the manifest under
    "files" with size and SHA-256 (read them back with `read_artifact_file`). Returns the artifact path.
    """
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from base.outputs import atomic_dir
    from base.specio import to_plain
    from models.llama import LINEAR_NAMES
    from quant.methods._prims import QuantLinear

    out = Path(out)
    arrays: dict[str, np.ndarray] = {}
    tensors: dict[str, dict] = {}

    def put_fp16(name: str, t: torch.Tensor) -> int:
        a = t.detach().to(torch.float16).contiguous().numpy()
        arrays[f"{name}/fp16"] = a
        tensors[name] = {
            "format": FP16_FORMAT,
            "shape": list(a.shape),
            "nbytes": int(a.nbytes),
            "arrays": {"fp16": {"dtype": "F16", "shape": list(a.shape)}},
        }
        return int(a.nbytes)

    def put_packed(name: str, obj) -> int:
        arrs, meta = obj.to_arrays()
        entry = {"format": meta["format"], "meta": meta, "nbytes": int(obj.nbytes), "arrays": {}}
        for k, a in arrs.items():
            arrays[f"{name}/{k}"] = np.ascontiguousarray(a)
            entry["arrays"][k] = {"dtype": "U8", "shape": list(a.shape)}
        tensors[name] = entry
        return int(obj.nbytes)

    with atomic_dir(out, overwrite=overwrite, is_ours=lambda p: (p / MANIFEST_FILE).is_file()) as tmp:
        put_fp16("embed", model.embed.weight)
        put_fp16("norm", model.norm.weight)
        if not model.cfg.tie_embeddings:
            put_fp16("lm_head", model.lm_head.weight)
        layers = []
        for i, blk in enumerate(model.blocks):
            lin_bytes, act_bits = {}, {}
            for n in LINEAR_NAMES:
                ql = QuantLinear.wrap(blk.linears()[n])
                packed = pack_linear(ql, scheme)
                key = f"blocks.{i}.{n}"
                lin_bytes[n] = put_packed(key, packed) if packed is not None else put_fp16(key, ql.weight)
                act_bits[n] = ql.act_bits
            nb = put_fp16(f"blocks.{i}.attn_norm", blk.attn_norm.weight) + put_fp16(
                f"blocks.{i}.ffn_norm", blk.ffn_norm.weight
            )
            layers.append({"linears": lin_bytes, "norms": nb, "act_bits": act_bits})
        wpath = tmp / WEIGHTS_FILE
        save_file(arrays, str(wpath), metadata={"format": ARTIFACT_FORMAT})
        extra = {}
        for fname, data in (files or {}).items():
            if Path(fname).name != fname or fname in (WEIGHTS_FILE, MANIFEST_FILE):
                raise SpecError(
                    f"artifact file name {fname!r} must be a plain name other than {WEIGHTS_FILE}, {MANIFEST_FILE}"
                )
            (tmp / fname).write_bytes(data)
            extra[fname] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "model": to_plain(model_spec),
            "scheme": to_plain(scheme),
            "weights_file": {"name": WEIGHTS_FILE, "bytes": wpath.stat().st_size, "sha256": _sha256(wpath)},
            "tensors": tensors,
            "layers": layers,
            "totals": {
                "weight_bytes": sum(t["nbytes"] for t in tensors.values()),
                "linear_bytes": sum(sum(l["linears"].values()) for l in layers),
                "nominal_weight_bytes": scheme.weight_bytes(model_spec).total,
            },
            "kv_stats": kv_stats,
            "calibration": calibration,
            "methods": reports or [],
        }
        if extra:
            manifest["files"] = extra
        manifest = json.loads(json.dumps(manifest, allow_nan=False))  # as read back: string keys, lists
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
    return out


def read_artifact_file(path: str | Path, name: str) -> bytes | None:
    """The bytes of a file stored in the artifact by write_artifact(files=...), checked against the size and SHA-256
    in the manifest; None when the manifest lists no such file."""
    path = Path(path)
    entry = read_manifest(path).get("files", {}).get(name)
    if entry is None:
        return None
    f = path / name
    data = f.read_bytes() if f.is_file() else None
    if data is None or len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise FormatError(
            f"{f} is missing or does not match the size and SHA-256 in the manifest; the artifact is "
            "corrupt, write it again"
        )
    return data


# ---- loading ------------------------------------------------------------------------------------------------------
@dataclass
class LoadedArtifact:
    """A verified artifact: manifest, specs, and the packed objects / fp16 arrays by tensor name."""

    path: Path
    manifest: dict
    model_spec: Any
    scheme: Any
    packed: dict[str, Any]  # tensor name -> quant.formats object
    fp16: dict[str, Any]  # tensor name -> numpy float16 array
    act_bits: list[dict[str, int]]


def load_artifact(path: str | Path, *, verify_hash: bool = True) -> LoadedArtifact:
    """Load and verify an artifact (see module docstring); raises FormatError on any inconsistency."""
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    m, spec, scheme = verify_artifact(path, verify_hash=verify_hash)
    wf = path / m["weights_file"]["name"]
    try:
        arrays = load_file(str(wf))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(
            f"{wf} is not a readable safetensors file ({short(str(exc), 200)}); write the artifact again"
        ) from None
    packed, fp16 = {}, {}
    expected_keys = set()
    dtypes = {"U8": np.uint8, "F16": np.float16}
    for name, entry in m["tensors"].items():
        sub = {}
        for k, a in entry["arrays"].items():
            key = f"{name}/{k}"
            expected_keys.add(key)
            if key not in arrays:
                raise FormatError(f"{wf}: array {key!r} listed in the manifest is missing")
            arr = arrays[key]
            if arr.dtype != dtypes.get(a["dtype"]) or list(arr.shape) != a["shape"]:
                raise FormatError(
                    f"{wf}: array {key!r} is {arr.dtype}{list(arr.shape)}, the manifest says {a['dtype']}{a['shape']}"
                )
            sub[k] = arr
        if entry["format"] == FP16_FORMAT:
            a = sub["fp16"]
            if a.nbytes != entry["nbytes"]:
                raise FormatError(f"{wf}: tensor {name!r} has {a.nbytes} bytes, the manifest says {entry['nbytes']}")
            fp16[name] = a
        else:
            cls = _format_class(entry["format"])
            obj = cls.from_arrays(sub, entry["meta"])
            if obj.nbytes != entry["nbytes"]:
                raise FormatError(
                    f"{wf}: tensor {name!r} packs to {obj.nbytes} bytes, the manifest says {entry['nbytes']}"
                )
            packed[name] = obj
    extra = set(arrays) - expected_keys
    if extra:
        raise FormatError(
            f"{wf}: arrays not in the manifest: {sorted(extra)[:5]}; artifact files do not belong together"
        )
    layers = m["layers"]
    if len(layers) != spec.num_layers:
        raise FormatError(f"{path}: manifest lists {len(layers)} layers for a {spec.num_layers}-layer model")
    for i, l in enumerate(layers):
        for n, nb in l["linears"].items():
            if m["tensors"].get(f"blocks.{i}.{n}", {}).get("nbytes") != nb:
                raise FormatError(f"{path}: per-layer byte count of blocks.{i}.{n} disagrees with its tensor entry")
    return LoadedArtifact(
        path=path,
        manifest=m,
        model_spec=spec,
        scheme=scheme,
        packed=packed,
        fp16=fp16,
        act_bits=[dict(l["act_bits"]) for l in layers],
    )
