"""GPU operator profiles: the shipped profile against the committed end-to-end measurements, lookup and bad input.

No GPU here: the measurements are JSON files taken on the device (tests/data/gpu_validation_*.json, provenance
inside); the profiler's harness runs on CPU for the structural tests.
"""

import copy
import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from base.errors import FormatError, SpecError
from cli import main
from hwsim.estimate import estimate
from hwsim.gpuprofile import compose
from hwsim.gpuprofile.grid import OPERATORS, grid_for_models, shape_of
from hwsim.gpuprofile.profile import load_profile, parse_profile, profile_for, roofline_s
from hwsim.hardware import HARDWARE_DIR, get_hardware
from hwsim.workload import Workload
from models.spec import get_model
from quant.scheme import get_scheme

DATA = Path(__file__).resolve().parents[1] / "data"
VALIDATION = sorted(DATA.glob("gpu_validation_*.json"))
# Tolerances of the shipped profile against the committed end-to-end measurements (per row, |predicted/measured-1|).
# The goals the benchmark prints (benchmarks/fidelity_gpu.py) are tighter on average; these bound every row.
DECODE_TOL = 0.15
TTFT_TOL = 0.25


def _synthetic(hw_name: str = "h100-sxm", models=("smollm2-135m", "llama-3-8b", "opt-6.7b")) -> dict:
    """A profile document over a small grid whose times are the roofline x 1.25 + 4 us (not a measurement)."""
    hw = get_hardware(hw_name)
    grid = grid_for_models([get_model(m) for m in models])
    ax = {
        "tokens": [1, 8, 64, 512],
        "batch": [1, 8, 64],
        "context": [128, 1024, 8192],
        "seq": [16, 128, 1024],
        "prefill_batch": [1, 8],
    }
    ops = {}
    for op, (_, axes) in OPERATORS.items():
        tables = []
        for key in grid["keys"][op]:
            if len(axes) == 1:
                vals = ax[axes[0]]
                t = [roofline_s(hw, op, key, (v,)) * 1.25 + 4e-6 for v in vals]
                tables.append({"key": key, "axes": {axes[0]: vals}, "time_s": t})
            else:
                a0 = ax["prefill_batch"] if op == "prefill_attention" else ax["batch"]
                a1 = ax[axes[1]]
                t = [[roofline_s(hw, op, key, (x, y)) * 1.25 + 4e-6 for y in a1] for x in a0]
                tables.append({"key": key, "axes": {axes[0]: a0, axes[1]: a1}, "time_s": t})
        ops[op] = tables
    return {
        "format": "hwsim-gpu-profile",
        "version": 1,
        "hardware": hw_name,
        "complete": True,
        "provenance": {"device_name": "synthetic"},
        "grid": grid,
        "overhead": {"graph_launch_s": 2e-6, "graph_tiny_kernel_s": 2e-6, "eager_launch_s": 8e-6},
        "ops": ops,
    }


def _spec_with(tmp_path: Path, profile_doc: dict | str, name: str = "h100-sxm", **extra) -> Path:
    """A copy of the h100-sxm YAML naming `profile_doc` (written beside it) as its profile."""
    import yaml

    prof = tmp_path / "prof.json"
    prof.write_text(profile_doc if isinstance(profile_doc, str) else json.dumps(profile_doc))
    doc = yaml.safe_load((HARDWARE_DIR / "h100-sxm.yaml").read_text())
    doc.update(name=name, profile="prof.json", **extra)
    spec = tmp_path / "gpu.yaml"
    spec.write_text(yaml.safe_dump(doc))
    return spec


# ---- the shipped profile against the committed measurements ------------------------------------------------------
@pytest.mark.parametrize("path", VALIDATION, ids=lambda p: p.stem)
def test_validation_data_has_provenance_and_three_models(path):
    doc = json.loads(path.read_text())
    prov = doc["provenance"]
    for field in ("device_name", "driver", "torch", "cuda", "date_utc", "command"):
        assert prov.get(field), (path.name, field)
    assert len(set(doc["models"]) - {"llama-2-7b"}) >= 3  # shapes other than the one the roofline was tuned on
    assert doc["decode"] and doc["prefill"]


