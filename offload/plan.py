"""The per-layer schedule of each policy, as data: what moves over which link and what computes where.

A *layer step* is one transformer layer of one token for the whole batch (FlexGen's block of GPU batches, folded
into one step: the granularity of FlexGen's own cost model). Each step has three stages, as in the papers' loops::

    load    weights / cache / hidden states the layer needs, towards the GPU
    compute on the GPU (and, for InstInfer, attention in the drives)
    store   the new K/V rows and hidden states to where the policy keeps them

A stage is a tuple of `Route`s. A route is a chain of `Hop`s (disk -> host DRAM -> GPU is two hops), cut into
``chunks`` pieces that flow through the hops as a pipeline; a hop books one or more channels at once (a flash read
streaming into the FPGA engine books both). `Effect`s say which store gains or loses bytes when the route ends.
The simpy simulation (`offload.sim`) executes these plans on device objects; the analytical model
(`offload.cost`) prices the very same plans in closed form. Devices move and store bytes; the model math lives here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from base.errors import SpecError

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.policy import Policy
    from offload.workload import Workload

__all__ = ["Use", "Hop", "Route", "Effect", "StepPlan", "ChannelSpec", "channels", "Planner", "make_planner",
           "footprint", "check_fits", "check_capacity", "capacities", "STORES"]

STORES = ("gpu", "cpu", "disk", "csd")


@dataclass(frozen=True)
class ChannelSpec:
    """A link or compute engine: `members` identical units (striped drives) working in parallel."""

    name: str
    kind: Literal["link", "compute"]
    members: int
    latency_s: float  # added to every piece a route books on it (does not occupy the channel)
    rate_per_member: float  # bytes/s (links) or FLOP/s (engines; the GPU's figure is informative only)


@dataclass(frozen=True)
class Use:
    """Work on one channel: `seconds` of busy time per member at full speed, for the whole route."""

    channel: str
    seconds: float
    nbytes: float = 0.0
    flops: float = 0.0


@dataclass(frozen=True)
class Hop:
    uses: tuple[Use, ...]


@dataclass(frozen=True)
class Effect:
    store: str
    op: Literal["read", "write", "free"]
    nbytes: float


@dataclass(frozen=True)
class Route:
    name: str
    hops: tuple[Hop, ...]
    chunks: int = 1
    after: tuple[int, ...] = ()  # routes of the same stage that must end first
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class StepPlan:
    load: tuple[Route, ...]
    compute: tuple[Route, ...]
    store: tuple[Route, ...]

    @property
    def stages(self) -> tuple[tuple[str, tuple[Route, ...]], ...]:
        return (("load", self.load), ("compute", self.compute), ("store", self.store))


# ---- channels of a platform ---------------------------------------------------------------------------------------
def channels(platform: "Platform") -> dict[str, ChannelSpec]:
    """The links and engines a plan may book, by name."""
    gpu = platform.gpu_spec
    link = platform.gpu_link
    out = {
        "gpu": ChannelSpec("gpu", "compute", 1, 0.0, gpu.peak_ops_per_s(16, 16)),
        "pcie_h2d": ChannelSpec("pcie_h2d", "link", 1, link.latency_s, link.bytes_per_s),
        "pcie_d2h": ChannelSpec("pcie_d2h", "link", 1, link.latency_s, link.bytes_per_s),
    }
    host = platform.host
    out["cpu"] = ChannelSpec("cpu", "compute", 1, 0.0, host.cpu_flops_per_s * host.cpu_attention_efficiency)
    if platform.ssd is not None:
        s = platform.ssd
        lat = s.latency_s + s.link.latency_s
        out["disk_read"] = ChannelSpec("disk_read", "link", s.count, lat, s.drive_read_bytes_per_s)
        out["disk_write"] = ChannelSpec("disk_write", "link", s.count, lat, s.drive_write_bytes_per_s)
    if platform.csd is not None:
        c = platform.csd
        lat = c.nand_read_latency_s + c.host_link.latency_s + c.internal_switch.latency_s
        if platform.ssd is None:  # the drives double as the disk tier of flexgen/leoam
            out["disk_read"] = ChannelSpec("disk_read", "link", c.count, lat, c.host_read_bytes_per_s)
            out["disk_write"] = ChannelSpec("disk_write", "link", c.count, lat, c.host_write_bytes_per_s)
        hl = min(c.host_link.bytes_per_s, c.internal_switch.bytes_per_s)
        out["csd_in"] = ChannelSpec("csd_in", "link", c.count, c.host_link.latency_s, hl)
        out["csd_out"] = ChannelSpec("csd_out", "link", c.count, c.host_link.latency_s, hl)
        out["csd_flash_read"] = ChannelSpec("csd_flash_read", "link", c.count, c.nand_read_latency_s,
                                            c.engine_read_bytes_per_s)
        out["csd_flash_write"] = ChannelSpec("csd_flash_write", "link", c.count, 0.0, c.nand_write_bytes_per_s)
        out["csd_fpga"] = ChannelSpec("csd_fpga", "compute", c.count, 0.0, c.attention_flops_per_s)
    return out


# ---- planners -----------------------------------------------------------------------------------------------------
class Planner:
    """Builds the StepPlan of any layer step of one (platform, workload, policy). Subclasses are the papers' loops."""

    def __init__(self, platform: "Platform", workload: "Workload", policy: "Policy",
                 ch: dict[str, ChannelSpec] | None = None) -> None:
        policy.check(platform, workload)
        self.platform, self.wl, self.pol = platform, workload, policy
        self.ch = channels(platform) if ch is None else ch
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

    # ---- building blocks ------------------------------------------------------------------------------------
    def link(self, name: str, nbytes: float) -> Use:
        c = self.ch[name]
        return Use(name, nbytes / c.members / c.rate_per_member, nbytes=nbytes)

    def gpu(self, flops: float, mem_bytes: float, passes: int = 1) -> Use:
        """GPU kernel time: roofline of its FLOPs and its GPU-memory traffic, plus launch overhead per pass."""
        secs = max(flops / self._gpu_flops, mem_bytes / self._gpu_bw)
        return Use("gpu", secs + passes * self.platform.gpu_kernel_overhead_s, flops=flops)

    def fetch(self, name: str, cpu_bytes: float, disk_bytes: float, free_at_source: bool = False,
              after: tuple[int, ...] = ()) -> list[Route]:
        """Routes moving data from host DRAM and from disk to the GPU."""
        out = []
        if cpu_bytes > 0:
            eff = [Effect("cpu", "read", cpu_bytes), Effect("gpu", "write", cpu_bytes)]
            if free_at_source:
                eff.append(Effect("cpu", "free", cpu_bytes))
            out.append(Route(f"{name}[cpu]", (Hop((self.link("pcie_h2d", cpu_bytes),)),), after=after,
                             effects=tuple(eff)))
        if disk_bytes > 0:
            eff = [Effect("disk", "read", disk_bytes), Effect("gpu", "write", disk_bytes)]
            if free_at_source:
                eff.append(Effect("disk", "free", disk_bytes))
            out.append(Route(f"{name}[disk]", (Hop((self.link("disk_read", disk_bytes),)),
                                               Hop((self.link("pcie_h2d", disk_bytes),))),
                             chunks=self.pol.route_chunks, after=after, effects=tuple(eff)))
        return out

    def put(self, name: str, cpu_bytes: float, disk_bytes: float) -> list[Route]:
        """Routes moving data from the GPU to host DRAM and to disk (the GPU copy is freed)."""
        out = []
        if cpu_bytes > 0:
            out.append(Route(f"{name}[cpu]", (Hop((self.link("pcie_d2h", cpu_bytes),)),),
                             effects=(Effect("gpu", "free", cpu_bytes), Effect("cpu", "write", cpu_bytes))))
        if disk_bytes > 0:
            out.append(Route(f"{name}[disk]", (Hop((self.link("pcie_d2h", disk_bytes),)),
                                               Hop((self.link("disk_write", disk_bytes),))),
                             chunks=self.pol.route_chunks,
                             effects=(Effect("gpu", "free", disk_bytes), Effect("disk", "write", disk_bytes))))
        return out

    def store_kv(self, name: str, delta: float, gpu: float, cpu: float, disk: float) -> tuple[list[Route], list[Effect]]:
        """New K/V bytes `delta` (all produced on the GPU), kept in the shares gpu/cpu/disk. A negative delta
        (eviction, or a chunk compressed in place) frees bytes in every tier without traffic."""
        if delta >= 0:
            return self.put(name, delta * cpu, delta * disk), [Effect("gpu", "write", delta)]
        frees = tuple(Effect(st, "free", -delta * f) for st, f in (("gpu", gpu), ("cpu", cpu), ("disk", disk)) if f)
        return [Route(f"{name}[evict]", (), effects=frees)], []

    def initial_residency(self) -> dict[str, float]:
        wl, p = self.wl, self.pol
        blocks = wl.layer_weight_bytes * wl.model.num_layers
        return {"gpu": wl.resident_weight_bytes + blocks * p.w_gpu, "cpu": blocks * p.w_cpu,
                "disk": blocks * p.w_disk, "csd": 0.0}

    def expected_final_kv(self) -> dict[str, float]:
        """KV bytes (plus per-policy metadata) each store holds once every request has completed."""
        kv = self.wl.kv_total_bytes(self.wl.final_context)
        p = self.pol
        return {"gpu": kv * p.kv_gpu, "cpu": kv * p.kv_cpu, "disk": kv * p.kv_disk, "csd": 0.0}

    def _layer_weights_and_linear(self, n_tokens: int, last: bool) -> tuple[float, float]:
        """(FLOPs, GPU-memory bytes) of one layer's linears for `n_tokens` tokens; the LM head on the last layer.
        Weights are re-read from GPU memory once per GPU batch."""
        wl, p = self.wl, self.pol
        flops = wl.layer_linear_flops(n_tokens)
        mem = wl.layer_weight_bytes * p.num_gpu_batches + 2 * wl.hidden_bytes(n_tokens)
        if last:
            flops += wl.lm_head_flops(wl.batch)
            mem += wl.resident_weight_bytes * p.num_gpu_batches
        return flops, mem


