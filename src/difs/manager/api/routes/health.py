"""Liveness and readiness: no token needed.

``/healthz`` answers 200 as long as the manager runs, and says whether its database answers
(``status: degraded``, ``database_up: false`` when not). ``/readyz`` answers 200 only when the
database answers, else the 503 problem document every API request gets meanwhile. Both try the
database (``SELECT 1``) and give up after ``PROBE_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from difs import __version__
from difs.manager.api.deps import ManagerState, StateDep
from difs.manager.api.responses import problems
from difs.manager.dbguard import DatabaseStatus, probe
from difs.manager.errors import DatabaseUnavailable
from difs.manager.schemas import Health

router = APIRouter(tags=["health"])

PROBE_TIMEOUT = 3.0


async def _probe(state: ManagerState) -> DatabaseStatus:
    try:
        return await asyncio.wait_for(run_in_threadpool(probe, state.engine, state.db), PROBE_TIMEOUT)
    except TimeoutError:
        state.db.failed(TimeoutError(f"no answer within {PROBE_TIMEOUT:g} s"))
        return state.db.status()


def _health(state: ManagerState, db: DatabaseStatus) -> Health:
    return Health(status="ok" if db.up else "degraded", version=__version__, database=state.engine.dialect.name,
                  database_up=db.up, database_error=db.reason,
                  database_down_seconds=None if db.down_for is None else round(db.down_for, 1))


@router.get("/healthz", response_model=Health)
async def healthz(state: StateDep) -> Health:
    return _health(state, await _probe(state))


@router.get("/readyz", response_model=Health, responses=problems(503))
async def readyz(state: StateDep) -> Health:
    db = await _probe(state)
    if not db.up:
        raise DatabaseUnavailable(f"the manager's database does not answer ({db.reason}); API requests get 503 until it does")
    return _health(state, db)
