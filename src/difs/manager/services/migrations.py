"""Policy change as a transaction: the plan (pure), and the migration when the data must move.

:func:`plan_change` decides, from plain values, what a new policy needs where the
application runs: nothing but new metadata (*in place*), or its data on a new volume
(a *migration*: the volume's T10 PI format must change, or its controller or container
cannot give the policy), and every reason it cannot be honoured at all — a requirement
the host's route cannot meet, an established path of the bound host that does not satisfy
it, no placement for the new volume. Nothing is written while the plan has a reason.

A migration (:class:`~difs.manager.models.MigrationRow`) is carried out by the host the
application is bound to:

1. :func:`start` creates the new volume (formatted for the new policy, on the planned
   controller, which creates it at its next volume sync) and the migration record
   (``copying``); the application keeps its volume and its old policy.
2. The host's binding carries the migration (``views.binding_migration``); the host copies,
   reports its progress in its bindings' state report (:func:`ingest`), and says
   ``pause`` before it pauses the application: the migration is then ``switching`` and can
   no longer be aborted.
3. When the host reports ``switched`` the change commits: the application's volume is the
   new one, its policy the new one (its version bumped), the old volume is dropped (its
   controller stops serving it at its next sync).

:func:`abort` (or a copy failure the host reports, or the host unbound or gone) drops the
new volume and leaves the application on its old volume with its old policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from difs.manager.errors import Conflict, NotFound
from difs.manager.models import ApplicationRow, MigrationRow, VolumeRow
from difs.manager.placement import (
    Choice,
    ContainerCandidate,
    HostCandidate,
    PlacementRequest,
    Rejection,
    check_in_place,
    place,
    qos_headroom_unmet,
)
from difs.manager.schemas import MigrationPublic, MigrationReport
from difs.manager.services import compliance
from difs.manager.services.common import get_app, record_event
from difs.manager.services.views import active_migration as active
from difs.policy import PathAdvert, PolicyServices, Route, Unmet, service_class, unmet

# --- the plan (pure) ------------------------------------------------------------------------------


def pi_type_of(services: PolicyServices | None) -> int:
    """The T10 PI type a policy needs its volume formatted with (0: none)."""
    i = services.integrity if services is not None else None
    return int(i.protection_information) if i is not None and i.protection_information else 0


def needs_format(have: int, want: int) -> bool:
    """Whether a volume formatted with PI type ``have`` must be copied to serve a policy that
    needs ``want`` (0: none). A PI-formatted volume serves a policy without PI as it is (the
    controller generates and checks the PI of data sent without it): only PI added, or
    another PI type, needs a new format."""
    return want != 0 and have != want


def _format(pi_type: int) -> str:
    return f"with T10 PI type {pi_type}" if pi_type else "without T10 PI"


@dataclass(frozen=True)
class VolumeNow:
    """One of the application's volumes as it is: its format and where it lives."""

    name: str
    size_bytes: int
    pi_type: int
    site: ContainerCandidate


@dataclass(frozen=True)
class ChangePlan:
    """What a policy change needs; ``refused`` empty: it can be honoured."""

    refused: list[str] = field(default_factory=list)
    #: requirements the route where the application runs cannot meet
    unmet: list[Unmet] = field(default_factory=list)
    #: why the data must move (empty: the change is made in place)
    move: list[str] = field(default_factory=list)
    #: where the new volume goes (a migration only)
    target: Choice | None = None
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def in_place(self) -> bool:
        return not self.refused and not self.move


def path_problems(
    *, services: PolicyServices | None, host: HostCandidate, paths: Sequence[PathAdvert], site: ContainerCandidate
) -> list[str]:
    """Why none of the host's established paths to ``site``'s controller satisfies the policy
    (empty: one does, or the host has established none there yet — it negotiates them when the
    application starts, and placement judged what the nodes advertise)."""
    ctl = site.controller.name
    mine = [p for p in paths if p.controller == ctl and p.up]
    if not mine:
        return []
    # T10 PI is end to end: a path carries the PI of the units it reaches (a path advertises
    # the formats of the units in use through it), and the plan chooses the format — PI is
    # judged with the host's and the container's capabilities, the path only for what travels
    if services is not None and services.integrity is not None \
            and services.integrity.protection_information is not None:
        services = services.model_copy(update={"integrity": services.integrity.model_copy(
            update={"protection_information": None})})
    why: list[str] = []
    for p in sorted(mine, key=lambda p: p.channel):
        route = Route(controller=site.controller, container=site.container, host=host.host,
                      negotiated=p.negotiated, channel=p.channel)
        missing = [u.reason for u in unmet(route, services)]
        if not missing:
            return []
        why += missing
    return [f"host {host.host.name} has no established path to controller {ctl} that satisfies the "
            f"policy: {'; '.join(dict.fromkeys(why))}"]


