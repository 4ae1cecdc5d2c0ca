"""API through the real app on SQLite and PostgreSQL: advertisements, placement, the depository,
binding, live policy change, lease expiry, volumes and compliance."""

from __future__ import annotations

from typing import Any

import pytest

from mgr_support import FULL_SERVICES, Api, controller_adv, host_adv, report_evidence

GIB = 1 << 30
PLAIN = {"integrity": {"header_digest": True}}  # a controller that offers header digests only

GOLD_PATH = {
    "controller": "ctl1",
    "channel": 0,
    "portal": "127.0.0.1:3260",
    "negotiated": {"header_digest": True, "data_digest": True, "pi_types": [1], "authentication": "mutual_chap"},
}
PLAIN_PATH = {"controller": "ctl1", "channel": 1, "portal": "127.0.0.1:3260", "negotiated": {}}


def fleet(api: Api, *, host_paths: list[dict[str, Any]] | None = None, ctl2: bool = True) -> dict[str, str]:
    """ctl1 (can do everything, 1 GiB pool), ctl2 (header digests only, big pool), host1 (everything)."""
    names = (("ctl1", "controller"), ("ctl2", "controller"), ("host1", "host")) if ctl2 else (("ctl1", "controller"), ("host1", "host"))
    tokens = {n: api.register(n, k) for n, k in names}
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    if ctl2:
        api.advertise(
            "ctl2", tokens["ctl2"],
            **controller_adv(name="ctl2", services=PLAIN, containers=[{"name": "big", "capacity_bytes": 100 * GIB}]),
        )
    api.advertise("host1", tokens["host1"], **host_adv(paths=host_paths or [GOLD_PATH, PLAIN_PATH]))
    return tokens


def test_create_app_places_it_and_explains_rejections(api: Api):
    fleet(api)
    app = api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 64 << 20, "policy": "gold"})
    assert app["policy"]["source"] == "gold" and app["policy"]["version"] == 1
    [vol] = app["volumes"]
    assert (vol["controller"], vol["container"], vol["lun"]) == ("ctl1", "pool", 0)
    assert app["placement"]["choice"] == {"controller": "ctl1", "container": "pool", "host": "host1"}
    rejected = {r["candidate"]: r["reasons"] for r in app["placement"]["rejected"]}
    assert "controller ctl2 does not offer CRC32C data digests" in rejected["ctl2/big"]
    assert "controller ctl2 does not offer mutual CHAP" in rejected["ctl2/big"]
    # bronze goes to the container with the most free space
    bronze = api.ok("POST", "/apps", 201, json={"name": "scratch", "size_bytes": 4096, "policy": "bronze"})
    assert bronze["volumes"][0]["controller"] == "ctl2"
    # no placement at all: 409 with every candidate's reasons, nothing created
    r = api.req("POST", "/apps", json={"name": "huge", "size_bytes": 200 * GIB, "policy": "gold"})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "urn:difs:problem:infeasible"
    reasons = {x["candidate"]: x["reasons"] for x in body["rejected"]}
    assert any("bytes free" in s for s in reasons["ctl1/pool"])
    assert "huge" not in [a["name"] for a in api.ok("GET", "/apps")]
    preview = api.ok("POST", "/placement", json={"size_bytes": 4096, "services": {"security": {"tls": True}}})
    assert preview["feasible"] and preview["choice"]["controller"] == "ctl1"


