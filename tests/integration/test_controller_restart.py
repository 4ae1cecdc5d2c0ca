"""A manager-driven controller restarts into serving without its manager (issue 17 finding 1,
issue 16 finding 4), with real processes on loopback: a ``difs manager``, a ``difs controller
--manager`` and difs' own iSCSI initiator.

The manager places two volumes (a policy that requires CRC32C header and data digests) and
binds them to one initiator, which writes to both. Then the manager is stopped and the
controller killed with SIGKILL; restarted with the same ``--manager`` URL while the manager is
still down, the controller serves both volumes at their LUNs, to that initiator only, with
their policy enforced: the data reads back and new writes succeed. When the manager is back,
its view wins: the volume it unbinds leaves the initiator's view, and the persisted state
says so. A persisted state that was tampered with is refused with a log line naming the
file and the reason; the controller still starts, serves nothing until the manager answers,
and then serves the manager's view.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support import Proc, free_port, start_difs

from difs.host.connection import IscsiSession, SessionTimers
from difs.iscsi.config import InitiatorConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INITIATOR = "iqn.2026-11.io.difs.test:restart-host"
STRANGER = "iqn.2026-11.io.difs.test:stranger"
QUIET = SessionTimers(nop_interval=None, command_timeout=10.0, login_timeout=5.0)
DIGESTS = {"header_digest": True, "data_digest": True}
BLOCKS = 64  # 32 KiB per write
ADMIN_ENV = {"DIFS_ADMIN_TOKEN": ""}  # the manager makes one and keeps it in its data dir


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Manager:
    """``difs manager`` on a fixed port and data directory, so it can be stopped and restarted."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = start_difs("manager", "--listen", f"127.0.0.1:{self.port}",
                               "--data-dir", str(self.data), "--sweep-interval", "0.5",
                               env=ADMIN_ENV)

        def healthy() -> bool:
            assert self.proc.popen.poll() is None, self.proc.log_text()
            try:
                return httpx.get(self.url + "/api/v1/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, "the manager to come up")
        token = (self.data / "admin-token").read_text().strip()
        self.api = httpx.Client(base_url=self.url + "/api/v1", timeout=10,
                                headers={"Authorization": f"Bearer {token}"})

    def stop(self) -> None:
        if self.proc is not None:
            self.api.close()
            self.proc.stop()
            self.proc = None

    def ok(self, method: str, path: str, status: int = 200, **kw) -> object:
        r = self.api.request(method, path, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r.json() if r.content else None


class Controller:
    """``difs controller --manager``: started, SIGKILLed and restarted on one data directory."""

    def __init__(self, data: Path, manager: Manager, token: str) -> None:
        self.data, self.manager, self.token = data, manager, token
        self.port = free_port()
        self.portal = f"127.0.0.1:{self.port}"
        self.iqn = "iqn.2026-11.io.difs:ctl1"
        self.proc: Proc | None = None
        self.runs: list[Proc] = []

    def start(self) -> Proc:
        self.proc = start_difs("controller", "--portal", self.portal, "--data-dir", str(self.data),
                               "--name", "ctl1", "--manager", self.manager.url,
                               "--interval", "0.3", env={"DIFS_NODE_TOKEN": self.token})
        self.runs.append(self.proc)
        self.proc.wait_for_lines(1, f"iscsi://{self.portal}/{self.iqn}")
        return self.proc

    def kill9(self) -> None:
        os.kill(self.proc.popen.pid, signal.SIGKILL)
        assert self.proc.popen.wait(10) == -signal.SIGKILL
        self.proc.stop()  # joins the output readers

    def state(self) -> dict:
        return json.loads((self.data / "manager-state.json").read_text())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Manager, Controller]]:
    manager = Manager(tmp_path / "manager")
    manager.start()
    ctl = None
    try:
        def register(name: str, kind: str) -> str:
            return manager.ok("POST", "/nodes", 201, json={"name": name, "kind": kind})["token"]

        token, host_token = register("ctl1", "controller"), register("host1", "host")
        ctl = Controller(tmp_path / "ctl", manager, token)
        ctl.start()
        wait_until(lambda: any(n["name"] == "ctl1" and n["state"] == "alive"
                               for n in manager.ok("GET", "/nodes")), "ctl1 to advertise")
        host = httpx.put(f"{manager.url}/api/v1/nodes/host1/advertisement", timeout=10,
                         headers={"Authorization": f"Bearer {host_token}"}, json={
                             "kind": "host", "iqn": INITIATOR, "lease_seconds": 300,
                             "services": {"integrity": {**DIGESTS, "pi_types": [1, 3]}},
                             "paths": [{"controller": "ctl1", "channel": 0, "portal": ctl.portal,
                                        "negotiated": DIGESTS}]})
        assert host.status_code == 200, host.text
        manager.ok("POST", "/policies", 201,
                   json={"name": "digests", "services": {"integrity": DIGESTS}})
        for app in ("app1", "app2"):
            manager.ok("POST", "/apps", 201,
                       json={"name": app, "size_bytes": 8 << 20, "policy": "digests"})
            manager.ok("POST", f"/apps/{app}/binding",
                       json={"initiator_iqn": INITIATOR, "host": "host1"})
        yield manager, ctl
    finally:
        if ctl is not None and ctl.proc is not None:
            ctl.proc.stop()
        manager.stop()


