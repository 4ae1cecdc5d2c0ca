"""Request dependencies as named ``Annotated`` types.

``SessionDep`` is the request's one transaction: it commits when the route
returns and rolls back when it raises (``scope="function"``: before the
response is sent, so a failed commit is reported, not hidden). Before it
opens, expired leases are swept in their own short transaction so every
request sees current node states (judged on the monotonic clock: ``leases.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from difs.manager.auth import ADMIN, Principal, is_admin_token
from difs.manager.clock import Clock
from difs.manager.config import Settings
from difs.manager.db import transaction
from difs.manager.dbguard import DatabaseHealth, is_unavailable
from difs.manager.errors import BadRequest, Unauthorized
from difs.manager.leases import LeaseBook
from difs.manager.services import nodes
from difs.manager.services.candidates import QOS_HEADROOM


@dataclass
class ManagerState:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    clock: Clock
    leases: LeaseBook = field(init=False)
    db: DatabaseHealth = field(init=False)

    def __post_init__(self) -> None:
        self.leases = LeaseBook(resync_seconds=max(self.settings.sweep_interval_seconds, 1.0))
        self.db = DatabaseHealth(monotonic=self.clock.monotonic, on_recovered=self.leases.extend)


def sweep(state: ManagerState, now: datetime) -> list[str]:
    """Expire leases that ran out: the alive nodes are read only when the lease book says a
    deadline may have passed, and a write transaction is opened only when one did."""
    at = state.clock.monotonic()
    if not state.leases.due(at):
        return []
    try:
        with transaction(state.factory, write=False) as s:
            alive = nodes.alive_leases(session=s)
        state.db.ok()
        overdue = state.leases.overdue(alive, at)
        if not overdue:
            return []
        with transaction(state.factory, write=True) as s:
            return nodes.expire_leases(session=s, now=now, overdue=overdue,
                                       fresh_seconds=state.settings.stats_fresh_seconds)
    except Exception as exc:
        if is_unavailable(exc):
            state.db.failed(exc)
        raise


def get_state(request: Request) -> ManagerState:
    return request.app.state.difs  # type: ignore[no-any-return]


StateDep = Annotated[ManagerState, Depends(get_state)]


def get_now(state: StateDep) -> datetime:
    return state.clock()


NowDep = Annotated[datetime, Depends(get_now)]


def get_fresh_seconds(state: StateDep) -> float:
    return state.settings.stats_fresh_seconds


FreshDep = Annotated[float, Depends(get_fresh_seconds)]


def get_session(request: Request, state: StateDep, now: NowDep) -> Iterator[Session]:
    sweep(state, now)
    with transaction(state.factory, write=request.method not in ("GET", "HEAD", "OPTIONS")) as session:
        session.info[QOS_HEADROOM] = state.settings.qos_headroom  # read by placement (candidates.py)
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="the admin token, or a node's own token")


#: where the request guard (``api/guard.py``) leaves the principal it checked before the body
PRINCIPAL_STATE = "difs_principal"


def principal_for_token(state: ManagerState, session: Session, token: str | None) -> Principal:
    """Who sends ``token`` (the bearer credential, None when missing); Unauthorized if nobody."""
    if not token:
        raise Unauthorized("send a token: 'Authorization: Bearer <token>' (the admin token or a node's token)")
    if is_admin_token(token, state.settings.admin_token.get_secret_value()):
        return ADMIN
    node = nodes.find_by_token(session, token=token)
    if node is None:
        raise Unauthorized("the token is not valid: use the admin token or the token issued to this node")
    return Principal(is_admin=False, node_id=node.id, node_name=node.name, node_kind=node.kind)


def get_principal(
    request: Request,
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    checked = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    if checked is not None:
        return checked  # type: ignore[no-any-return]
    return principal_for_token(state, session, credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    principal.require_admin()
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def get_if_match(if_match: Annotated[str | None, Header(description="expected version, e.g. \"3\"")] = None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    raw = if_match.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"If-Match must be a version number such as \"3\", not {if_match!r}")
    return int(raw)


IfMatchDep = Annotated[int | None, Depends(get_if_match)]
