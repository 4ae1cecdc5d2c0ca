"""Compliance: is each application getting what its policy promises? Expected vs observed (pure).

:func:`evaluate` judges each service the policy requires from the **evidence** the data path
reported in the last ``fresh_seconds`` (older windows do not count):

- **controllers**, per session x volume (:class:`~difs.policy.evidence.SessionEvidence`): the
  services the session's login settled, the volume's commands and bytes on it, PI checked,
  generated and found bad, commands refused by reason, latency;
- **the bound host**, per application x path (:class:`~difs.policy.evidence.PathEvidence`): the
  services the path's login settled, the application's I/Os and bytes on it, PI generated and
  verified, errors, refusals, latency.

Per service:

- **integrity** — digests: every path that carried the application's I/O (host side) and every
  session that carried its volumes' commands (controller side) settled the required digests.
  PI: the controller checked PI on the volumes' I/O (``checked_blocks > 0``), generated none
  (blocks written without PI from the host), and the host found no bad PI on data the controller
  had passed (unexplained). Digest and PI errors *caught* (refused, re-sent) are reported in
  ``observed`` and do not break compliance: catching them is the service.
- **security** — the sessions and paths that carried the I/O authenticated at least as required
  and ran TLS when required. Encryption at the host is not in the evidence: ``unknown``.
- **isolation** — exclusive: the volumes' access lists name only the application's initiator,
  and no other initiator's session carried commands to them; VLAN: the sessions and paths ran on
  it. An isolation tag is not in the evidence: ``unknown``.
- **qos** — IOPS, bytes per second and the p99 latency observed, against the limits and the
  latency target; a reservation is judged only when I/O waited at the host for QoS (hosts
  report no per-path waits yet, so reservations are not judged from evidence today).
- **enforcement** — commands of the application's initiator the controller refused, by reason.
- **availability** — the volumes' controllers and the bound host hold their leases, and the host
  does not report the binding ``failed``.

A service is ``compliant`` only when the evidence shows it applied: for integrity, security and
isolation both the host and a controller reported I/O of the application; with no I/O in the
window it is ``unknown`` ("no I/O observed in the last N s", with the paths the host has
established). A controller or host that no longer advertises a required capability makes the
service ``non_compliant`` whatever the evidence. The application is non-compliant if any service
is, compliant if all are, unknown otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from difs.manager.schemas import EvidenceSummary
from difs.policy import NegotiatedServicesModel, NodeView, PolicyServices, Route, unmet
from difs.policy.capabilities import ContainerAdvert
from difs.policy.evidence import (
    LATENCY_BOUNDS_MS,
    LatencyHistogram,
    PathEvidence,
    SessionEvidence,
    SessionServices,
)
from difs.policy.services import AuthMethod

COMPLIANT, NON_COMPLIANT, UNKNOWN = "compliant", "non_compliant", "unknown"

_AUTH_RANK = {AuthMethod.NONE: 0, AuthMethod.CHAP: 1, AuthMethod.MUTUAL_CHAP: 2}


@dataclass(frozen=True)
class Site:
    """Where one of the application's volumes lives."""

    volume: str
    controller: NodeView
    container: ContainerAdvert | None
    allowed_initiators: tuple[str, ...] = ()


@dataclass(frozen=True)
class EstablishedPath:
    """A path the bound host advertises (what is established; never evidence that I/O used it)."""

    controller: str
    channel: int
    negotiated: NegotiatedServicesModel
    switches: tuple[NodeView, ...] = ()


@dataclass(frozen=True)
class SessionObservation:
    """A controller's window for one session x one of the application's volumes."""

    controller: str
    evidence: SessionEvidence
    window_seconds: float
    age_seconds: float  #: from the end of the window to the evaluation


@dataclass(frozen=True)
class PathObservation:
    """The bound host's window for the application on one path."""

    host: str
    evidence: PathEvidence
    window_seconds: float
    age_seconds: float


class ServiceResult(BaseModel):
    service: str
    expected: str
    observed: str
    state: str


class ComplianceReport(BaseModel):
    state: str
    services: list[ServiceResult]
    evidence: list[EvidenceSummary] = []


def _combine(states: Sequence[str]) -> str:
    if NON_COMPLIANT in states:
        return NON_COMPLIANT
    if not states or all(s == COMPLIANT for s in states):
        return COMPLIANT
    return UNKNOWN


# --- evidence helpers --------------------------------------------------------------------------


