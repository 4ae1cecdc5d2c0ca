"""Prometheus metrics of the manager: request counts and latencies, and fleet gauges read at scrape."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from difs.manager.db import transaction
from difs.manager.models import ApplicationRow, ContainerRow, EventRow, NodeRow, VolumeRow


class FleetCollector(Collector):
    """Gauges computed from the database at each scrape (nothing cached, nothing to drift)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nodes = GaugeMetricFamily("difs_manager_nodes", "Registered nodes by kind and state", labels=["kind", "state"])
        apps = GaugeMetricFamily("difs_manager_applications", "Applications by compliance state", labels=["compliance"])
        vols = GaugeMetricFamily("difs_manager_volumes", "Volumes")
        cap = GaugeMetricFamily(
            "difs_manager_container_capacity_bytes", "Container capacity", labels=["controller", "container"]
        )
        alloc = GaugeMetricFamily(
            "difs_manager_container_allocated_bytes", "Bytes allocated to volumes", labels=["controller", "container"]
        )
        events = GaugeMetricFamily("difs_manager_last_event_id", "Id of the newest event")
        with transaction(self._factory, write=False) as s:
            for kind, state, n in s.execute(select(NodeRow.kind, NodeRow.state, func.count()).group_by(NodeRow.kind, NodeRow.state)):
                nodes.add_metric([kind, state], n)
            for state, n in s.execute(
                select(ApplicationRow.compliance_state, func.count()).group_by(ApplicationRow.compliance_state)
            ):
                apps.add_metric([state], n)
            vols.add_metric([], s.scalar(select(func.count()).select_from(VolumeRow)) or 0)
            used = dict(
                s.execute(select(VolumeRow.container_id, func.sum(VolumeRow.size_bytes)).group_by(VolumeRow.container_id)).all()
            )
            for cid, ctl, name, capacity in s.execute(
                select(ContainerRow.id, NodeRow.name, ContainerRow.name, ContainerRow.capacity_bytes).join(NodeRow)
            ):
                cap.add_metric([ctl, name], capacity)
                alloc.add_metric([ctl, name], used.get(cid, 0) or 0)
            events.add_metric([], s.scalar(select(func.max(EventRow.id))) or 0)
        yield from (nodes, apps, vols, cap, alloc, events)


def install(app: FastAPI, factory: sessionmaker[Session]) -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "difs_manager_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram("difs_manager_request_seconds", "HTTP request latency", ["route"], registry=registry)
    registry.register(FleetCollector(factory))

    @app.middleware("http")
    async def _count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            requests.labels(request.method, path, str(status)).inc()
            latency.labels(path).observe(time.perf_counter() - start)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")
