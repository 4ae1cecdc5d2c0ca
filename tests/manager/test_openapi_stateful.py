"""Stateful API fuzzing of the manager with schemathesis: sequences of operations chained by the
links schemathesis infers from the OpenAPI document (create a policy, then read, update, delete
it; register a node, then advertise for it; ...), each scenario on a fresh manager (real app,
in-process ASGI, SQLite) that has a controller, a host and an application.

* as the admin, a controller node and a host node: no response is a 5xx, every response
  matches its documented status codes, content type and schema; a node's token never gets a
  2xx from an operation that needs the admin token;
* with no token, or a garbage one, every operation the document marks as protected answers
  401 or 403 — never a 2xx, never a 5xx — whatever the generated request.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mgr_support import ADMIN, ADMIN_TOKEN, ManualClock, controller_adv, host_adv
from difs.manager.app import create_app
from difs.manager.config import Settings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
GARBAGE = [None, "Bearer not-a-token", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x",
           f"Bearer {ADMIN_TOKEN[:-1]}", "Bearer difs-node-" + "A" * 43, "Bearer", "Bearer  "]


class FreshManager:
    """The ASGI app schemathesis calls; ``start()`` swaps in a new manager on a fresh copy of
    the migrated template database (with ctl1, host1 and the application db)."""

    def __init__(self, template: Path, folder: Path) -> None:
        self.template = template
        self.folder = folder
        self.runs = 0
        self.app = None
        self.client: TestClient | None = None
        self.tokens: dict[str, str] = {}

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)

    def start(self) -> None:
        self.stop()
        self.runs += 1
        db = self.folder / f"manager-{self.runs}.db"
        shutil.copy(self.template, db)
        self.app = create_app(Settings(database_url=f"sqlite:///{db}",
                                       admin_token=SecretStr(ADMIN_TOKEN)),
                              clock=ManualClock(), background_sweep=False)
        self.client = c = TestClient(self.app)
        c.__enter__()
        tokens = {"admin": ADMIN_TOKEN}
        for name, kind, adv in (("ctl1", "controller", controller_adv()),
                                ("host1", "host", host_adv())):
            r = c.post("/api/v1/nodes", headers=ADMIN, json={"name": name, "kind": kind})
            tokens[kind] = r.json()["token"]
            r = c.put(f"/api/v1/nodes/{name}/advertisement", json=adv,
                      headers={"Authorization": f"Bearer {tokens[kind]}"})
            assert r.status_code == 200, r.text
        r = c.post("/api/v1/apps", headers=ADMIN,
                   json={"name": "db", "size_bytes": 1 << 20, "policy": "silver"})
        assert r.status_code == 201, r.text
        self.tokens = tokens

    def stop(self) -> None:
        if self.client is not None:
            self.client.__exit__(None, None, None)
            self.client = None


@pytest.fixture(scope="module")
def manager(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshManager]:
    fresh = FreshManager(sqlite_template, tmp_path_factory.mktemp("stateful"))
    fresh.start()
    yield fresh
    fresh.stop()


@pytest.fixture(scope="module")
def schema(manager: FreshManager):
    return schemathesis.openapi.from_asgi("/openapi.json", manager)


#: what a node's token may succeed at: reading the catalogue, acting for itself (its node,
#: advertisement, volumes, containers, bindings, evidence, stats), an application's policy and binding.
#: Every other protected operation needs the admin token (a node gets no 2xx from it).
NODE_MAY = {
    ("GET", "/api/v1/policies"), ("GET", "/api/v1/policies/{name}"),
    ("GET", "/api/v1/tiers"), ("GET", "/api/v1/tiers/{name}"),
    ("GET", "/api/v1/nodes/{name}"), ("PUT", "/api/v1/nodes/{name}/advertisement"),
    ("GET", "/api/v1/apps/{name}/policy"),
    ("POST", "/api/v1/apps/{name}/binding"), ("DELETE", "/api/v1/apps/{name}/binding"),
    ("GET", "/api/v1/controllers/{name}/volumes"), ("GET", "/api/v1/controllers/{name}/containers"),
    ("GET", "/api/v1/hosts/{name}/bindings"), ("POST", "/api/v1/hosts/{name}/stats"),
    ("PUT", "/api/v1/hosts/{name}/bindings/state"),
    ("PUT", "/api/v1/controllers/{name}/evidence"), ("PUT", "/api/v1/hosts/{name}/evidence"),
}


@pytest.mark.slow
@pytest.mark.parametrize("who", ["admin", "controller", "host"])
def test_stateful_sequences(manager, schema, who):
    seen: dict[int, int] = {}

    class Scenario(schema.as_state_machine()):
        def setup(self) -> None:
            manager.start()

        def before_call(self, case) -> None:
            case.headers = {**(case.headers or {}),
                            "Authorization": f"Bearer {manager.tokens[who]}"}

        def validate_response(self, response, case, **kwargs) -> None:
            status = response.status_code
            seen[status] = seen.get(status, 0) + 1
            label = case.operation.label
            assert status < 500, (who, label, status, response.text[:500])
            operation = (case.operation.method.upper(), case.operation.path)
            if who != "admin" and 200 <= status < 300:
                assert operation in NODE_MAY, (
                    f"{who} token got {status} from {label}; if nodes may do this, add it "
                    "to NODE_MAY")
            case.validate_response(response, checks=CHECKS)

    Scenario.run(settings=settings(max_examples=5, stateful_step_count=6, deadline=None,
                                   database=None, suppress_health_check=list(HealthCheck)))
    assert any(200 <= s < 300 for s in seen), seen  # the scenarios did get somewhere


@pytest.mark.slow
def test_no_or_garbage_token_gets_401_or_403_everywhere(manager, schema):
    manager.start()
    operations = [op.ok() for op in schema.get_all_operations()]
    protected = [op for op in operations if op.definition.raw.get("security")]
    assert len(protected) >= 30
    failures: list[str] = []
    for operation in protected:

        @given(case=operation.as_strategy(), garbage=st.sampled_from(GARBAGE[1:]))
        @settings(max_examples=6, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case, garbage):
            headers = {k: v for k, v in (case.headers or {}).items()
                       if k.lower() != "authorization"}
            for authorization in (None, garbage):
                case.headers = ({**headers, "Authorization": authorization}
                                if authorization is not None else dict(headers))
                response = case.call()
                assert response.status_code in (401, 403), (
                    operation.label, authorization and authorization[:12], response.status_code,
                    response.text[:300])

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {str(exc)[:600]}")
    assert not failures, "\n\n".join(failures)