def test_depository_cycle_and_controller_view(api: Api):
    tokens = fleet(api, ctl2=False)
    api.ok("POST", "/apps", 201, json={"name": "vm1", "size_bytes": 1 << 20})
    assert api.req("GET", "/apps/vm1/policy").status_code == 404  # created without a policy
    added = api.ok("POST", "/apps/vm1/policy", 201, json={"policy": "silver"})  # addDIFS
    assert (added["version"], added["source"], added["service_class"]) == (1, "silver", 3)
    assert api.req("POST", "/apps/vm1/policy", json={"policy": "silver"}).status_code == 409
    got = api.req("GET", "/apps/vm1/policy", token=tokens["host1"])  # getDIFS, readable by nodes
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    updated = api.ok("PUT", "/apps/vm1/policy", json={"services": {"integrity": {"data_digest": True}, "qos": {"limit_iops": 500}}})
    assert updated["version"] == 2 and updated["source"] is None
    # mirrored into the volume metadata the controller reads
    [vol] = api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])
    assert vol["application"] == "vm1" and vol["policy_version"] == 2
    assert vol["policy"]["qos"]["limit_iops"] == 500 and vol["service_class"] == 2
    assert vol["allowed_initiators"] == []
    assert api.req("GET", "/controllers/ctl1/volumes", token=tokens["host1"]).status_code == 403
    api.ok("DELETE", "/apps/vm1/policy", 204)  # deleteDIFS
    [vol] = api.ok("GET", "/controllers/ctl1/volumes")
    assert vol["policy"] is None and vol["policy_version"] == 3
    kinds = [e["kind"] for e in api.events("app.policy")]
    assert kinds == ["app.policy_added", "app.policy_updated", "app.policy_deleted"]


def test_bind_returns_endpoint_and_opens_the_access_list(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "gold"})
    iqn = "iqn.2025-01.org.difs:host1"
    b = api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": iqn})
    [v] = b["volumes"]
    assert b["host"] == "host1" and b["policy_version"] == 1 and b["service_class"] == 15
    assert v["target_iqn"] == "iqn.2025-01.org.difs:ctl1" and v["lun"] == 0 and v["container"] == "pool"
    assert {p["port"] for p in v["portals"]} == {3260, 3261}
    [cv] = api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])
    assert cv["allowed_initiators"] == [iqn]
    assert [x["application"] for x in api.ok("GET", "/hosts/host1/bindings", token=tokens["host1"])] == ["db"]
    # another host cannot take it, a controller cannot bind
    h2 = api.register("host2", "host")
    api.advertise("host2", h2, **host_adv(name="host2"))
    r = api.req("POST", "/apps/db/binding", token=h2, json={"initiator_iqn": "iqn.2025-01.org.difs:host2"})
    assert r.status_code == 409 and "bound to host host1" in r.json()["detail"]
    assert api.req("POST", "/apps/db/binding", token=tokens["ctl1"], json={"initiator_iqn": iqn}).status_code == 403
    assert api.req("DELETE", "/apps/db", ).status_code == 409  # bound: unbind first
    assert api.req("DELETE", "/apps/db/binding", token=h2).status_code == 403
    api.ok("DELETE", "/apps/db/binding", 204, token=tokens["host1"])
    [cv] = api.ok("GET", "/controllers/ctl1/volumes")
    assert cv["allowed_initiators"] == []


def test_bind_refused_when_host_cannot_meet_the_policy(api: Api):
    fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "gold", "host": "host1"})
    weak = api.register("weak", "host")
    api.advertise("weak", weak, **host_adv(name="weak", services={"integrity": {"header_digest": True, "data_digest": True}}))
    r = api.req("POST", "/apps/db/binding", token=weak, json={"initiator_iqn": "iqn.2025-01.org.difs:weak"})
    assert r.status_code == 409
    unmet = {u["service"] for u in r.json()["unmet"]}
    assert unmet == {"integrity.protection_information", "security.authentication"}
    assert api.ok("GET", "/apps/db")["binding"] is None


def test_live_policy_change_applies_when_feasible_and_refuses_otherwise(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "web", "size_bytes": 1 << 20, "policy": "bronze", "host": "host1"})
    # force it onto ctl2 (header digests only) by asking for a volume there: create a second app layout
    app = api.ok("GET", "/apps/web")
    ctl = app["volumes"][0]["controller"]
    assert ctl == "ctl2"  # most free space
    api.ok("POST", "/apps/web/binding", token=tokens["host1"], json={"initiator_iqn": "iqn.2025-01.org.difs:host1"})
    events_before = len(api.events())
    r = api.req("PUT", "/apps/web/policy", json={"policy": "gold"}, headers={"If-Match": "1"})
    assert r.status_code == 409
    body = r.json()
    assert "nothing was changed" in body["detail"]
    assert {u["node"] for u in body["unmet"]} == {"ctl2"}
    assert any(u["reason"] == "controller ctl2 does not offer CRC32C data digests" for u in body["unmet"])
    after = api.ok("GET", "/apps/web")
    assert after["policy"]["version"] == 1 and after["policy"]["source"] == "bronze"
    assert len(api.events()) == events_before
    [cv] = api.ok("GET", "/controllers/ctl2/volumes")
    assert cv["policy_version"] == 1
    # feasible change: header digests are available on ctl2 and host1
    ok = api.ok("PUT", "/apps/web/policy", json={"services": {"integrity": {"header_digest": True}}}, headers={"If-Match": "1"})
    assert ok["version"] == 2
    [cv] = api.ok("GET", "/controllers/ctl2/volumes", token=tokens["ctl2"])
    assert cv["policy_version"] == 2 and cv["service_class"] == 1
    [b] = api.ok("GET", "/hosts/host1/bindings", token=tokens["host1"])
    assert b["policy_version"] == 2 and b["policy"]["integrity"]["header_digest"]