class FlexGenPlanner(Planner):
    """FlexGen's generation loop (Sheng et al. 2023, Alg. 1), one layer step for the whole block:

    for token i: for layer j: load_weight(j+1); load_cache(j+1); load_hidden(j+1); compute(j); store_cache(j-1);
    store_hidden(j-1); sync()   -- the overlap across steps is done by the executor (sim or cost model)."""

    def _plan(self, phase: str, context: int, first: bool, last: bool) -> StepPlan:
        if self.pol.cpu_attention and phase == "decode":
            return self._decode_cpu_attention(context, first, last)
        wl, p = self.wl, self.pol
        B = wl.batch
        W = wl.layer_weight_bytes
        n_tok = B * context if phase == "prefill" else B
        hid = wl.hidden_bytes(n_tok)
        kv_read = 0.0 if phase == "prefill" else wl.layer_kv_bytes(context)
        kv_after = wl.layer_kv_bytes(context if phase == "prefill" else context + 1)
        delta = kv_after - kv_read

        load = self.fetch("load_weights", W * p.w_cpu, W * p.w_disk)
        load += self.fetch("load_cache", kv_read * p.kv_cpu, kv_read * p.kv_disk)
        if not first:
            load += self.fetch("load_hidden", hid * p.act_cpu, hid * p.act_disk, free_at_source=True)

        flops, mem = self._layer_weights_and_linear(n_tok, last)
        if phase == "prefill":
            flops += wl.prefill_attention_flops(B, context)
        else:
            flops += wl.decode_attention_flops(B, wl.scheme.kv_attended_tokens(wl.model, context))
        mem += kv_read + max(delta, 0.0)
        # the loaded weights / cache / hidden states are consumed; the new K/V rows (and the hidden states the next
        # layer will load back) are produced in GPU memory and stored by the store stage
        fetched = W * (1 - p.w_gpu) + kv_read * (1 - p.kv_gpu) + (0 if first else hid * (1 - p.act_gpu))
        store, eff = self.store_kv("store_cache", delta, p.kv_gpu, p.kv_cpu, p.kv_disk)
        if fetched > 0:
            eff.insert(0, Effect("gpu", "free", fetched))
        if not last:
            if hid * (1 - p.act_gpu) > 0:
                eff.append(Effect("gpu", "write", hid * (1 - p.act_gpu)))
            store += self.put("store_hidden", hid * p.act_cpu, hid * p.act_disk)
        compute = (Route("compute", (Hop((self.gpu(flops, mem, p.num_gpu_batches),)),), effects=tuple(eff)),)
        return StepPlan(tuple(load), compute, tuple(store))


    def cpu(self, flops: float, dram_bytes: float) -> Use:
        """CPU attention: roofline of FLOPs and host-DRAM traffic at the host's attention efficiency."""
        h = self.platform.host
        eff = h.cpu_attention_efficiency
        return Use("cpu", max(flops / (h.cpu_flops_per_s * eff), dram_bytes / (h.dram_bandwidth_bytes_per_s * eff)),
                   flops=flops)

    def _decode_cpu_attention(self, context: int, first: bool, last: bool) -> StepPlan:
        """FlexGen with CPU delegation, decode: load_weight; load the disk share of the cache into DRAM;
        GPU: QKV (+ attention over the GPU share) -> q, k, v to the CPU -> CPU attention over the CPU+disk share ->
        output to the GPU -> GPU: the rest of the layer (pipelined over GPU batches); store the disk share."""
        wl, p, m = self.wl, self.pol, self.wl.model
        B, n = wl.batch, p.num_gpu_batches
        W = wl.layer_weight_bytes
        hid = wl.hidden_bytes(B)
        kv_read = wl.layer_kv_bytes(context)
        delta = wl.layer_kv_bytes(context + 1) - kv_read
        off = p.kv_cpu + p.kv_disk
        load = self.fetch("load_weights", W * p.w_cpu, W * p.w_disk)
        if not first:
            load += self.fetch("load_hidden", hid * p.act_cpu, hid * p.act_disk, free_at_source=True)
        disk = kv_read * p.kv_disk
        if disk > 0:
            load.append(Route("load_cache[disk->cpu]", (Hop((self.link("disk_read", disk),)),),
                              chunks=p.route_chunks, effects=(Effect("disk", "read", disk), Effect("cpu", "write",
                                                                                                   disk))))
        attended = wl.scheme.kv_attended_tokens(m, context)
        qkv = ("q_proj", "k_proj", "v_proj")
        pre_flops = wl.layer_linear_flops(B, qkv) + wl.decode_attention_flops(B, attended * p.kv_gpu)
        pre_mem = wl.qkv_weight_bytes * n + kv_read * p.kv_gpu + hid
        post_flops, post_mem = self._layer_weights_and_linear(B, last)
        post_flops -= wl.layer_linear_flops(B, qkv)
        post_mem -= wl.qkv_weight_bytes * n
        up = wl.fp16_vector_bytes(B, m.q_dim + 2 * m.kv_dim)
        down = wl.fp16_vector_bytes(B, m.q_dim)
        cpu_use = self.cpu(wl.decode_attention_flops(B, attended * off), kv_read * off)
        chain = (Hop((self.gpu(pre_flops, pre_mem, n),)), Hop((self.link("pcie_d2h", up),)), Hop((cpu_use,)),
                 Hop((self.link("pcie_h2d", down),)), Hop((self.gpu(post_flops, post_mem, n),)))
        fetched = W * (1 - p.w_gpu) + (0 if first else hid * (1 - p.act_gpu))
        eff = [Effect("cpu", "read", kv_read * p.kv_cpu)]
        if disk > 0:
            eff.append(Effect("cpu", "free", disk))  # the staged disk share is consumed
        if fetched > 0:
            eff.append(Effect("gpu", "free", fetched))
        store: list[Route] = []
        if delta >= 0:
            eff += [Effect("gpu", "write", delta * p.kv_gpu), Effect("cpu", "write", delta * off)]
            if delta * p.kv_disk > 0:
                store.append(Route("store_cache[cpu->disk]", (Hop((self.link("disk_write", delta * p.kv_disk),)),),
                                   chunks=p.route_chunks,
                                   effects=(Effect("cpu", "free", delta * p.kv_disk),
                                            Effect("disk", "write", delta * p.kv_disk))))
        else:
            store += self.store_kv("store_cache", delta, p.kv_gpu, p.kv_cpu, p.kv_disk)[0]
        if not last:
            offh = hid * (1 - p.act_gpu)
            if offh > 0:
                eff.append(Effect("gpu", "write", offh))
            store += self.put("store_hidden", hid * p.act_cpu, hid * p.act_disk)
        compute = (Route("compute[cpu-attention]", chain, chunks=n, effects=tuple(eff)),)
        return StepPlan(tuple(load), compute, tuple(store))


