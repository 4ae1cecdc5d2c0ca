"""Placement: where an application's volume should live, and why not elsewhere (pure).

:func:`place` takes the candidates as plain values — containers with their
controller's capabilities, free space and QoS headroom; hosts with the switches
on their paths to each controller — and returns a :class:`PlacementDecision`:
the chosen (controller, container, host) or none, and **for every rejected
candidate, the reasons**. :func:`check_in_place` answers the narrower question
a live policy change asks: can the new policy be met where the application
already runs?

Rules, in order:

1. A container is a candidate when its controller is alive, the route
   controller -> container meets the policy (:func:`difs.policy.unmet`), it has
   the free space, and the controller has the QoS headroom for the
   reservation (its ``max_iops`` / ``max_bytes_per_second`` minus what other
   volumes already reserved).
2. A host is a candidate when it is alive and its route to a candidate
   container (through the switches it reported on its paths to that
   controller) meets the policy.
3. Among feasible pairs, the container with the most free space after
   allocation wins (spreading load), then names break ties. When a host is
   requested only that host is considered; when no host is alive the volume
   is placed without one (any host that binds later is checked then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from difs.policy import ContainerAdvert, NodeView, PolicyServices, Route, Unmet, unmet


@dataclass(frozen=True)
class ContainerCandidate:
    controller: NodeView
    container: ContainerAdvert
    free_bytes: int
    reserved_iops: int = 0
    reserved_bytes_per_second: int = 0
    #: the share of the controller's advertised capacity kept free of reservations (0..1)
    qos_headroom: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.controller.name}/{self.container.name}"


@dataclass(frozen=True)
class HostCandidate:
    host: NodeView
    #: controller name -> the switches on this host's path to it (none known: direct)
    switches_to: Mapping[str, tuple[NodeView, ...]] = field(default_factory=dict)

    def route_to(self, c: ContainerCandidate) -> Route:
        return Route(
            controller=c.controller,
            container=c.container,
            host=self.host,
            switches=tuple(self.switches_to.get(c.controller.name, ())),
        )


@dataclass(frozen=True)
class PlacementRequest:
    size_bytes: int
    services: PolicyServices | None
    host: str | None = None


class Choice(BaseModel):
    controller: str
    container: str
    host: str | None


class Rejection(BaseModel):
    kind: str  # "container" | "host"
    candidate: str
    reasons: list[str]


class PlacementDecision(BaseModel):
    choice: Choice | None
    rejected: list[Rejection]

    @property
    def feasible(self) -> bool:
        return self.choice is not None


def admission_refusal(
    *, controller: str, unit: str, reserved: int, asked: int, capacity: int | None, headroom: float
) -> str | None:
    """Why ``controller`` cannot admit a reservation of ``asked`` more ``unit`` (None: it can).

    Admitted when ``reserved + asked <= capacity * (1 - headroom)``; a controller that
    advertises no capacity in ``unit`` cannot take a reservation in it.
    """
    if asked <= 0:
        return None
    if capacity is None:
        return (
            f"controller {controller} advertises no {unit} capacity: "
            f"it cannot take a reservation of {asked:,} {unit}"
        )
    admissible = int(capacity * (1.0 - headroom))
    if reserved + asked <= admissible:
        return None
    share = f"{round((1.0 - headroom) * 100, 2):g}%"
    return (
        f"controller {controller}: reservations {reserved:,} + {asked:,} {unit} > {share} of {capacity:,} "
        f"({max(admissible - reserved, 0):,} {unit} left to reserve)"
    )


def qos_headroom_unmet(
    c: ContainerCandidate, services: PolicyServices | None, *, extra_iops: int = 0, extra_bps: int = 0
) -> list[Unmet]:
    """Reservations that do not fit in what the controller has left (admission control)."""
    q = services.qos if services is not None else None
    if q is None or not c.controller.services.qos.reservation:
        return []  # a controller that cannot reserve at all is named by difs.policy.unmet
    cq = c.controller.services.qos
    out = []
    for service, unit, asked, reserved, capacity in (
        ("qos.reservation_iops", "IOPS", q.reservation_iops, c.reserved_iops + extra_iops, cq.max_iops),
        ("qos.reservation_bytes_per_second", "B/s", q.reservation_bytes_per_second,
         c.reserved_bytes_per_second + extra_bps, cq.max_bytes_per_second),
    ):
        why = admission_refusal(controller=c.controller.name, unit=unit, reserved=reserved, asked=asked or 0,
                                capacity=capacity, headroom=c.qos_headroom)
        if why is not None:
            out.append(Unmet(service=service, node=c.controller.name, reason=why))
    return out


def container_unmet(c: ContainerCandidate, request: PlacementRequest) -> list[str]:
    """Why a container cannot hold the volume (empty: it can)."""
    reasons = [u.reason for u in unmet(Route(controller=c.controller, container=c.container), request.services)]
    if c.free_bytes < request.size_bytes:
        reasons.append(
            f"container {c.label} has {c.free_bytes} bytes free, the volume needs {request.size_bytes}"
        )
    reasons += [u.reason for u in qos_headroom_unmet(c, request.services) if u.reason not in reasons]
    return _dedupe(reasons)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def place(
    *,
    request: PlacementRequest,
    containers: Sequence[ContainerCandidate],
    hosts: Sequence[HostCandidate],
) -> PlacementDecision:
    """Choose a container and a host for a volume of ``request.size_bytes`` under its policy."""
    rejected: list[Rejection] = []
    feasible: list[ContainerCandidate] = []
    for c in sorted(containers, key=lambda c: c.label):
        reasons = container_unmet(c, request)
        if reasons:
            rejected.append(Rejection(kind="container", candidate=c.label, reasons=reasons))
        else:
            feasible.append(c)
    feasible.sort(key=lambda c: (-(c.free_bytes - request.size_bytes), c.label))

    considered = sorted(hosts, key=lambda h: h.host.name)
    if request.host is not None:
        for h in considered:
            if h.host.name != request.host:
                rejected.append(
                    Rejection(kind="host", candidate=h.host.name, reasons=[f"host {request.host} was requested"])
                )
        considered = [h for h in considered if h.host.name == request.host]
        if not considered:
            rejected.append(
                Rejection(
                    kind="host",
                    candidate=request.host,
                    reasons=[f"host {request.host} is not a registered host"],
                )
            )
            return PlacementDecision(choice=None, rejected=rejected)

    if not feasible:
        return PlacementDecision(choice=None, rejected=rejected)

    alive = [h for h in considered if h.host.alive]
    for h in considered:
        if not h.host.alive:
            rejected.append(
                Rejection(
                    kind="host",
                    candidate=h.host.name,
                    reasons=[f"host {h.host.name} stopped advertising (its lease expired)"],
                )
            )
    if not alive:
        if request.host is not None:
            return PlacementDecision(choice=None, rejected=rejected)
        best = feasible[0]
        rejected += _not_preferred(feasible, best, None)
        return PlacementDecision(
            choice=Choice(controller=best.controller.name, container=best.container.name, host=None),
            rejected=rejected,
        )

    best_pair: tuple[int, ContainerCandidate, HostCandidate] | None = None
    for h in alive:
        reasons: list[str] = []
        for rank, c in enumerate(feasible):
            why = [u.reason for u in unmet(h.route_to(c), request.services)]
            if not why:
                if best_pair is None or rank < best_pair[0]:
                    best_pair = (rank, c, h)
                break
            reasons += [f"to {c.label}: {r}" for r in why]
        else:
            rejected.append(Rejection(kind="host", candidate=h.host.name, reasons=_dedupe(reasons)))
    if best_pair is None:
        return PlacementDecision(choice=None, rejected=rejected)
    _, c, h = best_pair
    rejected += _not_preferred(feasible, c, h)
    return PlacementDecision(
        choice=Choice(controller=c.controller.name, container=c.container.name, host=h.host.name),
        rejected=rejected,
    )


def _not_preferred(
    feasible: Sequence[ContainerCandidate], chosen: ContainerCandidate, host: HostCandidate | None
) -> list[Rejection]:
    why = "more free space" + (f", reachable by host {host.host.name}" if host is not None else "")
    return [
        Rejection(kind="container", candidate=o.label, reasons=[f"feasible, but {chosen.label} was preferred ({why})"])
        for o in feasible
        if o is not chosen
    ]


def check_in_place(
    *,
    services: PolicyServices | None,
    sites: Sequence[ContainerCandidate],
    host: HostCandidate | None,
) -> list[Unmet]:
    """What a policy cannot get where the application runs now (empty: apply it).

    ``sites`` are the containers holding the application's volumes, with the
    reservations of *other* applications only.
    """
    out: list[Unmet] = []
    for c in sites:
        route = host.route_to(c) if host is not None else Route(controller=c.controller, container=c.container)
        for u in unmet(route, services) + qos_headroom_unmet(c, services):
            if u not in out:
                out.append(u)
    return out