def luns_of(manager: Manager) -> dict[str, int]:
    """app -> LUN, as the manager placed them."""
    return {app: manager.ok("GET", f"/apps/{app}")["volumes"][0]["lun"] for app in ("app1", "app2")}


def rw10(op: int, lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", op, 0, lba, 0, n, 0)


async def session(ctl: Controller, *, initiator: str = INITIATOR, digests: bool = True,
                  isid: int = 0x023D00000001) -> IscsiSession:
    want = ("CRC32C",) if digests else ("None",)
    config = InitiatorConfig(initiator_name=initiator, isid=isid, target_name=ctl.iqn,
                             header_digest=want, data_digest=want)
    return await IscsiSession.connect(ctl.portal, config, name="restart", timers=QUIET)


async def command(s: IscsiSession, lun: int, cdb: bytes, **kw):
    """One command, re-sent after a UNIT ATTENTION (a new session's I_T nexus loss, 29h/07h)
    as any initiator does."""
    for _ in range(3):
        done = await s.execute(lun, cdb, **kw)
        if not (done.status == 2 and bytes(done.sense)[2] & 0x0F == 0x6):
            break
    return done


async def report_luns(s: IscsiSession) -> set[int]:
    done = await command(s, 0, struct.pack(">BBBBBBIBB", 0xA0, 0, 0, 0, 0, 0, 4096, 0, 0),
                         expected_in_length=4096)
    assert done.status == 0, bytes(done.sense).hex()
    data = bytes(done.data)
    length = struct.unpack_from(">I", data)[0]
    return {struct.unpack_from(">H", data, 8 + i)[0] & 0x3FFF for i in range(0, length, 8)}


def visible_luns(ctl: Controller, **kw) -> set[int]:
    async def go() -> set[int]:
        s = await session(ctl, **kw)
        try:
            return await report_luns(s)
        finally:
            await s.logout()
    return asyncio.run(go())


async def write(s: IscsiSession, lun: int, lba: int, data: bytes) -> None:
    done = await command(s, lun, rw10(0x2A, lba, len(data) // 512), data_out=data)
    assert done.status == 0, (lun, lba, bytes(done.sense).hex())
    done = await command(s, lun, struct.pack(">BBIBHB", 0x35, 0, 0, 0, 0, 0))  # SYNC CACHE
    assert done.status == 0, bytes(done.sense).hex()


async def read(s: IscsiSession, lun: int, lba: int, blocks: int) -> bytes:
    done = await command(s, lun, rw10(0x28, lba, blocks), expected_in_length=blocks * 512)
    assert done.status == 0, (lun, lba, bytes(done.sense).hex())
    return bytes(done.data)


def pattern(tag: str, lun: int, lba: int) -> bytes:
    seed = f"{tag}:{lun}:{lba}:".encode()
    return (seed * (BLOCKS * 512 // len(seed) + 1))[:BLOCKS * 512]


def write_round(ctl: Controller, tag: str, luns: list[int], lbas: list[int]) -> None:
    async def go() -> None:
        s = await session(ctl)
        try:
            for lun in luns:
                for lba in lbas:
                    await write(s, lun, lba, pattern(tag, lun, lba))
        finally:
            await s.logout()
    asyncio.run(go())


def read_back(ctl: Controller, expected: dict[tuple[int, int], str]) -> None:
    async def go() -> None:
        s = await session(ctl)
        try:
            for (lun, lba), tag in expected.items():
                assert await read(s, lun, lba, BLOCKS) == pattern(tag, lun, lba), (lun, lba, tag)
        finally:
            await s.logout()
    asyncio.run(go())


def refused_without_digests(ctl: Controller, lun: int) -> bool:
    """A session without digests may see the LUN but not read it (the policy is enforced)."""
    async def go() -> bool:
        s = await session(ctl, digests=False, isid=0x023D00000009)
        try:
            done = await command(s, lun, rw10(0x28, 0, 1), expected_in_length=512)
            sense = bytes(done.sense)
            return done.status == 2 and sense[2] & 0x0F == 0x7 and sense[12:14] == b"\x74\x71"
        finally:
            await s.logout()
    return asyncio.run(go())


def test_restart_without_the_manager_serves_and_reconciles_when_it_returns(cluster) -> None:
    manager, ctl = cluster
    luns = luns_of(manager)
    wait_until(lambda: visible_luns(ctl) == set(luns.values()), "both LUNs in the view")
    expected = {}
    write_round(ctl, "before", list(luns.values()), [0, 1000])
    expected.update({(lun, lba): "before" for lun in luns.values() for lba in (0, 1000)})
    wait_until(lambda: (ctl.data / "manager-state.json").exists(), "the state to be saved")

    # manager down, controller killed; restarted with the same --manager, manager still down
    manager.stop()
    ctl.kill9()
    log = ctl.start()
    wait_until(lambda: "serving from the persisted state" in log.log_text(), "the log line")
    assert visible_luns(ctl) == set(luns.values())
    assert visible_luns(ctl, initiator=STRANGER) == set()  # isolation kept
    assert refused_without_digests(ctl, luns["app1"])  # policy kept
    read_back(ctl, expected)
    write_round(ctl, "offline", list(luns.values()), [2000])
    expected.update({(lun, 2000): "offline" for lun in luns.values()})
    read_back(ctl, expected)
    assert ctl.proc.popen.poll() is None

    # the manager is back: its view wins (app2 unbound: its LUN leaves the view), state rewritten
    manager.start()
    manager.ok("DELETE", "/apps/app2/binding", 204)
    wait_until(lambda: visible_luns(ctl) == {luns["app1"]}, "app2's LUN to leave the view")
    wait_until(lambda: {v["name"]: v["allowed_initiators"] for v in ctl.state()["volumes"]}
               == {"app1-0": [INITIATOR], "app2-0": []}, "the state to follow the manager")
    read_back(ctl, {k: v for k, v in expected.items() if k[0] == luns["app1"]})
    wait_until(lambda: "manager reachable again" in ctl.proc.log_text(), "the link's log line")

    # and a restart without the manager now serves the manager's latest view
    manager.stop()
    ctl.kill9()
    ctl.start()
    assert visible_luns(ctl) == {luns["app1"]}
    read_back(ctl, {k: v for k, v in expected.items() if k[0] == luns["app1"]})


def test_a_tampered_state_is_refused_and_the_controller_waits_for_the_manager(cluster) -> None:
    manager, ctl = cluster
    luns = luns_of(manager)
    wait_until(lambda: visible_luns(ctl) == set(luns.values()), "both LUNs in the view")
    write_round(ctl, "kept", [luns["app1"]], [0])
    wait_until(lambda: (ctl.data / "manager-state.json").exists(), "the state to be saved")
    manager.stop()
    ctl.kill9()
    # someone opens app2 to another initiator by editing the state file
    path = ctl.data / "manager-state.json"
    path.write_text(path.read_text().replace(INITIATOR, STRANGER, 1))

    log = ctl.start()
    wait_until(lambda: "persisted state refused" in log.log_text(), "the refusal in the log")
    [line] = [x for x in log.stderr if "persisted state refused" in x]
    assert "ERROR" in line and str(path) in line and "checksum mismatch" in line, line
    assert "serving nothing until the manager answers" in line
    assert log.popen.poll() is None  # it started, and serves nothing it cannot trust
    assert visible_luns(ctl) == set()
    assert visible_luns(ctl, initiator=STRANGER) == set()

    manager.start()
    wait_until(lambda: visible_luns(ctl) == set(luns.values()), "the manager's view")
    read_back(ctl, {(luns["app1"], 0): "kept"})
    wait_until(lambda: ctl.state()["volumes"] and all(
        v["allowed_initiators"] == [INITIATOR] for v in ctl.state()["volumes"]),
        "the state to be rewritten from the manager")


def test_a_policy_needing_chap_is_not_placed_on_a_controller_without_it(cluster) -> None:
    """Honest advertisement (issue 16): the manager-driven endpoint has no CHAP, the controller
    says so, and an application whose policy needs CHAP is refused at placement naming the
    controller and the service, instead of being placed and then failing every I/O."""
    manager, _ = cluster
    node = manager.ok("GET", "/nodes/ctl1")
    assert node["services"]["security"]["authentication"] == []
    manager.ok("POST", "/policies", 201, json={
        "name": "chap-only", "services": {"security": {"authentication": "chap"}}})
    r = manager.api.post("/apps", json={"name": "app3", "size_bytes": 8 << 20,
                                        "policy": "chap-only"})
    assert r.status_code == 409, r.text
    assert "ctl1" in r.text and "CHAP" in r.text, r.text
