"""The policy catalogue: named policies and tiers (one table, one namespace)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.errors import Conflict, NotFound, PreconditionFailed
from difs.manager.models import PolicyRow
from difs.manager.schemas import PolicyCreate, PolicyPublic, PolicyUpdate
from difs.manager.services.common import dump_services, record_event
from difs.policy import PolicyServices, service_class

Kind = Literal["policy", "tier"]


def to_public(row: PolicyRow) -> PolicyPublic:
    services = PolicyServices.model_validate(row.services)
    return PolicyPublic(
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]
        builtin=row.builtin,
        description=row.description,
        services=services,
        version=row.version,
        service_class=service_class(services),
        summary=services.describe(),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _get(session: Session, *, kind: Kind | None, name: str, lock: bool = False) -> PolicyRow:
    q = select(PolicyRow).where(PolicyRow.name == name)
    if lock:
        q = q.with_for_update()
    row = session.scalars(q).one_or_none()
    if row is None or (kind is not None and row.kind != kind):
        raise NotFound(f"no {kind or 'policy or tier'} named {name!r}: list them with `difs {kind or 'policy'} list`")
    return row


def list_policies(*, session: Session, kind: Kind) -> list[PolicyPublic]:
    rows = session.scalars(select(PolicyRow).where(PolicyRow.kind == kind).order_by(PolicyRow.name))
    return [to_public(r) for r in rows]


def get_policy(*, session: Session, kind: Kind, name: str) -> PolicyPublic:
    return to_public(_get(session, kind=kind, name=name))


def resolve(*, session: Session, name: str) -> tuple[str, PolicyServices]:
    """A catalogue entry (policy or tier) by name: (name, services)."""
    row = _get(session, kind=None, name=name)
    return row.name, PolicyServices.model_validate(row.services)


def create_policy(*, session: Session, now: datetime, kind: Kind, data: PolicyCreate) -> PolicyPublic:
    existing = session.scalars(select(PolicyRow).where(PolicyRow.name == data.name)).one_or_none()
    if existing is not None:
        raise Conflict(
            f"the name {data.name!r} is already taken by {existing.kind} {existing.name}: "
            "policies and tiers share one namespace; pick another name"
        )
    row = PolicyRow(
        name=data.name,
        kind=kind,
        builtin=False,
        description=data.description,
        services=dump_services(data.services),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    record_event(session, now=now, kind=f"{kind}.created", subject=data.name, message=f"{kind} {data.name} created")
    return to_public(row)


def update_policy(
    *, session: Session, now: datetime, kind: Kind, name: str, data: PolicyUpdate, if_match: int | None
) -> PolicyPublic:
    row = _get(session, kind=kind, name=name, lock=True)
    if row.builtin:
        raise Conflict(
            f"{kind} {name} is built in and cannot be changed: create your own "
            f"(`difs {kind} create NAME --from {name}`)"
        )
    if if_match is not None and if_match != row.version:
        raise PreconditionFailed(
            f"{kind} {name} is at version {row.version}, not {if_match}: read it again and retry",
            current_version=row.version,
        )
    if data.services is not None:
        row.services = dump_services(data.services)
    if data.description is not None:
        row.description = data.description
    row.version += 1
    row.updated_at = now
    record_event(
        session, now=now, kind=f"{kind}.updated", subject=name, message=f"{kind} {name} is now version {row.version}"
    )
    session.flush()
    return to_public(row)


def delete_policy(*, session: Session, now: datetime, kind: Kind, name: str) -> None:
    row = _get(session, kind=kind, name=name, lock=True)
    if row.builtin:
        raise Conflict(f"{kind} {name} is built in and cannot be deleted")
    session.delete(row)
    record_event(session, now=now, kind=f"{kind}.deleted", subject=name, message=f"{kind} {name} deleted")
