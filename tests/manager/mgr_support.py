"""Support for the manager tests (fixtures are re-exported by conftest.py): the real app on SQLite and on a real PostgreSQL server.

``pg_server`` (session scope) runs ``initdb`` into a temp dir and starts
PostgreSQL 15 on 127.0.0.1 and a free port (as the ``postgres`` user when the
tests run as root: PostgreSQL refuses to run as root). Every test gets a fresh
database on it. ``api`` is parametrised over both back ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from difs.manager.app import create_app
from difs.manager.clock import ManualClock
from difs.manager.config import Settings
from difs.manager.db import make_engine, run_migrations

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PG_BIN = Path(os.environ.get("DIFS_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    port: int
    datadir: Path
    root: Path | None = None
    _ids = itertools.count()

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = f"difs_test_{os.getpid()}_{next(self._ids)}"
        with psycopg.connect(self.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE difs_template')
        return self.url(name)

    def make_template(self) -> None:
        """A migrated database every test database is copied from (much faster than migrating)."""
        import psycopg

        with psycopg.connect(self.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE difs_template")
        engine = make_engine(self.url("difs_template"))
        run_migrations(engine)
        engine.dispose()

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "log"),
                          "-o", opts, "-w", "-t", "60", "start"]),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: fast ends every session (clients see their connection close)."""
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to the postmaster and every backend (SIGSTOP: a server that stops answering
        without closing anything, as on a frozen machine; SIGCONT ends that)."""
        pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in (pid, *map(int, children)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[PgServer]:
    """``initdb`` into a temp dir and run PostgreSQL on 127.0.0.1 and a free port until the block
    ends (stopped then, whatever state a test left it in)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (Debian package postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="difs-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PgServer(port=free_port(), datadir=data, root=root)
    try:
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        server.start()
        server.make_template()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def private_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of the test's own, which it may stop and start (the shared one must
    stay up for the other tests)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "manager.db"
    engine = make_engine(f"sqlite:///{path}")
    run_migrations(engine)
    engine.dispose()
    return path