def test_lease_expiry_withdraws_capabilities_and_records_events(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "silver", "host": "host1"})
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": "iqn.2025-01.org.difs:host1"})
    report_evidence(api, tokens, sessions=[{"volume": "db-0", "initiator": "iqn.2025-01.org.difs:host1", "channel": 0,
                                            "services": {"header_digest": True, "data_digest": True}, "commands": 1}],
                    paths=[{"application": "db", "controller": "ctl1", "channel": 0, "ios": 1,
                            "services": {"header_digest": True, "data_digest": True}}])
    assert api.ok("GET", "/apps/db/compliance")["state"] == "compliant"
    api.clock.advance(20)
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())  # ctl1 renews; ctl2 and host1 do not
    api.advertise("host1", tokens["host1"], **host_adv(paths=[GOLD_PATH]))
    api.clock.advance(15)  # 35 s after ctl2's advertisement: its 30 s lease ran out
    nodes = {n["name"]: n["state"] for n in api.ok("GET", "/nodes")}
    assert nodes == {"ctl1": "alive", "ctl2": "expired", "host1": "alive"}
    expired = api.events("node.lease_expired")
    assert [e["subject"] for e in expired] == ["ctl2"]
    api.ok("GET", "/nodes")  # sweeping again records nothing new
    assert len(api.events("node.lease_expired")) == 1
    # an expired controller is not a placement candidate; its containers are explained
    p = api.ok("POST", "/placement", json={"size_bytes": 4096, "policy": "bronze"})
    reasons = {r["candidate"]: r["reasons"] for r in p["rejected"]}
    assert any("lease expired" in s for s in reasons["ctl2/big"])
    # the app on ctl1 loses compliance when ctl1 stops too
    api.clock.advance(30)
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "non_compliant"
    avail = next(s for s in comp["services"] if s["service"] == "availability")
    assert "ctl1" in avail["observed"] and "host1" in avail["observed"]
    changes = [e for e in api.events("compliance.changed") if e["subject"] == "db"]
    assert changes[-1]["data"] == {"before": "compliant", "after": "non_compliant"}
    # advertising again brings it back
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    api.advertise("host1", tokens["host1"], **host_adv(paths=[GOLD_PATH]))
    assert api.ok("GET", "/apps/db/compliance")["state"] == "compliant"
    assert api.events("node.alive")[-1]["message"].endswith("again after its lease expired")


def test_statistics_of_earlier_hosts_are_checked_and_not_used(api: Api):
    """POST /hosts/NAME/stats (hosts before evidence): still answered, never counted as evidence.
    (It used to make an application compliant from per-path I/O counts and advertised paths.)"""
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "gold", "host": "host1"})
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": "iqn.2025-01.org.difs:host1"})
    stats = {"window_seconds": 10, "paths": [{"application": "db", "controller": "ctl1", "channel": 0,
                                              "ios": 20000, "bytes": 80 << 20, "digest_errors": 1, "latency_ms": 0.4}]}
    assert api.ok("POST", "/hosts/host1/stats", token=tokens["host1"], json=stats) == {"accepted": 0}
    assert api.ok("GET", "/apps/db/compliance")["state"] == "unknown"
    assert api.req("POST", "/hosts/host1/stats", token=tokens["ctl1"], json=stats).status_code == 403
    assert api.req("POST", "/hosts/host1/stats", token=tokens["host1"], json={"paths": []}).status_code == 422


