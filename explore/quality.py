"""The (model, scheme) variants of a space and their measured quality.

A scheme entry is a preset name, a scheme YAML, or a compressed-model artifact directory (its model, scheme and
measured sizes from manifest.json). Quality is the perplexity ratio to the uncompressed model, measured, never
assumed; it comes from, in this order:

1. the uncompressed scheme (16-bit weights, activations and KV, no pruning, no window): ratio 1 by definition;
2. an ``eval`` result given with the entry (the JSON of ``hwsim eval --json``), divided by the perplexity in the
   space's ``baseline_eval`` (the same command on the uncompressed model, same model, text and window length);
3. an artifact's own ``eval.json`` (``hwsim eval --artifact DIR --json > DIR/eval.json``), likewise;
4. an artifact manifest's ``quality`` mapping: ``{"perplexity": P, "baseline_perplexity": B, "text": ...}``.

Without any of these the variant's quality is unknown; a space whose objectives include ``ppl_ratio`` then fails
before any work, naming the entry and how to measure it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.errors import FormatError, SpecError
from base.specio import read_json

__all__ = ["resolve_variants", "read_eval", "is_uncompressed"]

EVAL_KEYS = ("perplexity", "model", "text", "seq_len")


def is_uncompressed(s: Any) -> bool:
    return (
        s.weight_bits == 16
        and s.act_bits == 16
        and s.kv_bits == 16
        and s.lm_head_bits == 16
        and s.weight_pruning == "none"
        and s.kv_sparsity == 0
        and s.attn_window is None
    )


def read_eval(path: Path) -> dict:
    """A stored ``hwsim eval --json`` result; SpecError when it is not one."""
    data = read_json(path)
    if not isinstance(data, dict) or any(k not in data for k in EVAL_KEYS):
        raise SpecError(
            f"{path}: not a `hwsim eval --json` result (needs {', '.join(EVAL_KEYS)}); write it with "
            "`hwsim eval --artifact DIR --json > FILE`"
        )
    ppl = data["perplexity"]
    if isinstance(ppl, bool) or not isinstance(ppl, (int, float)) or not ppl > 0:
        raise SpecError(f"{path}: perplexity {ppl!r} is not a positive number")
    return data


def _ratio(ev: dict, ev_path: Path, base: dict | None, base_path: Path | None, where: str) -> tuple[float, float]:
    if base is None:
        raise SpecError(
            f"{where}: {ev_path} gives a perplexity but the space has no baseline_eval (the uncompressed "
            "model's `hwsim eval --json`) to divide it by; add baseline_eval"
        )
    for k in ("model", "text", "seq_len"):
        if ev.get(k) != base.get(k):
            raise SpecError(
                f"{where}: {ev_path} and baseline {base_path} differ in {k} ({ev.get(k)!r} vs "
                f"{base.get(k)!r}); evaluate both on the same model, text and --seq-len"
            )
    if ev.get("layers") != base.get("layers"):
        raise SpecError(f"{where}: {ev_path} and baseline {base_path} differ in layers; evaluate the same model")
    return float(ev["perplexity"]), float(ev["perplexity"]) / float(base["perplexity"])


def resolve_variants(spec: Any, base_dir: Path, where: str) -> tuple:
    """Every (model, scheme) of `spec` as explore.space.Variant, with measured quality where there is some."""
    from explore.space import SchemeRef, Variant
    from models import get_model
    from quant.artifact import read_estimate_inputs, read_manifest
    from quant.scheme import get_scheme

    rel = lambda p: Path(p).expanduser() if Path(p).expanduser().is_absolute() else base_dir / p  # noqa: E731
    base = base_path = None
    if spec.baseline_eval is not None:
        base_path = rel(spec.baseline_eval)
        base = read_eval(base_path)
    models = []
    for name in spec.models:
        m = get_model(str(rel(name)) if name.endswith((".yaml", ".yml", ".json")) else name)
        models.append(m)
    if len({m.name for m in models}) != len(models):
        raise SpecError(f"{where}: a model is listed twice; list each once")
    variants: list = []
    for entry in spec.schemes:
        ref = entry if isinstance(entry, SchemeRef) else SchemeRef(scheme=entry)
        text = ref.scheme
        eval_path = rel(ref.eval) if ref.eval is not None else None
        ev = read_eval(eval_path) if eval_path is not None else None
        candidate = rel(text)
        if candidate.is_dir():  # an artifact: its own model only
            info = read_estimate_inputs(candidate)
            ppl = ratio = None
            source = ""
            if is_uncompressed(info.scheme):
                ratio, source = 1.0, "uncompressed"
            elif ev is not None:
                ppl, ratio = _ratio(ev, eval_path, base, base_path, where)
                source = str(eval_path)
            elif (candidate / "eval.json").is_file():
                own = candidate / "eval.json"
                ppl, ratio = _ratio(read_eval(own), own, base, base_path, where)
                source = str(own)
            else:
                q = read_manifest(candidate).get("quality")
                if q is not None:
                    try:
                        ppl = float(q["perplexity"])
                        ratio = ppl / float(q["baseline_perplexity"])
                    except (KeyError, TypeError, ValueError, ZeroDivisionError):
                        raise FormatError(
                            f"{candidate}/manifest.json: quality must hold perplexity and "
                            "baseline_perplexity (positive numbers)"
                        ) from None
                    source = f"{candidate}/manifest.json"
            variants.append(
                Variant(
                    model=info.model,
                    scheme=info.scheme,
                    label=f"{info.scheme.name}@{candidate.name}",
                    profile=info.profile(),
                    ppl=ppl,
                    ppl_ratio=ratio,
                    quality_source=source,
                )
            )
            continue
        if not models:
            raise SpecError(f"{where}: scheme {text!r} needs a model; list models (artifacts bring their own)")
        scheme = get_scheme(str(candidate) if text.endswith((".yaml", ".yml")) else text)
        for m in models:
            ppl = ratio = None
            source = ""
            if is_uncompressed(scheme):
                ratio, source = 1.0, "uncompressed"
            elif ev is not None:
                if ev.get("model") != m.name and len(models) > 1:
                    raise SpecError(
                        f"{where}: {eval_path} measured {ev.get('model')!r}; with several models give "
                        "the scheme once per model as an artifact"
                    )
                ppl, ratio = _ratio(ev, eval_path, base, base_path, where)
                source = str(eval_path)
            variants.append(
                Variant(model=m, scheme=scheme, label=scheme.name, ppl=ppl, ppl_ratio=ratio, quality_source=source)
            )
    labels = [(v.model.name, v.label) for v in variants]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise SpecError(f"{where}: scheme {dup[1]!r} appears twice for {dup[0]}; list each once")
    if "ppl_ratio" in spec.objectives:
        for v in variants:
            if v.ppl_ratio is None:
                raise SpecError(
                    f"{where}: perplexity is an objective but {v.label} on {v.model.name} has no quality "
                    "data; give it as {scheme: ..., eval: FILE} with `hwsim eval --json` output (and "
                    "baseline_eval), or drop ppl_ratio from objectives"
                )
    return tuple(variants)
