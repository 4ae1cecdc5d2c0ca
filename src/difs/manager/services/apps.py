"""Applications and the central depository (addDIFS / getDIFS / updateDIFS / deleteDIFS).

An application's policy is stored here once and mirrored into each of its
volumes (``VolumeRow.policy`` / ``policy_version`` / ``service_class``), which is
what controllers read and keep. Every change of the policy — add, update or
delete — bumps ``policy_version``; a change is applied only when it is
feasible where the application runs (its volumes' controllers and containers,
and its host's path to them), otherwise it is refused with the unmet
requirements and nothing changes. Concurrent updates are serialised on the
application row (``SELECT ... FOR UPDATE``; on SQLite the writer lock) and can
be made conditional with ``If-Match: <version>``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from difs.manager.auth import Principal
from difs.manager.errors import BadRequest, Conflict, Forbidden, Infeasible, NotFound, PreconditionFailed
from difs.manager.models import ApplicationRow, MigrationRow, NodeRow
from difs.manager.placement import PlacementRequest as PurePlacementRequest
from difs.manager.placement import check_in_place, place
from difs.manager.schemas import (
    AppPolicyPublic,
    AppPolicySet,
    ApplicationCreate,
    ApplicationCreated,
    ApplicationPublic,
    BindingPublic,
    BindRequest,
    PlacementChoicePublic,
    PlacementPublic,
    PlacementRequest,
    RejectionPublic,
)
from difs.manager.services import compliance, migrations, policies
from difs.manager.services.candidates import app_sites, container_candidates, host_candidate, host_candidates
from difs.manager.services.common import dump_services, get_app, get_node, node_alive, record_event, services_of
from difs.manager.services.views import app_policy_public, app_public, binding_public
from difs.manager.services.volumes import allocate, placement_problem
from difs.policy import PathAdvert, PolicyServices, service_class


def _choose(session: Session, *, policy: str | None, services: PolicyServices | None) -> tuple[str | None, PolicyServices | None]:
    if policy is not None:
        return policies.resolve(session=session, name=policy)
    return None, services


def _placement_public(decision) -> PlacementPublic:
    return PlacementPublic(
        feasible=decision.choice is not None,
        choice=None if decision.choice is None else PlacementChoicePublic(**decision.choice.model_dump()),
        rejected=[RejectionPublic(**r.model_dump()) for r in decision.rejected],
    )


def preview_placement(*, session: Session, now: datetime, data: PlacementRequest) -> PlacementPublic:
    if data.policy is not None and data.services is not None:
        raise BadRequest("give either 'policy' or 'services', not both")
    _, services = _choose(session, policy=data.policy, services=data.services)
    decision = place(
        request=PurePlacementRequest(size_bytes=data.size_bytes, services=services, host=data.host),
        containers=container_candidates(session, now=now),
        hosts=host_candidates(session, now=now),
    )
    return _placement_public(decision)


def create(*, session: Session, now: datetime, data: ApplicationCreate, fresh_seconds: float) -> ApplicationCreated:
    if session.scalar(select(ApplicationRow.id).where(ApplicationRow.name == data.name)) is not None:
        raise Conflict(f"an application named {data.name!r} already exists: see `difs app show {data.name}`")
    source, services = _choose(session, policy=data.policy, services=data.services)
    decision = place(
        request=PurePlacementRequest(size_bytes=data.size_bytes, services=services, host=data.host),
        containers=container_candidates(session, now=now),
        hosts=host_candidates(session, now=now),
    )
    if decision.choice is None:
        raise placement_problem(decision, f"application {data.name}")
    app = ApplicationRow(
        name=data.name,
        policy_source=source,
        services=dump_services(services),
        policy_version=0 if services is None else 1,
        compliance_state="unknown",
        created_at=now,
        updated_at=now,
    )
    session.add(app)
    session.flush()
    record_event(
        session, now=now, kind="app.created", subject=data.name,
        message=f"application {data.name} created"
        + (f" with policy {source or 'inline'} (version 1)" if services is not None else " without a policy"),
    )
    allocate(session=session, now=now, app=app, controller=decision.choice.controller,
             container=decision.choice.container, size_bytes=data.size_bytes)
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
    session.refresh(app)
    return ApplicationCreated(**app_public(app).model_dump(), placement=_placement_public(decision))


def list_apps(*, session: Session) -> list[ApplicationPublic]:
    return [app_public(a) for a in session.scalars(select(ApplicationRow).order_by(ApplicationRow.name))]


def get(*, session: Session, name: str) -> ApplicationPublic:
    return app_public(get_app(session, name=name))


def remove(*, session: Session, now: datetime, name: str) -> None:
    app = get_app(session, name=name, lock=True)
    if app.host_id is not None:
        raise Conflict(
            f"application {name} is bound to host {app.host.name if app.host else '?'}: "
            f"unbind it first (`difs app unbind {name}`)"
        )
    compliance.forget_evidence(session, app_id=app.id)
    for v in list(app.volumes):
        record_event(session, now=now, kind="volume.deleted", subject=v.name, message=f"volume {v.name} of {name} deleted")
        session.delete(v)
    session.execute(delete(MigrationRow).where(MigrationRow.application_id == app.id))
    session.delete(app)
    record_event(session, now=now, kind="app.deleted", subject=name, message=f"application {name} deleted")


# --- the central depository ----------------------------------------------------------------------


def get_difs(*, session: Session, name: str) -> AppPolicyPublic:
    """getDIFS."""
    app = get_app(session, name=name)
    pol = app_policy_public(app)
    if pol is None:
        raise NotFound(
            f"application {name} has no policy (version {app.policy_version}): "
            f"add one with `difs app set-policy {name} --tier NAME`"
        )
    return pol


def _plan(
    *, session: Session, now: datetime, app: ApplicationRow, services: PolicyServices | None, migrate: bool
) -> migrations.ChangePlan:
    """The change's plan from what the database knows: volumes and formats, sites, host, paths."""
    sites = {c.label: c for c in app_sites(session, now=now, app=app)}
    volumes = [
        migrations.VolumeNow(name=v.name, size_bytes=v.size_bytes, pi_type=migrations.pi_type_of(services_of(v.policy)),
                             site=sites[f"{v.container.node.name}/{v.container.name}"])
        for v in app.volumes
    ]
    host = host_candidate(session, now=now, host=app.host) if app.host is not None else None
    paths = [PathAdvert.model_validate(p) for p in app.host.paths or ()] if app.host is not None else []
    return migrations.plan_change(
        services=services, volumes=volumes, host=host, host_paths=paths,
        containers=container_candidates(session, now=now) if migrate else (), migrate=migrate,
    )


