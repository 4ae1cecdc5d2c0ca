"""The real ``difs manager`` process, driven by the ``difs`` CLI (as a user would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mgr_support import HOST1_IQN, controller_adv, free_port, host_adv, path_entry, session_entry
from difs.cli.main import app as cli_app

pytestmark = pytest.mark.integration
DIFS = [sys.executable, "-m", "difs.cli.main"]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    data = tmp_path / "data"
    log = open(tmp_path / "manager.log", "wb")
    proc = subprocess.Popen(
        [*DIFS, "manager", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data), "--sweep-interval", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DIFS_ADMIN_TOKEN": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "manager.log").read_text()
            try:
                if httpx.get(url + "/api/v1/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the manager did not come up"
            time.sleep(0.1)
        token = (data / "admin-token").read_text().strip()
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert token not in (tmp_path / "manager.log").read_text()  # the secret is never logged


def test_walkthrough_with_the_cli(manager: tuple[str, str], tmp_path: Path):
    url, token = manager
    env = {"DIFS_MANAGER": url, "DIFS_TOKEN": token, "COLUMNS": "200"}
    runner = CliRunner()

    def difs(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli_app, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.output

    # the real entry point, as a separate process
    out = subprocess.run([*DIFS, "tier", "list", "--json"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {t["name"] for t in json.loads(out.stdout)} == {"gold", "silver", "bronze"}

    ctl_token = json.loads(difs("node", "register", "ctl1", "--kind", "controller", "--json"))["token"]
    adv = tmp_path / "adv.json"
    caps = controller_adv()
    caps["services"]["security"]["tls"] = False
    adv.write_text(json.dumps(caps))
    assert "alive" in difs("node", "advertise", "ctl1", "--file", str(adv), "--token", ctl_token)
    assert "ctl1" in difs("node", "list")

    pol = json.loads(difs("policy", "create", "fast", "--data-digest", "--limit-iops", "500", "--dscp", "af41", "--json"))
    assert pol["services"]["qos"] == {**pol["services"]["qos"], "limit_iops": 500, "dscp": 34}
    assert json.loads(difs("tier", "create", "mygold", "--from", "gold", "--weight", "800", "--json"))["services"]["qos"]["weight"] == 800

    created = json.loads(difs("app", "create", "db", "--size", "64M", "--tier", "gold", "--json"))
    assert created["placement"]["choice"]["container"] == "pool" and created["volumes"][0]["size_bytes"] == 64 << 20
    shown = difs("app", "show", "db")
    assert "application db" in shown and "gold version 1" in shown and "ctl1/pool" in shown

    assert "version 2" in difs("app", "set-policy", "db", "--policy", "fast")
    refused = difs("app", "set-policy", "db", "--tls", code=1)
    assert "controller ctl1 does not offer TLS 1.3" in refused and "nothing was changed" in refused
    assert json.loads(difs("app", "get-policy", "db", "--json"))["version"] == 2

    vols = json.loads(difs("volume", "list", "--json"))
    assert [v["name"] for v in vols] == ["db-0"]
    assert json.loads(difs("volume", "resize", "db-0", "--size", "128M", "--json"))["size_bytes"] == 128 << 20
    assert "shrinking" in difs("volume", "resize", "db-0", "--size", "4K", code=1)
    assert "pool" in difs("volume", "containers")
    assert "compliance" in difs("app", "list").lower()

    # clear errors with what to do
    down = runner.invoke(cli_app, ["tier", "list"], env={**env, "DIFS_MANAGER": "http://127.0.0.1:9"})
    assert down.exit_code == 2 and "is the manager running? start it with `difs manager`" in down.output
    wrong = runner.invoke(cli_app, ["app", "list"], env={**env, "DIFS_TOKEN": "not-the-token"})
    assert wrong.exit_code == 1 and "--token or DIFS_TOKEN" in wrong.output
    assert "unknown service" in difs("policy", "create", "bad", "--services", '{"speed": {}}', code=1)

    difs("app", "delete", "db")
    assert json.loads(difs("app", "list", "--json")) == []
    assert "app.deleted" in difs("node", "events", "--kind", "app.")


def test_dry_run_without_a_placement_exits_non_zero(manager: tuple[str, str], tmp_path: Path):
    url, token = manager
    env = {"DIFS_MANAGER": url, "DIFS_TOKEN": token, "COLUMNS": "200"}
    runner = CliRunner()
    ctl_token = json.loads(runner.invoke(cli_app, ["node", "register", "ctl1", "--kind", "controller", "--json"],
                                         env=env).output)["token"]
    caps = controller_adv()
    caps["services"]["security"]["tls"] = False
    adv = tmp_path / "adv.json"
    adv.write_text(json.dumps(caps))
    assert runner.invoke(cli_app, ["node", "advertise", "ctl1", "--file", str(adv), "--token", ctl_token],
                         env=env).exit_code == 0
    fits = runner.invoke(cli_app, ["app", "create", "db", "--size", "64M", "--dry-run"], env=env)
    assert fits.exit_code == 0 and "would place on ctl1/pool" in fits.output
    nowhere = runner.invoke(cli_app, ["app", "create", "db", "--size", "64M", "--tls", "--dry-run"], env=env)
    assert nowhere.exit_code == 1, nowhere.output
    assert "no placement possible" in nowhere.output and "TLS" in nowhere.output
    as_json = runner.invoke(cli_app, ["app", "create", "db", "--size", "64M", "--tls", "--dry-run", "--json"], env=env)
    assert as_json.exit_code == 1 and json.loads(as_json.output)["feasible"] is False


def test_app_show_prints_compliance_with_the_evidence_it_was_judged_on(manager: tuple[str, str], monkeypatch):
    from difs.cli.common import console

    # the console measured its width when first imported (by whichever test ran first here)
    monkeypatch.setattr(console, "width", 250)
    url, token = manager
    env = {"DIFS_MANAGER": url, "DIFS_TOKEN": token, "COLUMNS": "250"}
    runner = CliRunner()

    def difs(*args: str) -> str:
        result = runner.invoke(cli_app, list(args), env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    tokens = {n: json.loads(difs("node", "register", n, "--kind", k, "--json"))["token"]
              for n, k in (("ctl1", "controller"), ("host1", "host"))}
    gold_path = {"controller": "ctl1", "channel": 0, "portal": "127.0.0.1:3260",
                 "negotiated": {"header_digest": True, "data_digest": True, "pi_types": [1],
                                "authentication": "mutual_chap"}}

    def put(path: str, node: str, body: dict) -> None:
        r = httpx.put(f"{url}/api/v1{path}", json=body, headers={"Authorization": f"Bearer {tokens[node]}"})
        assert r.status_code == 200, r.text

    put("/nodes/ctl1/advertisement", "ctl1", controller_adv())
    put("/nodes/host1/advertisement", "host1", host_adv(paths=[gold_path]))
    difs("app", "create", "db", "--size", "1M", "--tier", "gold")
    difs("app", "bind", "db", "--initiator", HOST1_IQN, "--host", "host1")
    assert "no evidence from the data path in the last 120 s" in difs("app", "show", "db")
    put("/controllers/ctl1/evidence", "ctl1", {"window_seconds": 10, "sessions": [session_entry()]})
    put("/hosts/host1/evidence", "host1", {"window_seconds": 10, "paths": [path_entry()]})
    shown = difs("app", "show", "db")
    assert "compliance compliant" in shown
    assert "Evidence (windows reported in the last 120 s; age when judged)" in shown
    assert f"ctl1#0 db-0 from {HOST1_IQN}" in shown and "controller ctl1" in shown and "host host1" in shown
    assert "header digest, data digest, mutual chap" in shown and "400.0 KiB" in shown
    assert "100 I/Os over ctl1#0" in shown
    data = json.loads(difs("app", "show", "db", "--json"))
    assert {e["side"] for e in data["compliance"]["evidence"]} == {"controller", "host"}
    assert "Evidence" in difs("app", "compliance", "db")