def service_words(s: SessionServices) -> list[str]:
    """What a login settled, in words (an empty list: a plain session)."""
    out = []
    if s.header_digest:
        out.append("header digest")
    if s.data_digest:
        out.append("data digest")
    if s.authentication != AuthMethod.NONE:
        out.append(s.authentication.value.replace("_", " "))
    if s.tls:
        out.append("TLS")
    if s.vlan is not None:
        out.append(f"VLAN {s.vlan}")
    if s.dscp is not None:
        out.append(f"DSCP {s.dscp}")
    return out


def merge_histograms(hists: Iterable[LatencyHistogram | None]) -> LatencyHistogram | None:
    present = [h for h in hists if h is not None and h.total]
    if not present:
        return None
    counts = [sum(col) for col in zip(*(h.counts for h in present), strict=True)]
    return LatencyHistogram(counts=counts, sum_ms=sum(h.sum_ms for h in present))


def _session_label(o: SessionObservation) -> str:
    e = o.evidence
    return f"{o.controller} session of {e.initiator} channel {e.channel} (volume {e.volume})"


def _path_label(o: PathObservation) -> str:
    return f"{o.host} path to {o.evidence.controller} channel {o.evidence.channel}"


def _refused(e: SessionEvidence) -> int:
    return sum(e.rejected.values())


def _session_active(o: SessionObservation) -> bool:
    return o.evidence.commands > 0 or _refused(o.evidence) > 0


def _path_active(o: PathObservation) -> bool:
    e = o.evidence
    return e.ios > 0 or e.rejected > 0 or e.failed > 0


def summarize(sessions: Sequence[SessionObservation], paths: Sequence[PathObservation]) -> list[EvidenceSummary]:
    """One line per evidence entry: services, I/Os, bytes, refusals, p50/p99, window and age."""
    out = []
    for s in sessions:
        e = s.evidence
        out.append(EvidenceSummary(
            side="controller", node=s.controller, controller=s.controller, channel=e.channel, volume=e.volume,
            initiator=e.initiator, services=service_words(e.services), ios=e.commands,
            bytes=e.read_bytes + e.write_bytes, refused=_refused(e),
            p50_ms=e.latency.quantile_ms(0.5) if e.latency else None,
            p99_ms=e.latency.quantile_ms(0.99) if e.latency else None,
            window_seconds=s.window_seconds, age_seconds=round(s.age_seconds, 3)))
    for p in paths:
        e = p.evidence
        out.append(EvidenceSummary(
            side="host", node=p.host, controller=e.controller, channel=e.channel,
            services=service_words(e.services), ios=e.ios, bytes=e.bytes, refused=e.rejected,
            p50_ms=e.latency.quantile_ms(0.5) if e.latency else None,
            p99_ms=e.latency.quantile_ms(0.99) if e.latency else None,
            window_seconds=p.window_seconds, age_seconds=round(p.age_seconds, 3)))
    return out


@dataclass(frozen=True)
class _Evidence:
    """The fresh evidence of one application, split the way the rules read it."""

    sessions: tuple[SessionObservation, ...]  #: every fresh session x volume of its volumes
    own: tuple[SessionObservation, ...]  #: the active ones of its own initiator (all when unbound)
    paths: tuple[PathObservation, ...]  #: the bound host's active paths for it
    fresh_seconds: float

    @property
    def any_io(self) -> bool:
        return bool(self.own or self.paths)

    def no_io(self) -> str:
        return f"no I/O observed in the last {self.fresh_seconds:g} s"

    def missing_side(self) -> str | None:
        """Which side has not reported I/O of the application (None: both have)."""
        if not self.paths:
            return "the host reported no I/O of it"
        if not any(o.evidence.commands for o in self.own):
            return "no controller reported commands of it"
        return None


def _split(sessions: Sequence[SessionObservation], paths: Sequence[PathObservation], *,
           initiator: str | None, fresh_seconds: float) -> _Evidence:
    fresh = tuple(s for s in sessions if s.age_seconds <= fresh_seconds)
    own = tuple(s for s in fresh if _session_active(s) and (initiator is None or s.evidence.initiator == initiator))
    used = tuple(p for p in paths if p.age_seconds <= fresh_seconds and _path_active(p))
    return _Evidence(sessions=fresh, own=own, paths=used, fresh_seconds=fresh_seconds)


# --- one rule per service ------------------------------------------------------------------------


