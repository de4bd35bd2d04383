"""Fixtures: a tiny model and a platform with round numbers, written to tmp dirs."""

from __future__ import annotations

import pytest
import yaml

TINY_MODEL = dict(
    name="tiny",
    family="llama",
    num_layers=2,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=4,
    head_dim=16,
    ffn_hidden_size=128,
    ffn_type="swiglu",
    vocab_size=100,
    max_position_embeddings=512,
    norm="rmsnorm",
    norm_eps=1e-5,
    positional="rope",
    rope_theta=10000.0,
    tied_embeddings=False,
    source="test fixture",
)

# A GPU so fast that every kernel costs exactly its launch overhead (1e-25 s of work vanishes next to 1 ms).
FAST_GPU = dict(
    name="fastgpu",
    kind="gpu",
    description="test GPU",
    freq_hz=1e9,
    memory=dict(kind="hbm", capacity_bytes=10**12, bandwidth_bytes_per_s=1e30, efficiency=1.0),
    compute=dict(peak_ops_per_s={"w16a16": 1e30}, matrix_efficiency=1.0, vector_ops_per_s=1e30),
    on_chip_bytes=0,
)


def _platform(gpu_path: str, with_csd: bool) -> dict:
    d = dict(
        name="tinybox",
        description="test platform",
        gpu=gpu_path,
        gpu_reserved_bytes=0,
        gpu_kernel_overhead_s=1e-3,
        gpu_link=dict(generation=4, lanes=16, efficiency=0.5, latency_s=1e-5),
        host=dict(
            cpu="test",
            dram_bytes=10**11,
            dram_reserved_bytes=0,
            dram_bandwidth_bytes_per_s=1e11,
            cpu_flops_per_s=1e12,
            cpu_attention_efficiency=0.5,
        ),
        ssd=dict(
            model="test ssd",
            count=2,
            capacity_bytes=10**12,
            read_bytes_per_s=1e9,
            write_bytes_per_s=5e8,
            latency_s=1e-4,
            queue_depth=32,
            link=dict(generation=4, lanes=4, efficiency=0.9, latency_s=0.0),
        ),
        compression=dict(
            gpu_dequant_bandwidth_fraction=0.5,
            gpu_quant_bandwidth_fraction=0.25,
            cpu_dequant_bandwidth_fraction=0.5,
            cpu_quant_bandwidth_fraction=0.25,
        ),
    )
    if with_csd:
        d["csd"] = dict(
            model="test csd",
            count=4,
            capacity_bytes=10**12,
            nand_channels=8,
            nand_channel_read_bytes_per_s=1e8,
            nand_write_bytes_per_s=2e8,
            nand_page_bytes=4096,
            nand_read_latency_s=1e-4,
            internal_switch=dict(generation=3, lanes=4, efficiency=0.85, latency_s=0.0),
            engine_at_flash=True,
            fpga="test fpga",
            fpga_attention_flops_per_s=1e9,
            fpga_dram_bytes=4 * 2**30,
            fpga_dram_bandwidth_bytes_per_s=1e10,
            host_link=dict(generation=3, lanes=4, efficiency=0.85, latency_s=1e-5),
            p2p_gpu=True,
        )
    return d


@pytest.fixture
def tiny(tmp_path):
    """(platform, model) of the tiny fixture; the platform has 2 SSDs and 4 CSDs."""
    from models.spec import get_model
    from offload import get_platform

    (tmp_path / "fastgpu.yaml").write_text(yaml.safe_dump(FAST_GPU))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    (tmp_path / "tinybox.yaml").write_text(yaml.safe_dump(_platform(str(tmp_path / "fastgpu.yaml"), True)))
    return get_platform(tmp_path / "tinybox.yaml"), get_model(tmp_path / "tiny.yaml")
