"""The one place errors become HTTP responses: RFC 9457 ``application/problem+json``.

Domain errors carry their own status, title and extensions; request validation
errors become 400 (malformed JSON) or 422 with one sentence per fault;
framework HTTP errors (unknown route, wrong method) keep their status;
database conflicts become 409; a database that cannot be reached or timed out
becomes 503 with ``Retry-After`` (``dbguard.is_unavailable``); anything else is a 500 whose detail says
to look at the log (the log gets the traceback; no request body or token is
ever logged).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from difs.manager import dbguard
from difs.manager.errors import DatabaseUnavailable, DomainError

log = logging.getLogger("difs.manager")

PROBLEM_JSON = "application/problem+json"


def _type(slug: str) -> str:
    return f"urn:difs:problem:{slug}"


def _validation_errors(exc: RequestValidationError) -> tuple[int, str, list[str]]:
    errors: list[str] = []
    malformed = False
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            where_kind, loc = loc[0], loc[1:]
        else:
            where_kind = "body"
        msg = str(err.get("msg", "invalid"))
        for lead in ("Value error, ", "Assertion failed, "):
            if msg.startswith(lead):
                msg = msg[len(lead) :]
        if err.get("type") == "json_invalid":
            malformed = True
            ctx = err.get("ctx") or {}
            errors.append(f"malformed JSON: {ctx.get('error', msg)}")
            continue
        if err.get("type") == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}" if loc else "unknown field"
        if err.get("type") == "missing":
            msg = "is required"
        where = ".".join(loc)
        errors.append(f"{where_kind} {where}: {msg}" if where else f"{where_kind}: {msg}")
    if malformed:
        return 400, "the request body is not valid JSON", errors
    return 422, "the request does not validate: " + "; ".join(errors), errors


def problem_response(request: Request, exc: Exception) -> JSONResponse:
    body: dict[str, Any]
    headers: dict[str, str] = {}
    if not isinstance(exc, IntegrityError) and dbguard.is_unavailable(exc):
        exc = _database_unavailable(request, exc)
    if isinstance(exc, DomainError):
        status = exc.status
        body = {"type": _type(exc.type_slug), "title": exc.title, "status": status, "detail": exc.detail}
        body.update({k: v for k, v in exc.extensions.items() if v is not None})
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif status == 503:
            headers["Retry-After"] = str(dbguard.RETRY_AFTER_SECONDS)
    elif isinstance(exc, RequestValidationError):
        status, detail, errors = _validation_errors(exc)
        body = {
            "type": _type("malformed-json" if status == 400 else "validation"),
            "title": "Malformed request" if status == 400 else "Invalid request",
            "status": status,
            "detail": detail,
            "errors": errors,
        }
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        body = {
            "type": _type(phrase.lower().replace(" ", "-")),
            "title": phrase,
            "status": status,
            "detail": str(exc.detail) if exc.detail else phrase,
        }
        headers.update(exc.headers or {})
    elif isinstance(exc, IntegrityError):
        status = 409
        body = {
            "type": _type("conflict"),
            "title": "Conflict",
            "status": 409,
            "detail": "a concurrent request changed the same thing first; read it again and retry",
        }
    else:
        log.exception("internal error on %s %s", request.method, request.url.path)
        status = 500
        body = {
            "type": _type("internal"),
            "title": "Internal error",
            "status": 500,
            "detail": "the manager hit an internal error; its log has the details",
        }
    body["instance"] = request.url.path
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _database_unavailable(request: Request, exc: Exception) -> DatabaseUnavailable:
    state = getattr(request.app.state, "difs", None) if "app" in request.scope else None
    if state is not None:
        state.db.failed(exc)  # logs once per outage
    return DatabaseUnavailable(
        "the manager cannot reach its database right now; retry shortly (nodes keep serving "
        "what they have meanwhile)"
    )


def install(app: FastAPI) -> None:
    """Register :func:`problem_response` for every error type (one handler, many keys)."""
    for exc_type in (
        DomainError,
        RequestValidationError,
        StarletteHTTPException,
        IntegrityError,
        DBAPIError,
        PoolTimeout,
        Exception,
    ):
        app.add_exception_handler(exc_type, problem_response)  # type: ignore[arg-type]
