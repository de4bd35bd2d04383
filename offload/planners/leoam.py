"""LeoAM-like tiered KV cache (arXiv 2506.20187) with fixed-size chunks and per-chunk abstracts."""

from __future__ import annotations

import math
from typing import ClassVar

from offload.plan import Effect, Hop, Route, StepPlan
from offload.planners.base import Planner

__all__ = ["LeoAMPlanner"]


class LeoAMPlanner(Planner):
    """LeoAM-like tiered KV (arXiv 2506.20187) with fixed-size chunks: per layer,
    load_weight; load_abstracts (disk); score abstracts (GPU); load the top chunks (CPU, disk); compute; store."""

    kind: ClassVar[str] = "leoam"

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
                load += [
                    Route(
                        "load_abstracts",
                        (self.xfer("disk_read", abs_now), self.xfer("pcie_h2d", abs_now)),
                        chunks=p.route_chunks,
                        effects=(Effect("disk", "read", abs_now), Effect("gpu", "write", abs_now)),
                    )
                ]
                n_chunks = math.ceil(attended / p.chunk_tokens) * off
                score = 2.0 * 2 * B * m.num_heads * m.head_dim * n_chunks  # q . min and q . max per chunk
                load += [
                    Route(
                        "score_abstracts",
                        (Hop((self.gpu(score, abs_now),)),),
                        after=(i,),
                        effects=(Effect("gpu", "free", abs_now),),
                    )
                ]
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
            store += [
                Route(
                    "store_abstracts",
                    (self.xfer("pcie_d2h", d_abs), self.xfer("disk_write", d_abs)),
                    effects=(Effect("gpu", "free", d_abs), Effect("disk", "write", d_abs)),
                )
            ]
        eff = [Effect("gpu", "free", fetched)] if fetched > 0 else []
        if not last and hid * (1 - p.act_gpu) > 0:
            eff.append(Effect("gpu", "write", hid * (1 - p.act_gpu)))
        if not last:
            store += self.put("store_hidden", hid * p.act_cpu, hid * p.act_disk)
        compute = (Route("compute", (Hop((self.gpu(flops, mem, p.num_gpu_batches),)),), effects=tuple(eff + kv_eff)),)
        return StepPlan(tuple(load), compute, tuple(store))

    def footprint(self) -> dict[str, float]:
        """FlexGen's accounting plus the chunk abstracts, kept on disk."""
        out = super().footprint()
        out["disk"] += self.abstract_bytes(self.wl.final_context) * self.wl.model.num_layers
        return out

    def expected_final_kv(self) -> dict[str, float]:
        out = super().expected_final_kv()
        out["disk"] += self.abstract_bytes(self.wl.final_context) * self.wl.model.num_layers
        return out
