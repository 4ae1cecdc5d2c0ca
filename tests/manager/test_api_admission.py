"""Admission control through the API: creating an application and changing its policy are refused
when the controller's reservations would pass its advertised capacity minus the headroom."""

from __future__ import annotations

import httpx

from mgr_support import FULL_SERVICES, Api, controller_adv
from test_bounds import manager

CAPACITY = {**FULL_SERVICES["qos"], "max_iops": 5000, "max_bytes_per_second": 100_000_000}


def ctl1(api: Api, qos: dict) -> None:
    token = api.register("ctl1", "controller")
    api.advertise("ctl1", token, **controller_adv(services={**FULL_SERVICES, "qos": qos}))


def reserve(iops: int | None = None, bps: int | None = None) -> dict:
    q = {k: v for k, v in (("reservation_iops", iops), ("reservation_bytes_per_second", bps)) if v is not None}
    return {"qos": q}


def test_create_is_refused_past_90_percent_of_capacity(api: Api):
    ctl1(api, CAPACITY)
    api.ok("POST", "/apps", 201, json={"name": "a", "size_bytes": 4096, "services": reserve(3500)})
    r = api.req("POST", "/apps", json={"name": "b", "size_bytes": 4096, "services": reserve(1001)})
    assert r.status_code == 409
    assert "controller ctl1: reservations 3,500 + 1,001 IOPS > 90% of 5,000 (1,000 IOPS left to reserve)" in r.json()["detail"]
    assert [a["name"] for a in api.ok("GET", "/apps")] == ["a"]
    api.ok("POST", "/apps", 201, json={"name": "b", "size_bytes": 4096, "services": reserve(1000)})
    # the preview says the same before anything is created
    preview = api.ok("POST", "/placement", json={"size_bytes": 4096, "services": reserve(1)})
    assert not preview["feasible"]
    assert preview["rejected"][0]["reasons"] == [
        "controller ctl1: reservations 4,500 + 1 IOPS > 90% of 5,000 (0 IOPS left to reserve)"
    ]
    r = api.req("POST", "/apps", json={"name": "c", "size_bytes": 4096, "services": reserve(bps=90_000_001)})
    assert r.status_code == 409
    assert "reservations 0 + 90,000,001 B/s > 90% of 100,000,000 (90,000,000 B/s left to reserve)" in r.json()["detail"]


def test_set_policy_is_refused_and_nothing_changes(api: Api):
    ctl1(api, CAPACITY)
    api.ok("POST", "/apps", 201, json={"name": "a", "size_bytes": 4096, "services": reserve(3000)})
    api.ok("POST", "/apps", 201, json={"name": "b", "size_bytes": 4096, "services": reserve(1000)})
    r = api.req("PUT", "/apps/b/policy", json={"services": reserve(1600)})
    assert r.status_code == 409
    [unmet] = r.json()["unmet"]
    assert unmet == {"service": "qos.reservation_iops", "node": "ctl1",
                     "reason": "controller ctl1: reservations 3,000 + 1,600 IOPS > 90% of 5,000 (1,500 IOPS left to reserve)"}
    got = api.ok("GET", "/apps/b/policy")
    assert got["version"] == 1 and got["services"]["qos"]["reservation_iops"] == 1000
    # freeing reservations elsewhere makes room; its own reservation never counts against it
    api.ok("PUT", "/apps/a/policy", json={"services": reserve(2900)})
    assert api.ok("PUT", "/apps/b/policy", json={"services": reserve(1600)})["version"] == 2


def test_a_controller_without_capacity_takes_no_reservation(api: Api):
    ctl1(api, {"reservation": True, "limit": True, "weight": True})
    r = api.req("POST", "/apps", json={"name": "a", "size_bytes": 4096, "services": reserve(1)})
    assert r.status_code == 409
    assert "controller ctl1 advertises no IOPS capacity: it cannot take a reservation of 1 IOPS" in r.json()["detail"]
    api.ok("POST", "/apps", 201, json={"name": "a", "size_bytes": 4096, "services": {"qos": {"weight": 5}}})
    r = api.req("PUT", "/apps/a/policy", json={"services": reserve(bps=4096)})
    assert r.status_code == 409 and r.json()["unmet"][0]["service"] == "qos.reservation_bytes_per_second"


def test_the_headroom_is_the_managers_setting(api: Api):
    ctl1(api, CAPACITY)
    api.configure(qos_headroom=0.5)
    r = api.req("POST", "/apps", json={"name": "a", "size_bytes": 4096, "services": reserve(2501)})
    assert "> 50% of 5,000 (2,500 IOPS left to reserve)" in r.json()["detail"]
    api.configure(qos_headroom=0.0)
    api.ok("POST", "/apps", 201, json={"name": "a", "size_bytes": 4096, "services": reserve(5000)})


def test_difs_manager_qos_headroom_option(tmp_path):
    with manager(tmp_path, "--qos-headroom", "0.2") as mgr:
        api = httpx.Client(base_url=f"http://127.0.0.1:{mgr.port}/api/v1",
                           headers={"Authorization": f"Bearer {mgr.token}"})
        token = api.post("/nodes", json={"name": "ctl1", "kind": "controller"}).json()["token"]
        adv = controller_adv(services={**FULL_SERVICES, "qos": CAPACITY})
        assert api.put("/nodes/ctl1/advertisement", json=adv, headers={"Authorization": f"Bearer {token}"}).is_success
        r = api.post("/apps", json={"name": "a", "size_bytes": 4096, "services": reserve(4001)})
        assert r.status_code == 409 and "> 80% of 5,000 (4,000 IOPS left to reserve)" in r.json()["detail"]
