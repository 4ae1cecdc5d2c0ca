"""Applications, their entry in the central depository, binding and compliance."""

from __future__ import annotations

from fastapi import APIRouter, Response

from difs.manager.api.deps import AdminDep, FreshDep, IfMatchDep, NowDep, PrincipalDep, SessionDep
from difs.manager.api.responses import problems
from difs.manager.schemas import (
    AppPolicyPublic,
    AppPolicySet,
    ApplicationCreate,
    ApplicationCreated,
    ApplicationPublic,
    BindingPublic,
    BindRequest,
    CompliancePublic,
    MigrationPublic,
    Name,
)
from difs.manager.services import apps, compliance, migrations

router = APIRouter(prefix="/apps", tags=["applications"])


@router.post("", status_code=201, response_model=ApplicationCreated, responses=problems(403, 404, 409))
def create_app(
    data: ApplicationCreate, session: SessionDep, now: NowDep, _: AdminDep, fresh: FreshDep
) -> ApplicationCreated:
    """Create an application: place its volume, create it, store its policy (addDIFS)."""
    return apps.create(session=session, now=now, data=data, fresh_seconds=fresh)


@router.get("", response_model=list[ApplicationPublic], responses=problems(403))
def list_apps(session: SessionDep, _: AdminDep) -> list[ApplicationPublic]:
    return apps.list_apps(session=session)


@router.get("/{name}", response_model=ApplicationPublic, responses=problems(403, 404))
def get_app(name: Name, session: SessionDep, _: AdminDep) -> ApplicationPublic:
    return apps.get(session=session, name=name)


@router.delete("/{name}", status_code=204, responses=problems(403, 404, 409))
def delete_app(name: Name, session: SessionDep, now: NowDep, _: AdminDep) -> None:
    apps.remove(session=session, now=now, name=name)


def _etag(response: Response, out: AppPolicyPublic) -> AppPolicyPublic:
    response.headers["ETag"] = f'"{out.version}"'
    if out.migration is not None:  # accepted: the policy changes when the migration is done
        response.status_code = 202
        response.headers["Location"] = f"/api/v1/apps/{out.application}/migration"
    return out


@router.get("/{name}/policy", response_model=AppPolicyPublic, responses=problems(403, 404))
def get_difs(name: Name, session: SessionDep, _: PrincipalDep, response: Response) -> AppPolicyPublic:
    """getDIFS: the application's policy and its version (also as ETag)."""
    return _etag(response, apps.get_difs(session=session, name=name))


@router.post("/{name}/policy", status_code=201, response_model=AppPolicyPublic,
             responses={202: {"model": AppPolicyPublic}, **problems(403, 404, 409, 412)})
def add_difs(
    name: Name, data: AppPolicySet, session: SessionDep, now: NowDep, _: AdminDep, if_match: IfMatchDep,
    fresh: FreshDep, response: Response,
) -> AppPolicyPublic:
    """addDIFS: give an application without a policy a policy (refused with reasons if infeasible;
    202 with the migration when the data must move and ``migrate`` is given)."""
    out = apps.add_difs(session=session, now=now, name=name, data=data, if_match=if_match, fresh_seconds=fresh)
    return _etag(response, out)


@router.put("/{name}/policy", response_model=AppPolicyPublic,
            responses={202: {"model": AppPolicyPublic}, **problems(403, 404, 409, 412)})
def update_difs(
    name: Name, data: AppPolicySet, session: SessionDep, now: NowDep, _: AdminDep, if_match: IfMatchDep,
    fresh: FreshDep, response: Response,
) -> AppPolicyPublic:
    """updateDIFS: change the policy live; 409 with every reason if it cannot be met (nothing
    changed); 202 with the migration it started when the data must move and ``migrate`` is given."""
    out = apps.update_difs(session=session, now=now, name=name, data=data, if_match=if_match, fresh_seconds=fresh)
    return _etag(response, out)


@router.delete("/{name}/policy", status_code=204, responses=problems(403, 404, 412))
def delete_difs(name: Name, session: SessionDep, now: NowDep, _: AdminDep, if_match: IfMatchDep, fresh: FreshDep) -> None:
    """deleteDIFS: remove the application's policy (its I/O gets no data-in-flight services)."""
    apps.delete_difs(session=session, now=now, name=name, if_match=if_match, fresh_seconds=fresh)


@router.post("/{name}/binding", response_model=BindingPublic, responses=problems(403, 404, 409))
def bind_app(
    name: Name, data: BindRequest, session: SessionDep, now: NowDep, principal: PrincipalDep, fresh: FreshDep
) -> BindingPublic:
    """A host binds the application: protocol endpoints, volume ids, containers and LUNs."""
    return apps.bind(session=session, now=now, principal=principal, name=name, data=data, fresh_seconds=fresh)


@router.delete("/{name}/binding", status_code=204, responses=problems(403, 404))
def unbind_app(name: Name, session: SessionDep, now: NowDep, principal: PrincipalDep, fresh: FreshDep) -> None:
    apps.unbind(session=session, now=now, principal=principal, name=name, fresh_seconds=fresh)


@router.get("/{name}/compliance", response_model=CompliancePublic, responses=problems(403, 404))
def get_compliance(name: Name, session: SessionDep, _: AdminDep) -> CompliancePublic:
    return compliance.get_compliance(session=session, name=name)


@router.get("/{name}/migration", response_model=MigrationPublic, responses=problems(403, 404))
def get_migration(name: Name, session: SessionDep, _: AdminDep) -> MigrationPublic:
    """The application's migration in progress (else its last one): state, phase, progress, pause."""
    return migrations.get(session=session, name=name)


@router.delete("/{name}/migration", response_model=MigrationPublic, responses=problems(403, 404, 409))
def abort_migration(name: Name, session: SessionDep, now: NowDep, _: AdminDep, fresh: FreshDep) -> MigrationPublic:
    """Abort a migration still copying: its new volume is dropped, the application keeps its
    volume and policy (409 once the host is switching)."""
    return migrations.abort(session=session, now=now, name=name, fresh_seconds=fresh)
