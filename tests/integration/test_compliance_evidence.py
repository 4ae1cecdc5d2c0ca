"""Compliance from evidence, end to end: real manager, controller and host, faults on the wire.

``difs controller --manager`` advertises the fault proxy's portal (``--advertise-portal``), so
the host's paths run through :class:`faults.FaultProxy`. Two applications:

* ``dig`` (silver: CRC32C header and data digests, so channel 0) — a data bit flipped in one of
  its writes is caught by the controller's data digest and re-sent by the host: the evidence
  shows the digest error on both ends and compliance stays ``compliant``, saying what was
  caught;
* ``pi`` (T10 PI type 1 only, so the plain channel 1) — ``unknown`` while it has done no I/O,
  ``compliant`` once both ends report its PI-checked I/O, then a bit flipped in a WRITE's
  protect field (no header digest on that channel to catch it) makes the controller refuse the
  command (``pi_required``): the evidence turns it ``non_compliant`` naming the refusal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from difs.nbd.client import NbdClient, NbdClientError
from difs.nodelink.client import ManagerClient
from faults import DATA_OUT, SCSI_COMMAND, TO_TARGET, BitFlip, FaultProxy
from support import Proc, free_port, start_difs
from support import wait_until as _wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_until(what: str, ready, timeout: float = 45.0, procs: tuple = ()):
    return _wait_until(what, ready, timeout, procs)


INTERVAL = "0.3"
HOST_IQN = "iqn.2026-11.io.difs:host1"
#: the protect field's low bit (WRPROTECT 001b) in a WRITE(16) CDB: byte 1 bit 5; the CDB
#: starts at byte 32 of the SCSI Command PDU's basic header segment
PROTECT_BYTE, PROTECT_BIT = 32 + 1, 5




class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.manager = self._start("manager", "--listen", f"127.0.0.1:{port}",
                                   "--data-dir", str(tmp / "manager"), "--sweep-interval", "0.5",
                                   env={"DIFS_ADMIN_TOKEN": ""})
        wait_until("the manager", lambda: httpx.get(self.url + "/api/v1/healthz", timeout=1)
                   .status_code == 200, procs=(self.manager,))
        self.admin = ManagerClient(self.url, token=(tmp / "manager" / "admin-token")
                                   .read_text().strip())
        ctl_token = self.admin.request("POST", "/nodes", json={"name": "ctl1",
                                                               "kind": "controller"})["token"]
        host_token = self.admin.request("POST", "/nodes", json={"name": "host1",
                                                                "kind": "host"})["token"]
        listen = free_port()
        self.proxy = FaultProxy(("127.0.0.1", listen))
        self.controller = self._start(
            "controller", "--manager", self.url, "--name", "ctl1",
            "--portal", f"127.0.0.1:{listen}", "--advertise-portal", self.proxy.portal,
            "--data-dir", str(tmp / "ctl1"), "--interval", INTERVAL,
            env={"DIFS_NODE_TOKEN": ctl_token})
        self.nbd_port = free_port()
        self.host = self._start(
            "host", "--manager", self.url, "--name", "host1", "--initiator-name", HOST_IQN,
            "--nbd", f"127.0.0.1:{self.nbd_port}", "--interval", INTERVAL,
            "--state-dir", str(tmp / "host-state"), "--channels", "digests,plain",
            "--path-wait", "5", env={"DIFS_NODE_TOKEN": host_token})
        self.host.wait_for_lines(1, "nbd://")
        for node in ("ctl1", "host1"):
            wait_until(f"{node} alive", lambda n=node: self.admin.request(
                "GET", f"/nodes/{n}")["state"] == "alive", procs=tuple(self.procs))

    def _start(self, *args: str, env: dict[str, str]) -> Proc:
        proc = start_difs(*args, env=env)
        self.procs.append(proc)
        return proc

    def create_and_bind(self, name: str, **policy: Any) -> None:
        self.admin.request("POST", "/apps", json={"name": name, "size_bytes": 8 << 20, **policy})
        self.admin.bind(name, initiator_iqn=HOST_IQN, host="host1")
        wait_until(f"{name} running", lambda: (self.admin.request("GET", f"/apps/{name}")
                                               ["binding"] or {}).get("state") == "running",
                   procs=(self.host,))

    def compliance(self, name: str) -> dict[str, Any]:
        return self.admin.request("GET", f"/apps/{name}/compliance")

    def service(self, name: str, service: str) -> dict[str, Any]:
        return next(s for s in self.compliance(name)["services"] if s["service"] == service)

    def wait_state(self, name: str, state: str) -> dict[str, Any]:
        return wait_until(f"{name} {state}", lambda: (c := self.compliance(name))["state"] == state
                          and c, procs=(self.host, self.controller))

    def nbd(self, name: str) -> NbdClient:
        return NbdClient.open_tcp("127.0.0.1", self.nbd_port, name)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.proxy.close()
        self.admin.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_compliance_follows_the_evidence_while_faults_hit_the_wire(cluster: Cluster) -> None:
    c = cluster
    c.create_and_bind("pi", services={"integrity": {"protection_information": 1}})
    c.create_and_bind("dig", policy="silver")

    # bound and running, no I/O yet: nothing shows the services applied
    for app in ("pi", "dig"):
        report = c.compliance(app)
        assert report["state"] == "unknown", [(s["service"], s["state"], s["observed"]) for s in report["services"]]
        assert "no I/O" in c.service(app, "integrity")["observed"]

    # I/O: both ends report it, with the services their logins settled
    data = {app: os.urandom(256 << 10) for app in ("pi", "dig")}
    for app, payload in data.items():
        with c.nbd(app) as nbd:
            nbd.write(0, payload)
            nbd.flush()
            assert nbd.read(0, len(payload)) == payload
    for app in ("pi", "dig"):
        report = c.wait_state(app, "compliant")
        sides = {(e["side"], e["channel"]) for e in report["evidence"] if e["ios"]}
        assert {side for side, _ in sides} == {"host", "controller"}, report["evidence"]
    channels = {app: {e["channel"] for e in c.compliance(app)["evidence"] if e["ios"]}
                for app in ("pi", "dig")}
    assert channels == {"pi": {1}, "dig": {0}}
    dig_sessions = [e for e in c.compliance("dig")["evidence"] if e["ios"]]
    assert all("data digest" in e["services"] for e in dig_sessions), dig_sessions

    # a data bit flipped in one of dig's writes: caught by the data digest, re-sent, stored right
    flip = c.proxy.add(BitFlip(TO_TARGET, where="data", channel=0,
                               opcodes={SCSI_COMMAND, DATA_OUT}))
    with c.nbd("dig") as nbd:
        nbd.write(1 << 20, data["dig"])
        nbd.flush()
        assert nbd.read(1 << 20, len(data["dig"])) == data["dig"]
    assert flip.fired == 1
    caught = wait_until("the digest error in the evidence", lambda: (
        "digest" in (s := c.service("dig", "integrity"))["observed"]
        and "caught" in s["observed"] and s), procs=(c.host, c.controller))
    assert caught["state"] == "compliant", caught
    assert c.compliance("dig")["state"] == "compliant"

    # the protect field of one of pi's WRITEs flipped to 000b on the plain channel (no header
    # digest there): the controller refuses it, the evidence makes pi non-compliant
    c.proxy.clear()
    flip = c.proxy.add(BitFlip(TO_TARGET, where="header", channel=1, opcodes={SCSI_COMMAND},
                               byte=PROTECT_BYTE, bit=PROTECT_BIT))
    with c.nbd("pi") as nbd:
        with pytest.raises(NbdClientError):
            nbd.write(2 << 20, data["pi"][:4096])  # the refused command: an error, no retry
        assert flip.fired == 1
        assert nbd.read(0, len(data["pi"])) == data["pi"]  # what was stored is intact
    c.wait_state("pi", "non_compliant")
    # both ends say so: the host saw a refusal, the controller names its reason
    enforcement = wait_until("the controller's reason", lambda: (
        "pi_required" in (s := c.service("pi", "enforcement"))["observed"] and s),
        procs=(c.host, c.controller))
    assert enforcement["state"] == "non_compliant", enforcement
    assert c.compliance("pi")["state"] == "non_compliant"
    # the neighbour is untouched by pi's trouble
    assert c.compliance("dig")["state"] == "compliant"
