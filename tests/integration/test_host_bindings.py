"""A host that follows a manager: each binding in its own task with its state, and its last
bindings persisted so that it restarts into serving while the manager is down.

Real processes on loopback: ``difs manager``, ``difs controller --manager``, ``difs host
--manager``; the applications are read and written with a real NBD client.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from difs.nbd.client import NbdClient, NbdClientError
from difs.nodelink.client import ManagerClient, ManagerError
from support import DIFS, Proc, free_port, run, start_difs, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL = "0.3"
HOST_IQN = "iqn.2026-11.io.difs:host1"




@dataclass
class Cluster:
    tmp: Path
    manager_port: int
    nbd_port: int
    admin: ManagerClient | None = None
    manager: Proc | None = None
    controller: Proc | None = None
    host: Proc | None = None
    host_token: str = ""
    path_wait: str = "30"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.manager_port}"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "host-state"

    def start_manager(self) -> None:
        self.manager = start_difs("manager", "--listen", f"127.0.0.1:{self.manager_port}",
                                  "--data-dir", str(self.tmp / "manager"), "--sweep-interval", "0.5",
                                  env={"DIFS_ADMIN_TOKEN": ""})
        wait_until("the manager", lambda: httpx.get(self.url + "/api/v1/healthz", timeout=1)
                   .status_code == 200, procs=(self.manager,))
        if self.admin is None:
            token = (self.tmp / "manager" / "admin-token").read_text().strip()
            self.admin = ManagerClient(self.url, token=token)

    def stop_manager(self) -> None:
        assert self.manager is not None
        self.manager.stop()
        self.manager = None

    def start_host(self) -> Proc:
        self.host = start_difs(
            "host", "--manager", self.url, "--name", "host1", "--initiator-name", HOST_IQN,
            "--nbd", f"127.0.0.1:{self.nbd_port}", "--interval", INTERVAL,
            "--state-dir", str(self.state_dir), "--path-wait", self.path_wait,
            env={"DIFS_NODE_TOKEN": self.host_token})
        self.host.wait_for_lines(1, "nbd://")
        return self.host

    def stop_host(self) -> None:
        assert self.host is not None
        rc = self.host.stop()
        assert rc == 0, self.host.log_text()[-3000:]

    def admin_token(self) -> str:
        return (self.tmp / "manager" / "admin-token").read_text().strip()

    def node(self, name: str) -> dict[str, Any]:
        return self.admin.request("GET", f"/nodes/{name}")

    def app(self, name: str) -> dict[str, Any]:
        return self.admin.request("GET", f"/apps/{name}")

    def binding_state(self, name: str) -> tuple[str | None, str | None]:
        b = self.app(name)["binding"]
        return (b["state"], b["state_reason"]) if b else (None, None)

    def create_and_bind(self, name: str, **policy: Any) -> None:
        self.admin.request("POST", "/apps", json={"name": name, "size_bytes": 4 << 20, **policy})
        wait_until("host1 advertising", lambda: self.node("host1")["state"] == "alive",
                   procs=(self.host,))
        self.admin.bind(name, initiator_iqn=HOST_IQN, host="host1")

    def wait_running(self, name: str) -> None:
        wait_until(f"{name} running", lambda: self.binding_state(name)[0] == "running",
                   procs=(self.host,))

    def nbd(self, name: str) -> NbdClient:
        return NbdClient.open_tcp("127.0.0.1", self.nbd_port, name)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, free_port(), free_port())
    try:
        c.start_manager()
        ctl_token = c.admin.request("POST", "/nodes", json={"name": "ctl1", "kind": "controller"})["token"]
        c.host_token = c.admin.request("POST", "/nodes", json={"name": "host1", "kind": "host"})["token"]
        c.controller = start_difs("controller", "--manager", c.url, "--name", "ctl1",
                                  "--portal", f"127.0.0.1:{free_port()}",
                                  "--data-dir", str(tmp_path / "ctl1"), "--interval", INTERVAL,
                                  env={"DIFS_NODE_TOKEN": ctl_token})
        wait_until("ctl1 alive", lambda: c.node("ctl1")["state"] == "alive", procs=(c.controller,))
        yield c
    finally:
        for proc in (c.host, c.controller, c.manager):
            if proc is not None:
                proc.stop()
        if c.admin is not None:
            c.admin.close()


def test_host_restarted_with_the_manager_down_serves_from_persisted_state(cluster: Cluster):
    c = cluster
    c.start_host()
    c.create_and_bind("app1", policy="bronze")
    c.create_and_bind("app2", policy="bronze")
    c.wait_running("app1")
    c.wait_running("app2")
    data = os.urandom(64 << 10)
    with c.nbd("app1") as nbd:
        nbd.write(8192, data)
        nbd.flush()
    state_file = c.state_dir / "bindings.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    assert (c.state_dir / "state.key").stat().st_mode & 0o777 == 0o600

    c.stop_host()
    c.stop_manager()
    host = c.start_host()
    log_line = wait_until("the persisted start", lambda: [
        line for line in host.stderr if "starting the applications from persisted state" in line],
        procs=(host,))
    assert "app1,app2" in log_line[0]
    with wait_until("app1's export", lambda: c.nbd("app1"), procs=(host,)) as nbd:
        assert nbd.read(8192, len(data)) == data  # written before the restart
    with c.nbd("app2") as nbd:
        assert nbd.read(0, 4096) is not None

    # the manager is back: its bindings win (app2 unbound meanwhile -> stopped on the host)
    c.start_manager()
    c.admin.unbind("app2")
    wait_until("app2 stopped", lambda: "application stopped" in host.log_text()
               and "app=app2" in host.log_text(), procs=(host,))
    c.wait_running("app1")
    with c.nbd("app1") as nbd:
        assert nbd.read(8192, len(data)) == data
    with pytest.raises(NbdClientError):
        c.nbd("app2")
    saved = json.loads(state_file.read_text())["body"]["bindings"]
    assert [b["application"] for b in saved] == ["app1"]  # the reconciled bindings persisted


def test_a_tampered_or_torn_state_file_is_refused_whole(cluster: Cluster):
    c = cluster
    c.start_host()
    c.create_and_bind("app1", policy="bronze")
    c.wait_running("app1")
    c.stop_host()
    c.stop_manager()
    state_file = c.state_dir / "bindings.json"
    good = state_file.read_text()
    doc = json.loads(good)
    doc["body"]["bindings"][0]["volumes"][0]["lun"] += 1  # edited: another LUN
    state_file.write_text(json.dumps(doc))

    host = c.start_host()
    refused = wait_until("the refusal", lambda: [
        line for line in host.stderr if "persisted bindings refused" in line], procs=(host,))
    assert "failed its integrity check" in refused[0]
    with pytest.raises(NbdClientError):
        c.nbd("app1")  # nothing of it was started
    assert "application started" not in host.log_text()
    assert host.popen.poll() is None  # the host runs on, waiting for the manager
    c.stop_host()

    state_file.write_text(good[: len(good) // 2])  # torn
    host = c.start_host()
    refused = wait_until("the refusal", lambda: [
        line for line in host.stderr if "persisted bindings refused" in line], procs=(host,))
    assert "not a whole bindings file" in refused[0]
    with pytest.raises(NbdClientError):
        c.nbd("app1")
    c.stop_host()

    state_file.write_text(good)  # intact again, but its key is gone
    os.unlink(c.state_dir / "state.key")
    host = c.start_host()
    refused = wait_until("the refusal", lambda: [
        line for line in host.stderr if "persisted bindings refused" in line], procs=(host,))
    assert "key" in refused[0] and "missing" in refused[0]
    assert "application started" not in host.log_text()


def test_a_policy_the_volume_cannot_honour_fails_that_binding_only(cluster: Cluster):
    """Issue 16.1: PI added to a volume formatted without it is refused before anything changes
    (a migration must be asked for), and the host's link lives on."""
    c = cluster
    host = c.start_host()
    c.create_and_bind("app1", policy="bronze")
    c.create_and_bind("app2", policy="bronze")
    c.wait_running("app1")
    c.wait_running("app2")
    # the manager plans the change now: PI on a volume formatted without it needs a migration,
    # and a PUT that does not ask for one is refused, naming the volume's format (a host that is
    # handed a policy it cannot apply anyway fails that binding only: tests/unit/host's
    # test_host_bindings_follow)
    with pytest.raises(ManagerError) as refused:
        c.admin.request("PUT", "/apps/app2/policy",
                        json={"services": {"integrity": {"protection_information": 1}}})
    assert refused.value.status == 409
    assert "volume app2-0 is formatted without T10 PI" in refused.value.problem["reasons"][0]

    # the link lives on: the host keeps advertising and follows app1's change
    before = c.node("host1")["last_advertised_at"]
    c.admin.request("PUT", "/apps/app1/policy", json={"services": {"integrity": {"header_digest": True}}})
    wait_until("app1's new policy", lambda: "policy updated" in host.log_text()
               and "app=app1" in host.log_text().split("policy updated", 1)[1], procs=(host,))
    wait_until("a new advertisement", lambda: c.node("host1")["last_advertised_at"] != before)
    assert c.node("host1")["state"] == "alive"
    assert c.binding_state("app1") == ("running", None)
    with c.nbd("app1") as nbd:
        nbd.write(0, b"x" * 4096)
        assert nbd.read(0, 4096) == b"x" * 4096
    time.sleep(float(INTERVAL) * 5)  # several exchanges: app2 untouched, still running
    assert not any("binding failed" in line for line in host.stderr)
    assert c.binding_state("app2") == ("running", None)
    assert c.app("app2")["policy"]["version"] == 1


