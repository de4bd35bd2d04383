import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from base.errors import HwsimError, SpecError
from hwsim.hardware import HARDWARE_DIR, get_hardware, list_hardware
from models.spec import get_model
from quant.scheme import get_scheme


def _numeric_paths(data, prefix=""):
    for k, v in data.items():
        path = f"{prefix}{k}"
        if k == "sources":
            continue
        if isinstance(v, dict):
            if k in ("peak_ops_per_s", "macs_per_dsp", "macs_per_lane"):
                yield path
            else:
                yield from _numeric_paths(v, path + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield path


def test_shipped_hardware():
    names = list_hardware()
    assert {"u280-accllm", "u280-flightllm", "a6000", "a100-80gb", "h100-sxm", "ecp5-85f"} <= set(names)
    u280 = get_hardware("u280-accllm")
    assert u280.freq_hz == 225e6 and u280.memory.bandwidth_bytes_per_s == 460e9
    assert u280.memory.channel_bandwidth_bytes_per_s == pytest.approx(14.375e9)


@pytest.mark.parametrize("name", ["u280-accllm", "u280-flightllm", "a6000", "a100-80gb", "h100-sxm", "ecp5-85f"])
def test_every_number_has_a_source(name):
    raw = yaml.safe_load((HARDWARE_DIR / f"{name}.yaml").read_text())
    spec = get_hardware(name)
    missing = [p for p in _numeric_paths(raw) if p not in spec.sources]
    assert not missing, f"{name}: numbers without a source: {missing}"


def test_fpga_peak_is_derived_from_the_engine():
    hw = get_hardware("u280-accllm")
    assert not hw.compute.peak_ops_per_s  # never stored beside the fields it derives from
    for key, macs in hw.fpga.macs_per_dsp.items():
        w, a = (int(x) for x in key[1:].split("a"))
        assert hw.peak_ops_per_s(w, a) == pytest.approx(2 * hw.fpga.engine_dsps * macs * hw.freq_hz)
    assert hw.matrix_rate(3, 8) == (hw.peak_ops_per_s(4, 8), "w4a8")  # THE fallback rule, the key it used


def test_flightllm_engines_dies_and_peaks():
    hw = get_hardware("u280-flightllm")
    # MV 64 x 16 lanes per SLR, 3 SLRs, one MAC per lane per cycle at 225 MHz; MM 2 x 16 x 128
    assert hw.peak_ops_per_s(8, 8, "decode") == pytest.approx(2 * 64 * 16 * 3 * 225e6)
    assert hw.peak_ops_per_s(8, 8, "prefill") == pytest.approx(2 * 2 * 16 * 128 * 3 * 225e6)
    assert hw.matrix_rate(4, 8)[1] == "w8a8"  # no int4 packing: falls back, and says which key it used
    assert hw.active_channels == 24 and hw.active_bandwidth_bytes_per_s == pytest.approx(24 * 14.375e9)
    assert hw.sparse_speedup("block", 0.7) == pytest.approx(0.7) and hw.sparse_speedup("4:8", 0.5) == 0.5


def _fpga_yaml(tmp_path, **fpga_changes):
    raw = yaml.safe_load((HARDWARE_DIR / "u280-flightllm.yaml").read_text())
    raw["fpga"].update(fpga_changes)
    p = tmp_path / "f.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(decode_engine=dict(shape=[64, 16, 2], macs_per_lane={"w8a8": 1})), "decode_engine.shape.*fix the shape"),
        (dict(prefill_engine=dict(shape=[2, 0, 128], macs_per_lane={"w8a8": 1})), "prefill_engine.shape"),
        (dict(prefill_engine=None), "give both fpga.decode_engine and fpga.prefill_engine"),
        (dict(dies=[dict(hbm_channels=[0, 1]), dict(hbm_channels=[1, 2])]), "shares channels"),
        (dict(dies=[dict(hbm_channels=[40])]), "hbm_channels.*0..31"),
        (dict(sparse_modes=["diagonal"]), "sparse_modes entry 'diagonal'"),
        (dict(decode_engine=dict(shape=[64, 16], macs_per_lane={"w8a8": 1}, dsps=4000)), "engines use 12000 DSPs"),
    ],
)
def test_inconsistent_engines_refused_with_the_fix(tmp_path, changes, match):
    with pytest.raises(SpecError, match=match):
        get_hardware(_fpga_yaml(tmp_path, **changes))