def _digest_faults(part, ev: _Evidence) -> list[str]:
    need = [(f, w) for f, w in (("header_digest", "header digests"), ("data_digest", "data digests"))
            if getattr(part, f)]
    faults = []
    for label, count, services in _carriers(ev) if need else ():
        missing = [w for f, w in need if not getattr(services, f)]
        if missing:
            faults.append(f"{count} on {label}, whose login did not settle {' and '.join(missing)}")
    return faults


def _pi_faults(ev: _Evidence) -> list[str]:
    faults = []
    moving = [s.evidence for s in ev.own if s.evidence.read_bytes or s.evidence.write_bytes]
    checked = sum(s.evidence.pi.checked_blocks for s in ev.own)
    generated = sum(s.evidence.pi.generated_blocks for s in ev.own)
    if moving and not checked:  # commands that move no data (INQUIRY, TEST UNIT READY) carry no PI
        faults.append(f"the controller checked no PI on {sum(e.commands for e in moving)} commands "
                      f"moving {sum(e.read_bytes + e.write_bytes for e in moving)} bytes")
    if generated:
        faults.append(f"{generated} blocks written without PI from the host (the controller generated it)")
    host_bad = sum(p.evidence.pi.failures for p in ev.paths)
    if host_bad:
        faults.append(f"{host_bad} PI check failures at the host on data the controller returned (unexplained)")
    return faults


def _integrity_observed(part, ev: _Evidence) -> str:
    paths = ", ".join(f"{p.evidence.controller}#{p.evidence.channel}" for p in ev.paths)
    words = [f"{sum(p.evidence.ios for p in ev.paths)} I/Os over {paths}" if ev.paths else "no host I/O"]
    if part.header_digest or part.data_digest:
        covered = sum(p.evidence.digest_bytes for p in ev.paths)
        errors = sum(p.evidence.digest_errors for p in ev.paths) + sum(s.evidence.digest_errors for s in ev.own)
        words.append(f"{covered} bytes under data digests, {errors} digest errors caught")
    if part.protection_information:
        ctl = sum(s.evidence.pi.failures for s in ev.own)
        words.append(f"controller checked PI on {sum(s.evidence.pi.checked_blocks for s in ev.own)} blocks, "
                     f"{ctl} PI errors caught")
        host_checked = sum(p.evidence.pi.checked_blocks for p in ev.paths)
        host_generated = sum(p.evidence.pi.generated_blocks for p in ev.paths)
        words.append(f"host generated PI for {host_generated} and verified {host_checked} blocks")
    return "; ".join(words)


def _auth_faults(part, ev: _Evidence) -> list[str]:
    faults = []
    need = _AUTH_RANK[part.authentication]
    for label, count, services in _carriers(ev):
        got = services.authentication
        if _AUTH_RANK[got] < need:
            faults.append(f"{count} on {label}, authenticated by {got.value.replace('_', ' ')}")
        if part.tls and not services.tls:
            faults.append(f"{count} on {label}, without TLS")
    return faults


def _carriers(ev: _Evidence) -> list[tuple[str, str, SessionServices]]:
    """(label, what it carried, services) for every path and session that carried the I/O."""
    out = [(_path_label(p), f"{p.evidence.ios} I/Os", p.evidence.services) for p in ev.paths if p.evidence.ios]
    out += [(_session_label(s), f"{s.evidence.commands} commands", s.evidence.services)
            for s in ev.own if s.evidence.commands]
    return out


def _isolation_faults(part, ev: _Evidence, sites: Sequence[Site], initiator: str | None) -> tuple[list[str], list[str]]:
    faults, notes = [], []
    if part.exclusive:
        wrong = [s.volume for s in sites if initiator is None or tuple(s.allowed_initiators) != (initiator,)]
        if wrong and initiator is not None:
            faults.append("volumes visible to other initiators: " + ", ".join(wrong))
        others = [s for s in ev.sessions if initiator is not None and s.evidence.initiator != initiator]
        for s in others:
            if s.evidence.commands:
                faults.append(f"initiator {s.evidence.initiator} carried {s.evidence.commands} commands "
                              f"to volume {s.evidence.volume} on {s.controller}")
            elif _refused(s.evidence):
                notes.append(f"refused {_refused(s.evidence)} commands of initiator {s.evidence.initiator}")
    if part.vlan is not None:
        for label, count, services in _carriers(ev):
            if services.vlan != part.vlan:
                where = f"VLAN {services.vlan}" if services.vlan is not None else "no VLAN"
                faults.append(f"{count} on {label}, on {where}")
    return faults, notes


