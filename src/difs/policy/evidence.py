"""Evidence from the data path: what nodes measured, in the form they report it (pure).

Compliance is judged from evidence, never from what a node or a configuration claims.
Both ends of a path measure, per window (the time since their previous report):

- a **controller** reports, per session x volume (:class:`SessionEvidence`), the services
  the session's login actually settled (digests, authentication, TLS, the local address
  it arrived on), the commands and bytes of the volume it carried, the PI it checked,
  generated and found bad, the commands its policy refused by reason, and their latency;
- a **host** reports, per application x path (:class:`PathEvidence`), the services that
  path's login settled, the application's I/Os and bytes on it, the PI it generated and
  verified, digest and PI errors, re-sends, failures and latency.

Counters are deltas over the window (``window_seconds``); a node advances its baseline
only when the manager accepted the report, so a lost report is added to the next one.

:class:`LatencyRecorder` is the one latency histogram both nodes keep on their per-I/O
path: fixed bucket bounds (:data:`LATENCY_BOUNDS_MS`), an increment and an add per I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from difs.policy.services import NAME_PATTERN, AuthMethod

__all__ = [
    "LATENCY_BOUNDS_MS",
    "LatencyHistogram",
    "LatencyRecorder",
    "SessionServices",
    "PiEvidence",
    "SessionEvidence",
    "ControllerEvidenceReport",
    "PathEvidence",
    "HostEvidenceReport",
]

#: upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
)
_BOUNDS_NS = tuple(int(b * 1_000_000) for b in LATENCY_BOUNDS_MS)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Count = Annotated[int, Field(ge=0, le=1 << 62)]
Iqn = Annotated[str, Field(min_length=1, max_length=223)]
Channel = Annotated[int, Field(ge=0, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyRecorder:
    """Latency histogram kept on a per-I/O path: ``record(ns)`` is a bisect and two adds."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS_NS) + 1)
        self.sum_ns = 0

    def record(self, elapsed_ns: int) -> None:
        self.counts[bisect_left(_BOUNDS_NS, elapsed_ns)] += 1
        self.sum_ns += elapsed_ns

    @property
    def total(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> tuple[tuple[int, ...], int]:
        """The counts and the sum (ns) now, for a later :meth:`since`."""
        return tuple(self.counts), self.sum_ns

    def since(self, before: tuple[tuple[int, ...], int] | None) -> LatencyHistogram:
        """The histogram of what was recorded after ``before`` (everything when None)."""
        counts, sum_ns = self.snapshot()
        if before is not None:
            counts = tuple(c - b for c, b in zip(counts, before[0], strict=True))
            sum_ns -= before[1]
        return LatencyHistogram(counts=list(counts), sum_ms=sum_ns / 1_000_000)

    def cumulative_seconds(self) -> tuple[list[tuple[str, int]], float]:
        """Prometheus form: cumulative ``(le, count)`` buckets in seconds, and the sum."""
        out, running = [], 0
        for bound, count in zip((*(f"{b / 1000:g}" for b in LATENCY_BOUNDS_MS), "+Inf"),
                                self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out, self.sum_ns / 1e9


class LatencyHistogram(_Strict):
    """Counts per bucket of :data:`LATENCY_BOUNDS_MS` (one more for the rest) and their sum."""

    counts: list[Count] = Field(min_length=len(LATENCY_BOUNDS_MS) + 1,
                                max_length=len(LATENCY_BOUNDS_MS) + 1)
    sum_ms: Annotated[float, Field(ge=0)] = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def mean_ms(self) -> float | None:
        return self.sum_ms / self.total if self.total else None

    def quantile_ms(self, q: float) -> float | None:
        """Upper bound of the bucket holding the ``q`` quantile (None when empty or beyond)."""
        total = self.total
        if not total:
            return None
        rank, running = q * total, 0
        for i, count in enumerate(self.counts):
            running += count
            if running >= rank:
                return LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else None
        return None


class SessionServices(_Strict):
    """What a login actually settled, read from the session (not from configuration)."""

    header_digest: bool = False
    data_digest: bool = False
    authentication: AuthMethod = AuthMethod.NONE
    tls: bool = False
    #: the local address (controller) or interface (host) the session runs on
    interface: Annotated[str, Field(max_length=300)] | None = None
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    dscp: Annotated[int, Field(ge=0, le=63)] | None = None


class PiEvidence(_Strict):
    checked_blocks: Count = 0  #: blocks whose PI this node verified
    generated_blocks: Count = 0  #: blocks whose PI this node generated (host: for writes)
    guard_failures: Count = 0
    app_failures: Count = 0
    ref_failures: Count = 0

    @property
    def failures(self) -> int:
        return self.guard_failures + self.app_failures + self.ref_failures


class SessionEvidence(_Strict):
    """One controller session (path) x one volume over the window."""

    volume: Name
    application: Name | None = None
    initiator: Iqn
    channel: Channel = Field(description="the host's channel number (ISID & FFFFh)")
    services: SessionServices
    commands: Count = 0
    read_bytes: Count = 0
    write_bytes: Count = 0
    pi: PiEvidence = Field(default_factory=PiEvidence)
    #: commands refused by the volume's policy, by reason (``difs.controller.enforcement``)
    rejected: dict[Annotated[str, Field(max_length=64)], Count] = Field(default_factory=dict,
                                                                         max_length=64)
    #: bytes of this volume's data covered by CRC32C data digests on this session
    digest_bytes: Count = 0
    #: CRC32C digest errors on the session (whole session, not per volume)
    digest_errors: Count = 0
    latency: LatencyHistogram | None = None


class ControllerEvidenceReport(_Strict):
    window_seconds: Annotated[float, Field(gt=0, le=86_400)]
    sessions: list[SessionEvidence] = Field(default_factory=list, max_length=10_000)


class PathEvidence(_Strict):
    """One host application x one path over the window."""

    application: Name
    controller: Name
    channel: Channel
    services: SessionServices
    ios: Count = 0
    bytes: Count = 0
    pi: PiEvidence = Field(default_factory=PiEvidence)
    #: PI check failures the controller reported for this application's commands
    pi_rejected: Count = 0
    #: bytes of this application's data covered by CRC32C data digests on this path
    digest_bytes: Count = 0
    digest_errors: Count = 0
    rejected: Count = Field(0, description="I/Os the controller refused (CHECK CONDITION)")
    resent: Count = 0
    failed: Count = Field(0, description="I/Os failed to the application")
    qos_waits: Count = 0
    latency: LatencyHistogram | None = None


class HostEvidenceReport(_Strict):
    window_seconds: Annotated[float, Field(gt=0, le=86_400)]
    paths: list[PathEvidence] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _unique(self) -> HostEvidenceReport:
        keys = [(p.application, p.controller, p.channel) for p in self.paths]
        if len(keys) != len(set(keys)):
            raise ValueError("one entry per application, controller and channel")
        return self

