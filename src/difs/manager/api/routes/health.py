"""Liveness: no token needed."""

from __future__ import annotations

from fastapi import APIRouter

from difs import __version__
from difs.manager.api.deps import StateDep
from difs.manager.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(state: StateDep) -> Health:
    return Health(status="ok", version=__version__, database=state.engine.dialect.name)
