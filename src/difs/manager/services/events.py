"""The event log: what happened, oldest first, paged by id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.models import EventRow
from difs.manager.schemas import EventPublic


def list_events(*, session: Session, after: int, limit: int, kind: str | None, subject: str | None,
                latest: bool = False) -> list[EventPublic]:
    """Events with an id above ``after``, oldest first: the first ``limit`` of them, or with
    ``latest`` the last ``limit``."""
    order = EventRow.id.desc() if latest else EventRow.id
    q = select(EventRow).where(EventRow.id > after).order_by(order).limit(limit)
    if kind is not None:
        q = q.where(EventRow.kind.startswith(kind, autoescape=True))
    if subject is not None:
        q = q.where(EventRow.subject == subject)
    rows = list(session.scalars(q))
    if latest:
        rows.reverse()
    return [
        EventPublic(id=e.id, at=e.at, kind=e.kind, subject=e.subject, message=e.message, data=e.data or {})
        for e in rows
    ]
