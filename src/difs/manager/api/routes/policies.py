"""The policy catalogue: ``/policies`` and ``/tiers`` (same shape, one namespace)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from difs.manager.api.deps import AdminDep, IfMatchDep, NowDep, PrincipalDep, SessionDep
from difs.manager.api.responses import problems
from difs.manager.schemas import Name, PolicyCreate, PolicyPublic, PolicyUpdate
from difs.manager.services import policies
from difs.manager.services.policies import Kind


def make_router(kind: Kind) -> APIRouter:
    plural = "policies" if kind == "policy" else "tiers"
    router = APIRouter(prefix=f"/{plural}", tags=[plural])

    @router.get("", response_model=list[PolicyPublic], responses=problems(), operation_id=f"list_{plural}")
    def list_all(session: SessionDep, _: PrincipalDep) -> list[PolicyPublic]:
        return policies.list_policies(session=session, kind=kind)

    @router.post(
        "", status_code=201, response_model=PolicyPublic, responses=problems(403, 409), operation_id=f"create_{kind}"
    )
    def create(data: PolicyCreate, session: SessionDep, now: NowDep, _: AdminDep) -> PolicyPublic:
        return policies.create_policy(session=session, now=now, kind=kind, data=data)

    @router.get("/{name}", response_model=PolicyPublic, responses=problems(404), operation_id=f"get_{kind}")
    def get(name: Name, session: SessionDep, _: PrincipalDep, response: Response) -> PolicyPublic:
        out = policies.get_policy(session=session, kind=kind, name=name)
        response.headers["ETag"] = f'"{out.version}"'
        return out

    @router.put(
        "/{name}", response_model=PolicyPublic, responses=problems(403, 404, 409, 412), operation_id=f"update_{kind}"
    )
    def update(
        name: Name, data: PolicyUpdate, session: SessionDep, now: NowDep, _: AdminDep, if_match: IfMatchDep,
        response: Response,
    ) -> PolicyPublic:
        out = policies.update_policy(session=session, now=now, kind=kind, name=name, data=data, if_match=if_match)
        response.headers["ETag"] = f'"{out.version}"'
        return out

    @router.delete("/{name}", status_code=204, responses=problems(403, 404, 409), operation_id=f"delete_{kind}")
    def delete(name: Name, session: SessionDep, now: NowDep, _: AdminDep) -> None:
        policies.delete_policy(session=session, now=now, kind=kind, name=name)

    return router


policies_router = make_router("policy")
tiers_router = make_router("tier")