def _apply(
    *, session: Session, now: datetime, app: ApplicationRow, source: str | None, services: PolicyServices | None,
    kind: str, fresh_seconds: float, migrate: bool = False,
) -> MigrationRow | None:
    """Plan the change; refuse it whole with every reason, start a migration, or apply it in place."""
    running = migrations.active(app)
    if running is not None:
        raise Conflict(
            f"a migration of {app.name} to policy version {running.policy_version} is in progress "
            f"({running.state}): wait for it, or abort it with `difs app set-policy {app.name} --abort`"
        )
    plan = _plan(session=session, now=now, app=app, services=services, migrate=migrate)
    if plan.refused:
        raise Infeasible(
            f"the new policy cannot be met where {app.name} runs; nothing was changed: " + "; ".join(plan.refused),
            unmet=[u.model_dump() for u in plan.unmet],
            reasons=plan.refused,
        )
    if plan.move:
        return migrations.start(session=session, now=now, app=app, plan=plan, source=source, services=services,
                                dumped=dump_services(services))
    before = app.policy_version
    app.policy_source = source
    app.services = dump_services(services)
    app.policy_version = before + 1
    app.updated_at = now
    sc = service_class(services)
    for v in app.volumes:  # mirror into the volume metadata the controllers keep
        v.policy = app.services
        v.policy_version = app.policy_version
        v.service_class = sc
        v.updated_at = now
    record_event(
        session, now=now, kind=f"app.policy_{kind}", subject=app.name,
        message=f"policy of {app.name} {kind} (version {before} -> {app.policy_version})"
        + (f" from {source}" if source else ""),
        version=app.policy_version,
    )
    compliance.forget_evidence(session, app_id=app.id)  # the new policy is judged on new evidence
    session.flush()
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
    return None


def _policy_out(app: ApplicationRow, started: MigrationRow | None) -> AppPolicyPublic:
    """The application's policy (still the old one while a migration it started runs)."""
    pol = app_policy_public(app)
    if started is None:
        assert pol is not None
        return pol
    out = migrations.public(started, app)
    if pol is None:  # addDIFS by migration: nothing stored yet
        return AppPolicyPublic(application=app.name, source=None, services=PolicyServices(), version=app.policy_version,
                               service_class=0, summary=[], migration=out)
    return pol.model_copy(update={"migration": out})


def _precondition(app: ApplicationRow, if_match: int | None) -> None:
    if if_match is not None and if_match != app.policy_version:
        raise PreconditionFailed(
            f"the policy of {app.name} is at version {app.policy_version}, not {if_match}: "
            "someone changed it; read it again (getDIFS) and retry",
            current_version=app.policy_version,
        )


def add_difs(
    *, session: Session, now: datetime, name: str, data: AppPolicySet, if_match: int | None, fresh_seconds: float
) -> AppPolicyPublic:
    """addDIFS: give an application without a policy its policy."""
    app = get_app(session, name=name, lock=True)
    _precondition(app, if_match)
    if app.services is not None:
        raise Conflict(f"application {name} already has a policy (version {app.policy_version}): update it instead (PUT)")
    source, services = _choose(session, policy=data.policy, services=data.services)
    started = _apply(session=session, now=now, app=app, source=source, services=services, kind="added",
                     fresh_seconds=fresh_seconds, migrate=data.migrate)
    return _policy_out(app, started)


