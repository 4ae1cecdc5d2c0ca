"""Shared pieces of the services: lookups that raise NotFound, events, views of rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from difs.manager.errors import NotFound
from difs.manager.models import ApplicationRow, ContainerRow, EventRow, NodeRow, VolumeRow
from difs.policy import (
    ContainerAdvert,
    NodeKind,
    NodeView,
    PolicyServices,
    Portal,
    ServiceCapabilities,
)


def record_event(
    session: Session, *, now: datetime, kind: str, subject: str, message: str, **data: Any
) -> None:
    session.add(EventRow(at=now, kind=kind, subject=subject, message=message, data=data))


def get_node(session: Session, *, name: str, kind: str | None = None, lock: bool = False) -> NodeRow:
    q = select(NodeRow).where(NodeRow.name == name)
    if lock:
        q = q.with_for_update()
    row = session.scalars(q).one_or_none()
    if row is None or (kind is not None and row.kind != kind):
        what = kind or "node"
        raise NotFound(f"no {what} named {name!r}: list them with `difs node list`")
    return row


def get_app(session: Session, *, name: str, lock: bool = False) -> ApplicationRow:
    q = select(ApplicationRow).where(ApplicationRow.name == name)
    if lock:
        q = q.with_for_update()
    row = session.scalars(q).one_or_none()
    if row is None:
        raise NotFound(f"no application named {name!r}: list them with `difs app list`")
    return row


def get_volume(session: Session, *, ref: str, lock: bool = False) -> VolumeRow:
    q = select(VolumeRow).where((VolumeRow.id == ref) | (VolumeRow.name == ref))
    if lock:
        q = q.with_for_update()
    row = session.scalars(q).first()
    if row is None:
        raise NotFound(f"no volume with id or name {ref!r}: list them with `difs volume list`")
    return row


def node_alive(row: NodeRow, now: datetime) -> bool:
    """Alive by its state, which the lease sweep keeps current before every request (judged on
    the monotonic clock, ``difs.manager.leases``: a wall clock step must not decide)."""
    return row.state == "alive"


def node_view(row: NodeRow, now: datetime) -> NodeView:
    caps = ServiceCapabilities.model_validate(row.capabilities or {})
    return NodeView(
        name=row.name,
        kind=NodeKind(row.kind),
        services=caps,
        portals=tuple(Portal.model_validate(p) for p in row.portals or ()),
        alive=node_alive(row, now),
    )


def container_advert(row: ContainerRow) -> ContainerAdvert:
    return ContainerAdvert(name=row.name, capacity_bytes=row.capacity_bytes, pi_types=row.pi_types or [])


def allocated_bytes(session: Session, *, container_id: str) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(VolumeRow.size_bytes), 0)).where(
                VolumeRow.container_id == container_id
            )
        )
        or 0
    )


def services_of(data: dict[str, Any] | None) -> PolicyServices | None:
    return None if data is None else PolicyServices.model_validate(data)


def dump_services(services: PolicyServices | None) -> dict[str, Any] | None:
    return None if services is None else services.normalized().model_dump(mode="json", exclude_none=True)


def lease_expiry(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
