"""The manager's front door: request bodies are bounded, and a body is read only after its token
is known to be good.

``RequestGuard`` is a pure ASGI middleware around the whole app (it sees the raw ``receive``
and ``send``; FastAPI reads a request's body before it resolves any dependency, so the
token check in ``deps.get_principal`` alone comes after the body):

* a ``Content-Length`` over ``max_body`` is answered 413 at once, the body unread;
* a request to the API that carries a body (POST/PUT/PATCH/DELETE with a ``Content-Length`` or
  chunked) is answered 401 unless its bearer token is the admin's or a node's — checked before
  the app runs; the principal found is left in the request state for ``get_principal``;
* a chunked body is counted as it streams in; past ``max_body`` the app is told the client
  left and its response is replaced by a 413.

Answers given before the body was read close the connection (``Connection: close``). They are
the same problem documents as every other error (``api/problems.py``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from difs.manager.api import problems
from difs.manager.api.deps import PRINCIPAL_STATE, ManagerState, principal_for_token
from difs.manager.auth import Principal
from difs.manager.db import transaction
from difs.manager.errors import ContentTooLarge

DEFAULT_MAX_BODY = 1 << 20
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of ``Authorization: Bearer <token>`` (None for anything else)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _authenticate(state: ManagerState, token: str | None) -> Principal:
    with transaction(state.factory, write=False) as session:
        return principal_for_token(state, session, token)


class RequestGuard:
    """Bounds request bodies to ``max_body`` bytes and checks tokens before API bodies are read."""

    def __init__(self, app: ASGIApp, *, max_body: int = DEFAULT_MAX_BODY, api_prefix: str = "/api/") -> None:
        self.app = app
        self.max_body = max_body
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        chunked = False
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None  # the HTTP layer checked it
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if length is not None and length > self.max_body:
            await self._answer(scope, send, self._too_large())
            return
        has_body = bool(length) or chunked
        if has_body and scope["method"] in _BODY_METHODS and scope["path"].startswith(self.api_prefix):
            state: ManagerState = scope["app"].state.difs
            try:
                principal = await run_in_threadpool(_authenticate, state, bearer_token(authorization))
            except Exception as exc:  # Unauthorized, or the database is unavailable
                await self._answer(scope, send, exc)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        if chunked and length is None:
            await self._counted(scope, receive, send)
        else:  # the HTTP layer delivers no more than Content-Length
            await self.app(scope, receive, send)

    def _too_large(self) -> ContentTooLarge:
        return ContentTooLarge(
            f"the request body is larger than the {self.max_body} bytes the manager accepts",
            limit=self.max_body,
        )

    async def _answer(self, scope: Scope, send: Send, exc: Exception) -> None:
        """Answer without reading the body, and close the connection after it."""
        response = problems.problem_response(Request(scope), exc)
        response.headers["connection"] = "close"
        await response(scope, _no_receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app on a streamed body, cut off past ``max_body`` with a 413 instead."""
        received = 0
        over = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading: the client "left"
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal answered
            if not over:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await self._answer(scope, send, self._too_large())

        try:
            await self.app(scope, counting_receive, replacing_send)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await self._answer(scope, send, self._too_large())


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}