def _dead_controller(c: Cluster) -> None:
    """ctl2: advertises everything (a QoS latency target among it, which no real controller
    schedules for) on a portal nobody listens on."""
    token = c.admin.request("POST", "/nodes", json={"name": "ctl2", "kind": "controller"})["token"]
    with ManagerClient(c.url, token=token) as ctl2:
        ctl2.advertise("ctl2", {
            "kind": "controller", "iqn": "iqn.2026-11.io.difs:ctl2",
            "services": {"integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
                         "security": {"authentication": ["chap", "mutual_chap"]},
                         "qos": {"limit": True, "reservation": True, "weight": True,
                                 "latency_target": True}},
            "portals": [{"address": "127.0.0.1", "port": free_port()}],
            "containers": [{"name": "pool2", "capacity_bytes": 1 << 30, "pi_types": []}],
            "lease_seconds": 3600})


def test_an_unsatisfiable_binding_holds_up_neither_the_link_nor_the_others(cluster: Cluster):
    """Issue 16.2, and `difs app start` telling the truth (16.5)."""
    c = cluster
    c.path_wait = "10"
    host = c.start_host()
    c.create_and_bind("app1", policy="bronze")
    c.wait_running("app1")
    _dead_controller(c)
    # only ctl2 schedules for a latency target (ctl1 enforces limits now): app2 lands
    # there, and the host cannot reach it
    c.admin.request("POST", "/apps", json={"name": "app2", "size_bytes": 4 << 20,
                                           "services": {"qos": {"latency_target_ms": 50}}})
    assert c.app("app2")["volumes"][0]["controller"] == "ctl2"
    start = subprocess.Popen([*DIFS, "app", "start", "app2", "--host", "host1", "--timeout", "60",
                              "--manager", c.url, "--token", c.admin_token()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("app2 bound", lambda: c.app("app2")["binding"])
    started = time.monotonic()
    # while app2 waits for a path, the host keeps advertising and app1 keeps serving
    seen = {c.node("host1")["last_advertised_at"]}
    while time.monotonic() - started < 5:
        node = c.node("host1")
        assert node["state"] == "alive"
        seen.add(node["last_advertised_at"])
        with c.nbd("app1") as nbd:
            nbd.read(0, 4096)
        time.sleep(0.2)
    # new advertisements while app2 waits (one exchange per --path-wait would give at most one)
    assert len(seen) >= 3, seen
    assert c.binding_state("app2")[0] == "starting"
    out, err = start.communicate(timeout=60)
    assert start.returncode == 1, (out, err)
    state, reason = c.binding_state("app2")
    assert state == "failed" and reason
    said = " ".join(err.split())
    assert "app2 on host1: starting" in said
    assert f"application app2 failed on host host1: {' '.join(reason.split())}" in said
    assert c.binding_state("app1") == ("running", None)
    assert sum("binding failed" in line and "app=app2" in line for line in host.stderr) == 1
    listed = run([*DIFS, "app", "list", "--manager", c.url, "--token", c.admin_token()],
                 env={**os.environ, "COLUMNS": "300"})
    assert "running" in listed.stdout and "failed:" in listed.stdout

    # and a start that works says so once the host runs it
    c.create_and_bind("app3", policy="bronze")
    c.admin.unbind("app3")
    ok = run([*DIFS, "app", "start", "app3", "--host", "host1", "--timeout", "60",
              "--manager", c.url, "--token", c.admin_token()])
    assert "application app3 running on host1" in " ".join(ok.stdout.split())
    assert c.binding_state("app3") == ("running", None)
