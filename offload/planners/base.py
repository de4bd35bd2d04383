"""The planner contract and the building blocks every policy's loop is written with.

A planner turns (platform, workload, policy) into the `StepPlan` of any layer step and states the memory its
placement needs (`footprint`). Costs that are not bytes over a link are mechanisms here, each driven by a platform
parameter: the GPU kernel roofline plus a per-layer launch/synchronisation overhead, group-wise (de)compression as
memory-bound passes on the GPU or the CPU, CPU attention (measured fit or roofline), and the shared wires of the
PCIe topology that every transfer books beside its own link.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from offload.channels import ChannelSpec, channels, path_of
from offload.plan import Effect, Hop, Route, StepPlan, Use

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.policy import Policy
    from offload.workload import Workload

__all__ = ["Planner"]


class Planner:
    """Builds the StepPlan of any layer step of one (platform, workload, policy). Subclasses are the papers' loops;
    `kind` is the policy kind a subclass plans (the registry in `offload.planners` is built from it)."""

    kind: ClassVar[str] = ""

    def __init__(
        self, platform: Platform, workload: Workload, policy: Policy, ch: dict[str, ChannelSpec] | None = None
    ) -> None:
        policy.check(platform, workload)
        self.platform, self.wl, self.pol = platform, workload, policy
        self.ch = channels(platform, policy.pinned) if ch is None else ch
        self._paths = {name: tuple(w for w in path_of(platform, name) if w in self.ch) for name in self.ch}
        gpu = platform.gpu_spec
        s = workload.scheme
        self._gpu_flops = gpu.peak_ops_per_s(min(s.weight_bits, 16), s.act_bits) * gpu.compute.matrix_efficiency
        self._gpu_bw = gpu.memory.effective_bandwidth_bytes_per_s
        self.plan = lru_cache(maxsize=4096)(self._plan)

    # the step sequence: token 0 is the prefill, tokens 1.. are decode steps
    @property
    def num_steps(self) -> int:
        return self.wl.gen_len * self.wl.model.num_layers

    def step_key(self, step: int) -> tuple[str, int, bool, bool]:
        L = self.wl.model.num_layers
        token, layer = divmod(step, L)
        phase = "prefill" if token == 0 else "decode"
        context = self.wl.prompt_len if token == 0 else self.wl.decode_context(token)
        return phase, context, layer == 0, layer == L - 1

    def step_plan(self, step: int) -> StepPlan:
        return self.plan(*self.step_key(step))

    def _plan(self, phase: str, context: int, first: bool, last: bool) -> StepPlan:
        raise NotImplementedError

    # ---- links --------------------------------------------------------------------------------------------------
    def link(self, name: str, nbytes: float) -> Use:
        c = self.ch[name]
        return Use(name, nbytes / c.members / c.rate_per_member, nbytes=nbytes)

    def xfer(self, name: str, nbytes: float) -> Hop:
        """A transfer of `nbytes` over base channel `name` and every shared wire on its path, booked together."""
        return Hop((self.link(name, nbytes),) + tuple(self.link(w, nbytes) for w in self._paths[name]))

    # ---- engines ------------------------------------------------------------------------------------------------
    def gpu(self, flops: float, mem_bytes: float, passes: float = 1, extra_s: float = 0.0) -> Use:
        """GPU kernel time: roofline of its FLOPs and its GPU-memory traffic, plus `extra_s` of separate
        memory-bound passes ((de)compression), plus the launch/synchronisation overhead per layer and GPU batch
        (`passes` layers' worth; a layer split around off-GPU attention gives each half of it)."""
        secs = max(flops / self._gpu_flops, mem_bytes / self._gpu_bw) + extra_s
        return Use("gpu", secs + passes * self.platform.gpu_kernel_overhead_s, flops=flops)

    def cpu_attention(self, batch: int, attended: float, kv_bytes: float, fp16_kv_bytes: float) -> Use:
        """Decode attention of one layer on the CPU over `attended` tokens of `batch` sequences whose cache
        occupies `kv_bytes` in host DRAM (`fp16_kv_bytes` once decompressed). A measured fit
        (`host.cpu_attention`) when the platform has one, else the roofline of FLOPs and DRAM traffic at
        `host.cpu_attention_efficiency`; a compressed cache adds its decompression pass."""
        h, m = self.platform.host, self.wl.model
        flops = self.wl.decode_attention_flops(batch, attended)
        if h.cpu_attention is not None:
            secs = h.cpu_attention.seconds(batch, m.num_heads, fp16_kv_bytes)
        else:
            eff = h.cpu_attention_efficiency
            secs = max(flops / (h.cpu_flops_per_s * eff), kv_bytes / (h.dram_bandwidth_bytes_per_s * eff))
        if self.wl.kv_compressed:
            secs += self.cpu_codec_s(kv_bytes + fp16_kv_bytes, decompress=True)
        return Use("cpu", secs, flops=flops)

    # ---- (de)compression -----------------------------------------------------------------------------------------
    def _compression(self):
        from base.errors import SpecError

        c = self.platform.compression
        if c is None:
            raise SpecError(
                f"platform {self.platform.name!r} has no 'compression' section, so the (de)compression "
                f"of scheme {self.wl.scheme.name!r} cannot be priced; add one (see `hwsim platforms "
                "--template`) or use an uncompressed scheme"
            )
        return c

    def gpu_codec_s(self, touched_bytes: float, decompress: bool) -> float:
        """Seconds of a group-wise (de)compression pass on the GPU touching `touched_bytes` (packed + fp16)."""
        if touched_bytes <= 0:
            return 0.0
        c = self._compression()
        frac = c.gpu_dequant_bandwidth_fraction if decompress else c.gpu_quant_bandwidth_fraction
        return touched_bytes / (self.platform.gpu_spec.memory.bandwidth_bytes_per_s * frac)

    def cpu_codec_s(self, touched_bytes: float, decompress: bool) -> float:
        if touched_bytes <= 0:
            return 0.0
        c = self._compression()
        frac = c.cpu_dequant_bandwidth_fraction if decompress else c.cpu_quant_bandwidth_fraction
        return touched_bytes / (self.platform.host.dram_bandwidth_bytes_per_s * frac)

    def weight_codec_s(self) -> float:
        """Decompressing one layer's weights before use, once per GPU batch (FlexGen decompresses at each use)."""
        wl = self.wl
        if not wl.weights_compressed:
            return 0.0
        return self.pol.num_gpu_batches * self.gpu_codec_s(wl.layer_weight_bytes + wl.layer_weight_fp16_bytes, True)

    def kv_codec_s(self, read_bytes: float, read_fp16: float, new_bytes: float, new_fp16: float) -> float:
        """GPU passes for a compressed cache: decompress what attention reads, compress the new rows."""
        if not self.wl.kv_compressed:
            return 0.0
        return self.gpu_codec_s(read_bytes + read_fp16, True) + self.gpu_codec_s(
            max(new_bytes, 0.0) + max(new_fp16, 0.0), False
        )

    # ---- routes -------------------------------------------------------------------------------------------------
    def fetch(
        self, name: str, cpu_bytes: float, disk_bytes: float, free_at_source: bool = False, after: tuple[int, ...] = ()
    ) -> list[Route]:
        """Routes moving data from host DRAM and from disk to the GPU."""
        out = []
        if cpu_bytes > 0:
            eff = [Effect("cpu", "read", cpu_bytes), Effect("gpu", "write", cpu_bytes)]
            if free_at_source:
                eff.append(Effect("cpu", "free", cpu_bytes))
            out.append(Route(f"{name}[cpu]", (self.xfer("pcie_h2d", cpu_bytes),), after=after, effects=tuple(eff)))
        if disk_bytes > 0:
            eff = [Effect("disk", "read", disk_bytes), Effect("gpu", "write", disk_bytes)]
            if free_at_source:
                eff.append(Effect("disk", "free", disk_bytes))
            out.append(
                Route(
                    f"{name}[disk]",
                    (self.xfer("disk_read", disk_bytes), self.xfer("pcie_h2d", disk_bytes)),
                    chunks=self.pol.route_chunks,
                    after=after,
                    effects=tuple(eff),
                )
            )
        return out

    def put(self, name: str, cpu_bytes: float, disk_bytes: float) -> list[Route]:
        """Routes moving data from the GPU to host DRAM and to disk (the GPU copy is freed)."""
        out = []
        if cpu_bytes > 0:
            out.append(
                Route(
                    f"{name}[cpu]",
                    (self.xfer("pcie_d2h", cpu_bytes),),
                    effects=(Effect("gpu", "free", cpu_bytes), Effect("cpu", "write", cpu_bytes)),
                )
            )
        if disk_bytes > 0:
            out.append(
                Route(
                    f"{name}[disk]",
                    (self.xfer("pcie_d2h", disk_bytes), self.xfer("disk_write", disk_bytes)),
                    chunks=self.pol.route_chunks,
                    effects=(Effect("gpu", "free", disk_bytes), Effect("disk", "write", disk_bytes)),
                )
            )
        return out

    def store_kv(
        self, name: str, delta: float, gpu: float, cpu: float, disk: float
    ) -> tuple[list[Route], list[Effect]]:
        """New K/V bytes `delta` (all produced on the GPU), kept in the shares gpu/cpu/disk. A negative delta
        (eviction, or a chunk compressed in place) frees bytes in every tier without traffic."""
        if delta >= 0:
            return self.put(name, delta * cpu, delta * disk), [Effect("gpu", "write", delta)]
        frees = tuple(Effect(st, "free", -delta * f) for st, f in (("gpu", gpu), ("cpu", cpu), ("disk", disk)) if f)
        return [Route(f"{name}[evict]", (), effects=frees)], []

    # ---- residency and memory -------------------------------------------------------------------------------------
    def initial_residency(self) -> dict[str, float]:
        wl, p = self.wl, self.pol
        blocks = wl.layer_weight_bytes * wl.model.num_layers
        return {
            "gpu": wl.resident_weight_bytes + blocks * p.w_gpu,
            "cpu": blocks * p.w_cpu,
            "disk": blocks * p.w_disk,
            "csd": 0.0,
        }

    def expected_final_kv(self) -> dict[str, float]:
        """KV bytes (plus per-policy metadata) each store holds once every request has completed."""
        kv = self.wl.kv_total_bytes(self.wl.final_context)
        p = self.pol
        return {"gpu": kv * p.kv_gpu, "cpu": kv * p.kv_cpu, "disk": kv * p.kv_disk, "csd": 0.0}

    def prefill_workspace_bytes(self) -> float:
        """GPU working memory of one GPU batch's prefill layer: the larger of the fp16 attention scores of all
        heads and the fp16 MLP intermediate (they are not alive at once)."""
        wl, m, gbs = self.wl, self.wl.model, self.pol.gpu_batch_size
        P = wl.prompt_len
        return max(2.0 * gbs * m.num_heads * P * P, 2.0 * gbs * P * m.ffn_hidden_size)

    def codec_workspace_bytes(self, kv_to_gpu: bool) -> float:
        """GPU memory for decompressed copies: one layer's fp16 weights and, when attention reads a compressed
        cache on the GPU, one GPU batch's fp16 K/V of one layer."""
        wl, p = self.wl, self.pol
        out = wl.layer_weight_fp16_bytes if wl.weights_compressed else 0.0
        if wl.kv_compressed and kv_to_gpu:
            out += wl.layer_kv_fp16_bytes(wl.final_context, p.gpu_batch_size)
        return out

    def footprint(self) -> dict[str, float]:
        """Peak bytes each store must hold, following the placement (FlexGen's accounting, Sheng et al. 2023
        Sec. 4.3 / Appendix): resident data at the final context, the next layer's offloaded weights and one GPU
        batch's offloaded cache double-buffered on the GPU, the block's hidden states where the policy keeps them
        plus one GPU batch's input and output on the GPU, the prefill workspace and decompression buffers."""
        wl, p, m = self.wl, self.pol, self.wl.model
        kv_final = wl.kv_total_bytes(wl.final_context)
        blocks = wl.layer_weight_bytes * m.num_layers
        P, gbs = wl.prompt_len, p.gpu_batch_size
        hid_block = wl.hidden_bytes(wl.batch * P)
        hid_gb = wl.hidden_bytes(gbs * P)
        layer_kv_gb = wl.layer_kv_bytes(wl.final_context, gbs)
        cpu_attn = getattr(p, "cpu_attention", False)
        gpu_kv_buf = 0.0 if cpu_attn else 2 * layer_kv_gb * (1 - p.kv_gpu)
        cpu_kv_buf = 2 * layer_kv_gb * p.kv_disk if cpu_attn else 0.0  # the disk share staged in DRAM
        gpu = (
            wl.resident_weight_bytes
            + blocks * p.w_gpu
            + kv_final * p.kv_gpu
            + 2 * wl.layer_weight_bytes * (1 - p.w_gpu)
            + gpu_kv_buf
            + hid_block * p.act_gpu
            + 2 * hid_gb
            + self.prefill_workspace_bytes()
            + self.codec_workspace_bytes(kv_to_gpu=not cpu_attn or p.kv_gpu > 0)
        )
        return {
            "gpu": gpu,
            "cpu": blocks * p.w_cpu + kv_final * p.kv_cpu + hid_block * p.act_cpu + cpu_kv_buf,
            "disk": blocks * p.w_disk + kv_final * p.kv_disk + hid_block * p.act_disk,
            "csd": 0.0,
        }

    def _layer_weights_and_linear(self, n_tokens: int, last: bool) -> tuple[float, float]:
        """(FLOPs, GPU-memory bytes) of one layer's linears for `n_tokens` tokens; the LM head on the last layer.
        Weights are re-read from GPU memory once per GPU batch (as fp16 when they were decompressed)."""
        wl, p = self.wl, self.pol
        flops = wl.layer_linear_flops(n_tokens)
        w = wl.layer_weight_fp16_bytes if wl.weights_compressed else wl.layer_weight_bytes
        mem = w * p.num_gpu_batches + 2 * wl.hidden_bytes(n_tokens)
        if last:
            flops += wl.lm_head_flops(wl.batch)
            mem += wl.resident_weight_bytes * p.num_gpu_batches
        return flops, mem