def test_stored_fpga_peak_refused(tmp_path):
    raw = yaml.safe_load((HARDWARE_DIR / "u280-accllm.yaml").read_text())
    raw["compute"]["peak_ops_per_s"] = {"w8a8": 3.6864e12}
    p = tmp_path / "dup.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="duplicates what the fpga engines derive"):
        get_hardware(str(p))


def test_sparsity_mode_mismatch_refused():
    from hwsim.estimate import estimate
    from hwsim.workload import Workload

    with pytest.raises(SpecError, match="fpga.sparse_modes"):
        estimate(get_model("llama-2-7b"), get_hardware("u280-accllm"), get_scheme("flightllm"), Workload(1, 8, 2))


def test_precision_fallback():
    hw = get_hardware("h100-sxm")  # no int4 path: w4a8 runs at the int8 rate, w4a16 at fp16
    assert hw.peak_ops_per_s(4, 8) == hw.compute.peak_ops_per_s["w8a8"]
    assert hw.peak_ops_per_s(4, 16) == hw.compute.peak_ops_per_s["w16a16"]


def test_user_yaml_and_errors(tmp_path):
    raw = yaml.safe_load((HARDWARE_DIR / "a6000.yaml").read_text())
    raw["name"] = "mine"
    raw["memory"]["bandwidth_bytes_per_s"] = 1.0e12
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert get_hardware(str(p)).memory.bandwidth_bytes_per_s == 1e12
    raw["memory"]["bandwidth_bytes_per_s"] = -1
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="bandwidth_bytes_per_s.*out of range"):
        get_hardware(str(p))
    raw["memory"]["bandwidth_bytes_per_s"] = 1e12
    raw["memory"]["colour"] = "red"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="unknown key 'colour'"):
        get_hardware(str(p))
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        get_hardware(str(p))
    with pytest.raises(SpecError, match="unknown hardware"):
        get_hardware("u281")


# ---- fuzzing: random documents must only ever produce the library's own error -------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=12,
)
KEYS = [
    "name",
    "kind",
    "description",
    "freq_hz",
    "memory",
    "compute",
    "on_chip_bytes",
    "power_w",
    "fpga",
    "capacity_bytes",
    "bandwidth_bytes_per_s",
    "efficiency",
    "peak_ops_per_s",
    "matrix_efficiency",
    "vector_ops_per_s",
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "weight_bits",
    "kv_bits",
    "attn_window",
]
keyed = st.dictionaries(st.sampled_from(KEYS), documents, max_size=10)


def _mutated_valid():
    base = yaml.safe_load((HARDWARE_DIR / "u280-accllm.yaml").read_text())
    paths = [("memory", k) for k in base["memory"]] + [(k,) for k in base if k != "sources"]
    return st.tuples(st.sampled_from(paths), documents).map(lambda pv: _set(base, *pv))


def _set(base, path, value):
    import copy

    doc = copy.deepcopy(base)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


def _only_library_errors(fn):
    try:
        fn()
    except HwsimError:
        pass


@given(doc=st.one_of(documents, keyed, _mutated_valid()))
def test_fuzz_loaders_raise_only_library_errors(tmp_path_factory, doc):
    d = tmp_path_factory.mktemp("fuzz")
    y = d / "h.yaml"
    y.write_text(yaml.safe_dump(doc))
    j = d / "config.json"
    j.write_text(json.dumps(doc))
    _only_library_errors(lambda: get_hardware(str(y)))
    _only_library_errors(lambda: get_model(str(y)))
    _only_library_errors(lambda: get_model(str(j)))
    _only_library_errors(lambda: get_scheme(str(y)))
    r = d / "report.json"
    r.write_text(json.dumps({"hardware": doc}))
    _only_library_errors(lambda: get_hardware(str(r)))


@given(text=st.text(max_size=200))
def test_fuzz_raw_text(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("raw")
    (d / "h.yaml").write_text(text)
    (d / "config.json").write_text(text)
    _only_library_errors(lambda: get_hardware(str(d / "h.yaml")))
    _only_library_errors(lambda: get_model(str(d / "config.json")))
