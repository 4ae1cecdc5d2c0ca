"""Does X satisfy P: which requirements of a policy a path cannot meet, and why.

A :class:`Route` is a path as the manager sees it: a host, the switches between
it and a controller, the controller, and the container the volume lives in —
optionally with the services an established channel actually negotiated. Any
end may be left out (placement checks a container before it knows the host).

:func:`unmet` returns one :class:`Unmet` per requirement a node on the route
cannot meet, each with a sentence a human can act on, e.g.
``controller ctl-1 does not offer CRC32C data digests``. An empty list means
the route satisfies the policy. The function is pure and cheap enough for
placement over hundreds of candidates; for the per-I/O check use
:func:`difs.policy.fast.path_satisfies`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from difs.policy.capabilities import (
    ContainerAdvert,
    NegotiatedServicesModel,
    NodeKind,
    Portal,
    ServiceCapabilities,
)
from difs.policy.document import PolicyDocument
from difs.policy.services import AuthMethod, PolicyServices

__all__ = ["NodeView", "Route", "Unmet", "unmet"]


@dataclass(frozen=True)
class NodeView:
    """A node as known from its latest advertisement."""

    name: str
    kind: NodeKind
    services: ServiceCapabilities = field(default_factory=ServiceCapabilities)
    portals: tuple[Portal, ...] = ()
    alive: bool = True

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.name}"


@dataclass(frozen=True)
class Route:
    """host -> switches -> controller -> container, each part optional except the controller."""

    controller: NodeView
    container: ContainerAdvert | None = None
    host: NodeView | None = None
    switches: tuple[NodeView, ...] = ()
    negotiated: NegotiatedServicesModel | None = None
    channel: int | None = None


class Unmet(BaseModel):
    """One requirement a route cannot meet."""

    model_config = ConfigDict(frozen=True)

    service: str
    node: str | None = None
    reason: str


def _ends(route: Route) -> list[NodeView]:
    return [n for n in (route.host, route.controller) if n is not None]


def _none_can(nodes: list[NodeView], what: str) -> str:
    """"controller ctl1 cannot X", "neither host h1 nor controller ctl1 can X", "none of A, B or C can X"."""
    labels = [n.label for n in nodes]
    if len(labels) == 1:
        return f"{labels[0]} cannot {what}"
    if len(labels) == 2:
        return f"neither {labels[0]} nor {labels[1]} can {what}"
    return f"none of {', '.join(labels[:-1])} or {labels[-1]} can {what}"


def unmet(route: Route, policy: PolicyServices | PolicyDocument | None) -> list[Unmet]:
    """Every requirement of ``policy`` that ``route`` does not meet (empty: satisfied)."""
    services = policy.services if isinstance(policy, PolicyDocument) else policy
    out: list[Unmet] = []

    def miss(service: str, node: NodeView | None, reason: str) -> None:
        out.append(Unmet(service=service, node=node.name if node else None, reason=reason))

    for node in (route.host, *route.switches, route.controller):
        if node is not None and not node.alive:
            miss(
                "availability",
                node,
                f"{node.label} stopped advertising (its lease expired): its capabilities are unknown",
            )
    if services is None:
        return out

    neg = route.negotiated
    chan = f"channel {route.channel}" if route.channel is not None else "the established channel"
    ends = _ends(route)
    container = route.container

    if (i := services.integrity) is not None:
        for attr, words in (("header_digest", "CRC32C header digests"), ("data_digest", "CRC32C data digests")):
            if getattr(i, attr):
                for node in ends:
                    if not getattr(node.services.integrity, attr):
                        miss(f"integrity.{attr}", node, f"{node.label} does not offer {words}")
                if neg is not None and not getattr(neg, attr):
                    miss(f"integrity.{attr}", None, f"{chan} did not negotiate {words}")
        if (pi := i.protection_information) is not None:
            t = int(pi)
            for node in ends:
                if pi not in node.services.integrity.pi_types:
                    miss(
                        "integrity.protection_information",
                        node,
                        f"{node.label} does not support T10 PI type {t}",
                    )
            if container is not None and pi not in container.pi_types:
                miss(
                    "integrity.protection_information",
                    route.controller,
                    f"container {container.name} on {route.controller.label} cannot store "
                    f"T10 PI type {t}",
                )
            if neg is not None and pi not in neg.pi_types:
                miss("integrity.protection_information", None, f"{chan} does not carry T10 PI type {t}")

    if (s := services.security) is not None:
        if s.authentication != AuthMethod.NONE:
            need = s.authentication
            words = "mutual CHAP" if need == AuthMethod.MUTUAL_CHAP else "CHAP"
            accepted = {need} if need == AuthMethod.MUTUAL_CHAP else {AuthMethod.CHAP, AuthMethod.MUTUAL_CHAP}
            for node in ends:
                if not accepted & set(node.services.security.authentication):
                    miss("security.authentication", node, f"{node.label} does not offer {words}")
            if neg is not None and neg.authentication not in accepted:
                miss(
                    "security.authentication",
                    None,
                    f"{chan} authenticated with {neg.authentication.value}, not {words}",
                )
        if s.tls:
            for node in ends:
                if not node.services.security.tls:
                    miss("security.tls", node, f"{node.label} does not offer TLS 1.3")
            ctl = route.controller
            if ctl.services.security.tls and ctl.portals and not any(p.tls for p in ctl.portals):
                miss("security.tls", ctl, f"{ctl.label} has no TLS portal")
            if neg is not None and not neg.tls:
                miss("security.tls", None, f"{chan} is not TLS-protected")
        if s.at_host_encryption and route.host is not None:
            if not route.host.services.security.at_host_encryption:
                miss(
                    "security.at_host_encryption",
                    route.host,
                    f"{route.host.label} cannot encrypt with AES-XTS",
                )

    if (q := services.qos) is not None:
        ctl = route.controller
        cq = ctl.services.qos
        if q.reservation_iops is not None or q.reservation_bytes_per_second is not None:
            if not cq.reservation:
                miss("qos.reservation", ctl, f"{ctl.label} cannot guarantee reservations")
        if q.reservation_iops is not None and cq.max_iops is not None and q.reservation_iops > cq.max_iops:
            miss(
                "qos.reservation_iops",
                ctl,
                f"{ctl.label} can reserve at most {cq.max_iops} IOPS, the policy asks {q.reservation_iops}",
            )
        if (
            q.reservation_bytes_per_second is not None
            and cq.max_bytes_per_second is not None
            and q.reservation_bytes_per_second > cq.max_bytes_per_second
        ):
            miss(
                "qos.reservation_bytes_per_second",
                ctl,
                f"{ctl.label} can reserve at most {cq.max_bytes_per_second} B/s, "
                f"the policy asks {q.reservation_bytes_per_second}",
            )
        if q.limit_iops is not None or q.limit_bytes_per_second is not None:
            limiters = [n for n in ends if n.services.qos.limit]
            if not limiters:
                miss("qos.limit", ctl, _none_can(ends, "enforce a limit"))
        if q.weight is not None and not cq.weight:
            miss("qos.weight", ctl, f"{ctl.label} does not schedule proportional shares")
        if q.latency_target_ms is not None:
            if not cq.latency_target:
                miss("qos.latency_target_ms", ctl, f"{ctl.label} does not schedule for latency targets")
            elif cq.min_latency_ms is not None and cq.min_latency_ms > q.latency_target_ms:
                miss(
                    "qos.latency_target_ms",
                    ctl,
                    f"{ctl.label}'s best latency is {cq.min_latency_ms:g} ms, above the target "
                    f"{q.latency_target_ms:g} ms",
                )
        if q.dscp is not None:
            d = q.dscp
            if route.host is not None and d not in route.host.services.qos.dscp_classes:
                miss("qos.dscp", route.host, f"{route.host.label} cannot mark packets with DSCP {d}")
            for sw in route.switches:
                if d not in sw.services.qos.dscp_classes:
                    miss("qos.dscp", sw, f"{sw.label} does not honour DSCP {d}")
            if neg is not None and neg.dscp != d:
                miss("qos.dscp", None, f"{chan} marks DSCP {neg.dscp}, not {d}")

    if (iso := services.isolation) is not None:
        ctl = route.controller
        if iso.exclusive and not ctl.services.isolation.exclusive:
            miss("isolation.exclusive", ctl, f"{ctl.label} cannot restrict a volume to one initiator")
        if iso.tag is not None:
            for node in ends:
                if not node.services.isolation.tags:
                    miss("isolation.tag", node, f"{node.label} cannot keep a path per isolation domain")
            if neg is not None and neg.isolation_tag != iso.tag:
                miss("isolation.tag", None, f"{chan} belongs to isolation domain {neg.isolation_tag!r}, not {iso.tag!r}")
        if iso.vlan is not None:
            v = iso.vlan
            for node in (*ends, *route.switches):
                if v not in node.services.isolation.vlans:
                    miss("isolation.vlan", node, f"{node.label} is not on VLAN {v}")
            if neg is not None and neg.vlan != v:
                miss("isolation.vlan", None, f"{chan} runs on VLAN {neg.vlan}, not {v}")
    return out
