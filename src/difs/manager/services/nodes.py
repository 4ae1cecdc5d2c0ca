"""Nodes: registration with per-node tokens, advertisements with leases, lease expiry."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from difs.manager.auth import Principal, hash_token, new_node_token
from difs.manager.errors import BadRequest, Conflict, Forbidden
from difs.manager.models import ApplicationRow, ContainerRow, NodeRow, VolumeRow
from difs.manager.schemas import (
    AdvertisementAck,
    AdvertisementIn,
    ControllerVolume,
    ContainerPublic,
    BindingPublic,
    BindingStatesReport,
    NodePublic,
    NodeRegister,
    NodeRegistered,
)
from difs.manager.services import compliance, migrations
from difs.manager.services.common import get_node, lease_expiry, record_event
from difs.manager.services.views import binding_public, container_public, controller_volume, node_public


def find_by_token(session: Session, *, token: str) -> NodeRow | None:
    return session.scalars(select(NodeRow).where(NodeRow.token_hash == hash_token(token))).one_or_none()


def register(*, session: Session, now: datetime, data: NodeRegister) -> NodeRegistered:
    if session.scalars(select(NodeRow).where(NodeRow.name == data.name)).one_or_none() is not None:
        raise Conflict(
            f"a node named {data.name!r} is already registered: pick another name, or issue it "
            f"a new token with `difs node token {data.name}`"
        )
    token = new_node_token()
    row = NodeRow(
        name=data.name,
        kind=data.kind.value,
        token_hash=hash_token(token),
        state="registered",
        portals=[],
        paths=[],
        advertisements=0,
        created_at=now,
    )
    session.add(row)
    session.flush()
    record_event(session, now=now, kind="node.registered", subject=data.name, message=f"{data.kind.value} {data.name} registered")
    return NodeRegistered(node=node_public(row), token=token)


def rotate_token(*, session: Session, now: datetime, name: str) -> NodeRegistered:
    row = get_node(session, name=name, lock=True)
    token = new_node_token()
    row.token_hash = hash_token(token)
    record_event(session, now=now, kind="node.token_rotated", subject=name, message=f"node {name} has a new token")
    return NodeRegistered(node=node_public(row), token=token)


def list_nodes(*, session: Session, kind: str | None = None) -> list[NodePublic]:
    q = select(NodeRow).order_by(NodeRow.name)
    if kind is not None:
        q = q.where(NodeRow.kind == kind)
    return [node_public(r) for r in session.scalars(q)]


def get(*, session: Session, name: str) -> NodePublic:
    return node_public(get_node(session, name=name))


def remove(*, session: Session, now: datetime, name: str) -> None:
    row = get_node(session, name=name, lock=True)
    vols = session.scalar(select(VolumeRow.name).where(VolumeRow.controller_id == row.id).limit(1))
    if vols is not None:
        raise Conflict(f"controller {name} still holds volumes (e.g. {vols}): delete or move them first")
    bound = session.scalar(select(ApplicationRow.name).where(ApplicationRow.host_id == row.id).limit(1))
    if bound is not None:
        raise Conflict(f"host {name} still runs application {bound}: unbind it first (`difs app unbind {bound}`)")
    compliance.forget_evidence(session, node_id=row.id)
    session.execute(delete(ContainerRow).where(ContainerRow.node_id == row.id))
    session.delete(row)
    record_event(session, now=now, kind="node.deleted", subject=name, message=f"{row.kind} {name} deleted")


def advertise(
    *, session: Session, now: datetime, principal: Principal, name: str, adv: AdvertisementIn, fresh_seconds: float
) -> AdvertisementAck:
    if principal.is_admin or principal.node_name != name:
        raise Forbidden(
            f"only node {name} itself may advertise for {name}; use that node's own token"
            if principal.is_admin
            else f"{principal.label} may only advertise for itself, not for {name}"
        )
    row = get_node(session, name=name, lock=True)
    if adv.kind.value != row.kind:
        raise BadRequest(f"node {name} is registered as a {row.kind}, but advertised itself as a {adv.kind.value}")
    if row.kind == "host" and adv.iqn and adv.iqn != row.iqn:
        _lock_initiator_name(session, adv.iqn)
        holder = session.scalars(
            select(NodeRow.name).where(NodeRow.kind == "host", NodeRow.iqn == adv.iqn, NodeRow.id != row.id)
        ).first()
        if holder is not None:  # a host binds only to its own name: names must not be shared
            raise Conflict(
                f"initiator name {adv.iqn} is advertised by host {holder}: each host needs its own "
                "initiator name (`difs host --initiator-name`)"
            )
    was = row.state
    row.iqn = adv.iqn
    row.capabilities = adv.services.model_dump(mode="json")
    row.portals = [p.model_dump(mode="json") for p in adv.portals]
    row.paths = [p.model_dump(mode="json") for p in adv.paths]
    row.lease_seconds = adv.lease_seconds
    row.lease_expires_at = lease_expiry(now, adv.lease_seconds)
    row.last_advertised_at = now
    row.advertisements += 1
    row.state = "alive"
    if row.kind == "controller":
        existing = {c.name: c for c in row.containers}
        for c in adv.containers:
            cont = existing.pop(c.name, None)
            if cont is None:
                cont = ContainerRow(node_id=row.id, name=c.name, source="advertised", created_at=now)
                session.add(cont)
                record_event(session, now=now, kind="container.discovered", subject=f"{name}/{c.name}",
                             message=f"controller {name} advertised container {c.name}")
            cont.capacity_bytes = c.capacity_bytes
            cont.pi_types = [int(t) for t in c.pi_types]
            cont.advertised = True
        for cont in existing.values():
            cont.advertised = False
    if was != "alive":
        record_event(
            session,
            now=now,
            kind="node.alive",
            subject=name,
            message=f"{row.kind} {name} is advertising"
            + (" again after its lease expired" if was == "expired" else ""),
        )
    session.flush()
    compliance.refresh(
        session=session, now=now, app_ids=compliance.apps_on_nodes(session, node_ids=[row.id]), fresh_seconds=fresh_seconds
    )
    return AdvertisementAck(node=name, state="alive", lease_seconds=adv.lease_seconds, lease_expires_at=row.lease_expires_at)


def _lock_initiator_name(session: Session, iqn: str) -> None:
    """Serialize the hosts taking ``iqn`` until this transaction ends, so the second one sees the
    first and is refused (PostgreSQL: a transaction advisory lock on the name; SQLite writers are
    serialized already). No unique constraint needed: the check above it is the rule."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(b"difs initiator name " + iqn.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))


