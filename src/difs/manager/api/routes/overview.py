"""Placement preview, compliance overview, events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from difs.manager.api.deps import AdminDep, NowDep, SessionDep
from difs.manager.api.responses import problems
from difs.manager.schemas import CompliancePublic, EventPublic, PlacementPublic, PlacementRequest
from difs.manager.services import apps, compliance, events

router = APIRouter(tags=["overview"])


@router.post("/placement", response_model=PlacementPublic, responses=problems(403, 404))
def preview_placement(data: PlacementRequest, session: SessionDep, now: NowDep, _: AdminDep) -> PlacementPublic:
    """Where a volume with this policy would go, and why every other candidate was rejected."""
    return apps.preview_placement(session=session, now=now, data=data)


@router.get("/compliance", response_model=list[CompliancePublic], responses=problems(403))
def list_compliance(session: SessionDep, _: AdminDep) -> list[CompliancePublic]:
    return compliance.list_compliance(session=session)


@router.get("/events", response_model=list[EventPublic], responses=problems(403))
def list_events(
    session: SessionDep,
    _: AdminDep,
    after: Annotated[int, Query(ge=0, le=1 << 62, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    kind: Annotated[str | None, Query(max_length=40, description="kind prefix, e.g. 'node.'")] = None,
    subject: Annotated[str | None, Query(max_length=200)] = None,
    latest: Annotated[bool, Query(description="the last `limit` events (still oldest first)")] = False,
) -> list[EventPublic]:
    return events.list_events(session=session, after=after, limit=limit, kind=kind, subject=subject,
                              latest=latest)
