"""OpenAPI-driven property test: schemathesis generates requests for every operation of the real
app (in-process ASGI, SQLite) with the admin token; none may produce a 5xx, and responses must
match the documented schemas and content types."""

from __future__ import annotations


import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mgr_support import ADMIN, ADMIN_TOKEN, ManualClock, controller_adv
from difs.manager.app import create_app
from difs.manager.config import Settings

EXAMPLES_PER_OPERATION = 6


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("fuzz") / "manager.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}", admin_token=SecretStr(ADMIN_TOKEN)),
                     clock=ManualClock(), background_sweep=False)
    from fastapi.testclient import TestClient

    with TestClient(app) as c:  # some state for the generated requests to find
        token = c.post("/api/v1/nodes", headers=ADMIN, json={"name": "ctl1", "kind": "controller"}).json()["token"]
        c.put("/api/v1/nodes/ctl1/advertisement", json=controller_adv(), headers={"Authorization": f"Bearer {token}"})
        c.post("/api/v1/apps", headers=ADMIN, json={"name": "db", "size_bytes": 4096, "policy": "silver"})
        yield app


def test_no_server_errors_and_documented_responses(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            case.headers = {**(case.headers or {}), **ADMIN}
            response = case.call()
            assert response.status_code < 500, (operation.label, response.status_code, response.text)
            case.validate_response(
                response,
                checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                        response_schema_conformance],
            )

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {str(exc)[:800]}")
    assert not failures, "\n\n".join(failures)
