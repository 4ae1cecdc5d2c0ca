"""Storage containers: declared by an admin or advertised by controllers; capacity accounting."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.errors import Conflict, NotFound
from difs.manager.models import ContainerRow, NodeRow
from difs.manager.schemas import ContainerCreate, ContainerPublic, ContainerUpdate
from difs.manager.services.common import allocated_bytes, get_node, record_event
from difs.manager.services.views import container_public


def _get(session: Session, *, controller: str, name: str, lock: bool = False) -> ContainerRow:
    node = get_node(session, name=controller, kind="controller", lock=lock)
    q = select(ContainerRow).where(ContainerRow.node_id == node.id, ContainerRow.name == name)
    row = session.scalars(q).one_or_none()
    if row is None:
        raise NotFound(f"controller {controller} has no container named {name!r}: see `difs volume containers`")
    return row


def list_containers(*, session: Session) -> list[ContainerPublic]:
    rows = session.scalars(select(ContainerRow).join(NodeRow).order_by(NodeRow.name, ContainerRow.name))
    return [container_public(r) for r in rows]


def get(*, session: Session, controller: str, name: str) -> ContainerPublic:
    return container_public(_get(session, controller=controller, name=name))


def create(*, session: Session, now: datetime, data: ContainerCreate) -> ContainerPublic:
    node = get_node(session, name=data.controller, kind="controller", lock=True)
    if any(c.name == data.name for c in node.containers):
        raise Conflict(f"controller {data.controller} already has a container named {data.name!r}")
    row = ContainerRow(
        node_id=node.id,
        name=data.name,
        capacity_bytes=data.capacity_bytes,
        pi_types=[int(t) for t in data.pi_types],
        source="declared",
        advertised=False,
        created_at=now,
    )
    session.add(row)
    session.flush()
    session.refresh(row)
    record_event(session, now=now, kind="container.created", subject=f"{data.controller}/{data.name}",
                 message=f"container {data.name} declared on controller {data.controller}")
    return container_public(row)


def resize(*, session: Session, now: datetime, controller: str, name: str, data: ContainerUpdate) -> ContainerPublic:
    row = _get(session, controller=controller, name=name, lock=True)
    used = allocated_bytes(session, container_id=row.id)
    if data.capacity_bytes < used:
        raise Conflict(
            f"container {controller}/{name} has {used} bytes allocated to volumes; "
            f"it cannot shrink to {data.capacity_bytes}"
        )
    old = row.capacity_bytes
    row.capacity_bytes = data.capacity_bytes
    record_event(session, now=now, kind="container.resized", subject=f"{controller}/{name}",
                 message=f"container {controller}/{name} resized from {old} to {data.capacity_bytes} bytes")
    session.flush()
    return container_public(row)


def remove(*, session: Session, now: datetime, controller: str, name: str) -> None:
    row = _get(session, controller=controller, name=name, lock=True)
    if row.volumes:
        raise Conflict(
            f"container {controller}/{name} still holds {len(row.volumes)} volume(s): delete them first"
        )
    session.delete(row)
    record_event(session, now=now, kind="container.deleted", subject=f"{controller}/{name}",
                 message=f"container {controller}/{name} deleted")
