"""PostgreSQL stopping under the manager (issue 17, faults of the machine), on the real app and a
real PostgreSQL server of the test's own, stopped with ``pg_ctl stop -m fast`` (every session
ended, new connections refused) and started again:

* every API request gets a 503 ``application/problem+json`` document with ``Retry-After``
  within a bound — not a 500, not a hang — and nothing is half-done;
* ``/healthz`` says the database is down (``/readyz`` answers 503), and up again after;
* a server that stops answering without closing anything (every PostgreSQL process stopped
  with SIGSTOP, as on a frozen machine) gets the same 503 within a bound, not a hang;
* the manager recovers by itself: the same app (no restart) answers again once PostgreSQL is
  back, its pooled connections (all killed) replaced;
* nodes lose nothing to the outage: their leases are moved later by the time the database was
  down (they could not renew meanwhile), and still run out when they then stay silent.
"""

from __future__ import annotations

import signal
import time

import pytest

from mgr_support import Api, PgServer, controller_adv, make_api
from test_api_fleet import fleet

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOUND = 5.0  # seconds an API request may take while the database is down
FROZEN_BOUND = 8.0  # ... while it does not answer (ping and connect timeouts, on a busy machine)


def timed(api: Api, method: str, path: str, **kw):
    start = time.monotonic()
    r = api.req(method, path, **kw)
    return r, time.monotonic() - start


def assert_unavailable(r, took: float, bound: float = BOUND) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert took < bound, f"answered after {took:.1f} s"
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) > 0
    problem = r.json()
    assert problem["type"] == "urn:difs:problem:database-unavailable"
    assert problem["status"] == 503 and "database" in problem["detail"]
    assert "postgresql" not in r.text.lower()  # no URL, no driver message


def test_postgres_stopping_gives_503_and_the_manager_recovers_by_itself(private_pg: PgServer):
    clock_api = make_api(private_pg.new_database(), _clock())
    api = next(clock_api)
    try:
        tokens = fleet(api)
        api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "bronze", "host": "host1"})
        assert api.ok("GET", "/nodes")  # the pool holds live connections now
        private_pg.stop("fast")
        requests = [
            ("GET", "/nodes", {}),
            ("GET", "/apps/db", {}),
            ("POST", "/apps", {"json": {"name": "db2", "size_bytes": 1 << 20, "policy": "bronze"}}),
            ("PUT", "/nodes/ctl1/advertisement", {"token": tokens["ctl1"], "json": controller_adv()}),
            ("GET", "/hosts/host1/bindings", {"token": tokens["host1"]}),
            ("GET", "/nodes", {}),
        ]
        for method, path, kw in requests:
            assert_unavailable(*timed(api, method, path, **kw))
        health = api.c.get("/api/v1/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and health.json()["database_up"] is False
        ready = api.c.get("/api/v1/readyz")
        assert ready.status_code == 503 and ready.headers["content-type"] == "application/problem+json"
        # the outage outlasts every lease (30 s): the nodes could not renew meanwhile
        api.clock.advance(60)
        assert_unavailable(*timed(api, "GET", "/nodes"))

        private_pg.start()
        health = api.c.get("/api/v1/healthz").json()
        assert health["status"] == "ok" and health["database_up"] is True
        assert api.c.get("/api/v1/readyz").status_code == 200
        # the same app answers again; nothing the outage refused was half-done
        nodes = {n["name"]: n["state"] for n in api.ok("GET", "/nodes")}
        assert nodes == {"ctl1": "alive", "ctl2": "alive", "host1": "alive"}, "the outage expired the leases"
        assert api.req("GET", "/apps/db2").status_code == 404
        assert api.ok("POST", "/apps", 201, json={"name": "db2", "size_bytes": 1 << 20, "policy": "bronze"})
        # the 60 s outage was added to the leases once, not for ever: silent nodes still expire
        api.clock.advance(25)
        assert {n["state"] for n in api.ok("GET", "/nodes")} == {"alive"}
        api.advertise("ctl1", tokens["ctl1"], **controller_adv())
        api.clock.advance(6)  # 91 s after their last advertisements, 31 s after the outage
        nodes = {n["name"]: n["state"] for n in api.ok("GET", "/nodes")}
        assert nodes == {"ctl1": "alive", "ctl2": "expired", "host1": "expired"}
    finally:
        if not private_pg.running():
            private_pg.start()
        clock_api.close()


def test_a_frozen_postgres_gives_503_within_a_bound_not_a_hang(private_pg: PgServer):
    clock_api = make_api(private_pg.new_database(), _clock())
    api = next(clock_api)
    try:
        tokens = fleet(api)
        assert api.ok("GET", "/nodes")  # pooled connections, which will now get no answer
        private_pg.signal_all(signal.SIGSTOP)
        for method, path, kw in (
            ("GET", "/nodes", {}),
            ("PUT", "/nodes/ctl1/advertisement", {"token": tokens["ctl1"], "json": controller_adv()}),
            ("GET", "/apps", {}),
        ):
            assert_unavailable(*timed(api, method, path, **kw), bound=FROZEN_BOUND)
        start = time.monotonic()
        health = api.c.get("/api/v1/healthz")
        assert time.monotonic() - start < FROZEN_BOUND
        assert health.status_code == 200 and health.json()["database_up"] is False
        private_pg.signal_all(signal.SIGCONT)
        assert api.c.get("/api/v1/healthz").json()["database_up"] is True
        assert {n["state"] for n in api.ok("GET", "/nodes")} == {"alive"}
        api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    finally:
        private_pg.signal_all(signal.SIGCONT)
        clock_api.close()


def _clock():
    from difs.manager.clock import ManualClock

    return ManualClock()
