"""Compliance bookkeeping: store the evidence nodes report, gather it, evaluate (pure), store the
judgement, record an event on every change.

Evidence is kept as the latest window per key — a controller's per controller x volume x
initiator x channel, a host's per host x application x controller x channel — with the time it
arrived. A window without any I/O does not replace a stored window with I/O that is still fresh
(so an idle moment does not erase what was just observed; it ages out after ``fresh_seconds``).
Entries naming a volume or an application the reporting node has no business with are ignored,
each with its reason in the answer (the rest of the report is stored: a node reports again only
what the manager did not accept, so refusing the whole report would lose the good entries and
make the node resend them forever). Evidence of an application is dropped when its policy
changes, when it is unbound or bound elsewhere, and with its volumes or the node that reported it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from difs.manager.compliance_rules import (
    EstablishedPath,
    PathObservation,
    SessionObservation,
    Site,
    evaluate,
)
from difs.manager.errors import NotFound
from difs.manager.models import ApplicationRow, NodeRow, PathEvidenceRow, SessionEvidenceRow, VolumeRow
from difs.manager.schemas import CompliancePublic, EvidenceAck, IgnoredEvidence, PathStatsReport, StatsAck
from difs.manager.services.common import container_advert, get_node, node_view, record_event, services_of
from difs.manager.services.views import allowed_initiators, compliance_public
from difs.policy import NodeKind, NodeView, PathAdvert
from difs.policy.evidence import ControllerEvidenceReport, HostEvidenceReport, PathEvidence, SessionEvidence

DEFAULT_FRESH_SECONDS = 120.0


def _age(now: datetime, reported_at: datetime) -> float:
    return max(0.0, (now - reported_at).total_seconds())


def _inputs(session: Session, *, now: datetime, app: ApplicationRow) -> dict:
    sites = [
        Site(
            volume=v.name,
            controller=node_view(v.container.node, now),
            container=container_advert(v.container),
            allowed_initiators=tuple(allowed_initiators(app)),
        )
        for v in app.volumes
    ]
    volume_ids = [v.id for v in app.volumes]
    rows = session.scalars(select(SessionEvidenceRow).where(SessionEvidenceRow.volume_id.in_(volume_ids))).all() \
        if volume_ids else []
    reporters = {r.id: r.name for r in session.scalars(
        select(NodeRow).where(NodeRow.id.in_({r.controller_id for r in rows})))} if rows else {}
    sessions = [
        SessionObservation(controller=reporters[r.controller_id], evidence=SessionEvidence.model_validate(r.data),
                           window_seconds=r.window_seconds, age_seconds=_age(now, r.reported_at))
        for r in rows
    ]
    host = app.host
    established: list[EstablishedPath] = []
    paths: list[PathObservation] = []
    if host is not None:
        switch_names = {s for p in host.paths or () for s in p.get("via", ())}
        switches = {
            r.name: node_view(r, now)
            for r in session.scalars(select(NodeRow).where(NodeRow.name.in_(switch_names)))
        } if switch_names else {}
        for raw in host.paths or ():
            p = PathAdvert.model_validate(raw)
            if p.up:
                established.append(EstablishedPath(
                    controller=p.controller, channel=p.channel, negotiated=p.negotiated,
                    switches=tuple(switches.get(s) or NodeView(name=s, kind=NodeKind.SWITCH, alive=False)
                                   for s in p.via)))
        paths = [
            PathObservation(host=host.name, evidence=PathEvidence.model_validate(r.data),
                            window_seconds=r.window_seconds, age_seconds=_age(now, r.reported_at))
            for r in session.scalars(select(PathEvidenceRow).where(PathEvidenceRow.application_id == app.id,
                                                                   PathEvidenceRow.host_id == host.id))
        ]
    return {
        "sites": sites,
        "host": node_view(host, now) if host is not None else None,
        "established": established,
        "sessions": sessions,
        "paths": paths,
        "initiator": app.initiator_iqn if app.host_id else None,
        "binding_state": app.host_state if app.host_id else None,
        "binding_reason": app.host_state_reason if app.host_id else None,
    }


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
        report = evaluate(services=services_of(app.services), fresh_seconds=fresh_seconds,
                          **_inputs(session, now=now, app=app))
        before = app.compliance_state
        app.compliance = {
            "evaluated_at": now.isoformat(),
            "fresh_seconds": fresh_seconds,
            "services": [r.model_dump() for r in report.services],
            "evidence": [e.model_dump(mode="json") for e in report.evidence],
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


def ingest_stats(*, session: Session, host_name: str, report: PathStatsReport) -> StatsAck:
    """Per-path statistics from hosts of earlier versions: checked, and not used (compliance is
    judged from evidence, ``PUT /hosts/NAME/evidence``); nothing is stored."""
    get_node(session, name=host_name, kind="host")
    return StatsAck(accepted=0)


# --- evidence ------------------------------------------------------------------------------------


def _fresh(now: datetime, reported_at: datetime, fresh_seconds: float) -> bool:
    return _age(now, reported_at) <= fresh_seconds


def _session_active(e: SessionEvidence) -> bool:
    return bool(e.commands or e.rejected or e.digest_errors or e.pi.failures)


def _path_active(e: PathEvidence) -> bool:
    return bool(e.ios or e.rejected or e.failed or e.digest_errors or e.pi.failures or e.pi_rejected)


def _keep_stored(row, incoming_active: bool, active, model, now: datetime, fresh_seconds: float) -> bool:
    """An idle window does not replace a fresh stored window with I/O."""
    return (not incoming_active and _fresh(now, row.reported_at, fresh_seconds)
            and active(model.model_validate(row.data)))


def ingest_controller_evidence(
    *, session: Session, now: datetime, name: str, report: ControllerEvidenceReport, fresh_seconds: float
) -> EvidenceAck:
    """Store a controller's window per session x volume (entries for volumes it does not hold are
    ignored with the reason) and re-evaluate the applications concerned."""
    ctl = get_node(session, name=name, kind="controller")
    names = {e.volume for e in report.sessions}
    vols = {v.name: v for v in session.scalars(select(VolumeRow).where(VolumeRow.name.in_(names)))} if names else {}
    stored = {(r.volume_id, r.initiator, r.channel): r for r in session.scalars(
        select(SessionEvidenceRow).where(SessionEvidenceRow.controller_id == ctl.id))}
    ignored: list[IgnoredEvidence] = []
    seen: set[tuple[str, str, int]] = set()
    apps: set[str] = set()
    for e in report.sessions:
        entry = f"volume {e.volume} initiator {e.initiator} channel {e.channel}"
        vol = vols.get(e.volume)
        reason = None
        if vol is None:
            reason = f"no volume named {e.volume}"
        elif vol.controller_id != ctl.id:
            reason = f"volume {e.volume} is not on controller {name}"
        elif e.application is not None and e.application != vol.application.name:
            reason = f"volume {e.volume} belongs to application {vol.application.name}, not {e.application}"
        elif (vol.id, e.initiator, e.channel) in seen:
            reason = "a second entry for the same volume, initiator and channel in one report"
        if reason is not None:
            ignored.append(IgnoredEvidence(entry=entry, reason=reason))
            continue
        key = (vol.id, e.initiator, e.channel)
        seen.add(key)
        apps.add(vol.application_id)
        row = stored.get(key)
        if row is None:
            row = SessionEvidenceRow(controller_id=ctl.id, volume_id=vol.id, initiator=e.initiator, channel=e.channel)
            session.add(row)
        elif _keep_stored(row, _session_active(e), _session_active, SessionEvidence, now, fresh_seconds):
            continue
        row.window_seconds = report.window_seconds
        row.data = e.model_dump(mode="json")
        row.reported_at = now
    session.flush()
    refresh(session=session, now=now, app_ids=apps, fresh_seconds=fresh_seconds)
    return EvidenceAck(accepted=len(report.sessions) - len(ignored), ignored=ignored)


def ingest_host_evidence(
    *, session: Session, now: datetime, name: str, report: HostEvidenceReport, fresh_seconds: float
) -> EvidenceAck:
    """Store a host's window per application x path (entries for applications not bound to it are
    ignored with the reason) and re-evaluate the applications concerned."""
    host = get_node(session, name=name, kind="host")
    names = {p.application for p in report.paths}
    apps = {a.name: a for a in session.scalars(
        select(ApplicationRow).where(ApplicationRow.name.in_(names)))} if names else {}
    stored = {(r.application_id, r.controller, r.channel): r for r in session.scalars(
        select(PathEvidenceRow).where(PathEvidenceRow.host_id == host.id))}
    ignored: list[IgnoredEvidence] = []
    touched: set[str] = set()
    for p in report.paths:
        app = apps.get(p.application)
        if app is None or app.host_id != host.id:
            ignored.append(IgnoredEvidence(
                entry=f"application {p.application} controller {p.controller} channel {p.channel}",
                reason=f"no application named {p.application}" if app is None
                else f"application {p.application} is not bound to host {name}"))
            continue
        key = (app.id, p.controller, p.channel)
        touched.add(app.id)
        row = stored.get(key)
        if row is None:
            row = PathEvidenceRow(host_id=host.id, application_id=app.id, controller=p.controller, channel=p.channel)
            session.add(row)
            stored[key] = row
        elif _keep_stored(row, _path_active(p), _path_active, PathEvidence, now, fresh_seconds):
            continue
        row.window_seconds = report.window_seconds
        row.data = p.model_dump(mode="json")
        row.reported_at = now
    session.flush()
    refresh(session=session, now=now, app_ids=touched, fresh_seconds=fresh_seconds)
    return EvidenceAck(accepted=len(report.paths) - len(ignored), ignored=ignored)


def forget_evidence(
    session: Session, *, app_id: str | None = None, volume_ids: Iterable[str] = (), node_id: str | None = None,
    paths_only: bool = False,
) -> None:
    """Drop stored evidence: of an application (its paths, and its volumes' sessions unless
    ``paths_only``), of volumes, or reported by a node."""
    vols = set(volume_ids)
    if app_id is not None:
        session.execute(delete(PathEvidenceRow).where(PathEvidenceRow.application_id == app_id))
        if not paths_only:
            vols |= set(session.scalars(select(VolumeRow.id).where(VolumeRow.application_id == app_id)))
    if vols:
        session.execute(delete(SessionEvidenceRow).where(SessionEvidenceRow.volume_id.in_(vols)))
    if node_id is not None:
        session.execute(delete(PathEvidenceRow).where(PathEvidenceRow.host_id == node_id))
        session.execute(delete(SessionEvidenceRow).where(SessionEvidenceRow.controller_id == node_id))