def _established(established: Sequence[EstablishedPath], satisfies) -> str:
    if not established:
        return "the host advertises no established path"
    good = [f"{p.controller}#{p.channel}" for p in established if satisfies(p)]
    if not good:
        return "no path the host established satisfies it"
    return "established paths that satisfy it: " + ", ".join(good)


def _qos(q, ev: _Evidence) -> tuple[str, str]:
    ctl = [s for s in ev.own if s.evidence.commands]
    if ctl:
        iops = sum(s.evidence.commands / s.window_seconds for s in ctl)
        bps = sum((s.evidence.read_bytes + s.evidence.write_bytes) / s.window_seconds for s in ctl)
        source = "controller"
    elif ev.paths:
        iops = sum(p.evidence.ios / p.window_seconds for p in ev.paths)
        bps = sum(p.evidence.bytes / p.window_seconds for p in ev.paths)
        source = "host"
    else:
        return UNKNOWN, ev.no_io()
    hist = merge_histograms(p.evidence.latency for p in ev.paths)
    lat_side = "host"
    if hist is None:
        hist, lat_side = merge_histograms(s.evidence.latency for s in ctl), "controller"
    waits = sum(p.evidence.qos_waits for p in ev.paths)
    faults = []
    if q.limit_iops is not None and iops > q.limit_iops * 1.05:
        faults.append(f"{iops:.0f} IOPS is above the limit {q.limit_iops}")
    if q.limit_bytes_per_second is not None and bps > q.limit_bytes_per_second * 1.05:
        faults.append(f"{bps:.0f} B/s is above the limit {q.limit_bytes_per_second}")
    if q.reservation_iops and waits and iops < q.reservation_iops * 0.95:
        faults.append(f"only {iops:.0f} IOPS while I/O waited; reservation {q.reservation_iops}")
    if q.reservation_bytes_per_second and waits and bps < q.reservation_bytes_per_second * 0.95:
        faults.append(f"only {bps:.0f} B/s while I/O waited; reservation {q.reservation_bytes_per_second}")
    observed = f"{iops:.0f} IOPS, {bps:.0f} B/s ({source})"
    if hist is not None:
        p50, p99 = hist.quantile_ms(0.5), hist.quantile_ms(0.99)
        observed += f", p50 {_ms(p50)}, p99 {_ms(p99)} ({lat_side})"
        if q.latency_target_ms is not None and (p99 is None or p99 > q.latency_target_ms):
            faults.append(f"p99 latency {_ms(p99)} is above the target {q.latency_target_ms:g} ms")
    elif q.latency_target_ms is not None:
        observed += ", no latency reported"
    return (NON_COMPLIANT if faults else COMPLIANT), observed + ("; " + "; ".join(faults) if faults else "")


def _ms(v: float | None) -> str:
    return f"<= {v:g} ms" if v is not None else f"> {LATENCY_BOUNDS_MS[-1]:g} ms"


def _enforcement(ev: _Evidence, host_name: str | None) -> ServiceResult | None:
    reasons: Counter[str] = Counter()
    for s in ev.own:
        reasons.update(s.evidence.rejected)
    host_refused = sum(p.evidence.rejected for p in ev.paths)
    expected = "no I/O refused"
    if reasons:
        words = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0])))
        return ServiceResult(service="enforcement", expected=expected, state=NON_COMPLIANT,
                             observed=f"the controller refused {sum(reasons.values())} commands: {words}")
    if host_refused:
        return ServiceResult(service="enforcement", expected=expected, state=NON_COMPLIANT,
                             observed=f"host {host_name} saw {host_refused} I/Os refused by the controller")
    if ev.any_io:
        return ServiceResult(service="enforcement", expected=expected, state=COMPLIANT,
                             observed=f"no I/O refused in the last {ev.fresh_seconds:g} s")
    return None


def _availability(sites: Sequence[Site], host: NodeView | None, binding_state: str | None,
                  binding_reason: str | None) -> ServiceResult:
    if not sites:
        return ServiceResult(service="availability", expected="volume placed", observed="no volume", state=UNKNOWN)
    down = [s.controller.name for s in sites if not s.controller.alive]
    if host is not None and not host.alive:
        down.append(host.name)
    faults = []
    if down:
        faults.append("lease expired: " + ", ".join(sorted(set(down))))
    if host is not None and binding_state == "failed":
        faults.append(f"host {host.name} reports the binding failed: {binding_reason or 'no reason given'}")
    observed = "; ".join(faults) if faults else "all advertising" + (
        f"; binding {binding_state} on {host.name}" if host is not None and binding_state else "")
    return ServiceResult(service="availability", expected="controllers and host advertising, binding not failed",
                         observed=observed, state=NON_COMPLIANT if faults else COMPLIANT)


