"""Build the pure placement inputs (:mod:`difs.manager.placement`) from the database.

A container candidate carries its controller's reservations (those of the
applications with volumes there) and the manager's QoS headroom, which the
request's session holds in ``session.info[QOS_HEADROOM]`` (set from
``Settings.qos_headroom`` by ``api/deps.py``; the default when absent).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.config import DEFAULT_QOS_HEADROOM
from difs.manager.models import ApplicationRow, ContainerRow, NodeRow, VolumeRow
from difs.manager.placement import ContainerCandidate, HostCandidate
from difs.manager.services.common import container_advert, node_view, services_of
from difs.policy import NodeKind, NodeView, PathAdvert

#: the ``Session.info`` key of the QoS headroom admission control keeps on every controller
QOS_HEADROOM = "difs.qos_headroom"


def qos_headroom(session: Session) -> float:
    return float(session.info.get(QOS_HEADROOM, DEFAULT_QOS_HEADROOM))


def reservations_by_controller(session: Session, *, exclude_app_id: str | None) -> dict[str, tuple[int, int]]:
    """controller id -> (reserved IOPS, reserved B/s) of the applications with volumes on it."""
    rows = session.execute(
        select(VolumeRow.controller_id, ApplicationRow.id, ApplicationRow.services).join(
            ApplicationRow, VolumeRow.application_id == ApplicationRow.id
        )
    ).all()
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seen: set[tuple[str, str]] = set()
    for controller_id, app_id, services in rows:
        # an application reserves once per controller, however many volumes it has there
        if app_id == exclude_app_id or (controller_id, app_id) in seen:
            continue
        seen.add((controller_id, app_id))
        svc = services_of(services)
        if svc is None or svc.qos is None:
            continue
        out[controller_id][0] += svc.qos.reservation_iops or 0
        out[controller_id][1] += svc.qos.reservation_bytes_per_second or 0
    return {k: (v[0], v[1]) for k, v in out.items()}


def _candidate(
    row: ContainerRow, *, now: datetime, reserved: dict[str, tuple[int, int]], views: dict[str, NodeView],
    headroom: float,
) -> ContainerCandidate:
    allocated = sum(v.size_bytes for v in row.volumes)
    view = views.get(row.node_id) or node_view(row.node, now)
    views[row.node_id] = view
    r_iops, r_bps = reserved.get(row.node_id, (0, 0))
    return ContainerCandidate(
        controller=view,
        container=container_advert(row),
        free_bytes=row.capacity_bytes - allocated,
        reserved_iops=r_iops,
        reserved_bytes_per_second=r_bps,
        qos_headroom=headroom,
    )


def container_candidates(session: Session, *, now: datetime) -> list[ContainerCandidate]:
    """Every container eligible for new volumes (declared, or present in the last advertisement)."""
    reserved = reservations_by_controller(session, exclude_app_id=None)
    rows = session.scalars(
        select(ContainerRow).where((ContainerRow.advertised.is_(True)) | (ContainerRow.source == "declared"))
    ).all()
    views: dict[str, NodeView] = {}
    headroom = qos_headroom(session)
    return [_candidate(r, now=now, reserved=reserved, views=views, headroom=headroom) for r in rows]


def app_sites(session: Session, *, now: datetime, app: ApplicationRow) -> list[ContainerCandidate]:
    """The containers holding ``app``'s volumes, with only the *other* applications' reservations."""
    reserved = reservations_by_controller(session, exclude_app_id=app.id)
    views: dict[str, NodeView] = {}
    seen: dict[str, ContainerCandidate] = {}
    for v in app.volumes:
        if v.container_id not in seen:
            seen[v.container_id] = _candidate(v.container, now=now, reserved=reserved, views=views,
                                              headroom=qos_headroom(session))
    return list(seen.values())


def _switch_views(session: Session, *, now: datetime) -> dict[str, NodeView]:
    rows = session.scalars(select(NodeRow).where(NodeRow.kind == "switch")).all()
    return {r.name: node_view(r, now) for r in rows}


def host_candidate(session: Session, *, now: datetime, host: NodeRow, switches: dict[str, NodeView] | None = None) -> HostCandidate:
    if switches is None:
        switches = _switch_views(session, now=now)
    switches_to: dict[str, tuple[NodeView, ...]] = {}
    for p in host.paths or ():
        path = PathAdvert.model_validate(p)
        if path.controller not in switches_to or len(path.via) > len(switches_to[path.controller]):
            switches_to[path.controller] = tuple(
                switches.get(s) or NodeView(name=s, kind=NodeKind.SWITCH, alive=False)
                for s in path.via
            )
    return HostCandidate(host=node_view(host, now), switches_to=switches_to)


def host_candidates(session: Session, *, now: datetime) -> list[HostCandidate]:
    switches = _switch_views(session, now=now)
    hosts = session.scalars(select(NodeRow).where(NodeRow.kind == "host").order_by(NodeRow.name)).all()
    return [host_candidate(session, now=now, host=h, switches=switches) for h in hosts]