def test_volumes_and_capacity_accounting(api: Api):
    fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 256 << 20, "policy": "gold"})
    v2 = api.ok("POST", "/volumes", 201, json={"application": "db", "size_bytes": 256 << 20})
    assert (v2["name"], v2["controller"], v2["lun"], v2["policy_version"]) == ("db-1", "ctl1", 1, 1)
    [pool] = [c for c in api.ok("GET", "/containers") if c["name"] == "pool"]
    assert (pool["allocated_bytes"], pool["free_bytes"], pool["volumes"]) == (512 << 20, 512 << 20, 2)
    grown = api.ok("PATCH", f"/volumes/{v2['id']}", json={"size_bytes": 512 << 20})
    assert grown["size_bytes"] == 512 << 20
    r = api.req("PATCH", "/volumes/db-1", json={"size_bytes": 4096})
    assert r.status_code == 409 and "only grow" in r.json()["detail"]
    r = api.req("PATCH", "/volumes/db-1", json={"size_bytes": 2 * GIB})
    assert r.status_code == 409 and "does not fit" in r.json()["detail"]
    r = api.req("POST", "/volumes", json={"application": "db", "size_bytes": 512 << 20})
    assert r.status_code == 409 and "bytes free" in r.json()["detail"]
    r = api.req("PATCH", "/containers/ctl1/pool", json={"capacity_bytes": 1 << 20})
    assert r.status_code == 409 and "cannot shrink" in r.json()["detail"]
    assert api.req("DELETE", "/containers/ctl1/pool").status_code == 409
    api.ok("DELETE", "/volumes/db-1", 204)
    assert [v["name"] for v in api.ok("GET", "/volumes", params={"application": "db"})] == ["db-0"]
    declared = api.ok("POST", "/containers", 201, json={"controller": "ctl1", "name": "fast", "capacity_bytes": GIB, "pi_types": [1]})
    assert declared["source"] == "declared" and declared["free_bytes"] == GIB
    assert {c["name"] for c in api.ok("GET", "/controllers/ctl1/containers")} == {"pool", "fast"}
    api.ok("DELETE", "/apps/db", 204)
    assert api.ok("GET", "/volumes") == []
    api.ok("DELETE", "/containers/ctl1/fast", 204)


def test_qos_headroom_is_accounted_across_applications(api: Api):
    api.configure(qos_headroom=0.0)  # the whole capacity: this test is about the accounting
    tokens = {n: api.register(n, "controller") for n in ("ctl1",)}
    small = dict(FULL_SERVICES, qos={**FULL_SERVICES["qos"], "max_iops": 1500})
    api.advertise("ctl1", tokens["ctl1"], **controller_adv(services=small))
    api.ok("POST", "/apps", 201, json={"name": "a", "size_bytes": 4096, "policy": "gold"})  # reserves 1000
    r = api.req("POST", "/apps", json={"name": "b", "size_bytes": 4096, "policy": "gold"})
    assert r.status_code == 409 and "500 IOPS left to reserve" in r.json()["detail"]
    api.ok("POST", "/apps", 201, json={"name": "b", "size_bytes": 4096, "services": {"qos": {"reservation_iops": 500}}})
    r = api.req("PUT", "/apps/b/policy", json={"services": {"qos": {"reservation_iops": 501}}})
    assert r.status_code == 409 and r.json()["unmet"][0]["service"] == "qos.reservation_iops"
    # its own reservation does not count against it
    assert api.ok("PUT", "/apps/a/policy", json={"services": {"qos": {"reservation_iops": 1000, "limit_iops": 2000}}})["version"] == 2


@pytest.mark.parametrize("kind", ["host", "switch"])
def test_delete_nodes(api: Api, kind: str):
    tokens = fleet(api)
    api.register("n9", kind)
    api.ok("DELETE", "/nodes/n9", 204)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 4096, "policy": "gold"})
    r = api.req("DELETE", "/nodes/ctl1")
    assert r.status_code == 409 and "still holds volumes" in r.json()["detail"]
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": "iqn.2025-01.org.difs:host1"})
    assert "unbind" in api.req("DELETE", "/nodes/host1").json()["detail"]