class LeoAMPlanner(Planner):
    """LeoAM-like tiered KV (arXiv 2506.20187) with fixed-size chunks: per layer,
    load_weight; load_abstracts (disk); score abstracts (GPU); load the top chunks (CPU, disk); compute; store."""

    def abstract_bytes(self, tokens: int) -> float:
        """Abstracts of the offloaded chunks of one layer: per chunk and KV head, min and max of K, fp16."""
        wl, p = self.wl, self.pol
        chunks = math.ceil(wl.scheme.kv_stored_tokens(wl.model, tokens) / p.chunk_tokens)
        return wl.batch * chunks * (p.kv_cpu + p.kv_disk) * wl.fp16_vector_bytes(2, wl.model.kv_dim)

    def _plan(self, phase: str, context: int, first: bool, last: bool) -> StepPlan:
        wl, p = self.wl, self.pol
        B, m = wl.batch, wl.model
        W = wl.layer_weight_bytes
        n_tok = B * context if phase == "prefill" else B
        hid = wl.hidden_bytes(n_tok)
        off = p.kv_cpu + p.kv_disk
        load = self.fetch("load_weights", W * p.w_cpu, W * p.w_disk)
        if not first:
            load += self.fetch("load_hidden", hid * p.act_cpu, hid * p.act_disk, free_at_source=True)
        flops, mem = self._layer_weights_and_linear(n_tok, last)
        fetched = W * (1 - p.w_gpu) + (0 if first else hid * (1 - p.act_gpu))
        if phase == "prefill":
            kv_read, kv_after = 0.0, wl.layer_kv_bytes(context)
            abs_after, abs_now = self.abstract_bytes(context), 0.0
            flops += wl.prefill_attention_flops(B, context)
        else:
            kv_read, kv_after = wl.layer_kv_bytes(context), wl.layer_kv_bytes(context + 1)
            abs_now, abs_after = self.abstract_bytes(context), self.abstract_bytes(context + 1)
            attended = wl.scheme.kv_attended_tokens(m, context)
            if abs_now > 0:
                i = len(load)
                load += [Route("load_abstracts", (Hop((self.link("disk_read", abs_now),)),
                                                  Hop((self.link("pcie_h2d", abs_now),))),
                               chunks=p.route_chunks, effects=(Effect("disk", "read", abs_now),
                                                               Effect("gpu", "write", abs_now)))]
                n_chunks = math.ceil(attended / p.chunk_tokens) * off
                score = 2.0 * 2 * B * m.num_heads * m.head_dim * n_chunks  # q . min and q . max per chunk
                load += [Route("score_abstracts", (Hop((self.gpu(score, abs_now),)),), after=(i,),
                               effects=(Effect("gpu", "free", abs_now),))]
                sel = (i + 1,)
            else:
                sel = ()
            lf = p.load_fraction
            load += self.fetch("load_cache", kv_read * p.kv_cpu * lf, kv_read * p.kv_disk * lf, after=sel)
            fetched += kv_read * off * lf
            flops += wl.decode_attention_flops(B, attended * (p.kv_gpu + off * lf))
            mem += kv_read * (p.kv_gpu + off * lf)
        delta = kv_after - kv_read
        mem += max(delta, 0.0)
        store, kv_eff = self.store_kv("store_cache", delta, p.kv_gpu, p.kv_cpu, p.kv_disk)
        d_abs = abs_after - abs_now
        if d_abs > 0:
            kv_eff.append(Effect("gpu", "write", d_abs))
            store += [Route("store_abstracts", (Hop((self.link("pcie_d2h", d_abs),)),
                                                Hop((self.link("disk_write", d_abs),))),
                            effects=(Effect("gpu", "free", d_abs), Effect("disk", "write", d_abs)))]
        eff = [Effect("gpu", "free", fetched)] if fetched > 0 else []
        if not last and hid * (1 - p.act_gpu) > 0:
            eff.append(Effect("gpu", "write", hid * (1 - p.act_gpu)))
        if not last:
            store += self.put("store_hidden", hid * p.act_cpu, hid * p.act_disk)
        compute = (Route("compute", (Hop((self.gpu(flops, mem, p.num_gpu_batches),)),),
                         effects=tuple(eff + kv_eff)),)
        return StepPlan(tuple(load), compute, tuple(store))

    def expected_final_kv(self) -> dict[str, float]:
        out = super().expected_final_kv()
        out["disk"] += self.abstract_bytes(self.wl.final_context) * self.wl.model.num_layers
        return out


