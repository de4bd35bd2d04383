"""The compressed-model artifact: a directory holding `weights.safetensors` (packed tensors) and `manifest.json`.

Layout of the directory::

    manifest.json       format/version, model spec, compression scheme, per-tensor packed-format metadata and byte
                        counts, per-layer byte counts, KV statistics on calibration text, calibration provenance,
                        size and SHA-256 of weights.safetensors
    weights.safetensors flat uint8 arrays of the packed formats of quant.formats (key "<tensor>/<array>"), and
                        fp16 tensors for what stays fp16 (embedding, norms, projections kept at 16 bits)

Writing is atomic: everything goes to a temporary sibling directory that is renamed into place at the end, so a
crash never leaves a half-written artifact under the final name. Loading verifies the manifest, the file size and
hash, and every array's dtype, shape and byte count against the manifest and the format's own layout, and raises
`FormatError` naming the problem. No pickle anywhere (safetensors + JSON).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import FormatError, SpecError

__all__ = ["ARTIFACT_FORMAT", "ArtifactInfo", "read_estimate_inputs", "read_manifest", "write_artifact",
           "load_artifact", "LoadedArtifact", "pack_linear"]

ARTIFACT_FORMAT = "hwsim.compressed-model"
ARTIFACT_VERSION = 1
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

        return MeasuredProfile(source=f"artifact {self.path}", layer_weight_bytes=self.layer_weight_bytes,
                               lm_head_bytes=self.lm_head_bytes, kv_sparsity_per_layer=self.kv_sparsity_per_layer)


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    mf = path / MANIFEST_FILE
    if not path.is_dir() or not mf.is_file():
        raise FormatError(f"{path} is not an artifact directory (no {MANIFEST_FILE}); write one with "
                          "`hwsim compress --model M --scheme S --out DIR`")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{mf} is not valid JSON ({exc}); the artifact is corrupt, write it again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise FormatError(f"{mf} is not a {ARTIFACT_FORMAT} manifest; write the artifact with `hwsim compress`")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise FormatError(f"{mf}: artifact version {manifest.get('version')!r} is not supported (this hwsim reads "
                          f"version {ARTIFACT_VERSION}); write it again with this hwsim")
    for key in ("model", "scheme", "tensors", "layers", "weights_file", "kv_stats", "calibration"):
        if key not in manifest:
            raise FormatError(f"{mf}: manifest lacks {key!r}; the artifact is truncated or corrupt, write it again")
    return manifest


def _specs_from_manifest(manifest: dict, where: str):
    from base.specio import from_mapping
    from models.spec import ModelSpec
    from quant.scheme import CompressionScheme

    try:
        return (from_mapping(ModelSpec, manifest["model"], f"{where} model"),
                from_mapping(CompressionScheme, manifest["scheme"], f"{where} scheme"))
    except SpecError as exc:
        raise FormatError(f"{where}: {exc}") from exc


def read_estimate_inputs(path: str | Path) -> ArtifactInfo:
    """ModelSpec, CompressionScheme, real byte counts and KV statistics of an artifact (manifest only)."""
    path = Path(path)
    m = read_manifest(path)
    model, scheme = _specs_from_manifest(m, str(path / MANIFEST_FILE))
    layers = m["layers"]
    if len(layers) != model.num_layers:
        raise FormatError(f"{path}: manifest lists {len(layers)} layers for a {model.num_layers}-layer model")
    wf = path / m["weights_file"]["name"]
    if not wf.is_file() or wf.stat().st_size != m["weights_file"]["bytes"]:
        raise FormatError(f"{wf} is missing or has the wrong size (manifest says {m['weights_file']['bytes']} bytes); "
                          "the artifact is truncated, write it again")
    t = m["tensors"]
    kv = m["kv_stats"]
    sp = None
    if scheme.kv_sparsity > 0 and kv.get("layers"):
        sp = tuple(round(1 - sum((h["k_density"] + h["v_density"]) / 2 for h in heads) / len(heads), 6)
                   for heads in kv["layers"])
    return ArtifactInfo(
        path=path, model=model, scheme=scheme,
        layer_weight_bytes=tuple(int(sum(l["linears"].values())) for l in layers),
        layer_linear_bytes=tuple(dict(l["linears"]) for l in layers),
        layer_norm_bytes=tuple(int(l["norms"]) for l in layers),
        embedding_bytes=int(t["embed"]["nbytes"]), final_norm_bytes=int(t["norm"]["nbytes"]),
        lm_head_bytes=int(t["lm_head"]["nbytes"]) if "lm_head" in t else None,
        total_weight_bytes=int(sum(v["nbytes"] for v in t.values())),
        kv_sparsity_per_layer=sp, kv_stats=kv, calibration=m["calibration"])


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
        if not quant:
            return Sparse24Weight.from_dense(w, keep, 16, gs)
        kept_cols = np.nonzero(keep)[1].reshape(rows, cols // 2)
        idx = (kept_cols % 4).astype(np.uint8)
        vals = codes[keep].reshape(rows, -1)
        return Sparse24Weight(ql.bits, gs, rows, cols, pack_bits(vals, ql.bits), pack_bits(idx, 2), scales,
                              pack_bits(zeros, ql.bits))
    # unstructured: bitmap tiles
    if not quant:
        return BitmapSparseWeight.from_dense(w, keep, 16, gs)
    n_tiles = -(-cols // BITMAP_TILE)
    pad = n_tiles * BITMAP_TILE - cols
    mt = np.pad(keep, ((0, 0), (0, pad))).reshape(-1, BITMAP_TILE)
    ct = np.pad(np.where(keep, codes, 0), ((0, 0), (0, pad))).reshape(-1, BITMAP_TILE)
    bitmaps, payload = pack_tiles(mt, ct, ql.bits)
    return BitmapSparseWeight(ql.bits, gs, rows, cols, bitmaps.reshape(rows, n_tiles), payload, scales,
                              pack_bits(zeros, ql.bits))


_FORMAT_CLASSES = ("GroupQuantWeight", "Sparse24Weight", "BitmapSparseWeight")


def _format_class(fmt: str):
    import quant.formats as F

    for name in _FORMAT_CLASSES:
        cls = getattr(F, name)
        if cls.FORMAT == fmt:
            return cls
    raise FormatError(f"unknown packed format {fmt!r} in manifest; known: "
                      f"{', '.join(getattr(F, n).FORMAT for n in _FORMAT_CLASSES)}, {FP16_FORMAT}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_artifact(out: str | Path, model, model_spec, scheme, *, kv_stats: dict, calibration: dict,
                   reports: list[dict] | None = None, overwrite: bool = False) -> Path:
    """Write the compressed `model` (models.llama.Llama after quant.quantize) as an artifact directory `out`.

    Atomic: written to a temporary sibling directory, then renamed. An existing `out` is refused unless overwrite.
    Returns the artifact path.
    """
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from base.specio import to_plain
    from models.llama import LINEAR_NAMES
    from quant.methods._prims import QuantLinear

    out = Path(out)
    if out.exists() and not overwrite:
        raise SpecError(f"{out} already exists; choose another --out or remove it first")
    if out.exists() and not (out / MANIFEST_FILE).is_file():
        raise SpecError(f"{out} exists and is not an artifact; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    arrays: dict[str, np.ndarray] = {}
    tensors: dict[str, dict] = {}

    def put_fp16(name: str, t: torch.Tensor) -> int:
        a = t.detach().to(torch.float16).contiguous().numpy()
        arrays[f"{name}/fp16"] = a
        tensors[name] = {"format": FP16_FORMAT, "shape": list(a.shape), "nbytes": int(a.nbytes),
                         "arrays": {"fp16": {"dtype": "F16", "shape": list(a.shape)}}}
        return int(a.nbytes)

    def put_packed(name: str, obj) -> int:
        arrs, meta = obj.to_arrays()
        entry = {"format": meta["format"], "meta": meta, "nbytes": int(obj.nbytes), "arrays": {}}
        for k, a in arrs.items():
            arrays[f"{name}/{k}"] = np.ascontiguousarray(a)
            entry["arrays"][k] = {"dtype": "U8", "shape": list(a.shape)}
        tensors[name] = entry
        return int(obj.nbytes)

    try:
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
            nb = put_fp16(f"blocks.{i}.attn_norm", blk.attn_norm.weight) + put_fp16(f"blocks.{i}.ffn_norm",
                                                                                    blk.ffn_norm.weight)
            layers.append({"linears": lin_bytes, "norms": nb, "act_bits": act_bits})
        wpath = tmp / WEIGHTS_FILE
        save_file(arrays, str(wpath), metadata={"format": ARTIFACT_FORMAT})
        manifest = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "model": to_plain(model_spec),
            "scheme": to_plain(scheme),
            "weights_file": {"name": WEIGHTS_FILE, "bytes": wpath.stat().st_size, "sha256": _sha256(wpath)},
            "tensors": tensors,
            "layers": layers,
            "totals": {"weight_bytes": sum(t["nbytes"] for t in tensors.values()),
                       "linear_bytes": sum(sum(l["linears"].values()) for l in layers),
                       "nominal_weight_bytes": scheme.weight_bytes(model_spec).total},
            "kv_stats": kv_stats,
            "calibration": calibration,
            "methods": reports or [],
        }
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        if out.exists():  # overwrite: move the old one aside, put the new one in, drop the old one
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
    m = read_manifest(path)
    spec, scheme = _specs_from_manifest(m, str(path / MANIFEST_FILE))
    wf = path / m["weights_file"]["name"]
    if not wf.is_file():
        raise FormatError(f"{wf} is missing; the artifact is incomplete, write it again")
    size = wf.stat().st_size
    if size != m["weights_file"]["bytes"]:
        raise FormatError(f"{wf} has {size} bytes, the manifest says {m['weights_file']['bytes']}; the file is "
                          "truncated or replaced, write the artifact again")
    if verify_hash and _sha256(wf) != m["weights_file"]["sha256"]:
        raise FormatError(f"{wf} does not match the SHA-256 in the manifest; the file is corrupt, write it again")
    try:
        arrays = load_file(str(wf))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{wf} is not a readable safetensors file ({exc}); write the artifact again") from exc
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
                raise FormatError(f"{wf}: array {key!r} is {arr.dtype}{list(arr.shape)}, the manifest says "
                                  f"{a['dtype']}{a['shape']}")
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
                raise FormatError(f"{wf}: tensor {name!r} packs to {obj.nbytes} bytes, the manifest says "
                                  f"{entry['nbytes']}")
            packed[name] = obj
    extra = set(arrays) - expected_keys
    if extra:
        raise FormatError(f"{wf}: arrays not in the manifest: {sorted(extra)[:5]}; artifact files do not belong "
                          "together")
    layers = m["layers"]
    if len(layers) != spec.num_layers:
        raise FormatError(f"{path}: manifest lists {len(layers)} layers for a {spec.num_layers}-layer model")
    for i, l in enumerate(layers):
        for n, nb in l["linears"].items():
            if m["tensors"].get(f"blocks.{i}.{n}", {}).get("nbytes") != nb:
                raise FormatError(f"{path}: per-layer byte count of blocks.{i}.{n} disagrees with its tensor entry")
    return LoadedArtifact(path=path, manifest=m, model_spec=spec, scheme=scheme, packed=packed, fp16=fp16,
                          act_bits=[dict(l["act_bits"]) for l in layers])
