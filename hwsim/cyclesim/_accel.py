"""The accelerator's schedule: linear engine, attention engines, vector unit and HBM, per layer and per token.

The pieces live beside it: linear tiling (_linear.py), KV layout (_kvlayout.py), HBM (_memory.py), double-buffered
streams (_pipeline.py), the RTL attention engine (attention_engine.py). The operators come from THE operator list
(hwsim/ops.py); byte costs from the scheme.

Hardware (all figures from the HardwareSpec; nothing here is a hardware constant):

* Linear engine: the decode (GEMV) or prefill (GEMM) engine's derived MACs per cycle at ``compute.matrix_efficiency``
  (see _linear.py); weight sparsity the engines skip runs at density / sparse_efficiency.
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
* HBM: `MemoryModel` / `MemoryBus` (the channels the dies are wired to, bursts, latency, efficiency).
* Control: ``fpga.sync_cycles`` at every dependent-operator boundary, the dies' exchange of each linear operator's
  output over ``fpga.die_link_bytes_per_cycle``, and ``fpga.host_s_per_token`` of host control per decode step.

Schedule of one decode step (per layer, batch B): RMSNorm → q, k, v GEMV → RoPE + KV append (write of the new
token's K/V, fp16, into the dense recent window) → attention engines over the Λ-selected blocks → o GEMV → residual
+ RMSNorm → gate, up GEMV → SiLU·up → down GEMV → residual; after the last layer: final norm → LM head GEMV.

KV blocks: see _kvlayout.py.
Not modelled: the periodic re-compression of a full 64-token chunk of the recent window (once per 64 steps),
sampling, host interaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from base.errors import SpecError
from engine.params import TILE
from hwsim.cyclesim._kvlayout import KVLayout
from hwsim.cyclesim._linear import LinearPlan, macs_per_cycle, plan_linear
from hwsim.cyclesim._memory import MemoryBus, MemoryModel
from hwsim.cyclesim._pipeline import TileStream
from hwsim.cyclesim.attention_engine import BlockWork, EngineModel
from hwsim.hardware import HardwareSpec
from hwsim.ops import ELEMENTWISE_OPS_PER_FFN, ELEMENTWISE_OPS_PER_HIDDEN, SOFTMAX_OPS_PER_SCORE, head_op, linear_ops
from models.spec import ModelSpec
from quant.scheme import CompressionScheme

__all__ = ["Accelerator", "StepResult", "LinearPlan", "macs_per_cycle"]

NORM_OPS_PER_ELEM = 4  # RMSNorm/LayerNorm: square, accumulate, scale, multiply by gamma
RESIDUAL_OPS_PER_ELEM = 1
ROPE_OPS_PER_HIDDEN = ELEMENTWISE_OPS_PER_HIDDEN - 2 * NORM_OPS_PER_ELEM - 2 * RESIDUAL_OPS_PER_ELEM  # the rest


@dataclass(frozen=True)
class StepResult:
    """Cycles of one decode step (or a prefill) and where they went, per operator class and per (class, mechanism)."""

    cycles: int
    class_cycles: dict[str, int]
    class_bytes: dict[str, float]
    class_flops: dict[str, float]
    class_compute: dict[str, int]  # engine busy cycles per class (for the bound label)
    bytes_moved: int
    bus_busy_cycles: int
    mechanism_cycles: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class _Acc:
    cycles: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, float] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)
    mech: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, cls: str, cycles: int, nbytes: float = 0.0, flops: float = 0.0, compute: int = 0) -> None:
        self.cycles[cls] = self.cycles.get(cls, 0) + cycles
        self.nbytes[cls] = self.nbytes.get(cls, 0.0) + nbytes
        self.flops[cls] = self.flops.get(cls, 0.0) + flops
        self.compute[cls] = self.compute.get(cls, 0) + compute

    def mechanism(self, cls: str, mech: str, cycles: int) -> None:
        if cycles:
            self.mech[(cls, mech)] = self.mech.get((cls, mech), 0) + cycles

    def snapshot(self) -> tuple[dict, ...]:
        return dict(self.cycles), dict(self.nbytes), dict(self.flops), dict(self.compute), dict(self.mech)

    def add_scaled_delta(self, before: tuple, k: int) -> None:
        for store, old in zip((self.cycles, self.nbytes, self.flops, self.compute, self.mech), before):
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
        return (
            self.t,
            self.bus.busy_until,
            *self.w.cends,
            *self.w.pending,
            *(max(c, self.t) for c in self.a.cends),
            *self.a.pending,
        )

    def start_attention(self) -> None:
        """The sequencer starts fetching a layer's KV blocks when the layer's attention starts (no prefetch of KV
        across the attention phase boundary)."""
        self.a.cends = type(self.a.cends)((max(c, self.t) for c in self.a.cends), maxlen=self.a.buffers)

    def shift(self, d: int) -> None:
        self.t += d
        self.bus.busy_until += d
        for st in (self.w, self.a):
            st.cends = type(st.cends)((c + d for c in st.cends), maxlen=st.buffers)
            st.pending = type(st.pending)(p + d for p in st.pending)


class Accelerator:
    """`model` compressed by `scheme` on the FPGA design `hw`; `profile` (optional) gives measured per-layer
    weight bytes / KV sparsity. `jump=False` disables every jump over periodic regions (for tests)."""

    def __init__(
        self, model: ModelSpec, hw: HardwareSpec, scheme: CompressionScheme, profile=None, jump: bool = True
    ) -> None:
        f = hw.fpga
        if hw.kind != "fpga" or f is None:
            raise SpecError(
                f"the cycle-level simulator models FPGA accelerators; {hw.name!r} is a {hw.kind}. "
                "Use --fidelity analytical for it"
            )
        needed = ("weight_buffer_bytes", "activation_buffer_bytes")
        missing = [k for k in needed if not getattr(f, k)]
        if f.decode_engine is None and not (f.engine_dsps and f.macs_per_dsp):
            missing.insert(0, "engine_dsps")
        if missing:
            raise SpecError(
                f"hardware {hw.name!r}: the cycle-level simulator needs fpga.{missing[0]}"
                " (and a linear engine -- engine_dsps + macs_per_dsp, or decode_engine + prefill_engine --,"
                " weight_buffer_bytes, activation_buffer_bytes); add it to the hardware YAML"
            )
        self.model, self.hw, self.s, self.profile, self.jump = model, hw, scheme, profile, jump
        self.mem = MemoryModel.from_hardware(hw)
        # on-chip buffers: 2 weight tiles, the activation buffer, 2 KV blocks (int4, K + V) per attention engine
        kv_block = 2 * TILE * model.head_dim * max(scheme.kv_bits, 4) // 8
        self.on_chip_bytes = (
            2 * f.weight_buffer_bytes
            + f.activation_buffer_bytes
            + (2 * f.attention_engines * kv_block if f.attention_lanes else 0)
        )
        if self.on_chip_bytes > hw.on_chip_bytes:
            raise SpecError(
                f"hardware {hw.name!r}: the buffers need {self.on_chip_bytes:,} B on chip (2 x "
                f"weight_buffer_bytes + activation_buffer_bytes + 2 KV blocks per attention engine) but "
                f"on_chip_bytes is {hw.on_chip_bytes:,}; shrink the buffers"
            )
        self.vec_per_cycle = hw.compute.vector_ops_per_s / hw.freq_hz
        self.D = model.head_dim
        # the RTL attention engines take int KV; fp16 KV, or a design without them, runs attention on the linear engine
        self.int_kv = scheme.kv_bits <= 8 and f.attention_lanes > 0
        if self.int_kv:
            self.engine = EngineModel(model.head_dim, f.attention_lanes)
        self.E = f.attention_engines
        self.kv = KVLayout(model, scheme)
        L = model.num_layers
        if profile is not None and profile.kv_sparsity_per_layer is not None:
            self.layer_kv_sparsity = tuple(profile.kv_sparsity_per_layer)
        else:
            self.layer_kv_sparsity = (scheme.kv_sparsity,) * L
        self.sync = f.sync_cycles
        self.host_cycles = math.ceil(f.host_s_per_token * hw.freq_hz - 1e-9)
        self._layer_plans: dict[tuple[str, int], tuple[tuple[LinearPlan, ...], ...]] = {}
        self._head: dict[tuple[str, int], LinearPlan] = {}
        self._cyc_cache: dict[tuple, int] = {}
        self._step_cache: dict[tuple, StepResult] = {}

    # ---- linear operators (from THE operator list) ---------------------------------------------------------------
    def layer_plans(self, phase: str, tokens: int) -> tuple[tuple[LinearPlan, ...], ...]:
        """Per layer, the plans of its linear operators in block order (from `hwsim.ops.linear_ops`)."""
        key = (phase, tokens)
        got = self._layer_plans.get(key)
        if got is None:
            per_layer: list[tuple[LinearPlan, ...] | None] = [None] * self.model.num_layers
            ops = linear_ops(self.model, self.hw, self.s, tokens, phase, self.profile, 1)
            names = [lin.name for lin in self.model.block_linears]
            by_layers: dict[tuple[int, ...], dict[str, LinearPlan]] = {}
            for op in ops:
                layers = op.layers or tuple(range(self.model.num_layers))
                by_layers.setdefault(layers, {})[op.name] = plan_linear(op, self.hw)
            for layers, plans in by_layers.items():
                row = tuple(plans[n] for n in names)
                for layer in layers:
                    per_layer[layer] = row
            got = self._layer_plans[key] = tuple(per_layer)  # type: ignore[arg-type]
        return got

    def head_plan(self, phase: str, tokens: int) -> LinearPlan:
        key = (phase, tokens)
        got = self._head.get(key)
        if got is None:
            got = self._head[key] = plan_linear(
                head_op(self.model, self.hw, self.s, tokens, phase, self.profile, 1), self.hw
            )
        return got

    def _linear(
        self, sim: _Sim, plan: LinearPlan, ready: int, nxt: LinearPlan | None, drain: bool, tokens: int
    ) -> None:
        start_bytes = sim.bus.bytes_moved
        start_busy = sim.bus.busy_cycles
        for i, (count, nbytes, cyc) in enumerate(plan.runs):
            last = i == len(plan.runs) - 1
            sim.w.run(
                count,
                nbytes,
                cyc,
                ready,
                next_bytes=nxt.first_tile_bytes if (last and nxt) else 0,
                next_count=2 if (last and nxt) else 0,
            )
        end = sim.w.last_end + (self.hw.fpga.linear_pipeline_cycles if drain else 0)
        prev = sim.t
        sim.t = max(sim.t, end)
        span = sim.t - prev
        busy = sim.bus.busy_cycles - start_busy
        sim.acc.mechanism(plan.cls, "memory" if busy >= plan.compute_cycles else "compute", span)
        extra = self._control(sim, plan.cls, plan, tokens, sync=drain)
        sim.acc.add(plan.cls, span + extra, sim.bus.bytes_moved - start_bytes, 2.0 * plan.macs, plan.compute_cycles)

    def _control(self, sim: _Sim, cls: str, plan: LinearPlan | None, tokens: int, sync: bool = True) -> int:
        """Non-overlapped control after an operator: the barrier before a dependent one (`sync`), and the dies'
        exchange of its output."""
        f = self.hw.fpga
        extra = 0
        if sync and self.sync:
            sim.acc.mechanism(cls, "sync", self.sync)
            extra += self.sync
        if plan is not None and f.die_link_bytes_per_cycle and f.n_dies > 1:
            out = tokens * self._out_features(plan) * (1 if self.s.act_bits <= 8 else 2)
            link = math.ceil(out * (f.n_dies - 1) / f.n_dies / f.die_link_bytes_per_cycle)
            sim.acc.mechanism(cls, "die_link", link)
            extra += link
        sim.t += extra
        return extra

    def _out_features(self, plan: LinearPlan) -> int:
        if plan.name == "lm_head":
            return self.model.vocab_size
        return next(lin.out_features for lin in self.model.block_linears if lin.name == plan.name)

    def _vector(self, sim: _Sim, ops: float, cls: str = "elementwise") -> None:
        c = math.ceil(ops / self.vec_per_cycle)
        sim.t += c
        sim.acc.add(cls, c, 0.0, ops, c)
        sim.acc.mechanism(cls, "compute", c)

    # ---- attention (decode, on the RTL engines) -----------------------------------------------------------------
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
        start_t, start_bytes, start_busy = sim.t, sim.bus.bytes_moved, sim.bus.busy_cycles
        ready = sim.t
        H, E = m.num_heads, self.E
        groups = -(-H // E)
        blocks = self.kv.blocks(context, sparsity)
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
                    sim.a.run(
                        count,
                        nbytes * kv_heads,
                        cyc,
                        ready,
                        next_bytes=runs[0][1] * kv_heads if last else 0,
                        next_count=2 if last else 0,
                    )
                    compute += count * cyc
                # DIV + OUT tail; the next group's first blocks are already prefetched
                sim.a.cends.append(sim.a.last_end + tail)
                compute += tail
        sim.t = max(sim.t, sim.a.last_end)
        span = sim.t - start_t
        busy = sim.bus.busy_cycles - start_busy
        sim.acc.mechanism("attention", "compute" if compute >= busy else "memory", span)
        sim.acc.add("attention", span, sim.bus.bytes_moved - start_bytes, 2.0 * lane_ops * batch * H, compute)

    def _attention_linear(
        self, sim: _Sim, phase: str, context: int, batch: int, prompt: int = 0, sparsity: float | None = None
    ) -> None:
        """Attention on the linear engine (fp16 KV, or prefill): q·K and p·V as GEMMs over the attended tokens,
        K/V streamed from HBM (decode) or written once (prefill), softmax on the vector unit."""
        m, s = self.model, self.s
        if sparsity is not None and sparsity != s.kv_sparsity:
            s = s.replace(kv_sparsity=sparsity)  # measured per-layer sparsity: bytes from the scheme's formats
        start_t, start_bytes = sim.t, sim.bus.bytes_moved
        if phase == "decode":
            pairs = batch * s.kv_attended_tokens(m, context)
            kv_bytes = batch * s.kv_bytes_for_tokens(m, s.kv_attended_tokens(m, context)) / m.num_layers
        else:
            pairs = batch * sum(s.kv_attended_tokens(m, t) for t in range(1, prompt + 1))
            kv_bytes = batch * s.kv_bytes_for_tokens(m, s.kv_stored_tokens(m, prompt)) / m.num_layers
        macs = 2 * m.num_heads * m.head_dim * pairs
        at = s.for_op("attention")
        mpc = macs_per_cycle(self.hw, s.kv_bits, at.act_bits, phase) * self.hw.compute.matrix_efficiency
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
        span = sim.t - start_t - vc
        sim.acc.add("attention", span, sim.bus.bytes_moved - start_bytes, 2.0 * macs, cyc)
        sim.acc.mechanism("attention", "compute" if cyc >= span else "memory", span)
        sim.acc.add("softmax", vc, 0.0, soft, vc)
        sim.acc.mechanism("softmax", "compute", vc)

    # ---- one transformer layer ---------------------------------------------------------------------------------
    def _run_layer(
        self, sim: _Sim, phase: str, plans: tuple[LinearPlan, ...], tokens: int, nxt_first: LinearPlan, attention
    ) -> None:
        m = self.model
        h = m.hidden_size
        engine_attention = phase == "decode" and self.int_kv
        self._vector(sim, tokens * NORM_OPS_PER_ELEM * h)
        ready = sim.t
        attn_in = [p for p in plans if p.cls == "attn_linear" and p.name not in ("o_proj", "out_proj")]
        for i, p in enumerate(attn_in):
            # after v: prefetch o_proj during attention, unless attention itself streams through this engine
            nxt = attn_in[i + 1] if i + 1 < len(attn_in) else (plans[3] if engine_attention else None)
            self._linear(sim, p, ready, nxt, drain=i == len(attn_in) - 1, tokens=tokens)
        self._vector(sim, tokens * ROPE_OPS_PER_HIDDEN * h)
        if phase == "decode":  # KV append: the new token's K and V, fp16, into the dense recent window
            kvw = self.s.kv_append_bytes(m, tokens)  # (prefill writes the layer's whole cache in its attention)
            sim.bus.write(sim.t, kvw)
            sim.acc.add("kv_append", 0, kvw)
        attention(sim)
        o = plans[3]
        ffn = plans[4:]
        self._linear(sim, o, sim.t, ffn[0], drain=True, tokens=tokens)
        self._vector(sim, tokens * (RESIDUAL_OPS_PER_ELEM + NORM_OPS_PER_ELEM) * h)
        ready = sim.t
        if m.ffn_type == "swiglu":
            gate, up, down = ffn
            self._linear(sim, gate, ready, up, drain=False, tokens=tokens)
            self._linear(sim, up, ready, down, drain=True, tokens=tokens)
        else:
            up, down = ffn
            self._linear(sim, up, ready, down, drain=True, tokens=tokens)
        self._vector(sim, tokens * ELEMENTWISE_OPS_PER_FFN * m.ffn_hidden_size)
        self._linear(sim, down, sim.t, nxt_first, drain=True, tokens=tokens)
        self._vector(sim, tokens * RESIDUAL_OPS_PER_ELEM * h)

    def _run_layers(self, sim: _Sim, phase: str, tokens: int, attention, head_plan: LinearPlan) -> None:
        L = self.model.num_layers
        plans = self.layer_plans(phase, tokens)
        uniform = len(set(map(id, plans))) == 1 and len(set(self.layer_kv_sparsity)) == 1
        prev_state = None
        l = 0
        while l < L:
            nxt = plans[l + 1][0] if l + 1 < L else head_plan
            before = (sim.acc.snapshot(), sim.bus.bytes_moved, sim.bus.busy_cycles)
            self._run_layer(sim, phase, plans[l], tokens, nxt, lambda sim_, l_=l: attention(sim_, l_))
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
        self._linear(sim, plan, sim.t, None, drain=True, tokens=tokens)

    @staticmethod
    def _result(sim: _Sim) -> StepResult:
        a = sim.acc
        return StepResult(
            cycles=sim.t,
            class_cycles=dict(a.cycles),
            class_bytes=dict(a.nbytes),
            class_flops=dict(a.flops),
            class_compute=dict(a.compute),
            bytes_moved=sim.bus.bytes_moved,
            bus_busy_cycles=sim.bus.busy_cycles,
            mechanism_cycles=dict(a.mech),
        )

    # ---- public ------------------------------------------------------------------------------------------------
    def decode_step(self, context: int, batch: int = 1) -> StepResult:
        """One decode step of `batch` sequences whose new token is token number `context` (cache included)."""
        key = (tuple(self._signature(context, sp) for sp in sorted(set(self.layer_kv_sparsity))), batch)
        got = self._step_cache.get(key)
        if got is not None:
            return got
        sim = _Sim(self.mem, self.jump)
        head = self.head_plan("decode", batch)
        if self.int_kv:
            att = lambda sim_, l: self._attention(sim_, context, batch, self.layer_kv_sparsity[l])  # noqa: E731
        else:
            att = lambda sim_, l: self._attention_linear(
                sim_,
                "decode",
                context,
                batch,  # noqa: E731
                sparsity=self.layer_kv_sparsity[l],
            )
        self._run_layers(sim, "decode", batch, att, head)
        self._lm_head(sim, batch, head)
        if self.host_cycles:
            sim.t += self.host_cycles
            sim.acc.add("host", self.host_cycles)
            sim.acc.mechanism("host", "host", self.host_cycles)
        res = self._result(sim)
        self._step_cache[key] = res
        return res

    def _signature(self, context: int, sparsity: float) -> tuple:
        if not self.int_kv:
            return (self.s.kv_attended_tokens(self.model, context),)
        return self.kv.blocks(context, sparsity)

    def prefill(self, prompt: int, batch: int = 1) -> StepResult:
        """Prefill of `batch` prompts of `prompt` tokens, ending with the LM head of each sequence's last token."""
        sim = _Sim(self.mem, self.jump)
        n = batch * prompt
        head = self.head_plan("prefill", batch)
        att = lambda sim_, l: self._attention_linear(
            sim_,
            "prefill",
            prompt,
            batch,
            prompt=prompt,  # noqa: E731
            sparsity=self.layer_kv_sparsity[l],
        )
        self._run_layers(sim, "prefill", n, att, head)
        self._lm_head(sim, batch, head)
        return self._result(sim)