def update_difs(
    *, session: Session, now: datetime, name: str, data: AppPolicySet, if_match: int | None, fresh_seconds: float
) -> AppPolicyPublic:
    """updateDIFS: change the policy of an application, planned first (:func:`_apply`): refused whole
    with every reason, applied in place, or — when the data must move and ``migrate`` is
    given — started as a migration (the policy changes when it is done)."""
    app = get_app(session, name=name, lock=True)
    _precondition(app, if_match)
    if app.services is None:
        raise NotFound(f"application {name} has no policy to update: add one first (POST)")
    source, services = _choose(session, policy=data.policy, services=data.services)
    started = _apply(session=session, now=now, app=app, source=source, services=services, kind="updated",
                     fresh_seconds=fresh_seconds, migrate=data.migrate)
    return _policy_out(app, started)


def delete_difs(*, session: Session, now: datetime, name: str, if_match: int | None, fresh_seconds: float) -> None:
    """deleteDIFS: the application keeps running with no data-in-flight services."""
    app = get_app(session, name=name, lock=True)
    _precondition(app, if_match)
    if app.services is None:
        raise NotFound(f"application {name} has no policy to delete")
    _apply(session=session, now=now, app=app, source=None, services=None, kind="deleted", fresh_seconds=fresh_seconds)


# --- binding -------------------------------------------------------------------------------------


def bind(
    *, session: Session, now: datetime, principal: Principal, name: str, data: BindRequest, fresh_seconds: float
) -> BindingPublic:
    """A host's bind request: returns the protocol endpoints, volumes and LUNs; opens the access list."""
    if principal.is_admin:
        if data.host is None:
            raise BadRequest("say which host binds: give 'host' (a host's own token implies it)")
        host_name = data.host
    else:
        if principal.node_kind != "host":
            raise Forbidden(f"{principal.label} is not a host: only hosts bind applications")
        if data.host is not None and data.host != principal.node_name:
            raise Forbidden(f"{principal.label} may only bind for itself, not for {data.host}")
        host_name = principal.node_name or ""
    host = get_node(session, name=host_name, kind="host")
    if not principal.is_admin:
        _check_own_initiator(host, data.initiator_iqn)
    app = get_app(session, name=name, lock=True)
    if app.host_id is not None and app.host_id != host.id:
        raise Conflict(
            f"application {name} is bound to host {app.host.name if app.host else '?'}: unbind it there first"
        )
    if not node_alive(host, now):
        raise Conflict(
            f"host {host_name} is not advertising (state {host.state}): a host must advertise its "
            "capabilities before it binds"
        )
    if not app.volumes:
        raise Conflict(f"application {name} has no volume: create one with `difs volume create {name} SIZE`")
    problems = check_in_place(
        services=services_of(app.services),
        sites=app_sites(session, now=now, app=app),
        host=host_candidate(session, now=now, host=host),
    )
    if problems:
        raise Infeasible(
            f"host {host_name} cannot reach {name}'s volumes over a path that satisfies its policy: "
            + "; ".join(u.reason for u in problems),
            unmet=[u.model_dump() for u in problems],
        )
    rebind = app.host_id == host.id
    app.host_id = host.id
    app.initiator_iqn = data.initiator_iqn
    app.bound_at = now
    app.updated_at = now
    if not rebind:  # nothing reported yet by this host
        app.host_state = app.host_state_reason = app.host_state_at = None
    record_event(
        session, now=now, kind="app.bound", subject=name,
        message=f"application {name} {'re-' if rebind else ''}bound to host {host_name} ({data.initiator_iqn})",
    )
    session.flush()
    session.refresh(app)
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
    result = binding_public(app)
    assert result is not None
    return result


def _check_own_initiator(host: NodeRow, initiator_iqn: str) -> None:
    """A host's token binds only to the initiator name that host advertises (the LUN is opened
    to that name: any other would let another machine see the volume)."""
    if host.iqn is None:
        raise Forbidden(
            f"host {host.name} has advertised no initiator name: a host binds only to its own "
            "initiator name, so advertise 'iqn' first"
        )
    if initiator_iqn != host.iqn:
        raise Forbidden(
            f"host {host.name} may bind only to its own initiator name {host.iqn} (the one it "
            f"advertises), not to {initiator_iqn}: the volume would be opened to another initiator"
        )


def unbind(*, session: Session, now: datetime, principal: Principal, name: str, fresh_seconds: float) -> None:
    app = get_app(session, name=name, lock=True)
    if app.host_id is None:
        raise NotFound(f"application {name} is not bound to any host")
    host: NodeRow | None = app.host
    if not principal.is_admin and (host is None or principal.node_name != host.name):
        raise Forbidden(f"{principal.label} may only unbind applications bound to itself")
    host_name = host.name if host else "?"
    migrations.abandon(session=session, now=now, app=app, why=f"unbound from host {host_name}")
    app.host_id = None
    app.initiator_iqn = None
    app.bound_at = None
    app.host_state = app.host_state_reason = app.host_state_at = None
    app.updated_at = now
    compliance.forget_evidence(session, app_id=app.id, paths_only=True)
    record_event(session, now=now, kind="app.unbound", subject=name, message=f"application {name} unbound from host {host_name}")
    session.flush()
    session.refresh(app)
    compliance.refresh(session=session, now=now, app_ids=[app.id], fresh_seconds=fresh_seconds)
