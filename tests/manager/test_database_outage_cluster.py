"""PostgreSQL stopping under a running cluster (issue 17, faults of the machine), all real
processes on loopback: a manager on a PostgreSQL server of the test's own, a controller and a
host linked to it, an application served over NBD.

While PostgreSQL is stopped the manager answers its API with 503 problem documents, the nodes'
links get those 503s and treat them as an unreachable manager — and the application keeps
reading and writing, on its open connection and on new ones. When PostgreSQL is back the same
manager process answers again, the links say so, and what was written meanwhile is there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mgr_support import PgServer
from support import Proc, free_port, start_difs

from difs.nbd.client import NbdClient
from difs.nodelink.client import ManagerClient, ManagerUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

ADMIN_TOKEN = "outage-admin-token-0123456789"
IQN = "iqn.2026-11.io.difs:host1"
MIB = 1 << 20


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def logged(proc: Proc, text: str) -> int:
    return sum(text in line for line in proc.stderr + proc.lines)


def nbd_ready(port: int, export: str) -> bool:
    try:
        with NbdClient.open_tcp("127.0.0.1", port, export) as c:
            return c.export.size > 0
    except Exception:
        return False


def pattern(byte: int, size: int = MIB) -> bytes:
    return bytes([byte]) * size


@pytest.fixture
def cluster(private_pg: PgServer, tmp_path: Path) -> Iterator[dict]:
    ports = {k: free_port() for k in ("manager", "portal", "nbd")}
    url = f"http://127.0.0.1:{ports['manager']}"
    procs: list[Proc] = []
    try:
        manager = start_difs("manager", "--db", private_pg.new_database(), "--listen", f"127.0.0.1:{ports['manager']}",
                             "--data-dir", str(tmp_path / "manager"), "--sweep-interval", "0.5",
                             env={"DIFS_ADMIN_TOKEN": ADMIN_TOKEN})
        procs.append(manager)
        wait_for(lambda: _healthy(url), "the manager")
        admin = ManagerClient(url, token=ADMIN_TOKEN)
        tokens = {n: admin.request("POST", "/nodes", json={"name": n, "kind": k})["token"]
                  for n, k in (("ctl1", "controller"), ("host1", "host"))}
        controller = start_difs("controller", "--manager", url, "--name", "ctl1",
                                "--portal", f"127.0.0.1:{ports['portal']}", "--data-dir", str(tmp_path / "ctl1"),
                                "--interval", "0.5", env={"DIFS_NODE_TOKEN": tokens["ctl1"]})
        procs.append(controller)
        host = start_difs("host", "--manager", url, "--name", "host1", "--initiator-name", IQN,
                          "--nbd", f"127.0.0.1:{ports['nbd']}", "--interval", "0.5",
                          env={"DIFS_NODE_TOKEN": tokens["host1"]})
        procs.append(host)
        wait_for(lambda: all(admin.request("GET", f"/nodes/{n}")["state"] == "alive" for n in tokens),
                 "the nodes to advertise")
        admin.request("POST", "/apps", json={"name": "app1", "size_bytes": 16 * MIB, "policy": "bronze",
                                             "host": "host1"})
        admin.bind("app1", initiator_iqn=IQN, host="host1")
        wait_for(lambda: nbd_ready(ports["nbd"], "app1"), "app1's disk on the host")
        yield {"url": url, "admin": admin, "nbd": ports["nbd"], "manager": manager,
               "controller": controller, "host": host, "pg": private_pg}
    finally:
        if not private_pg.running():
            private_pg.start()
        for proc in reversed(procs):
            proc.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_applications_keep_their_io_while_postgres_is_down_and_the_manager_recovers(cluster: dict) -> None:
    url, admin, pg = cluster["url"], cluster["admin"], cluster["pg"]
    host, controller, manager = cluster["host"], cluster["controller"], cluster["manager"]
    with NbdClient.open_tcp("127.0.0.1", cluster["nbd"], "app1") as disk:
        disk.write(0, pattern(0xA1))
        disk.flush()

        pg.stop("fast")
        start = time.monotonic()
        r = httpx.get(url + "/api/v1/apps", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
        assert time.monotonic() - start < 5.0
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:difs:problem:database-unavailable" and "retry-after" in r.headers
        with pytest.raises(ManagerUnavailable):
            admin.request("GET", "/apps")
        health = httpx.get(url + "/api/v1/healthz", timeout=10).json()
        assert health["database_up"] is False and health["status"] == "degraded"
        # both links get 503 from their exchanges and carry on as with an unreachable manager
        wait_for(lambda: logged(host, "manager unreachable") and logged(controller, "manager unreachable"),
                 "the nodes' links to notice", timeout=30)
        rounds = time.monotonic() + 3.0  # six more rounds of each link while the database is down
        written: dict[int, bytes] = {}
        n = 0
        while time.monotonic() < rounds or n < 15:
            n += 1
            mib = 1 + n % 15
            written[mib] = pattern(n % 256)
            disk.write(mib * MIB, written[mib])
            disk.flush()
            assert disk.read(mib * MIB, MIB) == written[mib]
        assert disk.read(0, MIB) == pattern(0xA1)
        # a new connection to the application's disk is served too
        with NbdClient.open_tcp("127.0.0.1", cluster["nbd"], "app1") as again:
            assert again.read(MIB, MIB) == written[1]
        assert logged(host, "manager refused a request") == 0  # 503 is not a refusal
        assert manager.popen.poll() is None

        pg.start()
        # the same manager process answers again, no restart
        wait_for(lambda: _healthy(url) and httpx.get(url + "/api/v1/readyz", timeout=10).status_code == 200,
                 "the manager to see its database again", timeout=30)
        [app] = admin.request("GET", "/apps")
        assert app["name"] == "app1" and app["binding"]["host"] == "host1"
        wait_for(lambda: logged(host, "manager reachable again") and logged(controller, "manager reachable again"),
                 "the nodes' links to recover", timeout=30)
        assert {admin.request("GET", f"/nodes/{n}")["state"] for n in ("ctl1", "host1")} == {"alive"}
        assert admin.request("GET", "/events", params={"kind": "node.lease_expired"}) == []
        for mib, data in written.items():
            assert disk.read(mib * MIB, MIB) == data
        disk.write(0, pattern(0xC3))
        assert disk.read(0, MIB) == pattern(0xC3)
    assert manager.popen.poll() is None


def test_a_manager_started_while_postgres_is_down_waits_for_it(private_pg: PgServer,
                                                              tmp_path: Path) -> None:
    """`difs manager --db-wait`: started with its database down it does not exit; it logs that it
    waits (without the database URL), and serves as soon as PostgreSQL is back. With no wait
    left it exits 1 saying what to check."""
    db = private_pg.new_database()
    private_pg.stop("fast")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    manager = start_difs("manager", "--db", db, "--listen", f"127.0.0.1:{port}", "--db-wait", "120",
                         "--data-dir", str(tmp_path / "manager"), env={"DIFS_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        wait_for(lambda: logged(manager, "database unavailable at start; waiting for it") >= 2,
                 "the manager to say it waits for its database")
        assert manager.popen.poll() is None  # still there, waiting
        assert not any("postgresql" in line.lower() for line in manager.stderr + manager.lines
                       if "waiting for it" in line)
        private_pg.start()
        wait_for(lambda: _healthy(url), "the manager to serve once PostgreSQL is back")
        admin = ManagerClient(url, token=ADMIN_TOKEN)
        assert admin.request("GET", "/readyz") is not None
    finally:
        if not private_pg.running():
            private_pg.start()
        manager.stop()
    private_pg.stop("fast")
    try:
        impatient = start_difs("manager", "--db", db, "--listen", f"127.0.0.1:{free_port()}",
                               "--db-wait", "1", "--data-dir", str(tmp_path / "manager2"),
                               env={"DIFS_ADMIN_TOKEN": ADMIN_TOKEN})
        assert impatient.popen.wait(60) == 1
        assert any("cannot open the database" in line for line in impatient.stderr + impatient.lines)
    finally:
        private_pg.start()
