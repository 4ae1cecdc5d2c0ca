"""Nodes: registration (admin), advertisements (the node itself), tokens."""

from __future__ import annotations

from fastapi import APIRouter

from difs.manager.api.deps import AdminDep, FreshDep, NowDep, PrincipalDep, SessionDep, StateDep
from difs.manager.api.responses import problems
from difs.manager.schemas import AdvertisementAck, AdvertisementIn, Name, NodePublic, NodeRegister, NodeRegistered
from difs.manager.services import nodes

router = APIRouter(prefix="/nodes", tags=["nodes"])


@router.post("", status_code=201, response_model=NodeRegistered, responses=problems(403, 409))
def register_node(data: NodeRegister, session: SessionDep, now: NowDep, _: AdminDep) -> NodeRegistered:
    """Register a node; the response carries its token (shown once)."""
    return nodes.register(session=session, now=now, data=data)


@router.get("", response_model=list[NodePublic], responses=problems(403))
def list_nodes(session: SessionDep, _: AdminDep) -> list[NodePublic]:
    return nodes.list_nodes(session=session)


@router.get("/{name}", response_model=NodePublic, responses=problems(403, 404))
def get_node(name: Name, session: SessionDep, principal: PrincipalDep) -> NodePublic:
    principal.require_self_or_admin(name)
    return nodes.get(session=session, name=name)


@router.delete("/{name}", status_code=204, responses=problems(403, 404, 409))
def delete_node(name: Name, session: SessionDep, now: NowDep, _: AdminDep) -> None:
    nodes.remove(session=session, now=now, name=name)


@router.post("/{name}/token", response_model=NodeRegistered, responses=problems(403, 404))
def rotate_node_token(name: Name, session: SessionDep, now: NowDep, _: AdminDep) -> NodeRegistered:
    """Issue a new token to a node (the old one stops working)."""
    return nodes.rotate_token(session=session, now=now, name=name)


@router.put("/{name}/advertisement", response_model=AdvertisementAck, responses=problems(403, 404))
def advertise(
    name: Name, adv: AdvertisementIn, session: SessionDep, now: NowDep, principal: PrincipalDep, fresh: FreshDep,
    state: StateDep,
) -> AdvertisementAck:
    """A node's capabilities, valid for ``lease_seconds`` (renew before it runs out)."""
    ack = nodes.advertise(session=session, now=now, principal=principal, name=name, adv=adv, fresh_seconds=fresh)
    state.leases.renewed(name, token=nodes.renewal_token(session=session, name=name),
                         seconds=adv.lease_seconds, at=state.clock.monotonic())
    return ack