def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgres":
        pg: PgServer = request.getfixturevalue("pg_server")
        return pg.new_database()
    template: Path = request.getfixturevalue("sqlite_template")
    shutil.copy(template, tmp_path / "manager.db")
    return f"sqlite:///{tmp_path / 'manager.db'}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Api:
    """A TestClient on the real app plus helpers to register nodes and advertise."""

    def __init__(self, client: Any, clock: ManualClock, url: str) -> None:
        self.c = client
        self.clock = clock
        self.url = url

    def req(self, method: str, path: str, *, token: str | None = ADMIN_TOKEN, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.c.request(method, "/api/v1" + path, headers=headers, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.req(method, path, **kw)
        assert r.status_code == status, (r.status_code, r.text)
        return r.json() if r.content else None

    def configure(self, **settings: Any) -> None:
        """Change the running manager's settings (e.g. ``qos_headroom``) for the next requests."""
        state = self.c.app.state.difs
        state.settings = dataclasses.replace(state.settings, **settings)

    def register(self, name: str, kind: str) -> str:
        return self.ok("POST", "/nodes", 201, json={"name": name, "kind": kind})["token"]

    def advertise(self, name: str, token: str, **adv: Any) -> Any:
        return self.ok("PUT", f"/nodes/{name}/advertisement", token=token, json=adv)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"limit": 1000, **({"kind": kind} if kind else {})}
        return self.ok("GET", "/events", params=params)


FULL_SERVICES: dict[str, Any] = {
    "integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
    "security": {"authentication": ["chap", "mutual_chap"], "tls": True, "at_host_encryption": True},
    "qos": {"reservation": True, "limit": True, "weight": True, "latency_target": True,
            "dscp_classes": [0, 34, 46], "max_iops": 50000},
    "isolation": {"exclusive": True, "tags": True, "vlans": [100]},
}


def controller_adv(*, services: dict[str, Any] | None = None, containers: list[dict[str, Any]] | None = None,
                   name: str = "ctl1", lease: float = 30) -> dict[str, Any]:
    return {
        "kind": "controller",
        "iqn": f"iqn.2025-01.org.difs:{name}",
        "services": FULL_SERVICES if services is None else services,
        "portals": [{"address": "127.0.0.1", "port": 3260}, {"address": "127.0.0.1", "port": 3261, "tls": True}],
        "containers": containers if containers is not None else [{"name": "pool", "capacity_bytes": 1 << 30, "pi_types": [1, 3]}],
        "lease_seconds": lease,
    }


def host_adv(*, services: dict[str, Any] | None = None, paths: list[dict[str, Any]] | None = None,
             lease: float = 30, name: str = "host1") -> dict[str, Any]:
    return {
        "kind": "host",
        "iqn": f"iqn.2025-01.org.difs:{name}",
        "services": FULL_SERVICES if services is None else services,
        "paths": paths or [],
        "lease_seconds": lease,
    }


def make_api(url: str, clock: ManualClock) -> Iterator[Api]:
    from fastapi.testclient import TestClient

    app = create_app(
        Settings(database_url=url, admin_token=SecretStr(ADMIN_TOKEN), stats_fresh_seconds=120),
        clock=clock,
        background_sweep=False,
    )
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, clock, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[Api]:
    yield from make_api(database_url(request.param, request, tmp_path), clock)


@pytest.fixture
def sqlite_api(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[Api]:
    yield from make_api(database_url("sqlite", request, tmp_path), clock)


# --- evidence reports (difs.policy.evidence), as nodes send them ---------------------------------

HOST1_IQN = "iqn.2025-01.org.difs:host1"
GOLD_LOGIN = {"header_digest": True, "data_digest": True, "authentication": "mutual_chap"}


def latency(*ms: float) -> dict[str, Any]:
    from difs.policy.evidence import LatencyRecorder

    rec = LatencyRecorder()
    for v in ms:
        rec.record(int(v * 1_000_000))
    return rec.since(None).model_dump()


def session_entry(*, volume: str = "db-0", initiator: str = HOST1_IQN, channel: int = 0,
                  services: dict[str, Any] | None = None, commands: int = 100, pi_checked: int | None = None,
                  rejected: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """One controller session x volume: ``commands`` 4 KiB writes, PI checked on each block."""
    return {"volume": volume, "initiator": initiator, "channel": channel,
            "services": GOLD_LOGIN if services is None else services, "commands": commands,
            "write_bytes": commands * 4096,
            "pi": {"checked_blocks": commands * 8 if pi_checked is None else pi_checked},
            "rejected": rejected or {}, "latency": latency(*[0.4] * min(commands, 50)), **extra}


def path_entry(*, application: str = "db", controller: str = "ctl1", channel: int = 0,
               services: dict[str, Any] | None = None, ios: int = 100, **extra: Any) -> dict[str, Any]:
    """One host application x path: ``ios`` 4 KiB writes with PI generated per block."""
    services = GOLD_LOGIN if services is None else services
    return {"application": application, "controller": controller, "channel": channel, "services": services,
            "ios": ios, "bytes": ios * 4096, "digest_bytes": ios * 4096 if services.get("data_digest") else 0,
            "pi": {"generated_blocks": ios * 8}, "latency": latency(*[0.6] * min(ios, 50)), **extra}


def report_evidence(api: Api, tokens: dict[str, str], *, sessions: list[dict[str, Any]] | None = None,
                    paths: list[dict[str, Any]] | None = None, controller: str = "ctl1",
                    host: str = "host1", window: float = 10) -> None:
    """Both ends of the data path report a window (by default: db's gold I/O on channel 0)."""
    api.ok("PUT", f"/controllers/{controller}/evidence", token=tokens[controller],
           json={"window_seconds": window, "sessions": [session_entry()] if sessions is None else sessions})
    api.ok("PUT", f"/hosts/{host}/evidence", token=tokens[host],
           json={"window_seconds": window, "paths": [path_entry()] if paths is None else paths})