class InstInferPlanner(Planner):
    """InstInfer (arXiv 2409.04992): per layer and GPU batch (pipelined over GPU batches),
    GPU: QKV projection -> P2P q, k, v to the drives -> drives: read K/V pages from flash, attention on the FPGA
    -> P2P attention output to the GPU -> GPU: output projection + MLP; store: new K/V rows to flash."""

    @property
    def k_copy(self) -> float:
        """Extra flash bytes per cached byte: sparse attention keeps a channel-major copy of K (half the cache)."""
        return 0.5 if self.pol.sparse else 0.0

    def flash_read_bytes(self, context: int) -> float:
        """Bytes one decode step reads from flash for one layer, all drives together."""
        wl, p = self.wl, self.pol
        kv = wl.layer_kv_bytes(context)
        if not p.sparse:
            return kv
        approx = wl.layer_kv_key_bytes(context) * p.topr_channels / wl.model.head_dim
        # tokens are selected `select_tokens` at a time; a flash page holds `page_tokens` tokens of K (or V)
        page_tokens = max(1, self.platform.csd.nand_page_bytes // (wl.model.head_dim * 2))
        units_per_page = max(1.0, page_tokens / p.select_tokens)
        pages_touched = 1.0 - (1.0 - p.topk_fraction) ** units_per_page
        return approx + kv * pages_touched

    def expected_final_kv(self) -> dict[str, float]:
        kv = self.wl.kv_total_bytes(self.wl.final_context)
        return {"gpu": 0.0, "cpu": 0.0, "disk": 0.0, "csd": kv * (1 + self.k_copy)}

    def _plan(self, phase: str, context: int, first: bool, last: bool) -> StepPlan:
        wl, p, m = self.wl, self.pol, self.wl.model
        B, n = wl.batch, p.num_gpu_batches
        W = wl.layer_weight_bytes
        load = self.fetch("load_weights", W * p.w_cpu, W * p.w_disk)
        fetched = W * (1 - p.w_gpu)
        if phase == "prefill":
            n_tok = B * context
            flops, mem = self._layer_weights_and_linear(n_tok, last)
            flops += wl.prefill_attention_flops(B, context)
            kv = wl.layer_kv_bytes(context) * (1 + self.k_copy)
            mem += kv
            eff = ((Effect("gpu", "free", fetched),) if fetched else ()) + (Effect("gpu", "write", kv),)
            compute = (Route("compute", (Hop((self.gpu(flops, mem, n),)),), effects=eff),)
            store = (Route("store_cache[csd]", (Hop((self.link("pcie_d2h", kv),)), Hop((self.link("csd_in", kv),)),
                                                Hop((self.link("csd_flash_write", kv),))),
                           chunks=p.route_chunks, effects=(Effect("gpu", "free", kv), Effect("csd", "write", kv))),)
            return StepPlan(tuple(load), compute, store)
        qkv_names = ("q_proj", "k_proj", "v_proj")
        pre_flops = wl.layer_linear_flops(B, qkv_names)
        pre_mem = wl.qkv_weight_bytes * n + wl.hidden_bytes(B)
        post_flops, post_mem = self._layer_weights_and_linear(B, last)
        post_flops -= pre_flops
        post_mem -= wl.qkv_weight_bytes * n
        up = wl.fp16_vector_bytes(B, m.q_dim + 2 * m.kv_dim)  # q and the fresh k, v rows
        down = wl.fp16_vector_bytes(B, m.q_dim)  # attention output
        attended = wl.scheme.kv_attended_tokens(m, context)
        read = self.flash_read_bytes(context)
        if p.sparse:
            fpga = (2.0 * B * m.num_heads * p.topr_channels * attended
                    + wl.decode_attention_flops(B, attended * p.topk_fraction))
        else:
            fpga = wl.decode_attention_flops(B, attended)
        cs = self.ch["csd_fpga"]
        chain = (Hop((self.gpu(pre_flops, pre_mem, n),)), Hop((self.link("pcie_d2h", up),)),
                 Hop((self.link("csd_in", up),)),
                 Hop((self.link("csd_flash_read", read), Use("csd_fpga", fpga / cs.members / cs.rate_per_member,
                                                              flops=fpga))),
                 Hop((self.link("csd_out", down),)), Hop((self.link("pcie_h2d", down),)),
                 Hop((self.gpu(post_flops, post_mem, n),)))
        delta = (wl.layer_kv_bytes(context + 1) - wl.layer_kv_bytes(context)) * (1 + self.k_copy)
        eff = [Effect("csd", "read", read)]
        if fetched:
            eff.append(Effect("gpu", "free", fetched))
        compute = (Route("attention[csd]", chain, chunks=n, effects=tuple(eff)),)
        if delta >= 0:
            store = (Route("store_cache[csd]", (Hop((self.link("csd_flash_write", delta),)),),
                           effects=(Effect("csd", "write", delta),)),)
        else:
            store = (Route("store_cache[evict]", (), effects=(Effect("csd", "free", -delta),)),)
        return StepPlan(tuple(load), compute, store)


_PLANNERS = {"flexgen": FlexGenPlanner, "leoam": LeoAMPlanner, "instinfer": InstInferPlanner}


def make_planner(platform: "Platform", workload: "Workload", policy: "Policy",
                 ch: dict[str, ChannelSpec] | None = None) -> Planner:
    """The planner of `policy`'s kind; `ch` (the platform's channels) may be passed in to save recomputing it."""
    return _PLANNERS[policy.kind](platform, workload, policy, ch)


# ---- memory footprint -----------------------------------------------------------------------------------------------
def footprint(platform: "Platform", workload: "Workload", policy: "Policy") -> dict[str, float]:
    """Peak bytes each store must hold: resident data at the final context plus working buffers."""
    wl, p, m = workload, policy, workload.model
    kv_final = wl.kv_total_bytes(wl.final_context)
    blocks = wl.layer_weight_bytes * m.num_layers
    P, gbs = wl.prompt_len, p.gpu_batch_size
    # per-GPU-batch prefill workspace: fp16 attention scores of one head group + the MLP intermediate
    prefill_ws = 2.0 * gbs * m.num_heads * P * P + 2.0 * gbs * P * m.ffn_hidden_size
    hid_prefill = wl.hidden_bytes(wl.batch * P)
    layer_kv = wl.layer_kv_bytes(wl.final_context)
    if p.kind == "instinfer":
        k_copy = 0.5 if p.sparse else 0.0
        gpu = (wl.resident_weight_bytes + blocks * p.w_gpu + 2 * wl.layer_weight_bytes * (1 - p.w_gpu)
               + 2 * wl.layer_kv_bytes(P) * (1 + k_copy) + 2 * hid_prefill + prefill_ws)
        return {"gpu": gpu, "cpu": blocks * p.w_cpu, "disk": blocks * p.w_disk, "csd": kv_final * (1 + k_copy)}
    abstracts = 0.0
    if p.kind == "leoam":
        abstracts = LeoAMPlanner(platform, workload, policy).abstract_bytes(wl.final_context) * m.num_layers
    gpu_kv_buf = 0.0 if p.cpu_attention else 2 * layer_kv * (1 - p.kv_gpu)  # CPU delegation: no cache to the GPU
    cpu_kv_buf = 2 * layer_kv * p.kv_disk if p.cpu_attention else 0.0  # the disk share staged in DRAM
    gpu = (wl.resident_weight_bytes + blocks * p.w_gpu + kv_final * p.kv_gpu
           + 2 * wl.layer_weight_bytes * (1 - p.w_gpu) + gpu_kv_buf
           + hid_prefill * (1 + p.act_gpu) + prefill_ws)
    return {"gpu": gpu, "cpu": blocks * p.w_cpu + kv_final * p.kv_cpu + hid_prefill * p.act_cpu + cpu_kv_buf,
            "disk": blocks * p.w_disk + kv_final * p.kv_disk + hid_prefill * p.act_disk + abstracts, "csd": 0.0}


def capacities(platform: "Platform") -> dict[str, float]:
    csd = platform.csd.count * platform.csd.capacity_bytes if platform.csd is not None else 0.0
    return {"gpu": float(platform.gpu_usable_bytes), "cpu": float(platform.host.usable_bytes),
            "disk": float(platform.disk_bytes), "csd": float(csd)}


def check_capacity(platform: "Platform", workload: "Workload") -> None:
    """Raise SpecError (naming the fix) when weights + final KV cache exceed every store of the platform together."""
    wl = workload
    need = wl.total_weight_bytes + wl.kv_total_bytes(wl.final_context)
    cap = capacities(platform)
    avail = cap["gpu"] + cap["cpu"] + cap["disk"] + cap["csd"]
    gb = 1e9
    if need > avail:
        raise SpecError(f"{wl.model.name} with batch {wl.batch} and context {wl.final_context} needs "
                        f"{need / gb:.1f} GB (weights + KV cache) but platform {platform.name!r} holds only "
                        f"{avail / gb:.1f} GB on GPU, host DRAM and drives together; lower --batch, --prompt or "
                        "--gen, or use a compression scheme")


def check_fits(platform: "Platform", workload: "Workload", policy: "Policy") -> dict[str, float]:
    """Raise SpecError (naming the fix) when the workload cannot fit the platform at all, the policy cannot run on
    it, or the policy's placement overfills a store. Returns the footprint."""
    check_capacity(platform, workload)
    policy.check(platform, workload)
    cap = capacities(platform)
    gb = 1e9
    fp = footprint(platform, workload, policy)
    hint = {"gpu": "lower w_gpu/kv_gpu/act_gpu or the GPU batch size", "cpu": "lower w_cpu/kv_cpu/act_cpu",
            "disk": "use a platform with more disk", "csd": "use more or larger drives"}
    for store, used in fp.items():
        if used > cap[store] * (1 + 1e-9):
            raise SpecError(f"policy {policy.kind} places {used / gb:.1f} GB on {store} but platform "
                            f"{platform.name!r} has {cap[store] / gb:.1f} GB there; {hint[store]}")
    return fp
