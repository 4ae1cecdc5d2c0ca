"""Compliance: is each application getting what its policy promises? (pure)

:func:`evaluate` compares, service by service, what the policy expects with
what can be observed:

- from **advertisements**: the controllers holding the application's volumes
  and the host it is bound to are alive and still offer the services; the
  host has an established path to each controller whose negotiated services
  satisfy the policy;
- from **per-path statistics** the host reports: which paths the
  application's I/O actually used (every one must satisfy the policy), digest
  and PI errors caught, rejected I/Os, IOPS achieved against the reservation
  and limit, latency against the target.

Each service gets ``compliant``, ``non_compliant`` or ``unknown`` (nothing to
observe yet, e.g. the application is not running). The application is
non-compliant if any service is, compliant if all are, unknown otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from difs.policy import NegotiatedServicesModel, NodeView, PolicyServices, Route, unmet
from difs.policy.capabilities import ContainerAdvert

COMPLIANT, NON_COMPLIANT, UNKNOWN = "compliant", "non_compliant", "unknown"


@dataclass(frozen=True)
class Site:
    """Where one of the application's volumes lives."""

    volume: str
    controller: NodeView
    container: ContainerAdvert | None
    allowed_initiators: tuple[str, ...] = ()


@dataclass(frozen=True)
class EstablishedPath:
    """A path the bound host advertised, with (optionally) the I/O it carried for the application."""

    controller: str
    channel: int
    negotiated: NegotiatedServicesModel
    switches: tuple[NodeView, ...] = ()
    ios: int = 0
    bytes: int = 0
    rejected: int = 0
    digest_errors: int = 0
    pi_errors: int = 0
    qos_waits: int = 0
    latency_ms: float | None = None
    window_seconds: float | None = None  # None: no fresh statistics for this path


class ServiceResult(BaseModel):
    service: str
    expected: str
    observed: str
    state: str


class ComplianceReport(BaseModel):
    state: str
    services: list[ServiceResult]


def _combine(states: Sequence[str]) -> str:
    if NON_COMPLIANT in states:
        return NON_COMPLIANT
    if not states or all(s == COMPLIANT for s in states):
        return COMPLIANT
    return UNKNOWN




