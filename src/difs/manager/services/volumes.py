"""Volumes (VVOLs): creation in a placed container with a LUN, resize, delete, listing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.errors import Conflict, Infeasible
from difs.manager.models import ApplicationRow, ContainerRow, VolumeRow
from difs.manager.placement import PlacementDecision, PlacementRequest, place
from difs.manager.schemas import VolumeCreate, VolumePublic, VolumeResize
from difs.manager.services import compliance
from difs.manager.services.candidates import container_candidates, host_candidate, host_candidates
from difs.manager.services.common import allocated_bytes, get_app, get_node, get_volume, record_event, services_of
from difs.manager.services.views import volume_public
from difs.policy import service_class


def placement_problem(decision: PlacementDecision, what: str) -> Infeasible:
    lines = [f"{r.kind} {r.candidate}: {'; '.join(r.reasons)}" for r in decision.rejected]
    if not lines:
        lines = ["no controller has advertised a storage container yet (start one with `difs controller`)"]
    return Infeasible(
        f"no placement for {what}: " + " | ".join(lines),
        rejected=[r.model_dump() for r in decision.rejected],
    )


def _free_lun(session: Session, *, controller_id: str) -> int:
    used = set(session.scalars(select(VolumeRow.lun).where(VolumeRow.controller_id == controller_id)))
    lun = 0
    while lun in used:
        lun += 1
    return lun


def allocate(
    *, session: Session, now: datetime, app: ApplicationRow, controller: str, container: str, size_bytes: int,
    name: str | None = None,
) -> VolumeRow:
    """Create a volume row in a chosen container (locks the controller row: LUNs and space)."""
    node = get_node(session, name=controller, kind="controller", lock=True)
    cont = session.scalars(
        select(ContainerRow).where(ContainerRow.node_id == node.id, ContainerRow.name == container)
    ).one()
    free = cont.capacity_bytes - allocated_bytes(session, container_id=cont.id)
    if free < size_bytes:
        raise Conflict(f"container {controller}/{container} has only {free} bytes free, {size_bytes} needed")
    if name is None:
        n = len(app.volumes)
        while True:
            name = f"{app.name}-{n}"[:63]
            if session.scalar(select(VolumeRow.id).where(VolumeRow.name == name)) is None:
                break
            n += 1
    elif session.scalar(select(VolumeRow.id).where(VolumeRow.name == name)) is not None:
        raise Conflict(f"a volume named {name!r} already exists")
    services = services_of(app.services)
    vol = VolumeRow(
        name=name,
        application_id=app.id,
        container_id=cont.id,
        controller_id=node.id,
        size_bytes=size_bytes,
        lun=_free_lun(session, controller_id=node.id),
        policy=app.services,
        policy_version=app.policy_version,
        service_class=service_class(services),
        created_at=now,
        updated_at=now,
    )
    session.add(vol)
    session.flush()
    session.refresh(app)
    record_event(
        session, now=now, kind="volume.created", subject=name,
        message=f"volume {name} ({size_bytes} bytes) for {app.name} in {controller}/{container}, LUN {vol.lun}",
    )
    return vol


def list_volumes(*, session: Session, application: str | None = None) -> list[VolumePublic]:
    q = select(VolumeRow).order_by(VolumeRow.created_at, VolumeRow.name)
    if application is not None:
        q = q.join(ApplicationRow).where(ApplicationRow.name == application)
    return [volume_public(v) for v in session.scalars(q)]


def get(*, session: Session, ref: str) -> VolumePublic:
    return volume_public(get_volume(session, ref=ref))


def create(*, session: Session, now: datetime, data: VolumeCreate, fresh_seconds: float) -> VolumePublic:
    app = get_app(session, name=data.application, lock=True)
    services = services_of(app.services)
    hosts = [host_candidate(session, now=now, host=app.host)] if app.host is not None else host_candidates(session, now=now)
    decision = place(
        request=PlacementRequest(size_bytes=data.size_bytes, services=services,
                                 host=app.host.name if app.host is not None else None),
        containers=container_candidates(session, now=now),
        hosts=hosts,
    )
    if decision.choice is None:
        raise placement_problem(decision, f"a {data.size_bytes}-byte volume of {app.name}")
    vol = allocate(session=session, now=now, app=app, controller=decision.choice.controller,
                   container=decision.choice.container, size_bytes=data.size_bytes, name=data.name)
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
    return volume_public(vol)


def resize(*, session: Session, now: datetime, ref: str, data: VolumeResize) -> VolumePublic:
    vol = get_volume(session, ref=ref, lock=True)
    get_node(session, name=vol.container.node.name, lock=True)  # serialise space accounting per controller
    if data.size_bytes < vol.size_bytes:
        raise Conflict(
            f"volume {vol.name} is {vol.size_bytes} bytes; shrinking it to {data.size_bytes} would destroy data "
            "(volumes only grow)"
        )
    grow = data.size_bytes - vol.size_bytes
    free = vol.container.capacity_bytes - allocated_bytes(session, container_id=vol.container_id)
    if grow > free:
        raise Conflict(
            f"container {vol.container.node.name}/{vol.container.name} has {free} bytes free; "
            f"growing {vol.name} by {grow} does not fit"
        )
    old = vol.size_bytes
    vol.size_bytes = data.size_bytes
    vol.updated_at = now
    record_event(session, now=now, kind="volume.resized", subject=vol.name,
                 message=f"volume {vol.name} resized from {old} to {data.size_bytes} bytes")
    session.flush()
    return volume_public(vol)


def remove(*, session: Session, now: datetime, ref: str, fresh_seconds: float) -> None:
    vol = get_volume(session, ref=ref, lock=True)
    app = vol.application
    if app.host_id is not None:
        raise Conflict(
            f"volume {vol.name} belongs to {app.name}, which is bound to host {app.host.name if app.host else '?'}: "
            f"unbind it first (`difs app unbind {app.name}`)"
        )
    name = vol.name
    compliance.forget_evidence(session, volume_ids=[vol.id])
    session.delete(vol)
    session.flush()
    session.refresh(app)
    record_event(session, now=now, kind="volume.deleted", subject=name, message=f"volume {name} of {app.name} deleted")
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