@pytest.mark.parametrize("path", VALIDATION, ids=lambda p: p.stem)
def test_shipped_profile_reproduces_decode_steps(path):
    doc = json.loads(path.read_text())
    hw = get_hardware(doc["hardware"])
    prof = profile_for(hw)
    assert prof is not None and prof.device_name == doc["provenance"]["device_name"]
    errs = []
    for row in doc["decode"]:
        m = get_model(row["model"])
        pred = compose.predict_decode_step(m, hw, prof, row["batch"], row["context"]).total_s
        errs.append(pred / row["time_s"] - 1)
    assert max(abs(e) for e in errs) <= DECODE_TOL, sorted(errs)


@pytest.mark.parametrize("path", VALIDATION, ids=lambda p: p.stem)
def test_shipped_profile_reproduces_ttft(path):
    doc = json.loads(path.read_text())
    hw = get_hardware(doc["hardware"])
    prof = profile_for(hw)
    errs = []
    for row in doc["prefill"]:
        m = get_model(row["model"])
        pred = compose.predict_prefill(m, hw, prof, row["batch"], row["prompt"]).total_s
        errs.append(pred / row["time_s"] - 1)
    assert max(abs(e) for e in errs) <= TTFT_TOL, sorted(errs)


@pytest.mark.parametrize("path", VALIDATION, ids=lambda p: p.stem)
def test_estimate_uses_the_profile_and_agrees_with_composition(path):
    """`estimate` (the operator list of hwsim/ops.py priced through the hook) and the composition of the reference
    forward pass give the same decode step within a few percent."""
    doc = json.loads(path.read_text())
    hw = get_hardware(doc["hardware"])
    prof = profile_for(hw)
    fp16 = get_scheme("fp16")
    for row in doc["decode"][:: max(1, len(doc["decode"]) // 6)]:
        m = get_model(row["model"])
        est = estimate(m, hw, fp16, Workload(batch=row["batch"], prompt_len=row["context"] - 1, gen_len=1))
        ref = compose.predict_decode_step(m, hw, prof, row["batch"], row["context"]).total_s
        assert est.decode_step_s[0] == pytest.approx(ref, rel=0.05), row


# ---- lookup -----------------------------------------------------------------------------------------------------
def test_lookup_exact_at_grid_points_and_log_log_between():
    prof = parse_profile(_synthetic(), "synthetic.json")
    hw = get_hardware("h100-sxm")
    key = {"in": 4096, "out": 14336, "bias": False}
    tab = prof.table("linear", key)
    assert prof.lookup("linear", key, (64,), hw)[0] == tab.times[2]
    t8, t64 = tab.times[1], tab.times[2]
    mid, how = prof.lookup("linear", key, (32,), hw)  # 32 = 8 * 4: 2/3 of the way in log space
    assert how == "profile" and mid == pytest.approx(t8 ** (1 / 3) * t64 ** (2 / 3))
    assert prof.lookup("linear", key, (4096,), hw) == (None, "outside")


def test_unprofiled_shape_is_scaled_from_the_nearest_by_roofline():
    prof = parse_profile(_synthetic(), "synthetic.json")
    hw = get_hardware("h100-sxm")
    near = {"in": 4096, "out": 14336, "bias": False}
    other = {"in": 4096, "out": 16384, "bias": False}
    t, how = prof.lookup("linear", other, (512,), hw)
    assert how == "scaled"
    ratio = roofline_s(hw, "linear", other, (512,)) / roofline_s(hw, "linear", near, (512,))
    assert t == pytest.approx(prof.lookup("linear", near, (512,), hw)[0] * ratio)


def test_outside_the_grid_falls_back_to_roofline_with_a_note(tmp_path):
    hw = get_hardware(_spec_with(tmp_path, _synthetic()))
    m = get_model("llama-3-8b")
    inside = estimate(m, hw, get_scheme("fp16"), Workload(batch=1, prompt_len=255, gen_len=1))
    assert not any("outside the measured range" in n for n in inside.notes)
    outside = estimate(m, hw, get_scheme("fp16"), Workload(batch=1, prompt_len=4096, gen_len=1))
    assert any("outside the measured range" in n and "linear" in n for n in outside.notes)
    roof = estimate(
        m,
        dataclasses.replace(get_hardware("h100-sxm"), profile=None),
        get_scheme("fp16"),
        Workload(batch=1, prompt_len=255, gen_len=1),
    )
    assert inside.decode_step_s[0] > roof.decode_step_s[0]  # synthetic times are 1.25x the roofline + latency


def test_quantized_linears_are_the_fp16_kernel_over_the_same_bytes_floored_by_arithmetic(tmp_path):
    """W4A16 decode: the measured fp16 GEMM whose weights have the same bytes (so slower than the roofline of those
    bytes, faster than fp16); prefill: arithmetic-bound, close to the fp16 GEMM of the same shape (fp16 multiplies); a
    weight-sparse linear leaves the profile for the roofline. Each says so in the notes."""
    hw = get_hardware(_spec_with(tmp_path, _synthetic()))
    m = get_model("llama-3-8b")
    roof = dataclasses.replace(get_hardware("h100-sxm"), profile=None)
    q, fp16 = get_scheme("w4a16"), get_scheme("fp16")
    w = Workload(batch=8, prompt_len=1023, gen_len=1)
    est_q, est_16, est_roof = estimate(m, hw, q, w), estimate(m, hw, fp16, w), estimate(m, roof, q, w)
    t_q, t_16, t_roof = ({o.name: o.time_s for o in e.decode_ops}["ffn"] for e in (est_q, est_16, est_roof))
    assert t_roof < t_q < t_16
    assert any("same bytes" in n and "w4a16" in n for n in est_q.notes)
    pre = Workload(batch=8, prompt_len=2048, gen_len=1)
    pq = {o.name: o.time_s for o in estimate(m, hw, q, pre).prefill_ops}["ffn"]
    p16 = {o.name: o.time_s for o in estimate(m, hw, fp16, pre).prefill_ops}["ffn"]
    assert 0.75 * p16 <= pq <= p16  # arithmetic-bound: little faster than fp16, never slower


def _schemes():
    from quant.scheme import list_schemes

    return list_schemes()


def test_composition_mirrors_the_reference_forward_pass(monkeypatch):
    """Every kernels.* call of RefModel's decode step and prefill is one listed OpCall (same operator, same count)."""
    torch = pytest.importorskip("torch")
    from hwsim.gpuprofile import kernels
    from hwsim.gpuprofile.validate import RefModel

    for name in ("smollm2-135m", "opt-6.7b"):
        m = get_model(name)
        shape = dict(
            shape_of(m),
            num_layers=2,
            hidden_size=64,
            num_heads=4,
            head_dim=16,
            ffn_hidden_size=96,
            vocab_size=50,
            num_kv_heads=2 if m.num_kv_heads < m.num_heads else 4,
        )
        shape["max_position_embeddings"] = 64
        small = dataclasses.replace(m, **{k: v for k, v in shape.items() if k in m.__dataclass_fields__})
        calls: Counter = Counter()

        def counted(f, n, calls=calls):
            def wrapper(*a, **kw):
                calls[n] += 1
                return f(*a, **kw)

            return wrapper

        for fn in kernels.__all__:
            monkeypatch.setattr(kernels, fn, counted(getattr(kernels, fn), fn))
        model = RefModel(shape_of(small), torch.device("cpu"), torch.float32)
        B, C = 3, 20
        model.decode_step(
            torch.zeros(B, dtype=torch.long), torch.full((B,), C - 1), torch.tensor([C - 1]), model.new_cache(B, C), C
        )
        want: Counter = Counter()
        for c in compose.decode_calls(small, B, C):
            want[c.op] += c.count
        assert calls == +want, name
        calls.clear()
        P = 5
        model.prefill(torch.zeros(B * P, dtype=torch.long), torch.arange(P).repeat(B), model.new_cache(B, P), B)
        want = Counter()
        for c in compose.prefill_calls(small, B, P):
            want[c.op] += c.count
        assert calls == +want, name
        monkeypatch.undo()


# ---- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: '{"format": "hwsim-gpu-profile", "ops": {', "malformed or truncated JSON"),
        (lambda d: json.dumps({"format": "nsight-report"}), "not a hwsim GPU profile"),
        (lambda d: json.dumps([1, 2, 3]), "not a hwsim GPU profile"),
        (lambda d: json.dumps({**d, "version": 9}), "version 9 is not supported"),
        (
            lambda d: json.dumps({**d, "ops": {k: v for k, v in d["ops"].items() if k != "rope"}}),
            "misses operator 'rope'",
        ),
        (
            lambda d: json.dumps({**d, "ops": {**d["ops"], "add": [{**d["ops"]["add"][0], "time_s": [-1.0] * 4}]}}),
            "not a positive number of seconds",
        ),
        (
            lambda d: json.dumps({**d, "ops": {**d["ops"], "add": [{**d["ops"]["add"][0], "time_s": [1e-6]}]}}),
            "one entry per axis value",
        ),
        (
            lambda d: json.dumps({**d, "ops": {**d["ops"], "add": [{**d["ops"]["add"][0], "key": {"w": 1}}]}}),
            "key fields",
        ),
        (lambda d: json.dumps({**d, "overhead": {}}), "overhead.graph_launch_s"),
    ],
)
def test_bad_profiles_are_one_line_format_errors(tmp_path, mutate, message):
    doc = _synthetic()
    p = tmp_path / "bad.json"
    p.write_text(mutate(copy.deepcopy(doc)))
    with pytest.raises(FormatError, match=message):
        load_profile(p)


