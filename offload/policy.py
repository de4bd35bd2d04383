"""Policy: one frozen type for every offload strategy, read by both the simpy simulation and the cost model.

Placement fractions follow FlexGen (Sheng et al., ICML'23, Sec. 4): weights (w), KV cache (kv) and activations
(act) are split over GPU / CPU (host DRAM) / disk; the disk share is what the GPU and CPU shares leave. A block of
``num_gpu_batches`` GPU batches of ``gpu_batch_size`` sequences is processed layer by layer (the zig-zag order).

* ``flexgen``: load weights, load cache, compute on the GPU, store cache -- overlapped across layer steps. With
  ``cpu_attention`` (FlexGen's CPU delegation) decode attention over the CPU and disk share of the cache runs on the
  CPU: only queries, fresh K/V rows and attention outputs cross PCIe; the disk share is read into host DRAM.
* ``leoam``: the KV cache is cut into chunks of ``chunk_tokens`` tokens; a small abstract per chunk (the element-wise
  min and max of its keys, kept on disk) is read first, scored on the GPU, and only the ``load_fraction`` of the
  offloaded chunks with the highest scores are loaded (LeoAM, arXiv 2506.20187, with fixed-size chunks).
* ``instinfer``: the KV cache lives in computational storage drives; decode attention runs on the drives' FPGAs, and
  only queries, fresh K/V rows and attention outputs cross PCIe, peer to peer (InstInfer, arXiv 2409.04992). With
  ``topk_fraction`` < 1 the drives run SparF-style sparse attention: the ``topr_channels`` largest query channels
  give approximate scores from a channel-major copy of K, then the selected tokens' pages of K and V are read,
  ``select_tokens`` consecutive tokens at a time (16 = one 4 KB flash page of fp16 K or V of 128 channels: the
  flash-aware selection unit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from base.errors import SpecError
from base.specio import rng

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.workload import Workload

__all__ = ["Policy", "POLICY_KINDS", "read_policy", "flexgen_percent"]

POLICY_KINDS = ("flexgen", "leoam", "instinfer")
_EPS = 1e-9


@dataclass(frozen=True)
class Policy:
    """How a workload is placed and scheduled. Fractions in [0, 1]; disk share = 1 - gpu - cpu."""

    kind: Literal["flexgen", "leoam", "instinfer"]
    gpu_batch_size: int = field(metadata=rng(ge=1))
    num_gpu_batches: int = field(default=1, metadata=rng(ge=1))
    w_gpu: float = field(default=1.0, metadata=rng(ge=0, le=1))
    w_cpu: float = field(default=0.0, metadata=rng(ge=0, le=1))
    kv_gpu: float = field(default=0.0, metadata=rng(ge=0, le=1))
    kv_cpu: float = field(default=0.0, metadata=rng(ge=0, le=1))
    act_gpu: float = field(default=1.0, metadata=rng(ge=0, le=1))
    act_cpu: float = field(default=0.0, metadata=rng(ge=0, le=1))
    overlap: bool = True  # FlexGen: overlap load(next) / compute(this) / store(previous)
    cpu_attention: bool = False  # FlexGen's CPU delegation: decode attention over the CPU/disk KV share on the CPU
    route_chunks: int = field(default=8, metadata=rng(ge=1))  # pieces a multi-hop transfer is pipelined in
    pinned: bool = True  # host buffers pinned (DMA at full link rate) or pageable (bounced through a driver buffer)
    # LeoAM
    chunk_tokens: int = field(default=64, metadata=rng(ge=1))
    load_fraction: float = field(default=1.0, metadata=rng(gt=0, le=1))
    # InstInfer (SparF)
    topk_fraction: float = field(default=1.0, metadata=rng(gt=0, le=1))
    topr_channels: int = field(default=0, metadata=rng(ge=0))
    select_tokens: int = field(default=16, metadata=rng(ge=1))

    def __post_init__(self) -> None:
        for part, (g, c) in (
            ("weights", (self.w_gpu, self.w_cpu)),
            ("KV cache", (self.kv_gpu, self.kv_cpu)),
            ("activations", (self.act_gpu, self.act_cpu)),
        ):
            if g + c > 1 + _EPS:
                raise SpecError(
                    f"policy {self.kind}: {part} placement gpu {g:g} + cpu {c:g} = {g + c:g} exceeds 1; "
                    "fractions on GPU, CPU and disk must sum to 1, lower one of them"
                )
        if self.kind == "instinfer" and (self.kv_gpu or self.kv_cpu):
            raise SpecError(
                "policy instinfer keeps the whole KV cache in the computational storage drives; set "
                "kv_gpu and kv_cpu to 0 (or use flexgen/leoam for a GPU/CPU KV share)"
            )
        if self.kind != "instinfer" and (self.topk_fraction != 1.0 or self.topr_channels):
            raise SpecError(
                f"policy {self.kind}: topk_fraction/topr_channels are InstInfer (SparF) settings; "
                "remove them or use kind instinfer"
            )
        if self.kind != "flexgen" and self.cpu_attention:
            raise SpecError(
                f"policy {self.kind}: cpu_attention is FlexGen's CPU delegation; remove it or use kind flexgen"
            )
        if self.kind != "leoam" and self.load_fraction != 1.0:
            raise SpecError(f"policy {self.kind}: load_fraction is a LeoAM setting; remove it or use kind leoam")
        if self.kind == "instinfer" and self.topk_fraction < 1 and self.topr_channels == 0:
            raise SpecError(
                "policy instinfer: sparse attention (topk_fraction < 1) needs topr_channels >= 1 "
                "query channels for the approximate scores"
            )

    # ---- derived --------------------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.gpu_batch_size * self.num_gpu_batches

    @property
    def w_disk(self) -> float:
        return max(0.0, 1.0 - self.w_gpu - self.w_cpu)

    @property
    def kv_disk(self) -> float:
        return max(0.0, 1.0 - self.kv_gpu - self.kv_cpu)

    @property
    def act_disk(self) -> float:
        return max(0.0, 1.0 - self.act_gpu - self.act_cpu)

    @property
    def sparse(self) -> bool:
        return self.kind == "instinfer" and self.topk_fraction < 1

    def replace(self, **changes) -> Policy:
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        pct = lambda x: f"{100 * x:.0f}"  # noqa: E731
        text = (
            f"{self.kind} bs={self.gpu_batch_size}x{self.num_gpu_batches} "
            f"w={pct(self.w_gpu)}/{pct(self.w_cpu)}/{pct(self.w_disk)} "
            f"kv={pct(self.kv_gpu)}/{pct(self.kv_cpu)}/{pct(self.kv_disk)} "
            f"act={pct(self.act_gpu)}/{pct(self.act_cpu)}/{pct(self.act_disk)}"
        )
        if self.cpu_attention:
            text += " cpu-attention"
        if not self.pinned:
            text += " pageable"
        if self.kind == "leoam":
            text += f" chunk={self.chunk_tokens} load={self.load_fraction:g}"
        if self.kind == "instinfer":
            text += f" topk={self.topk_fraction:g} r={self.topr_channels}" if self.sparse else " dense"
        return text

    def check(self, platform: Platform, workload: Workload) -> None:
        """Raise SpecError when this policy cannot run `workload` on `platform` (batch split, missing drives)."""
        if self.batch != workload.batch:
            raise SpecError(
                f"policy {self.kind}: gpu_batch_size {self.gpu_batch_size} x num_gpu_batches "
                f"{self.num_gpu_batches} = {self.batch} != workload batch {workload.batch}; choose a "
                "split whose product is the batch"
            )
        if self.kind == "instinfer":
            if platform.csd is None:
                raise SpecError(
                    f"policy instinfer needs computational storage drives; platform {platform.name!r} "
                    "has none (use a6000-csd, or policy flexgen)"
                )
            if not platform.csd.p2p_gpu:
                raise SpecError(
                    f"policy instinfer needs GPU<->drive peer-to-peer transfers; platform "
                    f"{platform.name!r} sets csd.p2p_gpu false"
                )
        if self.topr_channels > workload.model.head_dim:
            raise SpecError(
                f"policy instinfer: topr_channels {self.topr_channels} exceeds head_dim "
                f"{workload.model.head_dim}; choose 1..{workload.model.head_dim}"
            )


def read_policy(path) -> Policy:
    """A Policy from a YAML mapping of its fields (strict: unknown keys and bad values are SpecErrors)."""
    from base.specio import from_mapping, read_yaml

    return from_mapping(Policy, read_yaml(path), str(path))


def flexgen_percent(
    workload: Workload,
    percent: tuple[float, float, float, float, float, float],
    gpu_batch_size: int,
    num_gpu_batches: int,
    cpu_cache_compute: bool = False,
    pin_weight: bool = True,
) -> Policy:
    """FlexGen's ``--percent WG WC CG CC HG HC`` (with its batch flags) as a Policy.

    FlexGen places whole weight tensors: within each of its layers (attention: q, k, v, out projections; MLP: the
    rest) a tensor goes to the tier whose cumulative percentage range holds the midpoint of the tensor's share of
    the layer's bytes (FlexLLMGen ``flex_opt.py``, ``init_weight_list``). The byte fractions that result are the
    Policy's weight placement; cache and activation percentages carry over as they are. ``pin_weight`` false keeps
    host buffers pageable."""
    if len(percent) != 6 or any(not 0 <= v <= 100 for v in percent):
        raise SpecError(f"FlexGen percent {percent!r}: give six numbers in 0..100 (WG WC CG CC HG HC)")
    wg, wc = percent[0], percent[1]
    attn = ("q_proj", "k_proj", "v_proj", "o_proj")
    lins = workload.model.block_linears
    per = workload.scheme.weight_bytes(workload.model).per_linear
    share = {"gpu": 0.0, "cpu": 0.0, "disk": 0.0}
    for group in ([lin for lin in lins if lin.name in attn], [lin for lin in lins if lin.name not in attn]):
        total = sum(per[lin.name] for lin in group)
        acc = 0.0
        for lin in group:
            mid = (acc + per[lin.name] / 2) / total * 100
            tier = "gpu" if mid < wg else "cpu" if mid < wg + wc else "disk"
            share[tier] += per[lin.name]
            acc += per[lin.name]
    blocks = sum(share.values())
    return Policy(
        "flexgen",
        gpu_batch_size=gpu_batch_size,
        num_gpu_batches=num_gpu_batches,
        w_gpu=share["gpu"] / blocks,
        w_cpu=share["cpu"] / blocks,
        kv_gpu=percent[2] / 100,
        kv_cpu=percent[3] / 100,
        act_gpu=percent[4] / 100,
        act_cpu=percent[5] / 100,
        cpu_attention=cpu_cache_compute,
        pinned=pin_weight,
    )