def plan_change(
    *,
    services: PolicyServices | None,
    volumes: Sequence[VolumeNow],
    host: HostCandidate | None,
    host_paths: Sequence[PathAdvert] = (),
    containers: Sequence[ContainerCandidate] = (),
    migrate: bool = False,
) -> ChangePlan:
    """Plan ``services`` for an application with ``volumes``, bound to ``host`` (None: unbound).

    ``containers`` are the placement candidates for a new volume; ``migrate`` says whether
    moving the data is allowed (otherwise a change that needs it is refused)."""
    want = pi_type_of(services)
    move = [f"volume {v.name} is formatted {_format(v.pi_type)}, the policy needs it {_format(want)}"
            for v in volumes if needs_format(v.pi_type, want)]
    sites = list({v.site.label: v.site for v in volumes}.values())
    for s in sites:
        for u in unmet(Route(controller=s.controller, container=s.container), services) + qos_headroom_unmet(s, services):
            move.append(f"{s.label} cannot give the policy: {u.reason}")
    here = check_in_place(services=services, sites=sites, host=host)
    if not move:
        refused = [u.reason for u in here]
        if host is not None:
            for s in sites:
                refused += path_problems(services=services, host=host, paths=host_paths, site=s)
        return ChangePlan(refused=list(dict.fromkeys(refused)), unmet=here)
    why_move = "the data must move to a new volume (" + "; ".join(move) + ")"
    refused = []
    if not migrate:
        refused.append(why_move + ": ask for a migration ('migrate': true; `difs app set-policy` does)")
    if host is None:
        refused.append("the application is bound to no host: a migration is copied by the host it is "
                       "bound to, bind it first")
    if len(volumes) != 1:
        refused.append(f"the application has {len(volumes)} volumes: a migration moves exactly one")
    if refused:
        if migrate:  # why it would have moved, then why it cannot
            refused.insert(0, why_move)
        return ChangePlan(refused=refused, unmet=here, move=move)
    assert host is not None
    (volume,) = volumes
    decision = place(request=PlacementRequest(size_bytes=volume.size_bytes, services=services, host=host.host.name),
                     containers=containers, hosts=[host])
    if decision.choice is None:
        lines = [f"{r.kind} {r.candidate}: {'; '.join(r.reasons)}" for r in decision.rejected]
        return ChangePlan(refused=[why_move, "no placement for the new volume: " + (" | ".join(lines) or "no container")],
                          unmet=here, move=move, rejected=decision.rejected)
    target = next(c for c in containers if c.controller.name == decision.choice.controller
                  and c.container.name == decision.choice.container)
    refused = path_problems(services=services, host=host, paths=host_paths, site=target)
    if refused:
        refused.insert(0, why_move)
    return ChangePlan(refused=refused, unmet=here, move=move, target=decision.choice, rejected=decision.rejected)


# --- the migration (database) ---------------------------------------------------------------------


def start(
    *, session: Session, now: datetime, app: ApplicationRow, plan: ChangePlan, source: str | None,
    services: PolicyServices | None, dumped: dict | None,
) -> MigrationRow:
    """Create the new volume where ``plan`` says and the migration record (``copying``)."""
    from difs.manager.services.volumes import allocate  # volumes imports nothing of this module

    assert plan.target is not None
    (old,) = app.volumes
    version = app.policy_version + 1
    new = allocate(session=session, now=now, app=app, controller=plan.target.controller,
                   container=plan.target.container, size_bytes=old.size_bytes)
    new.policy, new.policy_version, new.service_class = dumped, version, service_class(services)
    row = MigrationRow(
        application_id=app.id, state="copying", phase="waiting", source_volume=old.name, target_volume=new.name,
        target_controller=plan.target.controller, policy_source=source, services=dumped, policy_version=version,
        reasons=plan.move, bytes_copied=0, bytes_total=old.size_bytes, created_at=now, updated_at=now,
    )
    session.add(row)
    session.flush()
    session.refresh(app)
    record_event(
        session, now=now, kind="app.migration_started", subject=app.name,
        message=f"migration of {app.name} from {old.name} to {new.name} on {plan.target.controller} started "
        f"for policy version {version}: " + "; ".join(plan.move),
        migration=row.id,
    )
    return row


def public(row: MigrationRow, app: ApplicationRow) -> MigrationPublic:
    return MigrationPublic(
        id=row.id, application=app.name, state=row.state, phase=row.phase,  # type: ignore[arg-type]
        source_volume=row.source_volume, target_volume=row.target_volume, target_controller=row.target_controller,
        policy_source=row.policy_source, policy_version=row.policy_version, reasons=list(row.reasons or []),
        bytes_copied=row.bytes_copied, bytes_total=row.bytes_total, pause_ms=row.pause_ms, error=row.error,
        created_at=row.created_at, updated_at=row.updated_at, finished_at=row.finished_at,
    )


