"""InstInfer (arXiv 2409.04992): decode attention in computational storage drives."""

from __future__ import annotations

from typing import ClassVar

from offload.plan import Effect, Hop, Route, StepPlan, Use
from offload.planners.base import Planner

__all__ = ["InstInferPlanner"]


class InstInferPlanner(Planner):
    """InstInfer (arXiv 2409.04992): per layer and GPU batch (pipelined over GPU batches),
    GPU: QKV projection -> P2P q, k, v to the drives -> drives: read K/V pages from flash, attention on the FPGA
    -> P2P attention output to the GPU -> GPU: output projection + MLP; store: new K/V rows to flash."""

    kind: ClassVar[str] = "instinfer"

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

    def footprint(self) -> dict[str, float]:
        """The whole cache (plus the channel-major K copy of sparse attention) in the drives; on the GPU the
        resident weights, the next layer's offloaded weights, one prefill layer's K/V on its way to the drives
        (double-buffered), the prefill hidden states and workspace."""
        wl, p = self.wl, self.pol
        blocks = wl.layer_weight_bytes * wl.model.num_layers
        hid_prefill = wl.hidden_bytes(wl.batch * wl.prompt_len)
        gpu = (
            wl.resident_weight_bytes
            + blocks * p.w_gpu
            + 2 * wl.layer_weight_bytes * (1 - p.w_gpu)
            + 2 * wl.layer_kv_bytes(wl.prompt_len) * (1 + self.k_copy)
            + 2 * hid_prefill
            + self.prefill_workspace_bytes()
            + self.codec_workspace_bytes(kv_to_gpu=False)
        )
        return {
            "gpu": gpu,
            "cpu": blocks * p.w_cpu,
            "disk": blocks * p.w_disk,
            "csd": wl.kv_total_bytes(wl.final_context) * (1 + self.k_copy),
        }

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
            store = (
                Route(
                    "store_cache[csd]",
                    (self.xfer("pcie_d2h", kv), self.xfer("csd_in", kv), self.xfer("csd_flash_write", kv)),
                    chunks=p.route_chunks,
                    effects=(Effect("gpu", "free", kv), Effect("csd", "write", kv)),
                ),
            )
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
            fpga = 2.0 * B * m.num_heads * p.topr_channels * attended + wl.decode_attention_flops(
                B, attended * p.topk_fraction
            )
        else:
            fpga = wl.decode_attention_flops(B, attended)
        cs = self.ch["csd_fpga"]
        chain = (
            Hop((self.gpu(pre_flops, pre_mem, n / 2),)),
            self.xfer("pcie_d2h", up),
            self.xfer("csd_in", up),
            Hop(
                self.xfer("csd_flash_read", read).uses
                + (Use("csd_fpga", fpga / cs.members / cs.rate_per_member, flops=fpga),)
            ),
            self.xfer("csd_out", down),
            self.xfer("pcie_h2d", down),
            Hop((self.gpu(post_flops, post_mem, n / 2),)),
        )
        delta = (wl.layer_kv_bytes(context + 1) - wl.layer_kv_bytes(context)) * (1 + self.k_copy)
        eff = [Effect("csd", "read", read)]
        if fetched:
            eff.append(Effect("gpu", "free", fetched))
        compute = (Route("attention[csd]", chain, chunks=n, effects=tuple(eff)),)
        if delta >= 0:
            store = (
                Route(
                    "store_cache[csd]", (self.xfer("csd_flash_write", delta),), effects=(Effect("csd", "write", delta),)
                ),
            )
        else:
            store = (Route("store_cache[evict]", (), effects=(Effect("csd", "free", -delta),)),)
        return StepPlan(tuple(load), compute, store)