# --- the whole judgement -------------------------------------------------------------------------


def evaluate(
    *,
    services: PolicyServices | None,
    sites: Sequence[Site],
    host: NodeView | None,
    established: Sequence[EstablishedPath] = (),
    sessions: Sequence[SessionObservation] = (),
    paths: Sequence[PathObservation] = (),
    initiator: str | None = None,
    binding_state: str | None = None,
    binding_reason: str | None = None,
    fresh_seconds: float = 120.0,
) -> ComplianceReport:
    """Expected vs observed for each service of ``services`` (see the module docstring)."""
    svc = services.normalized() if services is not None else PolicyServices()
    ev = _split(sessions, paths, initiator=initiator, fresh_seconds=fresh_seconds)
    results = [_availability(sites, host, binding_state, binding_reason)]

    # capability problems along each site's route (advertisements), grouped by service
    capability: dict[str, list[str]] = {}
    for s in sites:
        route = Route(controller=s.controller, container=s.container, host=host)
        for u in unmet(route, svc):
            if u.service != "availability":
                capability.setdefault(u.service.split(".")[0], []).append(u.reason)
    controllers = {s.controller.name: s for s in sites}

    def satisfies(service: str):
        def check(p: EstablishedPath) -> bool:
            site = controllers.get(p.controller)
            if site is None:
                return False
            route = Route(controller=site.controller, container=site.container, host=host, switches=p.switches,
                          negotiated=p.negotiated, channel=p.channel)
            return not [u for u in unmet(route, svc) if u.service.split(".")[0] == service and u.node is None]
        return check

    for name in ("integrity", "security", "isolation"):
        part = getattr(svc, name)
        if part is None:
            continue
        expected = ", ".join(PolicyServices(**{name: part}).describe())
        faults, notes, unobservable = list(capability.get(name, ())), [], []
        if name == "integrity":
            faults += _digest_faults(part, ev)
            if part.protection_information:
                faults += _pi_faults(ev)
        elif name == "security":
            faults += _auth_faults(part, ev)
            if part.at_host_encryption:
                unobservable.append("AES-XTS at the host is not in the evidence nodes report")
        else:
            more, notes = _isolation_faults(part, ev, sites, initiator)
            faults += more
            if part.tag is not None:
                unobservable.append("the isolation tag is not in the evidence nodes report")
        if faults:
            state, observed = NON_COMPLIANT, "; ".join(faults + notes)
        elif not ev.any_io:
            state = UNKNOWN
            where = "not bound to a host" if host is None else _established(established, satisfies(name))
            observed = f"{ev.no_io()}; {where}"
        elif (missing := ev.missing_side()) is not None:
            state, observed = UNKNOWN, f"{missing} in the last {fresh_seconds:g} s"
        else:
            base = _integrity_observed(part, ev) if name == "integrity" else (
                "I/O only on paths and sessions with " + (", ".join(sorted(_settled(ev))) or "nothing settled"))
            state = UNKNOWN if unobservable else COMPLIANT
            observed = "; ".join([base, *notes, *unobservable])
        results.append(ServiceResult(service=name, expected=expected, observed=observed, state=state))

    if (q := svc.qos) is not None:
        expected = ", ".join(PolicyServices(qos=q).describe())
        if capability.get("qos"):
            results.append(ServiceResult(service="qos", expected=expected, observed="; ".join(capability["qos"]),
                                         state=NON_COMPLIANT))
        else:
            state, observed = _qos(q, ev)
            results.append(ServiceResult(service="qos", expected=expected, observed=observed, state=state))

    if (enforcement := _enforcement(ev, host.name if host else None)) is not None:
        results.append(enforcement)
    return ComplianceReport(state=_combine([r.state for r in results]), services=results,
                            evidence=summarize(ev.sessions, [p for p in paths if p.age_seconds <= fresh_seconds]))


def _settled(ev: _Evidence) -> set[str]:
    """The services every carrier of the I/O settled (their intersection)."""
    sets = [set(service_words(services)) for _, _, services in _carriers(ev)]
    return set.intersection(*sets) if sets else set()
