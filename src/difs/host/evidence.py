"""What the host measured per application x path, and the report it sends the manager.

The disk (:mod:`difs.host.disk`) keeps one :class:`PathTally` per application and channel:
plain integer counters and a :class:`~difs.policy.evidence.LatencyRecorder`, added to on the
per-I/O path (a few attribute increments and one bisect per command). :func:`build_report`
turns them into a :class:`~difs.policy.evidence.HostEvidenceReport`: the deltas since the
last report the manager *accepted*, one entry per application and path that did something
in the window (idle ones are left out), with the services that path's login actually settled
(:func:`session_services`). The caller advances the baseline with :func:`accept` only once the
manager has taken the report, so a lost report is folded into the next one.

:func:`path_pi_types` is the honest answer to "which T10 PI types can this path carry": those
the host generates and verifies, that the logical units it uses through the path report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from difs.policy.evidence import (
    HostEvidenceReport,
    LatencyRecorder,
    PathEvidence,
    PiEvidence,
    SessionServices,
)
from difs.policy.fast import AUTH, DATA_DIGEST, HEADER_DIGEST, MUTUAL_AUTH

__all__ = ["HOST_PI_TYPES", "PathTally", "Pending", "accept", "build_report",
           "path_pi_types", "session_services"]

#: the T10 PI types this host generates and verifies (:mod:`difs.host.app_pi`)
HOST_PI_TYPES = (1, 3)

#: PathTally counters, in the order of :meth:`PathTally.values`
_FIELDS = ("pi_generated", "pi_checked", "pi_guard", "pi_app", "pi_ref", "pi_rejected",
           "digest_bytes", "rejected", "resent", "failed", "qos_waits")


class PathTally:
    """One application's work on one path (channel). Counters only; the disk adds to them.

    ``counts`` is the ``[ios, bytes]`` list of ``AppDisk.per_path`` for the same channel
    (one object, so the per-I/O path looks the tally up once)."""

    __slots__ = ("counts", *_FIELDS, "latency", "reported")

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts
        self.pi_generated = self.pi_checked = 0
        self.pi_guard = self.pi_app = self.pi_ref = self.pi_rejected = 0
        self.digest_bytes = self.rejected = self.resent = self.failed = self.qos_waits = 0
        self.latency = LatencyRecorder()
        #: what the manager last accepted: (values(), latency snapshot, path digest errors)
        self.reported: tuple[tuple[int, ...], Any, int] | None = None

    def values(self) -> tuple[int, ...]:
        return (self.counts[0], self.counts[1], *(getattr(self, f) for f in _FIELDS))

    def pi_failed(self, kind: str) -> None:
        """A PI check of this application's data failed at the host (guard, app or ref)."""
        if kind == "guard":
            self.pi_guard += 1
        elif kind == "ref":
            self.pi_ref += 1
        else:
            self.pi_app += 1


def session_services(negotiated: Any, interface: str | None) -> SessionServices:
    """What a path's login settled (its :class:`~difs.policy.fast.NegotiatedServices`) and
    the local address its socket runs on, in the evidence form."""
    flags = negotiated.flags if negotiated is not None else 0
    return SessionServices(
        header_digest=bool(flags & HEADER_DIGEST), data_digest=bool(flags & DATA_DIGEST),
        authentication="mutual_chap" if flags & MUTUAL_AUTH else "chap" if flags & AUTH
        else "none",
        interface=interface,
        dscp=None if negotiated is None or negotiated.dscp < 0 else negotiated.dscp)


def path_pi_types(lun_pi: Mapping[int, int], luns: Iterable[int],
                  host_types: Iterable[int] = HOST_PI_TYPES) -> list[int]:
    """The PI types a path can carry: those the host generates and verifies that a logical
    unit the host uses through it is formatted with (``lun_pi``: LUN -> the PI type its READ
    CAPACITY(16) reported, 0 for none; a LUN not read is claimed to carry none).

    PI is end to end: the format is the unit's, the same over every path to it; a path that
    does not reach a unit formatted with PI carries none, whatever the host could generate."""
    formatted = {lun_pi.get(lun, 0) for lun in luns}
    return sorted(set(host_types) & formatted)


@dataclass(frozen=True)
class Pending:
    """What :func:`accept` makes the new baseline once the manager took the report."""

    now: float
    baselines: tuple[tuple[PathTally, tuple[int, ...], Any, int], ...]


#: (application, controller, channel, tally, path or None) for every tally the host keeps
Entry = tuple[str, str, int, PathTally, Any]


def build_report(entries: Iterable[Entry], *, now: float, since: float,
                 ) -> tuple[HostEvidenceReport, Pending]:
    """The evidence of the window ``since``..``now``: deltas against each tally's last accepted
    baseline; an application x path with nothing new is left out."""
    paths, baselines = [], []
    for app, controller, channel, tally, path in entries:
        values = tally.values()
        latency = tally.latency.snapshot()
        digest_errors = path.digest_errors if path is not None else 0
        before = tally.reported
        if before is not None:
            delta = tuple(v - b for v, b in zip(values, before[0], strict=True))
            errors = max(digest_errors - before[2], 0)
        else:
            delta, errors = values, digest_errors
        if not any(delta):
            continue
        try:
            paths.append(_entry(app, controller, channel, delta, errors, path,
                                tally.latency.since(before[1] if before is not None else None)))
        except ValidationError:  # e.g. started with --app: its "controller" is a portal
            continue
        baselines.append((tally, values, latency, digest_errors))
    window = min(max(now - since, 0.001), 86_400.0)
    return HostEvidenceReport(window_seconds=window, paths=paths), Pending(now, tuple(baselines))


def _entry(app: str, controller: str, channel: int, delta: tuple[int, ...], digest_errors: int,
           path: Any, latency: Any) -> PathEvidence:
    (ios, nbytes, generated, checked, guard, app_fail, ref, pi_rejected, digest_bytes,
     rejected, resent, failed, qos_waits) = delta
    services = path.services if path is not None and path.services is not None \
        else SessionServices()
    return PathEvidence(
        application=app, controller=controller, channel=channel, services=services,
        ios=ios, bytes=nbytes,
        pi=PiEvidence(generated_blocks=generated, checked_blocks=checked, guard_failures=guard,
                      app_failures=app_fail, ref_failures=ref),
        pi_rejected=pi_rejected, digest_bytes=digest_bytes, digest_errors=digest_errors,
        rejected=rejected, resent=resent, failed=failed, qos_waits=qos_waits,
        latency=latency if latency.total else None)


def accept(pending: Pending) -> float:
    """The manager took the report: its counts become the baseline. Returns the window's end."""
    for tally, values, latency, digest_errors in pending.baselines:
        tally.reported = (values, latency, digest_errors)
    return pending.now