def test_binary_file_is_a_format_error(tmp_path):
    p = tmp_path / "bad.json"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_profile(p)


def test_profile_for_another_device_is_refused(tmp_path):
    hw = get_hardware(_spec_with(tmp_path, _synthetic("a100-80gb")))
    with pytest.raises(SpecError, match="measured for 'a100-80gb'.*not 'h100-sxm'"):
        profile_for(hw)


def test_missing_profile_file_is_a_spec_error(tmp_path):
    spec = _spec_with(tmp_path, _synthetic())
    (tmp_path / "prof.json").unlink()
    with pytest.raises(SpecError, match="does not exist"):
        profile_for(get_hardware(spec))


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "x"})])
def test_cli_estimate_with_a_bad_profile_exits_2_with_one_line(tmp_path, capsys, content):
    spec = _spec_with(tmp_path, content)
    rc = main(["estimate", "--model", "llama-3-8b", "--hardware", str(spec), "--scheme", "fp16"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "prof.json" in err and "Traceback" not in err


def test_cli_profile_without_cuda_exits_2(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    rc = main(["profile", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "CUDA" in err


def test_transfer_to_another_spec_is_noted_and_scales_memory_bound_time(tmp_path):
    h100 = get_hardware(_spec_with(tmp_path, _synthetic()))
    h200 = dataclasses.replace(
        h100,
        name="h200-like",
        profile_hardware="h100-sxm",
        memory=dataclasses.replace(h100.memory, bandwidth_bytes_per_s=4.8e12),
    )
    m = get_model("llama-3-8b")
    w = Workload(batch=1, prompt_len=1023, gen_len=1)
    a = estimate(m, h100, get_scheme("fp16"), w)
    b = estimate(m, h200, get_scheme("fp16"), w)
    assert b.decode_step_s[0] < a.decode_step_s[0] * 0.85
    assert any("transferred" in n and "unvalidated" in n for n in b.notes)


@pytest.mark.parametrize("name", ["llama-3-8b", "smollm2-135m", "opt-6.7b"])
@pytest.mark.parametrize("batch, context, prompt", [(1, 512, 128), (8, 1024, 128), (64, 8192, 16)])
def test_estimate_through_the_hook_equals_the_composition(tmp_path, name, batch, context, prompt):
    """The operator list of hwsim/ops.py priced by the hook and the composition of the reference forward pass
    price the same calls (decode step and TTFT; synthetic profile, every shape inside its grid)."""
    hw = get_hardware(_spec_with(tmp_path, _synthetic()))
    prof = profile_for(hw)
    m = get_model(name)
    fp16 = get_scheme("fp16")
    est = estimate(m, hw, fp16, Workload(batch=batch, prompt_len=context - 1, gen_len=1))
    ref = compose.predict_decode_step(m, hw, prof, batch, context)
    assert not ref.fallback and not any("outside" in n for n in est.notes if "decode" in n)
    assert est.decode_step_s[0] == pytest.approx(ref.total_s, rel=0.02)
    if batch * prompt <= 512:
        pre = estimate(m, hw, fp16, Workload(batch=batch, prompt_len=prompt, gen_len=1))
        ref = compose.predict_prefill(m, hw, prof, batch, prompt)
        assert not ref.fallback
        assert pre.ttft_s == pytest.approx(ref.total_s, rel=0.02)


def test_compressed_kv_attention_is_the_dense_kernel_over_the_same_bytes():
    """On a profiled GPU, decode attention over a bitmap-sparse cache is the measured dense kernel at the context of
    equal bytes: never cheaper than a shorter all-dense cache (the roofline has no kernel floor), and said so."""
    m, hw, s = get_model("llama-2-7b"), get_hardware("h100-sxm"), get_scheme("mustafar70")
    short = estimate(m, hw, s, Workload(1, 31, 1))  # 32 tokens: all in the dense recent window
    longer = estimate(m, hw, s, Workload(1, 95, 1))  # one compressed 64-token chunk + the dense window
    assert longer.decode_step_s[0] >= short.decode_step_s[0]
    assert any("same bytes" in n for n in longer.notes) and not any("same bytes" in n for n in short.notes)


# ---- clock and power while measuring --------------------------------------------------------------------------
def test_clock_sampler_summarises_clock_power_and_the_power_cap(monkeypatch):
    """A stand-in NVML: half the samples carry the software power-cap reason."""
    import sys
    import types

    from hwsim.gpuprofile.clock import ClockSampler

    state = {"n": 0}
    nv = types.SimpleNamespace(
        NVML_CLOCK_SM=0,
        NVMLError=RuntimeError,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "gpu0",
        nvmlDeviceGetClockInfo=lambda h, kind: 1980 if state["n"] % 2 else 1500,
        nvmlDeviceGetPowerUsage=lambda h: 700_000 if state["n"] % 2 == 0 else 300_000,
    )

    def reasons(h):
        state["n"] += 1
        return 0x4 if state["n"] % 2 else 0x0

    nv.nvmlDeviceGetCurrentClocksEventReasons = reasons
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    s = ClockSampler.maybe(period_s=1e-4)
    assert isinstance(s, ClockSampler)
    with s:
        import time

        time.sleep(0.05)
    out = s.summary()
    assert out["n"] >= 4 and 1500 <= out["sm_mhz_mean"] <= 1980 and out["power_w_max"] <= 700
    assert 0.3 <= out["power_capped"] <= 0.7


def test_clock_sampler_without_nvml_is_a_null_sampler(monkeypatch):
    import sys

    from hwsim.gpuprofile.clock import ClockSampler, NullSampler

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    s = ClockSampler.maybe()
    assert isinstance(s, NullSampler)
    with s:
        pass
    assert s.summary() == {}


def test_h200_borrows_the_h100_profile_by_spec_sheets_and_says_so():
    """No H200 was profiled: its estimates carry the H100's measured times scaled by the two spec sheets (a
    memory-bound decode step by about the 4.8/3.35 bandwidth ratio, launch floors unscaled), noted as unvalidated."""
    m, fp16 = get_model("llama-2-7b"), get_scheme("fp16")
    w = Workload(batch=1, prompt_len=1023, gen_len=1)
    h100, h200 = estimate(m, get_hardware("h100-sxm"), fp16, w), estimate(m, get_hardware("h200-sxm"), fp16, w)
    assert 1.2 < h100.decode_step_s[0] / h200.decode_step_s[0] < 4.8 / 3.35
    assert any("transferred" in n and "unvalidated" in n for n in h200.notes)


def test_a_bandwidth_what_if_does_not_move_profiled_times_through_shape_scaling():
    """A shape the profile lacks is scaled from its nearest measured shape by roofline ratios on the measured
    device's spec, so doubling the spec's bandwidth leaves the profiled estimate where it was."""
    hw = get_hardware("h100-sxm")
    fast = dataclasses.replace(hw, memory=dataclasses.replace(hw.memory, bandwidth_bytes_per_s=2 * 3.35e12))
    m, q = get_model("llama-2-7b"), get_scheme("w4a16")
    w = Workload(batch=3, prompt_len=53, gen_len=4)
    a, b = estimate(m, hw, q, w), estimate(m, fast, q, w)
    assert b.ttft_s == pytest.approx(a.ttft_s, rel=1e-9)
