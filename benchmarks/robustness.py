"""Robustness of the `hwsim` command line against bad input: N generated cases, counts of what went wrong.

Each case is a command line with generated flag values, spec files (mutated shipped YAML / config.json, or special
paths: FIFO, /dev/zero, directories), compressed-model artifacts (tiny ones written here, then corrupted: flipped
bytes, truncation, header damage, manifest edits with and without a recomputed manifest digest, wrong types,
negative byte counts, a changed scheme) or output paths (a file where a directory should be, a directory holding a
user's files, a plot path that is a directory). Every case runs in its own directory holding a user file.

Printed counts (the goal of issue 41 is 0 of each):

* tracebacks: an exception escaped ``cli.main``;
* hangs: a case ran longer than --hang-s seconds (10 by default; the worker is killed);
* wrong exit codes: an exit status other than 0 and 2, or a refusal (2) that is not exactly one line on stderr;
* accepted corrupt inputs: a case built to be refused (corrupt artifact, malformed spec, impossible value)
  exited 0;
* files left or deleted: a user's file changed or vanished, a refused case left files behind, or a hidden
  ``.NAME.tmp-PID`` temporary remained.

Cases run in-process (``cli.main(argv)``) in worker processes, --jobs at a time; a worker stuck on a case is
killed and replaced. Usage::

    python benchmarks/robustness.py [-n 10000] [--jobs 2] [--seed 0] [--hang-s 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENTINEL = "user-notes.txt"  # a user's file in every case directory: must survive every case
BASE_SCHEMES = ("w2a8kv4", "accllm", "mustafar70", "fp16")


# ---- tiny artifacts ------------------------------------------------------------------------------------------------
def tiny_spec(num_layers: int = 2):
    """A small Llama-family ModelSpec (2 layers, hidden 64, GQA 2:1) for artifacts written in seconds."""
    from base.specio import from_mapping
    from models.spec import ModelSpec

    return from_mapping(
        ModelSpec,
        dict(
            name="tiny-llama",
            family="llama",
            num_layers=num_layers,
            hidden_size=64,
            num_heads=2,
            num_kv_heads=1,
            head_dim=32,
            ffn_hidden_size=128,
            ffn_type="swiglu",
            vocab_size=256,
            max_position_embeddings=512,
            norm="rmsnorm",
            norm_eps=1e-5,
            positional="rope",
            rope_theta=10000.0,
            tied_embeddings=True,
            source="benchmarks/robustness.py: a random model for artifact tests",
        ),
        "tiny",
    )


def write_tiny_artifact(out: Path, scheme_name: str, seed: int = 0) -> Path:
    """Quantize a random tiny Llama by preset `scheme_name` (RTN; Wanda on random calibration ids where the scheme
    prunes) and write it as an artifact at `out`. Needs torch."""
    import torch

    from models.llama import Llama, LlamaConfig
    from quant.artifact import write_artifact
    from quant.methods.kvcache import kv_statistics
    from quant.quantize import Calibration, configs_for_scheme, quantize
    from quant.scheme import get_scheme

    spec = tiny_spec()
    scheme = get_scheme(scheme_name)
    torch.manual_seed(seed)
    model = Llama(LlamaConfig.from_spec(spec))
    g = torch.Generator().manual_seed(seed)
    calib = Calibration(
        tuple(tuple(torch.randint(0, spec.vocab_size, (64,), generator=g).tolist()) for _ in range(2)),
        {"source": "random token ids (robustness benchmark)"},
    )
    for cfg in configs_for_scheme(scheme, weight_method="rtn"):
        quantize(model, cfg, calibration=calib)
    kv = kv_statistics(model, list(calib.windows), scheme)
    return write_artifact(out, model, spec, scheme, kv_stats=kv, calibration=calib.provenance)


def redigest(manifest: dict) -> dict:
    """`manifest` with its own SHA-256 recomputed (what a careful editor of the manifest would do)."""
    from quant.artifact import _manifest_digest

    manifest["manifest_sha256"] = _manifest_digest(manifest)
    return manifest


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path, obj


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


WRONG_VALUES = (None, "x", -1, -(2**40), 1.5, [], {}, True, 10**30, "1e400")
LEAF_VALUES = (
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    3,
    4,
    8,
    16,
    64,
    2.0,
    0.5,
    -(2**40),
    2**62,
    "x",
    "",
    "2:4",
    "none",
    "unstructured",
    [],
    [1],
    {},
    {"a": 1},
    1e300,
)
# fields of an artifact's model spec that its stored tensors do not witness (names, constants of the arithmetic,
# the context length, a learned-position offset of a RoPE model): an edit of these cannot be detected
MODEL_FREE = frozenset(
    {
        "name",
        "source",
        "family",
        "norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "sliding_window",
        "learned_position_offset",
    }
)
SCHEME_WITNESSED = frozenset({"weight_bits", "weight_group_size", "weight_pruning", "act_bits"})


def witnessed(manifest: dict, subtree: str, path: tuple, old, new) -> bool:
    """Whether editing `path` of `subtree` from `old` to `new` (manifest digest recomputed) must be refused: the
    value changed and the tensors, their formats or the byte counts witness it."""
    if new == old and type(new) is type(old) or new == old and subtree in ("scheme", "model"):
        return False
    if subtree == "model":
        return path[0] not in MODEL_FREE
    if subtree == "scheme":
        if path[0] == "weight_group_size" and manifest["scheme"].get("weight_bits") == 16:
            return False  # 16-bit weights have no groups
        return path[0] in SCHEME_WITNESSED
    return True


def corrupt_artifact(art: Path, rng: random.Random, other: Path | None = None) -> str:
    """Damage the artifact copy at `art` in one of many ways that must be refused; returns the kind."""
    mf, wf = art / "manifest.json", art / "weights.safetensors"
    man = json.loads(mf.read_text())
    data = bytearray(wf.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    kind = rng.choice(
        [
            "leaf_edit",
            "leaf_edit",
            "leaf_edit",
            "flip",
            "flip_header",
            "truncate",
            "truncate_same_size",
            "extend",
            "manifest_edit_nodigest",
            "negative_bytes",
            "scheme_bits",
            "scheme_act",
            "scheme_group",
            "scheme_pruning",
            "layers_count",
            "tensor_shape",
            "wrong_type",
            "missing_key",
            "weights_bytes",
            "fifo_weights",
            "dir_weights",
            "devzero_weights",
            "swap_weights",
            "manifest_garbage",
            "manifest_dup",
            "manifest_deep",
            "manifest_bigint",
            "per_layer_bytes",
            "totals",
            "model_dims",
            "kv_density",
        ]
    )
    if kind == "flip":
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        wf.write_bytes(bytes(data))
    elif kind == "flip_header":
        i = rng.randrange(8 + header_len)
        data[i] ^= 1 << rng.randrange(8)
        wf.write_bytes(bytes(data))
    elif kind == "truncate":
        wf.write_bytes(bytes(data[: rng.randrange(len(data))]))
    elif kind == "truncate_same_size":
        cut = rng.randrange(8 + header_len, len(data))
        if all(b == 0 for b in data[cut:]):
            cut = 8 + header_len
        wf.write_bytes(bytes(data[:cut]) + b"\0" * (len(data) - cut))
    elif kind == "extend":
        wf.write_bytes(bytes(data) + b"\0" * rng.randint(1, 100))
    elif kind == "manifest_edit_nodigest":
        path, value = rng.choice(list(_leaves(man)))
        _set(man, path, value + 1 if isinstance(value, int) and not isinstance(value, bool) else "edited")
        mf.write_text(json.dumps(man))
    elif kind in ("negative_bytes", "tensor_shape", "per_layer_bytes"):
        name = rng.choice(sorted(man["tensors"]))
        if kind == "negative_bytes":
            man["tensors"][name]["nbytes"] = -rng.randint(1, 10**6)
        elif kind == "tensor_shape":
            arr = rng.choice(sorted(man["tensors"][name]["arrays"]))
            shape = man["tensors"][name]["arrays"][arr]["shape"]
            shape[0] = shape[0] + rng.choice([-1, 1, 7])
        else:
            layer = rng.randrange(len(man["layers"]))
            lin = rng.choice(sorted(man["layers"][layer]["linears"]))
            man["layers"][layer]["linears"][lin] += rng.choice([-1, 1, 1000])
        mf.write_text(json.dumps(redigest(man)))
    elif kind.startswith("scheme_"):
        s = man["scheme"]
        if kind == "scheme_bits":
            s["weight_bits"] = rng.choice([b for b in (2, 3, 4, 8, 16) if b != s["weight_bits"]])
        elif kind == "scheme_act":
            s["act_bits"] = 16 if s["act_bits"] == 8 else 8
        elif kind == "scheme_group":
            s["weight_group_size"] = s["weight_group_size"] * 2
            if s["weight_bits"] == 16:
                s["weight_bits"] = 4
        else:
            s["weight_pruning"] = "2:4" if s["weight_pruning"] != "2:4" else "none"
            s["weight_sparsity"] = 0.0
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "layers_count":
        man["layers"] = man["layers"][:-1] if rng.random() < 0.5 else man["layers"] + man["layers"][:1]
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "model_dims":
        key = rng.choice(["num_layers", "hidden_size", "vocab_size", "ffn_hidden_size", "num_kv_heads"])
        man["model"][key] = man["model"][key] * 2
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "leaf_edit":
        subtree = rng.choice(["tensors", "layers", "weights_file", "scheme", "model"])
        path, old = rng.choice(list(_leaves(man[subtree])))
        new = rng.choice(LEAF_VALUES)
        if isinstance(old, int) and not isinstance(old, bool) and rng.random() < 0.5:
            new = old + rng.choice([-1, 1, old])
        refuse = witnessed(man, subtree, path, old, new)
        _set(man[subtree], path, new)
        mf.write_text(json.dumps(redigest(man)))
        return kind if refuse else "leaf_edit_unwitnessed"
    elif kind == "wrong_type":
        subtree = rng.choice(["tensors", "layers", "weights_file"])
        path, value = rng.choice(list(_leaves(man[subtree])))
        new = rng.choice([v for v in WRONG_VALUES if v != value and type(v) is not type(value)])
        _set(man[subtree], path, new)
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "missing_key":
        key = rng.choice(["model", "scheme", "tensors", "layers", "weights_file", "kv_stats", "calibration"])
        del man[key]
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "weights_bytes":
        man["weights_file"]["bytes"] = rng.choice([-1, 0, man["weights_file"]["bytes"] + 1, 2**62])
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "totals":
        man["totals"]["weight_bytes"] += rng.choice([-5, 5])
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "kv_density":
        if man["kv_stats"].get("layers"):
            man["kv_stats"]["layers"][0][0]["k_density"] = rng.choice([-0.5, 1.5, "x", None])
        else:
            man["kv_stats"]["layers"] = "not a list"
        mf.write_text(json.dumps(redigest(man)))
    elif kind == "fifo_weights":
        wf.unlink()
        os.mkfifo(wf)
    elif kind == "dir_weights":
        wf.unlink()
        wf.mkdir()
    elif kind == "devzero_weights":
        wf.unlink()
        wf.symlink_to("/dev/zero")
    elif kind == "swap_weights":
        src = other if other is not None else art
        data2 = (src / "weights.safetensors").read_bytes()
        if data2 == bytes(data):  # same file: damage it instead
            data2 = bytes(data[:-1]) + bytes([data[-1] ^ 1])
        wf.write_bytes(data2)
    elif kind == "manifest_garbage":
        mf.write_bytes(rng.choice([b"\xff\xfe" + os.urandom(50), b"", b"{", os.urandom(200), b"[]", b"null"]))
    elif kind == "manifest_dup":
        text = mf.read_text()
        mf.write_text(text.replace('"version"', '"version": 2, "version"', 1))
    elif kind == "manifest_deep":
        mf.write_text("[" * 100000 + "]" * 100000)
    elif kind == "manifest_bigint":
        mf.write_text(mf.read_text().replace('"version": 2', '"version": ' + "9" * 5000, 1))
    return kind


# ---- spec files ----------------------------------------------------------------------------------------------------
def _shipped(kind: str) -> Path:
    from hwsim.hardware import HARDWARE_DIR
    from models.spec import SPEC_DIR

    return {
        "model": SPEC_DIR / "llama-7b.yaml",
        "hardware": HARDWARE_DIR / "u280-accllm.yaml",
        "platform": REPO / "offload" / "platforms" / "a6000-csd.yaml",
    }[kind]


_SCHEME_YAML = "name: my-scheme\nweight_bits: 2\nweight_group_size: 64\nact_bits: 8\nkv_bits: 4\nsource: a test\n"
_HF_CONFIG = {
    "model_type": "llama",
    "hidden_size": 512,
    "num_attention_heads": 8,
    "num_hidden_layers": 4,
    "intermediate_size": 1024,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
}


def mutate_spec_text(text: str, rng: random.Random, suffix: str) -> tuple[str | bytes, bool]:
    """(mutated content, must be refused) of a YAML/JSON spec text."""
    lines = text.splitlines()
    keyed = [i for i, ln in enumerate(lines) if ":" in ln and not ln.lstrip().startswith("#")]
    kind = rng.choice(
        [
            "dup",
            "tag",
            "sexagesimal",
            "latin1",
            "deep",
            "bomb",
            "bigint",
            "overflow_float",
            "unknown_key",
            "truncate",
            "garbage",
            "value_type",
            "value_neg",
            "value_huge",
            "nan",
            "empty",
            "value_zero",
            "slow",
        ]
    )
    if kind == "slow":  # what the parser is slowest on, up to and beyond the size caps (seconds per 100 KB)
        size = rng.choice([30_000, 60_000, 9_000_000])
        depth = rng.choice([1, 20, 31])
        item = "[" * depth + "1" + "]" * depth
        body = ",".join([item] * (size // (2 * depth + 2)))
        if suffix == ".json":  # config.json ignores keys that are not architecture: refused only past the cap
            return text[:-1].rstrip() + f', "zz_extra": [{body}]}}', size > (8 << 20)
        return text + f"zz_extra: [{body}]\n", True
    if suffix == ".json":
        data = json.loads(text)
        key = rng.choice(sorted(data))
        if kind == "dup":
            return text[:-1].rstrip() + f', "{key}": {json.dumps(data[key])}}}', True
        if kind in ("deep", "bomb"):
            return "[" * 5000 + "]" * 5000, True
        if kind == "bigint":
            return text.replace(f'"{key}": {json.dumps(data[key])}', f'"{key}": ' + "9" * 400, 1), True
        if kind == "overflow_float":
            data["rms_norm_eps"] = "__X__"
            return json.dumps(data).replace('"__X__"', "1e400"), True
        if kind == "latin1":
            return text.encode() + b"\n\xe9", True
        if kind == "nan":
            data["rms_norm_eps"] = "__X__"
            return json.dumps(data).replace('"__X__"', "NaN"), True
        if kind == "value_type":
            data[key] = rng.choice(["x", [], {}, None])
            return json.dumps(data), key not in ("rms_norm_eps",) or data[key] is not None
        if kind == "value_neg":
            data["hidden_size"] = -512
            return json.dumps(data), True
        if kind == "value_huge":
            data["num_hidden_layers"] = rng.choice([2**62, 2**63 - 1, 10**15])
            return json.dumps(data), False
        if kind == "value_zero":
            data["num_attention_heads"] = 0
            return json.dumps(data), True
        if kind == "truncate":
            return text[: rng.randrange(1, len(text) - 1)], True
        if kind == "empty":
            return "", True
        if kind == "garbage":
            return os.urandom(64), True
        data["num_attention_heads"] = 7  # 512 % 7: hidden_size not divisible by the heads
        return json.dumps(data), True
    if kind == "dup":
        i = rng.choice(keyed)
        if lines[i].startswith(" "):
            i = next(j for j in keyed if not lines[j].startswith(" "))
        lines.insert(i + 1, lines[i])
        return "\n".join(lines) + "\n", True
    if kind == "tag":
        i = rng.choice(keyed)
        k, _, v = lines[i].partition(":")
        lines[i] = f'{k}: !!python/object/apply:os.system ["echo owned"]'
        return "\n".join(lines) + "\n", True
    if kind == "sexagesimal":
        i = rng.choice([j for j in keyed if lines[j].split(":", 1)[1].strip()[:1].isdigit()] or keyed)
        k = lines[i].split(":", 1)[0]
        lines[i] = f"{k}: {rng.choice(['2:4', '1:30', '12:34:56'])}"
        return "\n".join(lines) + "\n", True
    if kind == "latin1":
        return text.encode("utf-8") + b"# caf\xe9\n", True
    if kind == "deep":
        return text + "extra: " + "[" * 5000 + "]" * 5000 + "\n", True
    if kind == "bomb":
        bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        for j in range(8):
            p, c = chr(97 + j), chr(98 + j)
            bomb.append(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]")
        i = rng.choice(keyed)
        k = lines[i].split(":", 1)[0]
        if k.startswith(" "):
            return "\n".join(bomb) + "\n" + text, True
        rest = "\n".join(ln for ln in lines if not ln.startswith(k + ":"))
        return "\n".join(bomb) + "\n" + rest + f"\n{k}: *i\n", True
    if kind in ("bigint", "overflow_float", "value_huge", "value_neg", "value_zero", "nan", "value_type"):
        cand = [j for j in keyed if lines[j].split(":", 1)[1].strip()[:1].isdigit()] or keyed
        i = rng.choice(cand)
        k = lines[i].split(":", 1)[0]
        v = {
            "bigint": "9" * 400,
            "overflow_float": "1e400",
            "value_huge": str(rng.choice([2**62, 2**63 - 1])),
            "value_neg": "-5",
            "value_zero": "0",
            "nan": ".nan",
            "value_type": rng.choice(['"x"', "[1, 2]", "{a: 1}", "null"]),
        }[kind]
        lines[i] = f"{k}: {v}"
        return "\n".join(lines) + "\n", kind in ("bigint", "overflow_float", "value_type")
    if kind == "unknown_key":
        return text + "no_such_key: 1\n", True
    if kind == "truncate":
        return text[: rng.randrange(1, max(2, len(text) // 3))], False  # may still parse (a prefix of a mapping)
    if kind == "empty":
        return "", True
    return os.urandom(rng.randrange(1, 200)), True


# ---- cases ---------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    tag: str
    argv: list[str]
    must_refuse: bool
    protected: dict[str, bytes] = field(default_factory=dict)  # path -> content that must survive


GOOD_INT = ["1", "16", "128", "512"]
BAD_INT = [
    "0",
    "-1",
    "-1e3",
    "1e12",
    "10**12",
    "1000000000000",
    "9223372036854775808",
    "2**63",
    "abc",
    "",
    "1.5",
    "nan",
    " ",
    "-0",
    "99999999999999999999999999999999999",
    "٣",
    "１２",
    "²",
    "+-5",
    "1_000x",
]
MODELS = ["llama-7b", "llama-2-7b", "opt-6.7b", "mistral-7b", "smollm2-135m", "llama-3.1-8b"]
HARDWARE = ["u280-accllm", "a100-80gb", "h100-sxm", "a6000", "ecp5-85f"]
SCHEMES = ["fp16", "w2a8kv4", "accllm", "mustafar70", "w4a16", "flightllm"]


def _spec_path(rng: random.Random, work: Path, kind: str) -> tuple[str, bool]:
    """A path to a spec file of `kind` (model/hardware/scheme/hf): mutated or special; (path, must refuse)."""
    special = rng.random()
    if special < 0.15:
        which = rng.choice(["fifo", "devzero", "devurandom", "dir", "missing", "nul", "long"])
        suffix = ".json" if kind == "hf" else ".yaml"
        if which == "fifo":
            p = work / f"fifo{suffix}"
            os.mkfifo(p)
            return str(p), True
        if which == "devzero":
            p = work / f"zero{suffix}"
            p.symlink_to("/dev/zero")
            return str(p), True
        if which == "devurandom":
            p = work / f"rand{suffix}"
            p.symlink_to("/dev/urandom")
            return str(p), True
        if which == "dir":
            p = work / f"adir{suffix}"
            p.mkdir()
            return str(p), True
        if which == "nul":
            return f"a\0b{suffix}", True
        if which == "long":
            return "x" * 5000 + suffix, True
        return str(work / f"missing{suffix}"), True
    if kind == "hf":
        text, suffix = json.dumps(_HF_CONFIG, indent=1), ".json"
    elif kind == "scheme":
        text, suffix = _SCHEME_YAML, ".yaml"
    else:
        text, suffix = _shipped(kind).read_text(), ".yaml"
    content, refuse = mutate_spec_text(text, rng, suffix)
    p = work / f"spec-{kind}{suffix}"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return str(p), refuse


def _estimate_case(rng: random.Random, work: Path) -> Case:
    refuse = False
    argv = ["estimate"]
    r = rng.random()
    if r < 0.6:
        argv += ["--model", rng.choice(MODELS)]
    elif r < 0.8:
        p, bad = _spec_path(rng, work, rng.choice(["model", "hf"]))
        argv += ["--model", p]
        refuse |= bad
    else:
        argv += ["--model", rng.choice(["nope", "", "-", "/", "llama", "LLAMA-7B", "../../etc/passwd"])]
        refuse = True
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            argv += ["--hardware", rng.choice(HARDWARE)]
        else:
            p, bad = _spec_path(rng, work, "hardware")
            argv += ["--hardware", p]
            refuse |= bad
    if rng.random() < 0.3:
        if rng.random() < 0.6:
            argv += ["--scheme", rng.choice(SCHEMES)]
        else:
            p, bad = _spec_path(rng, work, "scheme")
            argv += ["--scheme", p]
            refuse |= bad
    for flag in ("--prompt", "--gen", "--batch"):
        if rng.random() < 0.35:
            if rng.random() < 0.5:
                argv += [flag, rng.choice(GOOD_INT)]
            else:
                argv += [flag, rng.choice(BAD_INT)]
                refuse = True
    for flag in ("--kv4", "--w2", "--a8"):
        if rng.random() < 0.3:
            argv.append(flag)
    for flag, good, bad in (
        ("--prune", ["2:4", "0.5"], ["1.5", "-0.1", "3:4x", "nan", "inf", "0", "2:4:8", ""]),
        ("--kv-sparsity", ["0.5", "0"], ["1", "-0.5", "nan", "inf", "1e400", "x"]),
        ("--lambda", ["4,256"], ["-1,5", "4", "a,b", "4,0", "4,99999999999999999999999", ","]),
        ("--fidelity", ["analytical"], ["x", ""]),
    ):
        if rng.random() < 0.15:
            if rng.random() < 0.5:
                argv += [flag, rng.choice(good)]
            else:
                argv += [flag, rng.choice(bad)]
                refuse = True
    if rng.random() < 0.5:
        argv.append("--json")
    return Case("estimate", argv, refuse)


def _artifact_case(rng: random.Random, work: Path, bases: dict[str, Path]) -> Case:
    name = rng.choice(sorted(bases))
    art = work / "art"
    shutil.copytree(bases[name], art)
    intact = rng.random() < 0.1
    kind = "intact"
    if not intact:
        others = [p for n, p in bases.items() if n != name]
        kind = corrupt_artifact(art, rng, rng.choice(others) if others else None)
    refuse = not intact and kind != "leaf_edit_unwitnessed"
    cmd = ["estimate", "--model", str(art)] if not refuse or rng.random() < 0.7 else ["eval", "--artifact", str(art)]
    if cmd[0] == "estimate":
        cmd += ["--prompt", "64", "--gen", "64"] + (["--json"] if rng.random() < 0.5 else [])
    return Case(f"artifact:{kind}:{cmd[0]}", cmd, refuse)


def _output_case(rng: random.Random, work: Path) -> Case:
    user = work / "mine"
    user.mkdir()
    (user / "report.json").write_text('{"mine": true}')
    (user / "top.bit").write_bytes(b"my bitstream")
    afile = work / "afile"
    afile.write_text("a user's file")
    protected = {
        str(user / "report.json"): b'{"mine": true}',
        str(user / "top.bit"): b"my bitstream",
        str(afile): b"a user's file",
    }
    which = rng.choice(
        [
            "compress_file",
            "compress_under_file",
            "compress_devfull",
            "fpga_build_user_dir",
            "fpga_sweep_lanes",
            "fpga_sweep_png_dir",
            "offload_plot_dir",
            "offload_plot_suffix",
            "offload_plot_under_file",
            "fpga_build_out_file",
            "offload_sweep_values",
            "compress_calib",
            "eval_seq_len",
        ]
    )
    if which == "compress_file":
        argv = ["compress", "--model", "smollm2-135m", "--scheme", "w2a8kv4", "--out", str(afile), "--force"]
    elif which == "compress_under_file":
        argv = ["compress", "--model", "smollm2-135m", "--scheme", "w2a8kv4", "--out", str(afile / "art")]
    elif which == "compress_devfull":
        argv = ["compress", "--model", "smollm2-135m", "--scheme", "w2a8kv4", "--out", "/dev/full/art"]
    elif which == "compress_calib":
        argv = [
            "compress",
            "--model",
            "smollm2-135m",
            "--scheme",
            "w2a8kv4",
            "--out",
            str(work / "new"),
            "--calib-len",
            rng.choice(["1", "100000", "0", "-3"]),
        ]
    elif which == "fpga_build_user_dir":
        argv = ["fpga", "build", "--design", "dot", "--lanes", "2", "--head-dim", "16", "--out", str(user)]
    elif which == "fpga_build_out_file":
        argv = ["fpga", "build", "--design", "dot", "--lanes", "2", "--out", str(afile)]
    elif which == "fpga_sweep_lanes":
        argv = [
            "fpga",
            "sweep",
            "--design",
            "engine",
            "--lanes",
            rng.choice(["2,128", "2,3", "2,0", "2,-4", "1,2"]),
            "--out",
            str(work / "sweep"),
        ]
    elif which == "fpga_sweep_png_dir":
        argv = ["fpga", "sweep", "--design", "dot", "--lanes", "2,4", "--out", str(work / "sweep"), "--png", str(user)]
    elif which == "offload_plot_dir":
        argv = ["offload", "--model", "opt-6.7b", "--fidelity", "analytical", "--plot", str(user)]
    elif which == "offload_plot_suffix":
        argv = ["offload", "--model", "opt-6.7b", "--fidelity", "analytical", "--plot", str(work / "plot")]
    elif which == "offload_plot_under_file":
        argv = ["offload", "--model", "opt-6.7b", "--fidelity", "analytical", "--plot", str(afile / "p.png")]
    elif which == "eval_seq_len":
        argv = ["eval", "--artifact", str(user), "--seq-len", rng.choice(["0", "-1", "99999999999999999999"])]
    else:
        argv = [
            "offload",
            "--model",
            "opt-6.7b",
            "--fidelity",
            "analytical",
            "--plot",
            str(work / "p.png"),
            "--sweep-values",
            rng.choice(["8,9223372036854775808", "8,-1", "8,1e3", ",", "8," * 100 + "8"]),
        ]
    return Case(f"output:{which}", argv, True, protected)


def _offload_case(rng: random.Random, work: Path) -> Case:
    refuse = False
    argv = ["offload", "--model", rng.choice(["opt-6.7b", "opt-13b", "llama-7b"]), "--fidelity", "analytical"]
    if rng.random() < 0.1:
        p, bad = _spec_path(rng, work, "hardware")  # a hardware YAML is not a platform: refused
        argv += ["--platform", p]
        refuse = True
    elif rng.random() < 0.3:
        p, bad = _spec_path(rng, work, "platform")
        argv += ["--platform", p]
        refuse |= bad
    if rng.random() < 0.15:
        p, bad = _spec_path(rng, work, "scheme")
        argv += ["--scheme", p]
        refuse |= bad
    for flag in ("--prompt", "--gen", "--batch", "--gpu-batches", "--topr"):
        if rng.random() < 0.3:
            if rng.random() < 0.5:
                argv += [flag, rng.choice(GOOD_INT)]
            else:
                argv += [flag, rng.choice(BAD_INT)]
                refuse = True
    if rng.random() < 0.2:
        argv += ["--placement", rng.choice(["100,0,15,85,100,0", "1,2", "x", "-5,0,0,0,0,0", "200,0,0,0,0,0"])]
    if rng.random() < 0.2:
        argv += ["--topk", rng.choice(["0.5", "1", "0", "-1", "nan", "2"])]
    if rng.random() < 0.5:
        argv.append("--json")
    return Case("offload", argv, refuse)


def make_case(i: int, seed: int, work: Path, bases: dict[str, Path]) -> Case:
    """Case number `i` of the run with `seed` (deterministic), its files created under `work`."""
    rng = random.Random(f"{seed}:{i}")
    r = rng.random()
    if r < 0.40:
        return _estimate_case(rng, work)
    if r < 0.65 and bases:
        return _artifact_case(rng, work, bases)
    if r < 0.85:
        return _output_case(rng, work)
    return _offload_case(rng, work)


# ---- running -------------------------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[p] = 1
    return out


def run_case(case: Case, work: Path) -> dict:
    """Run `case` in-process in `work`; the outcome with its problems flagged."""
    import cli

    before = _snapshot(work)
    out, err = io.StringIO(), io.StringIO()
    tb = None
    t0 = time.perf_counter()
    cwd = os.getcwd()
    try:
        os.chdir(work)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(case.argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - the very thing counted
                rc = None
                tb = traceback.format_exc(limit=-3)
    finally:
        os.chdir(cwd)
    seconds = time.perf_counter() - t0
    after = _snapshot(work)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]  # a refusal: this one line, no notes
    res = {
        "tag": case.tag,
        "argv": case.argv,
        "rc": rc,
        "seconds": round(seconds, 3),
        "traceback": tb,
        "stderr": err.getvalue()[-400:],
        "problems": [],
    }
    if tb is not None:
        res["problems"].append("traceback")
    elif rc not in (0, 2) or rc == 2 and (len(lines) != 1 or not lines[0].startswith("hwsim")):
        res["problems"].append("wrong_exit")
    elif case.must_refuse and rc == 0:
        res["problems"].append("accepted_corrupt")
    deleted = [p for p in before if p not in after]
    changed = [p for p, content in case.protected.items() if not os.path.isfile(p) or Path(p).read_bytes() != content]
    left = [p for p in after if p not in before and (rc != 0 or ".tmp-" in os.path.basename(p))]
    left += [p for p in after if ".tmp-" in os.path.basename(p) and p not in left]
    if deleted or changed or left:
        res["problems"].append("files")
        res["files"] = {"deleted": deleted[:5], "changed": changed[:5], "left": left[:5]}
    return res


def _worker(seed: int, root: str, bases: dict[str, str], tasks, results) -> None:
    import warnings

    warnings.simplefilter("ignore")
    import matplotlib

    import cli  # noqa: F401 - imported once per worker

    matplotlib.use("Agg")
    b = {k: Path(v) for k, v in bases.items()}
    parent = os.getppid()
    while True:
        try:
            i = tasks.get(timeout=1.0)
        except Exception:  # noqa: BLE001 - queue.Empty: stop when the parent is gone
            if os.getppid() != parent:
                return
            continue
        if i is None or os.getppid() != parent:
            return
        work = Path(root) / f"case-{i}"
        work.mkdir()
        (work / SENTINEL).write_text("a user's notes")
        results.put(("start", i, os.getpid(), time.time()))
        try:
            case = make_case(i, seed, work, b)
            case.protected[str(work / SENTINEL)] = b"a user's notes"
            res = run_case(case, work)
        except BaseException:  # noqa: BLE001 - a bug of this benchmark, reported as such
            res = {
                "tag": "generator",
                "argv": [],
                "rc": None,
                "problems": ["generator_error"],
                "traceback": traceback.format_exc(limit=-3),
            }
        res["i"] = i
        results.put(("done", i, os.getpid(), res))
        shutil.rmtree(work, ignore_errors=True)


def _describe(i: int, seed: int, bases: dict[str, Path]) -> dict:
    """Tag and argv of case `i` (regenerated in a scratch directory: the worker that ran it was killed)."""
    with tempfile.TemporaryDirectory() as tmp:
        case = make_case(i, seed, Path(tmp), bases)
        return {"tag": case.tag, "argv": case.argv}


def run(n: int, seed: int, jobs: int, hang_s: float, root: Path, bases: dict[str, Path], progress=None) -> list[dict]:
    """Run cases 0..n-1 on `jobs` worker processes; a case over `hang_s` seconds is recorded as a hang and its
    worker replaced."""
    ctx = mp.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    for i in range(n):
        tasks.put(i)
    bases_s = {k: str(v) for k, v in bases.items()}
    workers: dict[int, mp.Process] = {}

    def spawn() -> None:
        p = ctx.Process(target=_worker, args=(seed, str(root), bases_s, tasks, results), daemon=True)
        p.start()
        workers[p.pid] = p

    for _ in range(jobs):
        spawn()
    running: dict[int, tuple[int, float]] = {}  # pid -> (case, started)
    out: list[dict] = []
    done = 0
    while done < n:
        try:
            msg = results.get(timeout=0.5)
        except Exception:  # noqa: BLE001 - queue.Empty
            msg = None
        if msg is not None:
            if msg[0] == "start":
                running[msg[2]] = (msg[1], msg[3])
            else:
                running.pop(msg[2], None)
                out.append(msg[3])
                done += 1
                if progress:
                    progress(done, n)
        now = time.time()
        for pid, (i, started) in list(running.items()):
            if now - started > hang_s:
                workers[pid].kill()
                workers[pid].join()
                del workers[pid], running[pid]
                out.append(
                    {
                        "i": i,
                        **_describe(i, seed, bases),
                        "rc": None,
                        "problems": ["hang"],
                        "seconds": round(now - started, 1),
                    }
                )
                shutil.rmtree(root / f"case-{i}", ignore_errors=True)
                done += 1
                spawn()
        for pid, p in list(workers.items()):
            if not p.is_alive() and pid not in running and done < n and tasks.empty() is False:
                del workers[pid]
                spawn()
    for _ in workers:
        tasks.put(None)
    for p in workers.values():
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    return sorted(out, key=lambda r: r["i"])


def summarize(results: list[dict]) -> dict:
    counts = {k: 0 for k in ("traceback", "hang", "wrong_exit", "accepted_corrupt", "files", "generator_error")}
    for r in results:
        for p in r["problems"]:
            counts[p] += 1
    refused = sum(1 for r in results if r.get("rc") == 2)
    ok = sum(1 for r in results if r.get("rc") == 0)
    return {"cases": len(results), "exit_0": ok, "exit_2": refused, **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="cases (default 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--hang-s", type=float, default=10.0, help="a case longer than this is a hang (default 10 s)")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the summary and every problem case")
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="hwsim-robustness-") as tmp:
        root = Path(tmp)
        bases = {}
        for name in BASE_SCHEMES:
            bases[name] = write_tiny_artifact(root / "bases" / name, name)
        (root / "cases").mkdir()

        def progress(done: int, n: int) -> None:
            if done % 500 == 0 or done == n:
                print(f"  {done:,}/{n:,} cases, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

        results = run(args.n, args.seed, args.jobs, args.hang_s, root / "cases", bases, progress)
    summary = summarize(results)
    problems = [r for r in results if r["problems"]]
    tags: dict[str, int] = {}
    for r in results:
        fam = r["tag"].split(":")[0]
        tags[fam] = tags.get(fam, 0) + 1
    slow = max(results, key=lambda r: r.get("seconds") or 0, default={})
    slowest = slow.get("seconds") or 0
    print(
        f"robustness: {summary['cases']:,} cases (seed {args.seed}, {args.jobs} jobs, {time.time() - t0:.0f} s; "
        f"families {', '.join(f'{k} {v:,}' for k, v in sorted(tags.items()))})"
    )
    print(
        f"  exit 0: {summary['exit_0']:,}   refused (exit 2): {summary['exit_2']:,}   slowest case {slowest:.1f} s "
        f"({slow.get('tag', '-')}: {' '.join(map(str, slow.get('argv', [])))[:100]})"
    )
    print(f"  tracebacks:              {summary['traceback']}")
    print(f"  hangs (> {args.hang_s:g} s):          {summary['hang']}")
    print(f"  wrong exit codes:        {summary['wrong_exit']}")
    print(f"  accepted corrupt inputs: {summary['accepted_corrupt']}")
    print(f"  files left or deleted:   {summary['files']}")
    if summary["generator_error"]:
        print(f"  (benchmark generator errors: {summary['generator_error']})")
    for r in problems[:10]:
        print(f"  - case {r['i']} {r['tag']} {r['problems']} rc={r.get('rc')}: {' '.join(map(repr, r['argv']))[:200]}")
        detail = r.get("traceback") or r.get("stderr") or ""
        if detail:
            print("      " + detail.strip().splitlines()[-1][:200])
    if args.json:
        import datetime
        import platform
        import subprocess

        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
        ).stdout.strip()
        provenance = {
            "command": "python benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "jobs": args.jobs,
            "seconds": round(time.time() - t0, 1),
        }
        Path(args.json).write_text(
            json.dumps(
                {
                    "summary": summary,
                    "seed": args.seed,
                    "n": args.n,
                    "hang_s": args.hang_s,
                    "provenance": provenance,
                    "problems": problems[:500],
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
