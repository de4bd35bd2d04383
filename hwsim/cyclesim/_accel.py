"""The accelerator: linear engine, attention engines, vector unit and HBM, scheduled per layer and per token.

Hardware (all figures from the HardwareSpec; nothing here is a hardware constant):

* Linear engine: ``fpga.engine_dsps`` DSPs, each doing ``fpga.macs_per_dsp[w?a?]`` MACs per cycle (DSP packing of
  narrow operands; a precision not listed runs at the cheapest listed one covering it, as ComputeSpec.peak).
  2:4 pruned weights: the engine multiplies kept weights only (half the MACs). Decode runs GEMV (batch rows),
  prefill GEMM (token tiles of ``fpga.activation_buffer_bytes``; weights re-streamed once per token tile).
  Weights stream in tiles of whole output rows, each tile at most ``fpga.weight_buffer_bytes``, double buffered
  (`TileStream`); the stream prefetches the next operator's first tiles while the current one drains. A
  dependent operator waits for the engine's drain (``fpga.linear_pipeline_cycles``).
* Attention engines: ``fpga.attention_engines`` copies of the RTL engine (rtl/engine.py, `EngineModel`) with
  ``fpga.attention_lanes`` lanes each, driven in lockstep by one sequencer: engine e takes query head
  ``g * E + e`` of head group g; block i of all heads of a group is one KV read (a KV head shared by several query
  heads of the group -- GQA -- is read once and broadcast), double buffered per block. After a group's last block
  the engines run their DIV + OUT tail while the next group's first blocks are prefetched.
* Vector unit (norms, RoPE, residuals, SiLU·gate, prefill softmax): ``compute.vector_ops_per_s / freq_hz`` ops per
  cycle; it works between dependent engine operators (not overlapped with them).
* HBM: `MemoryModel` / `MemoryBus` (channels, bursts, latency, efficiency).

Schedule of one decode step (per layer, batch B): RMSNorm → q, k, v GEMV → RoPE + KV append (write of the new
token's K/V, fp16, into the dense recent window) → attention engines over the Λ-selected blocks → o GEMV → residual
+ RMSNorm → gate, up GEMV → SiLU·up → down GEMV → residual; after the last layer: final norm → LM head GEMV.

KV blocks: tokens at absolute positions, 64 per block (the K tile grid). A block's bytes come from the scheme
(`kv_chunk_bytes_per_head`, split evenly between K and V -- exact for dense KV4 with group 64, where the K and
V halves of a chunk are equal; fp16 tokens of the dense recent window at 2·head_dim·2 B). Tokens of the dense
recent window enter the engine as a dense block (quantized on the fly by the sequencer; stated modelling choice,
the RTL takes int4 only). Sparse (bitmap) KV: per-tile value counts are the nominal ones of per-token magnitude
pruning (K tile: kept fraction of the 64 tokens of the tile, masked tokens' kept values included; V tile: the
token's kept values spread evenly over its D/64 tiles), or measured per layer from an artifact's profile.
Not modelled: the periodic re-compression of a full 64-token chunk of the recent window (once per 64 steps),
sampling, host interaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hwsim.analytical import ELEMENTWISE_OPS_PER_FFN, ELEMENTWISE_OPS_PER_HIDDEN, SOFTMAX_OPS_PER_SCORE
from hwsim.cyclesim._memory import MemoryBus, MemoryModel
from hwsim.cyclesim._pipeline import TileStream
from hwsim.cyclesim.attention_engine import TILE, BlockWork, EngineModel
from base.errors import SpecError
from hwsim.hardware import HardwareSpec
from models.spec import LinearShape, ModelSpec
from quant.scheme import FP16_BYTES, CompressionScheme, kept_per_token

__all__ = ["Accelerator", "StepResult", "LinearPlan", "macs_per_cycle"]

NORM_OPS_PER_ELEM = 4  # RMSNorm/LayerNorm: square, accumulate, scale, multiply by gamma
RESIDUAL_OPS_PER_ELEM = 1
ROPE_OPS_PER_HIDDEN = ELEMENTWISE_OPS_PER_HIDDEN - 2 * NORM_OPS_PER_ELEM - 2 * RESIDUAL_OPS_PER_ELEM  # the rest


def macs_per_cycle(hw: HardwareSpec, weight_bits: int, act_bits: int) -> int:
    """MACs per cycle of the linear engine: engine_dsps x DSP packing of the cheapest listed precision covering
    (weight_bits, act_bits)."""
    f = hw.fpga
    best = None
    for key, macs in f.macs_per_dsp.items():
        w, a = (int(x) for x in key[1:].split("a"))
        if w >= weight_bits and a >= act_bits and (best is None or (w, a) < best[0]):
            best = ((w, a), macs)
    if best is None:
        raise SpecError(f"hardware {hw.name!r}: fpga.macs_per_dsp lists no precision covering "
                        f"w{weight_bits}a{act_bits}; add one (e.g. w{max(weight_bits, 8)}a{max(act_bits, 8)})")
    return max(1, int(f.engine_dsps * best[1]))


@dataclass(frozen=True)
class LinearPlan:
    """How one linear operator streams through the engine: runs of identical tiles (count, bytes, cycles)."""

    name: str
    cls: str
    runs: tuple[tuple[int, int, int], ...]
    macs: int
    weight_bytes: int

    @property
    def first_tile_bytes(self) -> int:
        return self.runs[0][1]

    @property
    def n_tiles(self) -> int:
        return sum(r[0] for r in self.runs)

    @property
    def compute_cycles(self) -> int:
        return sum(c * cyc for c, _, cyc in self.runs)


@dataclass
class StepResult:
    """Cycles of one decode step (or a prefill) and where they went (per operator class)."""

    cycles: int
    class_cycles: dict[str, int]
    class_bytes: dict[str, float]
    class_flops: dict[str, float]
    class_compute: dict[str, int]  # engine busy cycles per class (for the bound label)
    bytes_moved: int
    bus_busy_cycles: int


@dataclass
class _Acc:
    cycles: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, float] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)

    def add(self, cls: str, cycles: int, nbytes: float = 0.0, flops: float = 0.0, compute: int = 0) -> None:
        self.cycles[cls] = self.cycles.get(cls, 0) + cycles
        self.nbytes[cls] = self.nbytes.get(cls, 0.0) + nbytes
        self.flops[cls] = self.flops.get(cls, 0.0) + flops
        self.compute[cls] = self.compute.get(cls, 0) + compute

    def snapshot(self) -> tuple[dict, dict, dict, dict]:
        return dict(self.cycles), dict(self.nbytes), dict(self.flops), dict(self.compute)

    def add_scaled_delta(self, before: tuple, k: int) -> None:
        for store, old in zip((self.cycles, self.nbytes, self.flops, self.compute), before):
            for key in list(store):
                store[key] += k * (store[key] - old.get(key, 0))


class _Sim:
    """Mutable machine state of one simulated run."""

    def __init__(self, mem: MemoryModel, jump: bool) -> None:
        self.bus = MemoryBus(mem)
        self.w = TileStream(self.bus, 2, jump=jump)
        self.a = TileStream(self.bus, 2, jump=jump)
        self.t = 0  # cycle at which the last dependent result is ready
        self.acc = _Acc()

    def state(self) -> tuple[int, ...]:
        """Everything the future depends on. The attention stream's buffer-free times are clamped to the start of
        its next phase (`start_attention`), so any of them older than `t` is equivalent to `t`."""
        return (self.t, self.bus.busy_until, *self.w.cends, *self.w.pending,
                *(max(c, self.t) for c in self.a.cends), *self.a.pending)

    def start_attention(self) -> None:
        """The sequencer starts fetching a layer's KV blocks when the layer's attention starts (no prefetch of KV
        across the attention phase boundary)."""
        self.a.cends = type(self.a.cends)((max(c, self.t) for c in self.a.cends), maxlen=self.a.buffers)

    def shift(self, d: int) -> None:
        self.t += d
        self.bus.busy_until += d
        for s in (self.w, self.a):
            s.cends = type(s.cends)((c + d for c in s.cends), maxlen=s.buffers)
            s.pending = type(s.pending)(p + d for p in s.pending)


class Accelerator:
    """`model` compressed by `scheme` on the FPGA design `hw`; `profile` (optional) gives measured per-layer
    weight bytes / KV sparsity. `jump=False` disables every jump over periodic regions (for tests)."""

    def __init__(self, model: ModelSpec, hw: HardwareSpec, scheme: CompressionScheme, profile=None,
                 jump: bool = True) -> None:
        f = hw.fpga
        if hw.kind != "fpga" or f is None:
            raise SpecError(f"the cycle-level simulator models FPGA accelerators; {hw.name!r} is a {hw.kind}. "
                            "Use --fidelity analytical for it")
        missing = [k for k in ("engine_dsps", "weight_buffer_bytes", "activation_buffer_bytes", "attention_lanes")
                   if not getattr(f, k)]
        if missing or not f.macs_per_dsp:
            raise SpecError(f"hardware {hw.name!r}: the cycle-level simulator needs fpga.{(missing or ['macs_per_dsp'])[0]}"
                            " (and engine_dsps, macs_per_dsp, weight_buffer_bytes, activation_buffer_bytes, "
                            "attention_lanes); add it to the hardware YAML")
        self.model, self.hw, self.s, self.profile, self.jump = model, hw, scheme, profile, jump
        self.mem = MemoryModel.from_hardware(hw)
        # on-chip buffers: 2 weight tiles, the activation buffer, 2 KV blocks (int4, K + V) per attention engine
        kv_block = 2 * TILE * model.head_dim * max(scheme.kv_bits, 4) // 8
        self.on_chip_bytes = (2 * f.weight_buffer_bytes + f.activation_buffer_bytes
                              + 2 * f.attention_engines * kv_block)
        if self.on_chip_bytes > hw.on_chip_bytes:
            raise SpecError(f"hardware {hw.name!r}: the buffers need {self.on_chip_bytes:,} B on chip (2 x "
                            f"weight_buffer_bytes + activation_buffer_bytes + 2 KV blocks per attention engine) but "
                            f"on_chip_bytes is {hw.on_chip_bytes:,}; shrink the buffers")
        self.vec_per_cycle = hw.compute.vector_ops_per_s / hw.freq_hz
        self.D = model.head_dim
        self.int_kv = scheme.kv_bits <= 8  # the attention engines take int KV; fp16 KV runs on the linear engine
        if self.int_kv:
            self.engine = EngineModel(model.head_dim, f.attention_lanes)
        self.E = f.attention_engines
        nominal = sum(scheme.linear_bytes(lin) for lin in model.block_linears)
        if profile is not None:
            self.layer_factor = tuple(b / nominal for b in profile.layer_weight_bytes)
            sp = profile.kv_sparsity_per_layer
            self.layer_kv_sparsity = tuple(sp) if sp is not None else (scheme.kv_sparsity,) * model.num_layers
        else:
            self.layer_factor = (1.0,) * model.num_layers
            self.layer_kv_sparsity = (scheme.kv_sparsity,) * model.num_layers
        self._plans: dict[tuple, LinearPlan] = {}
        self._decoding = True
        self._blocks_cache: dict[tuple, tuple] = {}
        self._cyc_cache: dict[tuple, int] = {}
        self._step_cache: dict[tuple, StepResult] = {}

    # ---- linear operators -------------------------------------------------------------------------------------
    def plan_linear(self, lin: LinearShape, tokens: int, cls: str, factor: float = 1.0, head: bool = False
                    ) -> LinearPlan:
        key = (lin, tokens, cls, factor, head)
        got = self._plans.get(key)
        if got is not None:
            return got
        s, f = self.s, self.hw.fpga
        if head:
            wb = s.weight_bytes(self.model)
            total = wb.lm_head if wb.lm_head else wb.embedding
            if self.profile is not None and self.profile.lm_head_bytes is not None:
                total = self.profile.lm_head_bytes
            bits = s.lm_head_bits
            act = s.act_bits if bits < 16 else 16
            density = 1.0
        else:
            total = s.linear_bytes(lin) * factor
            bits, act = s.weight_bits, s.act_bits
            density = 0.5 if s.weight_pruning == "2:4" else 1.0
        rows = lin.out_features
        row_bytes = total / rows
        r = max(1, min(rows, int(f.weight_buffer_bytes // row_bytes)))
        mpc = macs_per_cycle(self.hw, bits, act)
        # prefill: token tiles that fit the activation buffer (int8/fp16 inputs and outputs of the tile)
        act_bytes = 1 if act <= 8 else 2
        per_token = (lin.in_features + lin.out_features) * act_bytes
        tt = max(1, min(tokens, f.activation_buffer_bytes // per_token))
        passes, last_tt = divmod(tokens, tt)
        runs: list[tuple[int, int, int]] = []

        def tile(nrows: int, ntok: int) -> tuple[int, int]:
            macs = nrows * lin.in_features * density * ntok
            return math.ceil(nrows * row_bytes), max(1, math.ceil(macs / mpc))

        full, rem = divmod(rows, r)
        for ntok, reps in ((tt, passes), (last_tt, 1 if last_tt else 0)):
            for _ in range(reps):
                if full:
                    b, c = tile(r, ntok)
                    runs.append((full, b, c))
                if rem:
                    b, c = tile(rem, ntok)
                    runs.append((1, b, c))
        merged: list[tuple[int, int, int]] = []
        for run in runs:  # identical consecutive runs (full passes) merge into one
            if merged and merged[-1][1:] == run[1:]:
                merged[-1] = (merged[-1][0] + run[0], run[1], run[2])
            else:
                merged.append(run)
        plan = LinearPlan(lin.name, cls, tuple(merged), int(lin.weight_elems * density * tokens),
                          int(round(total)) * (passes + (1 if last_tt else 0)))
        self._plans[key] = plan
        return plan

    def _linear(self, sim: _Sim, plan: LinearPlan, ready: int, nxt: LinearPlan | None, drain: bool) -> None:
        start_bytes = sim.bus.bytes_moved
        for i, (count, nbytes, cyc) in enumerate(plan.runs):
            last = i == len(plan.runs) - 1
            sim.w.run(count, nbytes, cyc, ready,
                      next_bytes=nxt.first_tile_bytes if (last and nxt) else 0, next_count=2 if (last and nxt) else 0)
        end = sim.w.last_end + (self.hw.fpga.linear_pipeline_cycles if drain else 0)
        prev = sim.t
        sim.t = max(sim.t, end)
        sim.acc.add(plan.cls, sim.t - prev, sim.bus.bytes_moved - start_bytes, 2.0 * plan.macs, plan.compute_cycles)

    def _vector(self, sim: _Sim, ops: float, cls: str = "elementwise") -> None:
        c = math.ceil(ops / self.vec_per_cycle)
        sim.t += c
        sim.acc.add(cls, c, 0.0, ops, c)

    # ---- attention (decode) -----------------------------------------------------------------------------------
    def _kv_blocks(self, context: int, sparsity: float) -> tuple[tuple[int, int, int, int], ...]:
        """Engine blocks of one head at `context` tokens (the new token included), in the order sent, as
        (selected tokens, values per K tile, values per V tile, bytes per KV head)."""
        key = (context, sparsity)
        got = self._blocks_cache.get(key)
        if got is not None:
            return got
        s, D = self.s, self.D
        G = D // TILE
        sink, window = s.attn_sink, s.attn_window
        stored = s.kv_stored_tokens(self.model, context)
        _, dense = s.kv_split(stored)
        if window is None and self.model.sliding_window is None:
            segments = [(0, context)]
        else:
            w = stored if window is None else min(window, stored)
            lo = context - w
            sk = min(sink, lo) if window is not None else 0
            segments = [(0, sk), (lo, context)] if sk else [(lo, context)]
        fp16_from = context - dense  # the newest `dense` tokens are fp16
        kept = kept_per_token(D, sparsity)
        ls = s if sparsity == s.kv_sparsity else s.replace(kv_sparsity=sparsity)  # measured per-layer sparsity
        chunk = ls.kv_chunk_bytes_per_head(D) if ls.kv_compressed else 0.0
        half = chunk / 2 / TILE  # bytes of one compressed token's K (or V) in one head
        blocks = []
        for a, e in segments:
            for b0 in range(a // TILE * TILE, e, TILE):
                b1 = min(b0 + TILE, context)
                n_sel = min(b1, e) - max(b0, a)
                if blocks and blocks[-1][4] == b0:  # a block shared by the sink and window segments
                    prev = blocks.pop()
                    n_sel += prev[0]
                n_fp16 = max(0, min(b1, e) - max(b0, fp16_from, a))
                n_comp = n_sel - n_fp16
                if sparsity > 0 and n_fp16 == 0:
                    kv, vv, k_part = round((b1 - b0) * kept / D), round(kept / G), b1 - b0
                else:
                    kv, vv, k_part = n_sel, TILE, n_comp
                nbytes = math.ceil(half * (k_part + n_comp) + n_fp16 * 2 * D * FP16_BYTES)
                blocks.append((n_sel, kv, vv, nbytes, b0))
        out = tuple(b[:4] for b in blocks)
        self._blocks_cache[key] = out
        return out

    def _block_cycles(self, n_sel: int, k_values: int, v_values: int) -> int:
        key = (n_sel, k_values, v_values)
        got = self._cyc_cache.get(key)
        if got is None:
            got = sum(self.engine.block_phases(BlockWork.uniform(self.D, n_sel, k_values, v_values)).values())
            self._cyc_cache[key] = got
        return got

    def _attention(self, sim: _Sim, context: int, batch: int, sparsity: float) -> None:
        m = self.model
        sim.start_attention()
        start_t, start_bytes = sim.t, sim.bus.bytes_moved
        ready = sim.t
        H, E = m.num_heads, self.E
        groups = -(-H // E)
        blocks = self._kv_blocks(context, sparsity)
        runs: list[list] = []  # runs of identical consecutive blocks: [count, bytes, engine cycles]
        for n_sel, kv, vv, nbytes in blocks:
            cyc = self._block_cycles(n_sel, kv, vv)
            if runs and runs[-1][1] == nbytes and runs[-1][2] == cyc:
                runs[-1][0] += 1
            else:
                runs.append([1, nbytes, cyc])
        tail = sum(self.engine.tail_phases().values())
        G = self.D // TILE
        lane_ops = sum(self.D * kv + n_sel * G * vv for n_sel, kv, vv, _ in blocks)
        compute = 0
        for b in range(batch):
            for g in range(groups):
                heads = range(g * E, min(H, (g + 1) * E))
                kv_heads = len({h // m.gqa_group for h in heads})
                more = g + 1 < groups or b + 1 < batch  # another head group follows on the engines
                for i, (count, nbytes, cyc) in enumerate(runs):
                    last = i == len(runs) - 1 and more
                    sim.a.run(count, nbytes * kv_heads, cyc, ready,
                              next_bytes=runs[0][1] * kv_heads if last else 0, next_count=2 if last else 0)
                    compute += count * cyc
                # DIV + OUT tail; the next group's first blocks are already prefetched
                sim.a.cends.append(sim.a.last_end + tail)
                compute += tail
        sim.t = max(sim.t, sim.a.last_end)
        flops = 2.0 * lane_ops * batch * H
        sim.acc.add("attention", sim.t - start_t, sim.bus.bytes_moved - start_bytes, flops, compute)

    # ---- one transformer layer ---------------------------------------------------------------------------------
    def _engine_attention(self, tokens: int) -> bool:
        """Whether this phase's attention runs on the attention engines (decode over int KV)."""
        return self.int_kv and self._decoding

    def _layer_plans(self, l: int, tokens: int) -> list[LinearPlan]:
        fac = self.layer_factor[l]
        out = []
        for lin in self.model.block_linears:
            cls = "ffn" if lin.name in ("gate_proj", "up_proj", "down_proj", "fc1", "fc2") else "attn_linear"
            out.append(self.plan_linear(lin, tokens, cls, fac))
        return out

    def _run_layer(self, sim: _Sim, l: int, tokens: int, nxt_first: LinearPlan, attention) -> None:
        m = self.model
        plans = self._layer_plans(l, tokens)
        h = m.hidden_size
        self._vector(sim, tokens * NORM_OPS_PER_ELEM * h)
        ready = sim.t
        attn_in = [p for p in plans if p.cls == "attn_linear" and p.name not in ("o_proj", "out_proj")]
        for i, p in enumerate(attn_in):
            # after v: prefetch o_proj during attention, unless attention itself streams through this engine
            nxt = attn_in[i + 1] if i + 1 < len(attn_in) else (plans[3] if self._engine_attention(tokens) else None)
            self._linear(sim, p, ready, nxt, drain=i == len(attn_in) - 1)
        self._vector(sim, tokens * ROPE_OPS_PER_HIDDEN * h)
        if self._decoding:  # KV append: the new token's K and V, fp16, into the dense recent window
            kvw = tokens * 2 * m.kv_dim * FP16_BYTES  # (prefill writes the layer's whole cache in its attention)
            sim.bus.write(sim.t, kvw)
            sim.acc.add("kv_append", 0, kvw)
        attention(sim, l)
        o = plans[3]
        ffn = plans[4:]
        self._linear(sim, o, sim.t, ffn[0], drain=True)
        self._vector(sim, tokens * (RESIDUAL_OPS_PER_ELEM + NORM_OPS_PER_ELEM) * h)
        ready = sim.t
        if m.ffn_type == "swiglu":
            gate, up, down = ffn
            self._linear(sim, gate, ready, up, drain=False)
            self._linear(sim, up, ready, down, drain=True)
        else:
            up, down = ffn
            self._linear(sim, up, ready, down, drain=True)
        self._vector(sim, tokens * ELEMENTWISE_OPS_PER_FFN * m.ffn_hidden_size)
        self._linear(sim, down, sim.t, nxt_first, drain=True)
        self._vector(sim, tokens * RESIDUAL_OPS_PER_ELEM * h)

    def _run_layers(self, sim: _Sim, tokens: int, attention, head_plan: LinearPlan) -> None:
        L = self.model.num_layers
        uniform = len(set(self.layer_factor)) == 1 and len(set(self.layer_kv_sparsity)) == 1
        prev_state = None
        l = 0
        while l < L:
            nxt = self._layer_plans(l + 1, tokens)[0] if l + 1 < L else head_plan
            before = (sim.acc.snapshot(), sim.bus.bytes_moved, sim.bus.busy_cycles)
            self._run_layer(sim, l, tokens, nxt, attention)
            l += 1
            state = sim.state()
            if self.jump and uniform and prev_state is not None and l < L - 1 and len(state) == len(prev_state):
                d = state[0] - prev_state[0]
                if all(a - b == d for a, b in zip(state, prev_state)):
                    k = L - 1 - l  # jump all but the last layer (it prefetches the LM head, not a next layer)
                    sim.acc.add_scaled_delta(before[0], k)
                    sim.bus.bytes_moved += k * (sim.bus.bytes_moved - before[1])
                    sim.bus.busy_cycles += k * (sim.bus.busy_cycles - before[2])
                    sim.shift(k * d)
                    l += k
            prev_state = state

    def _lm_head(self, sim: _Sim, tokens: int, plan: LinearPlan) -> None:
        self._vector(sim, tokens * NORM_OPS_PER_ELEM * self.model.hidden_size)
        self._linear(sim, plan, sim.t, None, drain=True)

    def _result(self, sim: _Sim) -> StepResult:
        a = sim.acc
        return StepResult(cycles=sim.t, class_cycles=dict(a.cycles), class_bytes=dict(a.nbytes),
                          class_flops=dict(a.flops), class_compute=dict(a.compute),
                          bytes_moved=sim.bus.bytes_moved, bus_busy_cycles=sim.bus.busy_cycles)

    # ---- public ------------------------------------------------------------------------------------------------
    def decode_step(self, context: int, batch: int = 1) -> StepResult:
        """One decode step of `batch` sequences whose new token is token number `context` (cache included)."""
        key = (tuple(self._signature(context, sp) for sp in sorted(set(self.layer_kv_sparsity))), batch)
        got = self._step_cache.get(key)
        if got is not None:
            return got
        sim = _Sim(self.mem, self.jump)
        self._decoding = True
        head = self.plan_linear(self.model.lm_head, batch, "lm_head", head=True)
        if self.int_kv:
            att = lambda sim_, l: self._attention(sim_, context, batch, self.layer_kv_sparsity[l])  # noqa: E731
        else:
            att = lambda sim_, l: self._attention_linear(sim_, context, batch, decode=True,  # noqa: E731
                                                         sparsity=self.layer_kv_sparsity[l])
        self._run_layers(sim, batch, att, head)
        self._lm_head(sim, batch, head)
        res = self._result(sim)
        self._step_cache[key] = res
        return res

    def _signature(self, context: int, sparsity: float) -> tuple:
        if not self.int_kv:
            return (self.s.kv_attended_tokens(self.model, context),)
        return self._kv_blocks(context, sparsity)

    def _attention_linear(self, sim: _Sim, context: int, batch: int, decode: bool, prompt: int = 0,
                          sparsity: float | None = None) -> None:
        """Attention on the linear engine (fp16 KV, or prefill): q·K and p·V as GEMMs over the attended tokens,
        K/V streamed from HBM (decode) or written once (prefill), softmax on the vector unit."""
        m, s = self.model, self.s
        if sparsity is not None and sparsity != s.kv_sparsity:
            s = s.replace(kv_sparsity=sparsity)  # measured per-layer sparsity: bytes from the scheme's formats
        start_t, start_bytes = sim.t, sim.bus.bytes_moved
        if decode:
            pairs = batch * s.kv_attended_tokens(m, context)
            kv_bytes = batch * s.kv_bytes_for_tokens(m, s.kv_attended_tokens(m, context)) / m.num_layers
        else:
            pairs = batch * sum(s.kv_attended_tokens(m, t) for t in range(1, prompt + 1))
            kv_bytes = batch * s.kv_bytes_for_tokens(m, s.kv_stored_tokens(m, prompt)) / m.num_layers
        macs = 2 * m.num_heads * m.head_dim * pairs
        mpc = macs_per_cycle(self.hw, s.kv_bits, s.act_bits)
        cyc = max(1, math.ceil(macs / mpc))
        # K/V move in weight-buffer-sized tiles through the engine's stream (read in decode, write-back in prefill)
        tile = self.hw.fpga.weight_buffer_bytes
        n = max(1, math.ceil(kv_bytes / tile))
        per = math.ceil(kv_bytes / n)
        sim.w.run(n, per, math.ceil(cyc / n), sim.t)
        sim.t = max(sim.t, sim.w.last_end + self.hw.fpga.linear_pipeline_cycles)
        soft = SOFTMAX_OPS_PER_SCORE * m.num_heads * pairs
        vc = math.ceil(soft / self.vec_per_cycle)
        sim.t += vc
        sim.acc.add("attention", sim.t - start_t - vc, sim.bus.bytes_moved - start_bytes, 2.0 * macs, cyc)
        sim.acc.add("softmax", vc, 0.0, soft, vc)

    def prefill(self, prompt: int, batch: int = 1) -> StepResult:
        """Prefill of `batch` prompts of `prompt` tokens, ending with the LM head of each sequence's last token."""
        sim = _Sim(self.mem, self.jump)
        self._decoding = False
        n = batch * prompt
        head = self.plan_linear(self.model.lm_head, batch, "lm_head", head=True)
        att = lambda sim_, l: self._attention_linear(sim_, prompt, batch, decode=False, prompt=prompt,  # noqa
                                                     sparsity=self.layer_kv_sparsity[l])
        self._run_layers(sim, n, att, head)
        self._lm_head(sim, batch, head)
        return self._result(sim)