def alive_leases(*, session: Session) -> list[tuple[str, int, float]]:
    """Every alive node as ``(name, renewal token, lease seconds)`` for the lease book."""
    rows = session.execute(
        select(NodeRow.name, NodeRow.advertisements, NodeRow.lease_seconds).where(NodeRow.state == "alive")
    )
    return [(name, count, float(seconds or 0)) for name, count, seconds in rows]


def expire_leases(*, session: Session, now: datetime, overdue: dict[str, int], fresh_seconds: float) -> list[str]:
    """Mark the alive nodes whose lease ran out (``overdue``: name -> the renewal token it was
    judged at; a node that renewed since keeps its lease) as expired, once; record events;
    re-evaluate compliance."""
    expired = []
    for name, token in sorted(overdue.items()):
        res = session.execute(
            update(NodeRow)
            .where(NodeRow.name == name, NodeRow.state == "alive", NodeRow.advertisements == token)
            .values(state="expired")
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            continue
        row = session.scalars(select(NodeRow).where(NodeRow.name == name)).one()
        expired.append(row)
        record_event(
            session,
            now=now,
            kind="node.lease_expired",
            subject=row.name,
            message=f"{row.kind} {row.name} stopped advertising: its lease of {row.lease_seconds:g} s "
            f"ran out (last advertised at {row.last_advertised_at.isoformat() if row.last_advertised_at else '?'}); "
            "its capabilities are withdrawn",
        )
    if expired:
        for app in apps_of_hosts(session, [r.id for r in expired if r.kind == "host"]):
            migrations.abandon(session=session, now=now, app=app, why=f"host {app.host.name} stopped advertising")
        session.expire_all()
        compliance.refresh(
            session=session,
            now=now,
            app_ids=compliance.apps_on_nodes(session, node_ids=[r.id for r in expired]),
            fresh_seconds=fresh_seconds,
        )
    return [r.name for r in expired]


def renewal_token(*, session: Session, name: str) -> int:
    """The node's renewal token (its advertisements counter) for the lease book."""
    return int(session.scalars(select(NodeRow.advertisements).where(NodeRow.name == name)).one())


def controller_volumes(*, session: Session, principal: Principal, name: str) -> list[ControllerVolume]:
    principal.require_self_or_admin(name)
    row = get_node(session, name=name, kind="controller")
    vols = session.scalars(select(VolumeRow).where(VolumeRow.controller_id == row.id).order_by(VolumeRow.lun))
    return [controller_volume(v) for v in vols]


def controller_containers(*, session: Session, principal: Principal, name: str) -> list[ContainerPublic]:
    principal.require_self_or_admin(name)
    row = get_node(session, name=name, kind="controller")
    return [container_public(c) for c in sorted(row.containers, key=lambda c: c.name)]


def host_bindings(*, session: Session, principal: Principal, name: str) -> list[BindingPublic]:
    principal.require_self_or_admin(name)
    row = get_node(session, name=name, kind="host")
    apps = session.scalars(select(ApplicationRow).where(ApplicationRow.host_id == row.id).order_by(ApplicationRow.name))
    return [b for a in apps if (b := binding_public(a)) is not None]


def report_binding_states(
    *, session: Session, now: datetime, name: str, report: BindingStatesReport, fresh_seconds: float
) -> int:
    """Store what the host says of its bindings; states of applications no longer bound to it
    (unbound meanwhile) are ignored. Returns how many were stored. A state that changed
    re-evaluates the application's compliance (``failed`` is an availability fault)."""
    row = get_node(session, name=name, kind="host")
    states = {b.application: b for b in report.bindings}
    stored = 0
    changed = []
    apps = session.scalars(select(ApplicationRow).where(ApplicationRow.host_id == row.id,
                                                        ApplicationRow.name.in_(states)))
    for app in apps:
        b = states[app.name]
        if b.migration is not None:
            migrations.ingest(session=session, now=now, app=app, report=b.migration)
        if b.policy_version > app.policy_version:
            continue  # from a binding the manager no longer holds
        if (app.host_state, app.host_state_reason) != (b.state, b.reason):
            if b.state == "failed":
                record_event(session, now=now, kind="app.failed", subject=app.name,
                             message=f"application {app.name} failed on host {name}: {b.reason}")
            app.host_state_at = now
            changed.append(app.id)
        app.host_state, app.host_state_reason = b.state, b.reason
        stored += 1
    if changed:
        session.flush()
        compliance.refresh(session=session, now=now, app_ids=changed, fresh_seconds=fresh_seconds)
    return stored


def apps_of_hosts(session: Session, host_ids: list[str]) -> list[ApplicationRow]:
    """The applications bound to these hosts."""
    if not host_ids:
        return []
    return list(session.scalars(select(ApplicationRow).where(ApplicationRow.host_id.in_(host_ids))))
