"""Domain errors of the manager, each with the HTTP status and problem type it maps to.

Services raise these; exactly one handler (``difs.manager.api.problems``) turns
them — and validation, routing and unexpected errors — into RFC 9457
``application/problem+json`` responses. Nothing else in the manager builds an
error response.

    DomainError
    ├── BadRequest              400  e.g. both a policy name and inline services
    ├── Unauthorized            401  missing or wrong token
    ├── Forbidden               403  a node acting for another node, a node on admin routes
    ├── NotFound                404
    ├── Conflict                409  names taken, capacity, bound applications
    │   └── Infeasible          409  a policy no placement / path can satisfy (carries ``unmet``)
    ├── PreconditionFailed      412  If-Match version is stale
    ├── ContentTooLarge         413  a request body over the manager's limit
    ├── PreconditionRequired    428  (reserved)
    └── DatabaseUnavailable     503  the database cannot be reached or timed out (``Retry-After``);
                                     SQLAlchemy's connection errors become this (``dbguard``)
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    type_slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    status = 401
    type_slug = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    type_slug = "forbidden"
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class Infeasible(Conflict):
    type_slug = "infeasible"
    title = "Policy cannot be satisfied"


class PreconditionFailed(DomainError):
    status = 412
    type_slug = "precondition-failed"
    title = "Version mismatch"


class ContentTooLarge(DomainError):
    status = 413
    type_slug = "content-too-large"
    title = "Request body too large"


class DatabaseUnavailable(DomainError):
    status = 503
    type_slug = "database-unavailable"
    title = "Database unavailable"
