"""What controllers and hosts read and report: their volumes, bindings and the evidence of their data path."""

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
    EvidenceAck,
    Name,
    PathStatsReport,
    StatsAck,
)
from difs.manager.services import compliance, nodes
from difs.policy.evidence import ControllerEvidenceReport, HostEvidenceReport

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


@router.put("/controllers/{name}/evidence", response_model=EvidenceAck, responses=problems(403, 404))
def controller_evidence(
    name: Name, report: ControllerEvidenceReport, session: SessionDep, now: NowDep, principal: PrincipalDep,
    fresh: FreshDep,
) -> EvidenceAck:
    """The controller's evidence of the last window, per session x volume; entries naming a volume
    the controller does not hold are ignored, each with its reason in ``ignored``."""
    principal.require_self_or_admin(name)
    return compliance.ingest_controller_evidence(session=session, now=now, name=name, report=report,
                                                 fresh_seconds=fresh)


@router.put("/hosts/{name}/evidence", response_model=EvidenceAck, responses=problems(403, 404))
def host_evidence(
    name: Name, report: HostEvidenceReport, session: SessionDep, now: NowDep, principal: PrincipalDep,
    fresh: FreshDep,
) -> EvidenceAck:
    """The host's evidence of the last window, per application x path; entries naming an
    application not bound to this host are ignored, each with its reason in ``ignored``."""
    principal.require_self_or_admin(name)
    return compliance.ingest_host_evidence(session=session, now=now, name=name, report=report, fresh_seconds=fresh)


@router.post("/hosts/{name}/stats", response_model=StatsAck, responses=problems(403, 404), deprecated=True)
def host_stats(name: Name, report: PathStatsReport, session: SessionDep, principal: PrincipalDep) -> StatsAck:
    """Per-path statistics from hosts of earlier versions: checked and not used (``accepted`` is
    0); compliance is judged from ``PUT /hosts/{name}/evidence``."""
    if principal.is_admin or principal.node_name != name:
        raise Forbidden(f"only host {name} itself reports its statistics (use its own token)")
    return compliance.ingest_stats(session=session, host_name=name, report=report)


@router.put("/hosts/{name}/bindings/state", response_model=StatsAck, responses=problems(403, 404))
def host_binding_states(
    name: Name, report: BindingStatesReport, session: SessionDep, now: NowDep, principal: PrincipalDep,
    fresh: FreshDep,
) -> StatsAck:
    """The state of each binding the host follows (starting, running, failed with the reason)."""
    if principal.is_admin or principal.node_name != name:
        raise Forbidden(f"only host {name} itself reports its bindings' states (use its own token)")
    return StatsAck(accepted=nodes.report_binding_states(session=session, now=now, name=name, report=report,
                                                         fresh_seconds=fresh))
