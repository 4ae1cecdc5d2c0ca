"""Policy change as a transaction, with real processes: ``difs manager``, ``difs controller
--manager``, ``difs host --manager`` on loopback, the application read and written over NBD.

* PI added to a plain volume is a migration: the host copies the data to a new PI volume
  while a writer keeps writing, pauses the I/O briefly, switches; every byte written before
  and during the copy is there afterwards, and the controller checks PI on the new volume.
* An aborted migration leaves the application on its old volume, with its data and policy,
  its I/O never interrupted.
* A change no node can honour is refused (409, exit 1) with its reasons and changes nothing.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from difs.nbd.client import NbdClient
from difs.nodelink.client import ManagerClient
from support import DIFS, Proc, free_port, metric, run, start_difs
from support import wait_until as _wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_until(what: str, ready, timeout: float = 120.0, procs: tuple = ()):
    return _wait_until(what, ready, timeout, procs)

INTERVAL = "0.3"
HOST_IQN = "iqn.2026-11.io.difs:host1"
MIB = 1 << 20




@dataclass
class Cluster:
    tmp: Path
    url: str
    nbd_port: int
    metrics_url: str
    admin: ManagerClient
    procs: list[Proc] = field(default_factory=list)

    def cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        token = (self.tmp / "manager" / "admin-token").read_text().strip()
        out = run([*DIFS, *args, "--manager", self.url, "--token", token], check=False, timeout=300)
        assert out.returncode == code, (out.stdout, out.stderr, self.logs())
        return out

    def logs(self) -> str:
        return "\n".join(p.log_text()[-4000:] for p in self.procs)

    def app(self, name: str = "db") -> dict[str, Any]:
        return self.admin.request("GET", f"/apps/{name}")

    def nbd(self, name: str = "db") -> NbdClient:
        return NbdClient.open_tcp("127.0.0.1", self.nbd_port, name)

    def controller_volumes(self) -> list[str]:
        return sorted(v["name"] for v in self.admin.request("GET", "/controllers/ctl1/volumes"))

    def create_running(self, size: int) -> None:
        wait_until("ctl1 alive", lambda: self.admin.request("GET", "/nodes/ctl1")["state"] == "alive",
                   procs=tuple(self.procs))
        self.admin.request("POST", "/apps", json={"name": "db", "size_bytes": size, "policy": "bronze"})
        wait_until("host1 alive", lambda: self.admin.request("GET", "/nodes/host1")["state"] == "alive",
                   procs=tuple(self.procs))
        self.admin.bind("db", initiator_iqn=HOST_IQN, host="host1")
        wait_until("db running", lambda: (self.app()["binding"] or {}).get("state") == "running",
                   procs=tuple(self.procs))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[Proc] = []
    try:
        procs.append(start_difs("manager", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "manager"),
                                "--sweep-interval", "0.5", env={"DIFS_ADMIN_TOKEN": ""}))
        wait_until("the manager", lambda: httpx.get(url + "/api/v1/healthz", timeout=1).status_code == 200,
                   procs=tuple(procs))
        admin = ManagerClient(url, token=(tmp_path / "manager" / "admin-token").read_text().strip())
        ctl_token = admin.request("POST", "/nodes", json={"name": "ctl1", "kind": "controller"})["token"]
        host_token = admin.request("POST", "/nodes", json={"name": "host1", "kind": "host"})["token"]
        metrics_port = free_port()
        procs.append(start_difs("controller", "--manager", url, "--name", "ctl1", "--portal", f"127.0.0.1:{free_port()}",
                                "--data-dir", str(tmp_path / "ctl1"), "--interval", INTERVAL,
                                "--metrics", f"127.0.0.1:{metrics_port}", env={"DIFS_NODE_TOKEN": ctl_token}))
        nbd_port = free_port()
        procs.append(start_difs("host", "--manager", url, "--name", "host1", "--initiator-name", HOST_IQN,
                                "--nbd", f"127.0.0.1:{nbd_port}", "--interval", INTERVAL,
                                "--state-dir", str(tmp_path / "host-state"), env={"DIFS_NODE_TOKEN": host_token}))
        procs[-1].wait_for_lines(1, "nbd://")
        yield Cluster(tmp_path, url, nbd_port, f"http://127.0.0.1:{metrics_port}/metrics", admin, procs)
    finally:
        for p in reversed(procs):
            p.stop()


class Writer(threading.Thread):
    """Writes 4 KiB blocks over its own NBD connection until stopped, mostly in a hot region,
    remembering what it wrote where; fails the test if any write fails."""

    def __init__(self, c: Cluster, model: dict[int, bytes], size: int, hot: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.c, self.model, self.size, self.hot = c, model, size, hot
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None
        self.slowest = 0.0

    def run(self) -> None:
        try:
            with self.c.nbd() as nbd:
                while not self.stop.is_set():
                    span = self.hot if self.writes % 10 else self.size
                    offset = self.rng.randrange(0, span // 4096) * 4096
                    data = self.rng.randbytes(4096)
                    began = time.monotonic()
                    nbd.write(offset, data)
                    self.slowest = max(self.slowest, time.monotonic() - began)
                    self.model[offset] = data
                    self.writes += 1
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def expected(base: bytes, model: dict[int, bytes]) -> bytearray:
    out = bytearray(base)
    for offset, data in model.items():
        out[offset:offset + len(data)] = data
    return out


def read_all(c: Cluster, size: int) -> bytes:
    with c.nbd() as nbd:
        return b"".join(nbd.read(o, MIB) for o in range(0, size, MIB))


def test_pi_added_to_a_plain_volume_migrates_under_running_io(cluster: Cluster):
    c = cluster
    size = 32 * MIB
    c.create_running(size)
    base = random.Random(1).randbytes(size)
    with c.nbd() as nbd:
        for o in range(0, size, MIB):
            nbd.write(o, base[o:o + MIB])
    model: dict[int, bytes] = {}
    writer = Writer(c, model, size, hot=4 * MIB, seed=2)
    writer.start()
    wait_until("the writer writing", lambda: writer.writes > 20)
    before = writer.writes

    done = c.cli("app", "set-policy", "db", "--pi", "1")
    during = writer.writes - before
    time.sleep(0.3)  # a few writes on the new volume too
    writer.stop.set()
    writer.join(10)
    assert writer.error is None, writer.error
    said = " ".join((done.stdout + done.stderr).split())
    assert "moves to a new volume (db-1 on ctl1)" in said and "formatted without T10 PI" in said
    # progress lines, whichever phases the CLI's polls caught (a fast copy may show only the
    # pause and the switch)
    assert re.search(r"\d+% \([\d.]+ MiB of [\d.]+ MiB\)", said), said
    assert "policy of db is now version 2" in said

    m = c.admin.request("GET", "/apps/db/migration")
    assert (m["state"], m["phase"], m["bytes_copied"], m["bytes_total"]) == ("done", "switched", size, size)
    took = (datetime.fromisoformat(m["finished_at"]) - datetime.fromisoformat(m["created_at"])).total_seconds()
    switched = wait_until("the host's switch line", lambda: [
        line for line in c.procs[2].stderr if "migration switched" in line])
    print(f"\nmigration of {size >> 20} MiB: {took:.2f} s end to end ({size / took / MIB:.1f} MiB/s), "
          f"I/O paused {m['pause_ms']:.1f} ms to the switch ({switched[0].split('pause_ms=')[1].split()[0]} ms "
          f"with the manager's commit), {during} writes during it, slowest write {writer.slowest * 1000:.1f} ms")
    assert during > 0 and m["pause_ms"] is not None and m["pause_ms"] < 10_000

    app = c.app()
    assert app["policy"]["version"] == 2 and app["policy"]["services"]["integrity"]["protection_information"] == 1
    assert [v["name"] for v in app["volumes"]] == ["db-1"]
    wait_until("db-0 dropped by the controller", lambda: c.controller_volumes() == ["db-1"])
    meta = json.loads((c.tmp / "ctl1" / "volumes" / "db-1.json").read_text())
    assert meta["pi_type"] == 1
    # every byte written before and during the copy, read back through the host (which verifies
    # the PI of every block) from the new volume
    assert read_all(c, size) == expected(base, model)
    # and the controller checked PI on the new volume: the copy's writes and the reads above
    assert metric(c.metrics_url, "difs_controller_volume_pi_checked_blocks_total", volume="db-1") >= size // 512
    host = c.procs[2].log_text()
    assert "migration switched" in host and "application stopped" not in host


def test_an_aborted_migration_leaves_the_application_on_its_volume(cluster: Cluster):
    c = cluster
    size = 512 * MIB  # long enough a copy to abort it halfway
    c.create_running(size)
    base = random.Random(3).randbytes(MIB)
    with c.nbd() as nbd:
        nbd.write(0, base)
    model: dict[int, bytes] = {}
    writer = Writer(c, model, MIB, hot=MIB, seed=4)
    writer.start()
    started = json.loads(c.cli("app", "set-policy", "db", "--pi", "1", "--no-wait", "--json").stdout)
    assert started["state"] == "copying" and started["target_volume"] == "db-1"
    wait_until("the copy under way", lambda: c.admin.request("GET", "/apps/db/migration")["bytes_copied"] > 0,
               procs=tuple(c.procs))
    aborted = c.cli("app", "set-policy", "db", "--abort")
    assert "migration of db aborted: it stays on db-0" in " ".join(aborted.stdout.split())
    m = c.admin.request("GET", "/apps/db/migration")
    assert m["state"] == "aborted" and m["bytes_copied"] < size
    # the host stops copying: it cancels the copy when its binding no longer carries it, or the
    # copy fails first when the controller has already dropped the new volume
    wait_until("the host stopping the copy", lambda: "migration cancelled" in c.procs[2].log_text()
               or "migration failed" in c.procs[2].log_text())
    wait_until("db-1 dropped by the controller", lambda: c.controller_volumes() == ["db-0"])
    time.sleep(0.3)
    writer.stop.set()
    writer.join(10)
    assert writer.error is None, writer.error
    app = c.app()
    assert (app["policy"]["source"], app["policy"]["version"]) == ("bronze", 1)
    assert [v["name"] for v in app["volumes"]] == ["db-0"]
    assert app["binding"]["state"] == "running" and app["binding"]["migration"] is None
    with c.nbd() as nbd:
        assert nbd.read(0, MIB) == bytes(expected(base, model))
    # no PI asked, none needed: the old policy still applies, and a new change can be made
    c.cli("app", "set-policy", "db", "--header-digest")
    assert c.app()["policy"]["version"] == 2


def test_an_unsatisfiable_change_is_refused_and_changes_nothing(cluster: Cluster):
    c = cluster
    c.create_running(4 * MIB)
    with c.nbd() as nbd:
        nbd.write(0, b"k" * MIB)

    def state() -> Any:
        app = c.app()
        app["binding"].pop("state_at", None)
        return (app["policy"], app["volumes"], app["binding"],
                c.admin.request("GET", "/controllers/ctl1/volumes"),
                sorted(p.name for p in (c.tmp / "ctl1" / "volumes").glob("*.json")))

    before = state()
    refused = c.cli("app", "set-policy", "db", "--tls", code=1)
    said = " ".join(refused.stderr.split())
    assert "nothing was changed" in said
    assert "controller ctl1 does not offer TLS 1.3" in said and "no placement for the new volume" in said
    r = httpx.put(c.url + "/api/v1/apps/db/policy", json={"services": {"security": {"tls": True}}, "migrate": True},
                  headers={"Authorization": f"Bearer {(c.tmp / 'manager' / 'admin-token').read_text().strip()}"})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert any("does not offer TLS 1.3" in reason for reason in r.json()["reasons"])
    time.sleep(float(INTERVAL) * 3)  # the nodes' exchanges: nothing for them to do
    assert state() == before
    with c.nbd() as nbd:
        assert nbd.read(0, MIB) == b"k" * MIB
