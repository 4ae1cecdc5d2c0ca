"""The manager application: ``create_app(settings)`` builds the FastAPI app.

It creates the engine, runs the migrations, installs the problem handler,
the request guard (body size limit, token checked before a body is read),
the API routers under ``/api/v1``, metrics at ``/metrics`` and the dashboard
at ``/``. A background task expires leases every ``sweep_interval_seconds`` so
that events and compliance changes happen even when nobody is asking; it also tries the
database each round, so an outage and the recovery are noticed without requests
(``dbguard.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from difs import __version__
from difs.manager import metrics
from difs.manager.api import problems
from difs.manager.api.deps import ManagerState, sweep
from difs.manager.api.guard import RequestGuard
from difs.manager.api.routes import apps, containers, health, nodes, nodeviews, overview, policies, volumes
from difs.manager.clock import Clock, system_clock
from difs.manager.config import Settings
from difs.manager.db import make_engine, run_migrations, session_factory
from difs.manager.dbguard import is_unavailable, probe, reason
from difs.manager.schemas import Problem
from difs.util.logs import log_event

log = logging.getLogger("difs.manager")
STATIC = Path(__file__).with_name("static")

API_PREFIX = "/api/v1"


def _migrate_when_available(engine, wait: float) -> None:
    """Run the migrations; while the database is unreachable, retry (0.5 s doubling to 5 s,
    each retry logged) for at most ``wait`` seconds, then let the last error out. Any other
    error (a bad URL, a failing migration) is raised at once."""
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            run_migrations(engine)
            return
        except Exception as exc:
            if not is_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            log_event(log, "database unavailable at start; waiting for it", level=logging.WARNING,
                      reason=reason(exc), retry_in=delay,
                      gives_up_in=round(deadline - time.monotonic(), 1))
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def create_app(settings: Settings, *, clock: Clock = system_clock, background_sweep: bool = True) -> FastAPI:
    engine = make_engine(settings.database_url)
    _migrate_when_available(engine, settings.db_wait_seconds)
    state = ManagerState(settings=settings, engine=engine, factory=session_factory(engine), clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweeper(state)) if background_sweep and settings.sweep_interval_seconds > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine.dispose()

    app = FastAPI(
        title="difs manager",
        version=__version__,
        description="Per-application data-in-flight services: policies, tiers, nodes, the central "
        "depository, placement, binding and compliance. Errors are RFC 9457 problem documents.",
        lifespan=lifespan,
    )
    app.state.difs = state
    problems.install(app)
    for router in (
        health.router,
        policies.policies_router,
        policies.tiers_router,
        nodes.router,
        containers.router,
        apps.router,
        volumes.router,
        nodeviews.router,
        overview.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    metrics.install(app, state.factory)
    app.add_middleware(RequestGuard, max_body=settings.max_body_bytes, api_prefix=API_PREFIX + "/")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in problem.pop("$defs", {}).items():
        comps.setdefault(name, sub)
    comps["Problem"] = problem
    app.openapi_schema = schema
    return schema


async def _sweeper(state: ManagerState) -> None:
    while True:
        await asyncio.sleep(state.settings.sweep_interval_seconds)
        try:
            if not (await run_in_threadpool(probe, state.engine, state.db)).up:
                continue  # logged once per outage; leases are judged again when it is back
            expired = await run_in_threadpool(sweep, state, state.clock())
            if expired:
                log.info("leases expired: %s", ", ".join(expired))
        except Exception as exc:  # keep sweeping; the next round retries
            if is_unavailable(exc):
                state.db.failed(exc)
            else:
                log.exception("lease sweep failed")
