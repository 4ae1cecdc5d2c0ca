"""``difs status`` against a real ``difs manager``: the screen, ``--json`` checked against the
API, the alarms and the exit codes that say whether there are any."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from difs.cli.main import app as cli_app
from difs.cli.status_cmd import cluster_status
from mgr_support import controller_adv, host_adv
from test_cli_e2e import manager  # noqa: F401  (the real manager process fixture)

pytestmark = pytest.mark.integration


def test_status_shows_the_cluster_and_its_alarms(manager, tmp_path: Path) -> None:  # noqa: F811
    url, token = manager
    env = {"DIFS_MANAGER": url, "DIFS_TOKEN": token, "COLUMNS": "200"}
    runner = CliRunner()
    api = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"})

    def difs(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli_app, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.output

    # an empty cluster is healthy
    empty = json.loads(difs("status", "--json"))
    assert empty["healthy"] is True and empty["nodes"] == [] and empty["alarms"] == []

    tokens = {}
    for name, kind in (("ctl1", "controller"), ("host1", "host")):
        tokens[name] = api.post("/nodes", json={"name": name, "kind": kind}).json()["token"]
    caps = controller_adv()
    caps["services"]["security"]["tls"] = False
    assert httpx.put(f"{url}/api/v1/nodes/ctl1/advertisement", json=caps,
                     headers={"Authorization": f"Bearer {tokens['ctl1']}"}).status_code == 200
    # the host advertises with a 1 s lease and then falls silent
    assert httpx.put(f"{url}/api/v1/nodes/host1/advertisement", json=host_adv(lease=1),
                     headers={"Authorization": f"Bearer {tokens['host1']}"}).status_code == 200
    assert api.post("/apps", json={"name": "db", "size_bytes": 64 << 20,
                                   "policy": "bronze"}).status_code == 201

    deadline = time.monotonic() + 20
    while api.get("/nodes/host1").json()["state"] != "expired":
        assert time.monotonic() < deadline, "host1's lease did not expire"
        time.sleep(0.2)

    result = runner.invoke(cli_app, ["status", "--json"], env=env)
    assert result.exit_code == 1, result.output  # there is an alarm
    status = json.loads(result.output)
    # what --json says is what the API says
    nodes = {n["name"]: n for n in api.get("/nodes").json()}
    assert {n["name"]: (n["kind"], n["state"]) for n in status["nodes"]} == {
        name: (n["kind"], n["state"]) for name, n in nodes.items()}
    apps = api.get("/apps").json()
    assert [(a["name"], a["compliance"]) for a in status["applications"]] == [
        (a["name"], a["compliance"]["state"]) for a in apps]
    assert status["applications"][0]["controllers"] == ["ctl1"]
    assert {"subject": "host1", "alarm": "lease expired",
            "detail": "host stopped advertising"} in status["alarms"]
    assert status["healthy"] is False
    assert status["manager"]["database_up"] is True
    # the latest events, oldest first, end with the lease expiry
    assert status["events"][-1]["kind"] == "node.lease_expired"

    screen = runner.invoke(cli_app, ["status"], env=env)
    assert screen.exit_code == 1
    for text in ("nodes", "applications", "alarms", "lease expired", "host1", "ctl1", "db"):
        assert text in screen.output, (text, screen.output)

    down = runner.invoke(cli_app, ["status"], env={**env, "DIFS_MANAGER": "http://127.0.0.1:9"})
    assert down.exit_code == 2

    # the events it shows are the latest ones, in order, however many came before
    every = api.get("/events", params={"limit": 1000}).json()
    assert len(every) > 3
    last = api.get("/events", params={"limit": 3, "latest": "true"}).json()
    assert [e["id"] for e in last] == [e["id"] for e in every[-3:]]
    assert [e["id"] for e in api.get("/events", params={"limit": 3}).json()] == \
        [e["id"] for e in every[:3]]


def test_status_alarms_for_non_compliance_and_failed_bindings() -> None:
    """The reduction is pure: a non-compliant application and a failed binding are alarms with
    their reasons, a compliant one is not."""
    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    compliant = {"name": "a", "policy": {"source": "gold", "summary": []}, "volumes": [],
                 "binding": {"host": "h1", "state": "running"},
                 "compliance": {"state": "compliant", "services": []}}
    broken = {"name": "b", "policy": None, "volumes": [{"controller": "c1"}],
              "binding": {"host": "h1", "state": "failed", "state_reason": "no path"},
              "compliance": {"state": "non_compliant", "services": [
                  {"service": "integrity", "observed": "I/O on a path without digests",
                   "state": "non_compliant"},
                  {"service": "qos", "observed": "fine", "state": "compliant"}]}}
    status = cluster_status(health={"version": "x", "status": "ok", "database": "sqlite"},
                            nodes=[{"name": "h1", "kind": "host", "state": "alive",
                                    "lease_expires_at": "2026-12-03T12:00:30+00:00",
                                    "paths": [{"up": True}, {"up": False}]}],
                            apps=[broken, compliant], events=[], now=now)
    assert status["nodes"][0]["lease_left_seconds"] == 30.0
    assert (status["nodes"][0]["paths_up"], status["nodes"][0]["paths"]) == (1, 2)
    assert [a["name"] for a in status["applications"]] == ["a", "b"]
    assert status["alarms"] == [
        {"subject": "b", "alarm": "not compliant",
         "detail": "integrity: I/O on a path without digests"},
        {"subject": "b", "alarm": "binding failed", "detail": "on h1: no path"},
    ]
    db_down = cluster_status(health={"database_up": False, "database_error": "OperationalError"},
                             nodes=[], apps=[], events=[], now=now)
    assert db_down["alarms"] == [{"subject": "manager", "alarm": "database down",
                                  "detail": "OperationalError"}]
