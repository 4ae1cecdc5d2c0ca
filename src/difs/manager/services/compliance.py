"""Compliance bookkeeping: gather observations, evaluate (pure), store, emit events on change."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.compliance_rules import EstablishedPath, Site, evaluate
from difs.manager.errors import NotFound
from difs.manager.models import ApplicationRow, NodeRow, PathStatRow, VolumeRow
from difs.manager.schemas import CompliancePublic, PathStatsReport, StatsAck
from difs.manager.services.common import container_advert, get_node, node_view, record_event, services_of
from difs.manager.services.views import allowed_initiators, compliance_public
from difs.policy import NodeKind, NodeView, PathAdvert

DEFAULT_FRESH_SECONDS = 120.0


def _inputs(session: Session, *, now: datetime, app: ApplicationRow, fresh_seconds: float):
    sites = [
        Site(
            volume=v.name,
            controller=node_view(v.container.node, now),
            container=container_advert(v.container),
            allowed_initiators=tuple(allowed_initiators(app)),
        )
        for v in app.volumes
    ]
    host = app.host
    host_view = node_view(host, now) if host is not None else None
    paths: list[EstablishedPath] = []
    if host is not None:
        stats = {
            (s.controller, s.channel): s
            for s in session.scalars(
                select(PathStatRow).where(
                    PathStatRow.host_id == host.id,
                    PathStatRow.application_id == app.id,
                    PathStatRow.reported_at >= now - timedelta(seconds=fresh_seconds),
                )
            )
        }
        switch_names = {s for p in host.paths or () for s in p.get("via", ())}
        switches = {
            r.name: node_view(r, now)
            for r in session.scalars(select(NodeRow).where(NodeRow.name.in_(switch_names)))
        } if switch_names else {}
        controllers = {s.controller.name for s in sites}
        for raw in host.paths or ():
            p = PathAdvert.model_validate(raw)
            if p.controller not in controllers or not p.up:
                continue
            st = stats.pop((p.controller, p.channel), None)
            paths.append(
                EstablishedPath(
                    controller=p.controller,
                    channel=p.channel,
                    negotiated=p.negotiated,
                    switches=tuple(
                        switches.get(s) or NodeView(name=s, kind=NodeKind.SWITCH, alive=False) for s in p.via
                    ),
                    ios=st.ios if st else 0,
                    bytes=st.bytes if st else 0,
                    rejected=st.rejected if st else 0,
                    digest_errors=st.digest_errors if st else 0,
                    pi_errors=st.pi_errors if st else 0,
                    qos_waits=st.qos_waits if st else 0,
                    latency_ms=st.latency_ms if st else None,
                    window_seconds=st.window_seconds if st else None,
                )
            )
        # statistics for a path the host no longer advertises: its services are unknown
        from difs.policy import NegotiatedServicesModel

        for (ctl, chan), st in stats.items():
            if st.ios:
                paths.append(
                    EstablishedPath(
                        controller=ctl,
                        channel=chan,
                        negotiated=NegotiatedServicesModel(),
                        ios=st.ios,
                        bytes=st.bytes,
                        rejected=st.rejected,
                        digest_errors=st.digest_errors,
                        pi_errors=st.pi_errors,
                        qos_waits=st.qos_waits,
                        latency_ms=st.latency_ms,
                        window_seconds=st.window_seconds,
                    )
                )
    return sites, host_view, paths


def refresh(
    *,
    session: Session,
    now: datetime,
    app_ids: Iterable[str] | None = None,
    fresh_seconds: float = DEFAULT_FRESH_SECONDS,
) -> None:
    """Re-evaluate compliance of the given applications (all when None); event on every change."""
    q = select(ApplicationRow)
    if app_ids is not None:
        ids = list(set(app_ids))
        if not ids:
            return
        q = q.where(ApplicationRow.id.in_(ids))
    for app in session.scalars(q).all():
        sites, host, paths = _inputs(session, now=now, app=app, fresh_seconds=fresh_seconds)
        report = evaluate(
            services=services_of(app.services),
            sites=sites,
            host=host,
            paths=paths,
            initiator=app.initiator_iqn if app.host_id else None,
        )
        before = app.compliance_state
        app.compliance = {
            "evaluated_at": now.isoformat(),
            "services": [r.model_dump() for r in report.services],
        }
        if report.state != before:
            app.compliance_state = report.state
            reasons = [f"{r.service}: {r.observed}" for r in report.services if r.state != "compliant"]
            record_event(
                session,
                now=now,
                kind="compliance.changed",
                subject=app.name,
                message=f"application {app.name} is now {report.state.replace('_', '-')}"
                + (f" ({'; '.join(reasons)})" if reasons and report.state != "compliant" else ""),
                before=before,
                after=report.state,
            )


def apps_on_nodes(session: Session, *, node_ids: Iterable[str]) -> set[str]:
    """Applications affected by a change of these nodes (their volumes' controllers or their host)."""
    ids = list(set(node_ids))
    if not ids:
        return set()
    by_volume = session.scalars(select(VolumeRow.application_id).where(VolumeRow.controller_id.in_(ids)))
    by_host = session.scalars(select(ApplicationRow.id).where(ApplicationRow.host_id.in_(ids)))
    return set(by_volume) | set(by_host)


def get_compliance(*, session: Session, name: str) -> CompliancePublic:
    app = session.scalars(select(ApplicationRow).where(ApplicationRow.name == name)).one_or_none()
    if app is None:
        raise NotFound(f"no application named {name!r}: list them with `difs app list`")
    return compliance_public(app)


def list_compliance(*, session: Session) -> list[CompliancePublic]:
    return [compliance_public(a) for a in session.scalars(select(ApplicationRow).order_by(ApplicationRow.name))]


def ingest_stats(
    *, session: Session, now: datetime, host_name: str, report: PathStatsReport, fresh_seconds: float
) -> StatsAck:
    """Store a host's per-path statistics (latest per app/controller/channel) and re-evaluate."""
    host = get_node(session, name=host_name, kind="host")
    names = {p.application for p in report.paths}
    apps = {
        a.name: a for a in session.scalars(select(ApplicationRow).where(ApplicationRow.name.in_(names)))
    } if names else {}
    unknown = sorted(names - set(apps))
    if unknown:
        raise NotFound(f"statistics name unknown applications: {', '.join(unknown)}")
    existing = {
        (s.application_id, s.controller, s.channel): s
        for s in session.scalars(select(PathStatRow).where(PathStatRow.host_id == host.id))
    }
    for p in report.paths:
        app = apps[p.application]
        key = (app.id, p.controller, p.channel)
        row = existing.get(key)
        if row is None:
            row = PathStatRow(host_id=host.id, application_id=app.id, controller=p.controller, channel=p.channel)
            session.add(row)
            existing[key] = row
        row.window_seconds = report.window_seconds
        for f in ("ios", "bytes", "rejected", "digest_errors", "pi_errors", "qos_waits", "latency_ms"):
            setattr(row, f, getattr(p, f))
        row.reported_at = now
    session.flush()
    refresh(session=session, now=now, app_ids=[a.id for a in apps.values()], fresh_seconds=fresh_seconds)
    return StatsAck(accepted=len(report.paths))
