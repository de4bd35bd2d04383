"""OffloadResult: what a simulation or the analytical model returns (immutable; the same type for both)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["OffloadResult", "StoreStats", "TraceEvent"]


@dataclass(frozen=True)
class StoreStats:
    name: str
    capacity_bytes: float
    initial_bytes: float
    written_bytes: float
    read_bytes: float
    freed_bytes: float
    resident_bytes: float
    peak_bytes: float

    @property
    def conservation_error_bytes(self) -> float:
        """initial + written - freed - resident: zero when no byte is lost or made up."""
        return self.initial_bytes + self.written_bytes - self.freed_bytes - self.resident_bytes


@dataclass(frozen=True)
class TraceEvent:
    """One route of one layer step: when its first piece could start and when its last piece was available."""

    step: int
    token: int
    layer: int
    stage: str
    route: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class OffloadResult:
    fidelity: str  # "simpy" or "analytical"
    platform: str
    model: str
    policy: str
    batch: int
    prompt_len: int
    gen_len: int
    total_s: float
    prefill_s: float
    busy_s: dict[str, float]  # per channel: busy seconds per member
    members: dict[str, int]
    bytes_moved: dict[str, float]  # per link
    flops: dict[str, float]  # per engine
    stores: dict[str, StoreStats]
    requests_submitted: int
    requests_completed: int
    events: int = 0
    trace: tuple[TraceEvent, ...] = field(default=(), repr=False)

    @property
    def decode_s(self) -> float:
        return self.total_s - self.prefill_s

    @property
    def throughput_tok_s(self) -> float:
        """Generated tokens per second, prefill included (FlexGen's and InstInfer's throughput metric)."""
        return self.batch * self.gen_len / self.total_s

    @property
    def decode_throughput_tok_s(self) -> float:
        return self.batch * (self.gen_len - 1) / self.decode_s if self.gen_len > 1 and self.decode_s > 0 else 0.0

    @property
    def per_token_latency_s(self) -> float:
        """Time between two tokens of one sequence in the decode phase."""
        return self.decode_s / (self.gen_len - 1) if self.gen_len > 1 else self.total_s

    @property
    def utilisation(self) -> dict[str, float]:
        return {k: v / self.total_s for k, v in self.busy_s.items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("trace")
        d.update(
            decode_s=self.decode_s,
            throughput_tok_s=self.throughput_tok_s,
            decode_throughput_tok_s=self.decode_throughput_tok_s,
            per_token_latency_s=self.per_token_latency_s,
            utilisation=self.utilisation,
        )
        return d