def evaluate(
    *,
    services: PolicyServices | None,
    sites: Sequence[Site],
    host: NodeView | None,
    paths: Sequence[EstablishedPath],
    initiator: str | None = None,
) -> ComplianceReport:
    """Expected vs observed for each service of ``services`` (see module docstring)."""
    svc = services.normalized() if services is not None else PolicyServices()
    results: list[ServiceResult] = []

    # availability: the volumes exist and their controllers (and the bound host) are alive
    if not sites:
        results.append(ServiceResult(service="availability", expected="volume placed", observed="no volume", state=UNKNOWN))
    else:
        down = [s.controller.name for s in sites if not s.controller.alive]
        if host is not None and not host.alive:
            down.append(host.name)
        results.append(
            ServiceResult(
                service="availability",
                expected="controllers and host advertising",
                observed=("lease expired: " + ", ".join(sorted(set(down)))) if down else "all advertising",
                state=NON_COMPLIANT if down else COMPLIANT,
            )
        )

    # capability problems along each site's route, grouped by service
    capability: dict[str, list[str]] = {}
    for s in sites:
        route = Route(controller=s.controller, container=s.container, host=host)
        for u in unmet(route, svc):
            if u.service == "availability":
                continue
            capability.setdefault(u.service.split(".")[0], []).append(u.reason)

    used = [p for p in paths if p.window_seconds is not None and p.ios > 0]
    have_stats = any(p.window_seconds is not None for p in paths)
    controllers = {s.controller.name: s for s in sites}

    def path_faults(p: EstablishedPath, service: str) -> list[str]:
        site = controllers.get(p.controller)
        if site is None:
            return []
        route = Route(
            controller=site.controller,
            container=site.container,
            host=host,
            switches=p.switches,
            negotiated=p.negotiated,
            channel=p.channel,
        )
        return [u.reason for u in unmet(route, svc) if u.service.split(".")[0] == service and u.node is None]

    for name in ("integrity", "security", "isolation"):
        part = getattr(svc, name)
        if part is None:
            continue
        expected = ", ".join(PolicyServices(**{name: part}).describe())
        if capability.get(name):
            results.append(
                ServiceResult(service=name, expected=expected, observed="; ".join(capability[name]), state=NON_COMPLIANT)
            )
            continue
        if host is None or not sites:
            results.append(
                ServiceResult(service=name, expected=expected, observed="not running on any host", state=UNKNOWN)
            )
            continue
        if name == "isolation" and part.exclusive:
            wrong = [s.volume for s in sites if initiator is None or tuple(s.allowed_initiators) != (initiator,)]
            if wrong:
                results.append(
                    ServiceResult(
                        service=name,
                        expected=expected,
                        observed="volumes visible to other initiators: " + ", ".join(wrong),
                        state=NON_COMPLIANT,
                    )
                )
                continue
        if used:
            bad = [(p, path_faults(p, name)) for p in used]
            bad = [(p, f) for p, f in bad if f]
            if bad:
                observed = "; ".join(f"{p.ios} I/Os on {p.controller} channel {p.channel}: {f[0]}" for p, f in bad)
                results.append(ServiceResult(service=name, expected=expected, observed=observed, state=NON_COMPLIANT))
                continue
            extra = []
            if name == "integrity":
                de = sum(p.digest_errors for p in used)
                pe = sum(p.pi_errors for p in used)
                extra.append(f"{de} digest and {pe} PI errors caught")
            chans = ", ".join(f"{p.controller}#{p.channel}" for p in used)
            results.append(
                ServiceResult(
                    service=name,
                    expected=expected,
                    observed=f"I/O used satisfying paths only ({chans})" + (f"; {extra[0]}" if extra else ""),
                    state=COMPLIANT,
                )
            )
            continue
        # no statistics: an established satisfying path to every controller is the evidence
        missing = []
        for ctl in sorted(controllers):
            to_ctl = [p for p in paths if p.controller == ctl]
            if not to_ctl:
                missing.append(f"no established path to {ctl}")
            elif all(path_faults(p, name) for p in to_ctl):
                missing.append(f"no established path to {ctl} satisfies it ({path_faults(to_ctl[0], name)[0]})")
        if not paths:
            results.append(
                ServiceResult(service=name, expected=expected, observed="host reported no paths yet", state=UNKNOWN)
            )
        elif missing:
            results.append(ServiceResult(service=name, expected=expected, observed="; ".join(missing), state=NON_COMPLIANT))
        else:
            results.append(
                ServiceResult(service=name, expected=expected, observed="satisfying paths established", state=COMPLIANT)
            )

    if (q := svc.qos) is not None:
        expected = ", ".join(PolicyServices(qos=q).describe())
        if capability.get("qos"):
            results.append(ServiceResult(service="qos", expected=expected, observed="; ".join(capability["qos"]), state=NON_COMPLIANT))
        elif not have_stats:
            results.append(ServiceResult(service="qos", expected=expected, observed="no statistics reported", state=UNKNOWN))
        else:
            fresh = [p for p in paths if p.window_seconds]
            iops = sum(p.ios / p.window_seconds for p in fresh)  # type: ignore[operator]
            bps = sum(p.bytes / p.window_seconds for p in fresh)  # type: ignore[operator]
            waits = sum(p.qos_waits for p in fresh)
            ios = sum(p.ios for p in fresh)
            lat = sum((p.latency_ms or 0) * p.ios for p in fresh) / ios if ios and any(p.latency_ms is not None for p in fresh) else None
            faults = []
            if q.limit_iops is not None and iops > q.limit_iops * 1.05:
                faults.append(f"{iops:.0f} IOPS is above the limit {q.limit_iops}")
            if q.limit_bytes_per_second is not None and bps > q.limit_bytes_per_second * 1.05:
                faults.append(f"{bps:.0f} B/s is above the limit {q.limit_bytes_per_second}")
            if q.reservation_iops and waits and iops < q.reservation_iops * 0.95:
                faults.append(f"only {iops:.0f} IOPS while I/O waited; reservation {q.reservation_iops}")
            if q.reservation_bytes_per_second and waits and bps < q.reservation_bytes_per_second * 0.95:
                faults.append(f"only {bps:.0f} B/s while I/O waited; reservation {q.reservation_bytes_per_second}")
            if q.latency_target_ms is not None and lat is not None and lat > q.latency_target_ms:
                faults.append(f"latency {lat:.2f} ms is above the target {q.latency_target_ms:g} ms")
            observed = f"{iops:.0f} IOPS, {bps:.0f} B/s" + (f", {lat:.2f} ms" if lat is not None else "")
            results.append(
                ServiceResult(
                    service="qos",
                    expected=expected,
                    observed=observed + ("; " + "; ".join(faults) if faults else ""),
                    state=NON_COMPLIANT if faults else COMPLIANT,
                )
            )

    rejected = sum(p.rejected for p in paths if p.window_seconds is not None)
    if rejected:
        results.append(
            ServiceResult(
                service="enforcement",
                expected="no I/O rejected",
                observed=f"{rejected} I/Os rejected by the controller",
                state=NON_COMPLIANT,
            )
        )
    return ComplianceReport(state=_combine([r.state for r in results]), services=results)