def get(*, session: Session, name: str) -> MigrationPublic:
    """The application's migration in progress, or else its last one."""
    app = get_app(session, name=name)
    if not app.migrations:
        raise NotFound(f"application {name} has never been migrated")
    row = active(app) or app.migrations[-1]
    return public(row, app)


def _volume(session: Session, name: str) -> VolumeRow | None:
    return session.scalars(select(VolumeRow).where(VolumeRow.name == name)).one_or_none()


def _end(session: Session, *, now: datetime, app: ApplicationRow, row: MigrationRow, state: str,
         error: str | None) -> None:
    """Abort or fail: the new volume goes, the application stays as it was."""
    new = _volume(session, row.target_volume)
    if new is not None:
        compliance.forget_evidence(session, volume_ids=[new.id])  # the copy's sessions on it
        session.delete(new)
    row.state, row.error, row.updated_at, row.finished_at = state, error, now, now
    session.flush()
    session.refresh(app)
    record_event(
        session, now=now, kind=f"app.migration_{state}", subject=app.name,
        message=f"migration of {app.name} to {row.target_volume} {state}"
        + (f": {error}" if error else "") + f"; it stays on {row.source_volume} with policy version {app.policy_version}",
        migration=row.id,
    )


def abort(*, session: Session, now: datetime, name: str, fresh_seconds: float) -> MigrationPublic:
    app = get_app(session, name=name, lock=True)
    row = active(app)
    if row is None:
        raise NotFound(f"application {name} has no migration in progress")
    if row.state == "switching":
        raise Conflict(f"the migration of {name} is switching the application to {row.target_volume}: "
                       "it can no longer be aborted; it ends done or failed")
    _end(session, now=now, app=app, row=row, state="aborted", error="aborted by request")
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
    return public(row, app)


def abandon(*, session: Session, now: datetime, app: ApplicationRow, why: str) -> None:
    """The host that copies is gone (unbound, or its lease ran out): a copy stops."""
    row = active(app)
    if row is not None and row.state == "copying":
        _end(session, now=now, app=app, row=row, state="aborted", error=why)


def _commit(session: Session, *, now: datetime, app: ApplicationRow, row: MigrationRow) -> None:
    before = app.policy_version
    app.policy_source, app.services, app.policy_version = row.policy_source, row.services, row.policy_version
    app.updated_at = now
    # the new policy is judged on new evidence (as for any policy change), and the old
    # volume's sessions go with it
    compliance.forget_evidence(session, app_id=app.id)
    old = _volume(session, row.source_volume)
    if old is not None:
        session.delete(old)
    row.state, row.phase, row.updated_at, row.finished_at = "done", "switched", now, now
    row.bytes_copied = row.bytes_total
    session.flush()
    session.refresh(app)
    record_event(
        session, now=now, kind="app.policy_updated", subject=app.name,
        message=f"policy of {app.name} updated (version {before} -> {app.policy_version}) by migration to "
        f"{row.target_volume}" + (f" from {row.policy_source}" if row.policy_source else ""),
        version=app.policy_version,
    )
    record_event(
        session, now=now, kind="app.migration_done", subject=app.name,
        message=f"migration of {app.name} done: now on {row.target_volume}; {row.source_volume} dropped; "
        f"I/O paused {row.pause_ms or 0:.1f} ms at the switch",
        migration=row.id,
    )


def ingest(*, session: Session, now: datetime, app: ApplicationRow, report: MigrationReport,
           fresh_seconds: float = compliance.DEFAULT_FRESH_SECONDS) -> None:
    """What the bound host says of the migration it runs."""
    row = active(app)
    if row is None or row.id != report.id:
        last = app.migrations[-1] if app.migrations else None
        if last is not None and last.id == report.id and last.state == "done" and report.pause_ms is not None:
            last.pause_ms = report.pause_ms  # the whole pause, measured once the I/O resumed
        return  # else ended meanwhile (aborted): the host drops it when it reads its binding
    row.phase, row.updated_at = report.phase, now
    row.bytes_copied, row.bytes_total = report.bytes_copied, report.bytes_total or row.bytes_total
    if report.pause_ms is not None:
        row.pause_ms = report.pause_ms
    if report.phase == "failed":
        _end(session, now=now, app=app, row=row, state="failed", error=report.error or "the copy failed")
    elif report.phase == "pause" and row.state == "copying":
        row.state = "switching"
    elif report.phase == "switched":
        _commit(session, now=now, app=app, row=row)
    else:
        return
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
