"""What controllers and hosts read and report: their volumes, bindings and path statistics."""

from __future__ import annotations

from fastapi import APIRouter

from difs.manager.api.deps import FreshDep, NowDep, PrincipalDep, SessionDep
from difs.manager.api.responses import problems
from difs.manager.errors import Forbidden
from difs.manager.schemas import (
    BindingPublic,
    BindingStatesReport,
    ContainerPublic,
    ControllerVolume,
    Name,
    PathStatsReport,
    StatsAck,
)
from difs.manager.services import compliance, nodes

router = APIRouter(tags=["controllers and hosts"])


@router.get("/controllers/{name}/volumes", response_model=list[ControllerVolume], responses=problems(403, 404))
def controller_volumes(name: Name, session: SessionDep, principal: PrincipalDep) -> list[ControllerVolume]:
    """Every volume the controller must serve, with its policy mirror and allowed initiators."""
    return nodes.controller_volumes(session=session, principal=principal, name=name)


@router.get("/controllers/{name}/containers", response_model=list[ContainerPublic], responses=problems(403, 404))
def controller_containers(name: Name, session: SessionDep, principal: PrincipalDep) -> list[ContainerPublic]:
    return nodes.controller_containers(session=session, principal=principal, name=name)


@router.get("/hosts/{name}/bindings", response_model=list[BindingPublic], responses=problems(403, 404))
def host_bindings(name: Name, session: SessionDep, principal: PrincipalDep) -> list[BindingPublic]:
    """The applications bound to the host, with their policies (version, service class)."""
    return nodes.host_bindings(session=session, principal=principal, name=name)


@router.post("/hosts/{name}/stats", response_model=StatsAck, responses=problems(403, 404))
def host_stats(
    name: Name, report: PathStatsReport, session: SessionDep, now: NowDep, principal: PrincipalDep, fresh: FreshDep
) -> StatsAck:
    """Per-path statistics of the host's applications (the host itself reports them)."""
    if principal.is_admin or principal.node_name != name:
        raise Forbidden(f"only host {name} itself reports its statistics (use its own token)")
    return compliance.ingest_stats(session=session, now=now, host_name=name, report=report, fresh_seconds=fresh)


@router.put("/hosts/{name}/bindings/state", response_model=StatsAck, responses=problems(403, 404))
def host_binding_states(
    name: Name, report: BindingStatesReport, session: SessionDep, now: NowDep, principal: PrincipalDep
) -> StatsAck:
    """The state of each binding the host follows (starting, running, failed with the reason)."""
    if principal.is_admin or principal.node_name != name:
        raise Forbidden(f"only host {name} itself reports its bindings' states (use its own token)")
    return StatsAck(accepted=nodes.report_binding_states(session=session, now=now, name=name, report=report))
