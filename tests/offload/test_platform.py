import dataclasses

import pytest
import yaml

from base.errors import SpecError
from base.specio import read_yaml
from offload import get_platform, list_platforms
from offload.platform import PLATFORM_DIR


def test_shipped_platforms_load_and_derive_bandwidths():
    assert list_platforms() == ["a6000-csd", "a6000-ssd", "t4-flexgen"]
    csd = get_platform("a6000-csd")
    assert csd.gpu_spec.name == "a6000"  # the GPU comes from hwsim's hardware registry, not a second copy
    assert csd.gpu_link.bytes_per_s == pytest.approx(16e9 * 128 / 130 / 8 * 16 * 0.8)
    assert csd.csd.nand_read_bytes_per_s == pytest.approx(6.4e9)
    assert csd.csd.engine_read_bytes_per_s == pytest.approx(6.4e9)  # the engine reads the flash channels
    slow = dataclasses.replace(csd.csd, engine_at_flash=False)
    assert slow.engine_read_bytes_per_s == pytest.approx(8e9 * 128 / 130 / 8 * 4 * 0.85)  # via the Gen3 x4 switch
    assert get_platform("a6000-ssd").csd is None


def _leaves(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, path + ".")
        else:
            yield path, v


@pytest.mark.parametrize("name", ["a6000-ssd", "a6000-csd", "t4-flexgen"])
def test_every_number_names_its_source(name):
    data = read_yaml(PLATFORM_DIR / f"{name}.yaml")
    sources = data.pop("sources")
    missing = [
        p
        for p, v in _leaves(data)
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and not any(p == s or p.startswith(s + ".") for s in sources)
    ]
    assert missing == []


def test_unknown_platform_names_the_known_ones():
    with pytest.raises(SpecError, match="unknown platform 'a100-box'; use one of a6000-csd, a6000-ssd"):
        get_platform("a100-box")


def test_bad_platform_yaml_is_rejected_with_the_key(tmp_path):
    data = read_yaml(PLATFORM_DIR / "a6000-ssd.yaml")
    data["gpu_link"]["lanes"] = 12
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="lanes: 12 is not allowed"):
        get_platform(tmp_path / "p.yaml")
    data["gpu_link"]["lanes"] = 16
    data["ssd"]["speed"] = 1
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="unknown key 'speed'"):
        get_platform(tmp_path / "p.yaml")
    del data["ssd"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="no storage; add an 'ssd' or a 'csd' section"):
        get_platform(tmp_path / "p.yaml")


def test_platform_gpu_must_be_a_gpu(tmp_path):
    data = read_yaml(PLATFORM_DIR / "a6000-ssd.yaml")
    data["gpu"] = "u280-accllm"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="is a fpga, not a gpu"):
        get_platform(tmp_path / "p.yaml")


def test_csd_attention_rate_can_come_from_an_hwsim_fpga_spec(tmp_path):
    from hwsim.hardware import get_hardware

    data = read_yaml(PLATFORM_DIR / "a6000-csd.yaml")
    del data["csd"]["fpga_attention_flops_per_s"]
    data["csd"]["fpga_attention_hardware"] = "u280-accllm"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    hw = get_hardware("u280-accllm")
    rate = get_platform(tmp_path / "p.yaml").csd.attention_flops_per_s
    assert rate == 2.0 * hw.fpga.attention_lanes * hw.fpga.attention_engines * hw.freq_hz
    data["csd"]["fpga_attention_flops_per_s"] = 1e11  # both given
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="give exactly one of fpga_attention_flops_per_s and fpga_attention_hardware"):
        get_platform(tmp_path / "p.yaml")
    del data["csd"]["fpga_attention_flops_per_s"]
    data["csd"]["fpga_attention_hardware"] = "a6000"  # a GPU: no attention engine
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="has no attention engine"):
        get_platform(tmp_path / "p.yaml")


def test_relative_gpu_path_resolves_against_the_yaml_folder(tmp_path, monkeypatch):
    data = read_yaml(PLATFORM_DIR / "t4-flexgen.yaml")
    assert data["gpu"] == "gpus/t4.yaml"
    (tmp_path / "gpus").mkdir()
    (tmp_path / "gpus" / "t4.yaml").write_text((PLATFORM_DIR / "gpus" / "t4.yaml").read_text())
    (tmp_path / "box.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(PLATFORM_DIR.parent.parent)  # a working directory where gpus/t4.yaml does not exist
    assert get_platform(tmp_path / "box.yaml").gpu_spec.name == "t4"


def test_template_is_a_valid_platform(tmp_path):
    from offload.platform import PLATFORM_TEMPLATE

    (tmp_path / "mine.yaml").write_text(PLATFORM_TEMPLATE.read_text())
    plat = get_platform(tmp_path / "mine.yaml")
    assert plat.topology.switch_of("ssd").name == "sw0" and plat.host.cpu_attention is not None


@pytest.mark.parametrize(
    "switches, message",
    [
        (
            [
                {
                    "name": "sw0",
                    "uplink": {"generation": 4, "lanes": 4, "efficiency": 0.9, "latency_s": 0.0},
                    "devices": ["csd"],
                }
            ],
            "switch 'sw0' lists csd, but the platform has no csd section",
        ),
        (
            [
                {
                    "name": "sw0",
                    "uplink": {"generation": 4, "lanes": 4, "efficiency": 0.9, "latency_s": 0.0},
                    "devices": ["ssd"],
                },
                {
                    "name": "sw1",
                    "uplink": {"generation": 4, "lanes": 4, "efficiency": 0.9, "latency_s": 0.0},
                    "devices": ["ssd"],
                },
            ],
            "ssd sits below switches 'sw0' and 'sw1'",
        ),
        (
            [
                {
                    "name": "sw0",
                    "uplink": {"generation": 4, "lanes": 4, "efficiency": 0.9, "latency_s": 0.0},
                    "devices": ["nvme9"],
                }
            ],
            "devices",
        ),
    ],
)
def test_topology_with_a_drive_on_no_link_is_one_line(tmp_path, switches, message):
    data = read_yaml(PLATFORM_DIR / "a6000-ssd.yaml")
    data["topology"] = {"switches": switches}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=message):
        get_platform(tmp_path / "p.yaml")
