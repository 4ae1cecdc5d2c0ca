"""OpenAPI declarations of the problem responses each route can return."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each code answered with a Problem document."""
    return {
        code: {"description": HTTPStatus(code).phrase, "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}}
        for code in (*codes, 400, 401, 422)
    }
