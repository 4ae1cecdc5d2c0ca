"""The evidence a controller reports to the manager: its live per session x volume counters
(:class:`~difs.controller.enforcement.IoStats`) as deltas over a window (pure).

:func:`build_report` compares every ``IoStats`` with the :class:`Baseline` of the last
report the manager *accepted* and returns the :class:`~difs.policy.evidence.
ControllerEvidenceReport` of the window since then, with the baseline the next window
starts from. The caller (:mod:`difs.controller.manager_link`) adopts that baseline only
when the manager accepted the report, so a refused or lost report is not lost: its counts
are in the next one. Entries whose counters did not move are left out; the counters of a
session that closed stay in ``Enforcement.stats``, so its last counts are reported in the
next window and then, unchanged, left out.

``window_seconds`` is the time since the baseline was taken, capped at a day (what the
contract accepts); at most :data:`MAX_SESSIONS` entries go in one report, the others keep
their baseline and go in the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from difs.policy.evidence import (
    ControllerEvidenceReport,
    LatencyHistogram,
    PiEvidence,
    SessionEvidence,
    SessionServices,
)

if TYPE_CHECKING:
    from difs.controller.enforcement import Counters, IoStats

MAX_SESSIONS = 10_000
_MAX_WINDOW = 86_400.0
_MIN_WINDOW = 0.001


@dataclass(frozen=True)
class Baseline:
    """What was last reported and accepted: when, and each IoStats' counters then."""

    taken_at: float  #: monotonic seconds
    counts: Mapping[tuple, Counters] = field(default_factory=dict)


class EvidenceRound(NamedTuple):
    report: ControllerEvidenceReport
    #: the baseline to adopt once the manager accepted ``report``
    baseline: Baseline
    #: IoStats keys whose evidence does not fit the contract (e.g. a name too long)
    unreportable: list[tuple]


def build_report(stats: Iterable[IoStats], baseline: Baseline, *,
                 applications: Mapping[str, str], now: float) -> EvidenceRound:
    """The evidence of the window from ``baseline`` to ``now`` (``applications``: volume ->
    application, for the volumes served now)."""
    sessions: list[SessionEvidence] = []
    advanced: dict[tuple, Counters] = {}
    unreportable: list[tuple] = []
    for s in stats:
        key = s.key
        counters = s.counters()
        before = baseline.counts.get(key)
        if counters == (before or s.zero()):
            continue
        if len(sessions) >= MAX_SESSIONS:
            break
        try:
            sessions.append(_evidence(s, counters, before, applications.get(s.volume)))
        except ValueError:  # pydantic's ValidationError: a value outside the contract
            unreportable.append(key)
            continue
        advanced[key] = counters
    window = min(max(now - baseline.taken_at, _MIN_WINDOW), _MAX_WINDOW)
    return EvidenceRound(
        ControllerEvidenceReport(window_seconds=window, sessions=sessions),
        Baseline(taken_at=now, counts={**baseline.counts, **advanced}), unreportable)


def _evidence(s: IoStats, now: Counters, before: Counters | None,
              application: str | None) -> SessionEvidence:
    (commands, read_bytes, write_bytes, checked, generated, failed, rejected, digest_errors,
     latency) = now
    if before is None:
        before = (0, 0, 0, 0, 0, (0, 0, 0), (), 0, None)
    (b_commands, b_read, b_write, b_checked, b_generated, b_failed, b_rejected, b_errors,
     b_latency) = before
    old_rejected = dict(b_rejected)
    refused = {reason: count - old_rejected.get(reason, 0) for reason, count in rejected
               if count != old_rejected.get(reason, 0)}
    read = read_bytes - b_read
    write = write_bytes - b_write
    session = s.session
    return SessionEvidence(
        volume=s.volume, application=application, initiator=session.initiator,
        channel=session.channel,
        services=SessionServices(header_digest=session.header_digest,
                                 data_digest=session.data_digest,
                                 authentication=session.authentication,
                                 interface=session.interface),
        commands=commands - b_commands, read_bytes=read, write_bytes=write,
        pi=PiEvidence(checked_blocks=checked - b_checked,
                      generated_blocks=generated - b_generated,
                      guard_failures=failed[0] - b_failed[0],
                      app_failures=failed[1] - b_failed[1],
                      ref_failures=failed[2] - b_failed[2]),
        rejected=refused, digest_bytes=read + write if session.data_digest else 0,
        digest_errors=digest_errors - b_errors, latency=_latency(latency, b_latency))


def _latency(now: tuple[tuple[int, ...], int], before: tuple[tuple[int, ...], int] | None
             ) -> LatencyHistogram | None:
    counts, sum_ns = now
    if before is not None:
        counts = tuple(c - b for c, b in zip(counts, before[0], strict=True))
        sum_ns -= before[1]
    if not any(counts):
        return None
    return LatencyHistogram(counts=list(counts), sum_ms=sum_ns / 1_000_000)
