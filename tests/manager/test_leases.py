"""Leases against clock steps and manager restarts (issue 17, faults of the machine), with the
injected clock (``ManualClock.jump`` steps the wall clock alone; ``advance`` is time passing):

* the wall clock set an hour forward expires no lease; set an hour back, it keeps no silent node
  alive past its lease;
* a manager restarted on the same database gives every alive node one whole lease period,
  whatever the wall times it finds, and still expires the nodes that stay silent;
* the lease book itself (pure): renewal tokens, first sightings, extensions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mgr_support import Api, controller_adv, host_adv, make_api, report_evidence
from test_api_fleet import GOLD_PATH, fleet

from difs.manager.clock import ManualClock
from difs.manager.leases import LeaseBook

HOUR = 3600.0


def states(api: Api) -> dict[str, str]:
    return {n["name"]: n["state"] for n in api.ok("GET", "/nodes")}


def test_the_wall_clock_set_an_hour_forward_expires_no_lease(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "silver", "host": "host1"})
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": "iqn.2025-01.org.difs:host1"})
    api.clock.advance(10)
    api.clock.jump(HOUR)
    assert states(api) == {"ctl1": "alive", "ctl2": "alive", "host1": "alive"}
    assert api.events("node.lease_expired") == []
    report_evidence(api, tokens)  # digest I/O, judged on the stepped clock: no lease ran out
    assert api.ok("GET", "/apps/db/compliance")["state"] == "compliant"
    # placement still counts them
    assert api.ok("POST", "/placement", json={"size_bytes": 4096, "policy": "bronze"})["choice"] is not None
    # and they still expire when they stop advertising: 30 s of real time after the last one
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    api.clock.advance(21)  # 31 s after ctl2's and host1's advertisements, 21 s after ctl1's
    assert states(api) == {"ctl1": "alive", "ctl2": "expired", "host1": "expired"}


def test_the_wall_clock_set_an_hour_back_keeps_no_silent_node_alive(api: Api):
    tokens = fleet(api)
    api.clock.jump(-HOUR)
    api.clock.advance(20)
    api.advertise("host1", tokens["host1"], **host_adv(paths=[GOLD_PATH]))  # renews on the stepped clock
    assert states(api) == {"ctl1": "alive", "ctl2": "alive", "host1": "alive"}
    api.clock.advance(11)  # the controllers' last advertisements were 31 s ago
    assert states(api) == {"ctl1": "expired", "ctl2": "expired", "host1": "alive"}
    assert sorted(e["subject"] for e in api.events("node.lease_expired")) == ["ctl1", "ctl2"]
    api.clock.advance(20)
    assert states(api)["host1"] == "expired"


def test_a_restarted_manager_gives_every_lease_one_period_of_grace(tmp_path: Path, sqlite_template: Path):
    shutil.copy(sqlite_template, tmp_path / "manager.db")
    url = f"sqlite:///{tmp_path / 'manager.db'}"
    first = make_api(url, ManualClock())
    api = next(first)
    tokens = fleet(api)
    first.close()
    # the manager was down two hours, and comes back on a machine whose wall clock is also off
    clock = ManualClock()
    clock.jump(2 * HOUR)
    second = make_api(url, clock)
    api = next(second)
    try:
        assert states(api) == {"ctl1": "alive", "ctl2": "alive", "host1": "alive"}
        assert api.events("node.lease_expired") == []
        clock.advance(20)
        api.advertise("ctl1", tokens["ctl1"], **controller_adv())  # renews during the grace
        clock.advance(11)  # one lease period (30 s) after the restart: the silent ones expire
        assert states(api) == {"ctl1": "alive", "ctl2": "expired", "host1": "expired"}
    finally:
        second.close()


def test_the_lease_book() -> None:
    book = LeaseBook(resync_seconds=5)
    assert book.due(0.0)  # nothing known: read the database first
    # first sighting (a restart): renewed when seen
    assert book.overdue([("a", 1, 30.0), ("b", 7, 10.0)], 100.0) == {}
    assert not book.due(104.9) and book.due(105.0)  # resync
    assert book.overdue([("a", 1, 30.0), ("b", 7, 10.0)], 105.0) == {}
    assert book.overdue([("a", 1, 30.0), ("b", 7, 10.0)], 110.0) == {"b": 7}
    # a renewal this manager answered, and one through another manager (the token moved)
    book.renewed("a", token=2, seconds=30.0, at=120.0)
    assert book.overdue([("a", 2, 30.0), ("b", 8, 10.0)], 125.0) == {}
    assert book.overdue([("a", 2, 30.0), ("b", 8, 10.0)], 135.0) == {"b": 8}
    assert book.overdue([("a", 2, 30.0)], 150.0) == {"a": 2}
    # an outage's length moves known deadlines later, once
    book.renewed("a", token=3, seconds=30.0, at=160.0)
    book.extend(60.0)
    assert book.due(161.0)
    assert book.overdue([("a", 3, 30.0)], 240.0) == {}
    assert book.overdue([("a", 3, 30.0)], 250.0) == {"a": 3}
