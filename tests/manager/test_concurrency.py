"""Concurrent updates of one application's policy against a real server and database: no lost update.

The manager runs under uvicorn in a thread (a real HTTP server on 127.0.0.1);
client threads race to update the same application's policy, with and
without ``If-Match``. Every acknowledged update must be visible as its own
version, exactly once, and the final document must be the last one acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from mgr_support import ADMIN, ManualClock, controller_adv, database_url, free_port
from difs.manager.app import create_app
from difs.manager.config import Settings

THREADS = 6
ROUNDS = 3


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def base_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = database_url(request.param, request, tmp_path)
    app = create_app(Settings(database_url=url, admin_token=SecretStr(ADMIN["Authorization"][7:])), clock=ManualClock())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the manager did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.should_exit = True
        thread.join(10)


def _setup(base: str) -> None:
    with httpx.Client(base_url=base, headers=ADMIN) as c:
        token = c.post("/nodes", json={"name": "ctl1", "kind": "controller"}).json()["token"]
        r = c.put("/nodes/ctl1/advertisement", json=controller_adv(), headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        r = c.post("/apps", json={"name": "db", "size_bytes": 4096, "services": {"qos": {"limit_iops": 1}}})
        assert r.status_code == 201, r.text


def test_conditional_updates_never_lose_one(base_url: str):
    _setup(base_url)
    acked: list[tuple[int, int]] = []  # (version, limit) of every acknowledged update
    lock = threading.Lock()

    def worker(i: int) -> int:
        conflicts = 0
        with httpx.Client(base_url=base_url, headers=ADMIN, timeout=30) as c:
            for r in range(ROUNDS):
                limit = 1000 + i * 100 + r
                while True:
                    current = c.get("/apps/db/policy")
                    assert current.status_code == 200, current.text
                    etag = current.headers["etag"]
                    put = c.put("/apps/db/policy", json={"services": {"qos": {"limit_iops": limit}}},
                                headers={"If-Match": etag})
                    if put.status_code == 412:
                        conflicts += 1
                        continue
                    assert put.status_code == 200, put.text
                    with lock:
                        acked.append((put.json()["version"], limit))
                    break
        return conflicts

    with ThreadPoolExecutor(THREADS) as pool:
        conflicts = sum(pool.map(worker, range(THREADS)))

    versions = sorted(v for v, _ in acked)
    assert versions == list(range(2, 2 + THREADS * ROUNDS))  # every update got its own version
    with httpx.Client(base_url=base_url, headers=ADMIN) as c:
        final = c.get("/apps/db/policy").json()
        assert final["version"] == 1 + THREADS * ROUNDS
        assert final["services"]["qos"]["limit_iops"] == max(acked)[1]  # the last acknowledged write won
        events = c.get("/events", params={"kind": "app.policy_updated", "limit": 1000}).json()
        assert sorted(e["data"]["version"] for e in events) == versions
    assert conflicts >= 0  # contention is likely but not guaranteed on 2 cores


def test_unconditional_updates_are_serialised(base_url: str):
    _setup(base_url)

    def worker(i: int) -> int:
        with httpx.Client(base_url=base_url, headers=ADMIN, timeout=30) as c:
            r = c.put("/apps/db/policy", json={"services": {"qos": {"limit_iops": 10 + i}}})
            assert r.status_code == 200, r.text
            return r.json()["version"]

    with ThreadPoolExecutor(THREADS) as pool:
        versions = sorted(pool.map(worker, range(THREADS * 2)))
    assert versions == list(range(2, 2 + THREADS * 2))
    with httpx.Client(base_url=base_url, headers=ADMIN) as c:
        assert c.get("/apps/db").json()["volumes"][0]["policy_version"] == 1 + THREADS * 2
