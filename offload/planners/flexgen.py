"""FlexGen's generation loop (Sheng et al., ICML'23, Alg. 1), one layer step for the whole block of GPU batches."""

from __future__ import annotations

from typing import ClassVar

from offload.plan import Effect, Hop, Route, StepPlan
from offload.planners.base import Planner

__all__ = ["FlexGenPlanner"]


class FlexGenPlanner(Planner):
    """for token i: for layer j: load_weight(j+1); load_cache(j+1); load_hidden(j+1); compute(j); store_cache(j-1);
    store_hidden(j-1); sync()   -- the overlap across steps is done by the executor (sim or cost model).

    Compressed weights are decompressed on the GPU before each use (once per GPU batch); a compressed cache is
    decompressed where attention reads it and its new rows are compressed on the GPU."""

    kind: ClassVar[str] = "flexgen"

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
            read_fp16 = 0.0
            new_fp16 = wl.layer_kv_fp16_bytes(context)
        else:
            flops += wl.decode_attention_flops(B, wl.scheme.kv_attended_tokens(wl.model, context))
            read_fp16 = wl.layer_kv_fp16_bytes(context)
            new_fp16 = wl.layer_kv_fp16_bytes(context + 1) - read_fp16
        kv_mem = read_fp16 if wl.kv_compressed else kv_read
        mem += kv_mem + max(delta, 0.0)
        codec = self.weight_codec_s() + self.kv_codec_s(kv_read, read_fp16, delta, new_fp16)
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
        compute = (Route("compute", (Hop((self.gpu(flops, mem, p.num_gpu_batches, codec),)),), effects=tuple(eff)),)
        return StepPlan(tuple(load), compute, tuple(store))

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
            load.append(
                Route(
                    "load_cache[disk->cpu]",
                    (self.xfer("disk_read", disk),),
                    chunks=p.route_chunks,
                    effects=(Effect("disk", "read", disk), Effect("cpu", "write", disk)),
                )
            )
        attended = wl.scheme.kv_attended_tokens(m, context)
        qkv = ("q_proj", "k_proj", "v_proj")
        read_fp16 = wl.layer_kv_fp16_bytes(context)
        pre_flops = wl.layer_linear_flops(B, qkv) + wl.decode_attention_flops(B, attended * p.kv_gpu)
        pre_mem = (wl.qkv_weight_fp16_bytes if wl.weights_compressed else wl.qkv_weight_bytes) * n + hid
        pre_mem += (read_fp16 if wl.kv_compressed else kv_read) * p.kv_gpu
        post_flops, post_mem = self._layer_weights_and_linear(B, last)
        post_flops -= wl.layer_linear_flops(B, qkv)
        post_mem -= (wl.qkv_weight_fp16_bytes if wl.weights_compressed else wl.qkv_weight_bytes) * n
        up = wl.fp16_vector_bytes(B, m.q_dim + 2 * m.kv_dim)
        down = wl.fp16_vector_bytes(B, m.q_dim)
        pre_codec = self.weight_codec_s() + self.kv_codec_s(kv_read * p.kv_gpu, read_fp16 * p.kv_gpu, 0.0, 0.0)
        cpu_use = self.cpu_attention(B, attended * off, kv_read * off, read_fp16 * off)
        if wl.kv_compressed and delta > 0:  # the new rows are compressed on the CPU before they join the cache
            new_fp16 = wl.layer_kv_fp16_bytes(context + 1) - read_fp16
            cpu_use = type(cpu_use)(
                "cpu", cpu_use.seconds + self.cpu_codec_s((delta + new_fp16) * off, False), flops=cpu_use.flops
            )
        chain = (
            Hop((self.gpu(pre_flops, pre_mem, n / 2, pre_codec),)),
            self.xfer("pcie_d2h", up),
            Hop((cpu_use,)),
            self.xfer("pcie_h2d", down),
            Hop((self.gpu(post_flops, post_mem, n / 2),)),
        )
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
                store.append(
                    Route(
                        "store_cache[cpu->disk]",
                        (self.xfer("disk_write", delta * p.kv_disk),),
                        chunks=p.route_chunks,
                        effects=(Effect("cpu", "free", delta * p.kv_disk), Effect("disk", "write", delta * p.kv_disk)),
                    )
                )
        else:
            store += self.store_kv("store_cache", delta, p.kv_gpu, p.kv_cpu, p.kv_disk)[0]
        if not last:
            offh = hid * (1 - p.act_gpu)
            if offh > 0:
                eff.append(Effect("gpu", "write", offh))
            store += self.put("store_hidden", hid * p.act_cpu, hid * p.act_disk)
        compute = (Route("compute[cpu-attention]", chain, chunks=n, effects=tuple(eff)),)
        return StepPlan(tuple(load), compute, tuple(store))
