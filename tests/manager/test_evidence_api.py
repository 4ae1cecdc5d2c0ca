"""Evidence through the real API (SQLite and PostgreSQL): controllers and hosts report their data
path's windows, and compliance follows the evidence — unknown with no I/O, compliant when digest
and PI I/O is seen from both ends, non_compliant when I/O travels a session without digests or the
controller refuses commands. Nodes report only for themselves, and only about what is theirs."""

from __future__ import annotations

from typing import Any

import pytest
from mgr_support import (
    HOST1_IQN,
    Api,
    controller_adv,
    host_adv,
    path_entry,
    report_evidence,
    session_entry,
)
from test_api_fleet import GOLD_PATH, PLAIN_PATH, fleet

PLAIN_LOGIN: dict[str, Any] = {}


def gold_app(api: Api) -> dict[str, str]:
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "gold", "host": "host1"})
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": HOST1_IQN})
    return tokens


def services(api: Api, app: str = "db") -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in api.ok("GET", f"/apps/{app}/compliance")["services"]}


def keep_alive(api: Api, tokens: dict[str, str]) -> None:
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    api.advertise("ctl2", tokens["ctl2"], **controller_adv(name="ctl2", services={"integrity": {"header_digest": True}},
                                                          containers=[{"name": "big", "capacity_bytes": 1 << 40}]))
    api.advertise("host1", tokens["host1"], **host_adv(paths=[GOLD_PATH, PLAIN_PATH]))


def test_compliance_follows_the_evidence_unknown_compliant_non_compliant(api: Api):
    tokens = gold_app(api)
    # bound, paths established, nothing observed: unknown, and it says what is established
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "unknown" and comp["evidence"] == []
    by = services(api)
    assert by["integrity"]["observed"] == ("no I/O observed in the last 120 s; "
                                           "established paths that satisfy it: ctl1#0")
    assert by["availability"]["state"] == "compliant"

    # gold I/O over the digest channel, seen by the controller and the host
    report_evidence(api, tokens)
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "compliant", comp
    assert comp["fresh_seconds"] == 120
    by = services(api)
    assert by["integrity"]["observed"].startswith("100 I/Os over ctl1#0; 409600 bytes under data digests")
    assert "controller checked PI on 800 blocks" in by["integrity"]["observed"]
    assert by["qos"]["observed"].startswith("10 IOPS, 40960 B/s (controller), p50 <= 1 ms, p99 <= 1 ms (host)")
    lines = {e["side"]: e for e in comp["evidence"]}
    assert lines["controller"] == {
        "side": "controller", "node": "ctl1", "controller": "ctl1", "channel": 0, "volume": "db-0",
        "initiator": HOST1_IQN, "services": ["header digest", "data digest", "mutual chap"], "ios": 100,
        "bytes": 409600, "refused": 0, "p50_ms": 0.5, "p99_ms": 0.5, "window_seconds": 10, "age_seconds": 0}
    assert (lines["host"]["node"], lines["host"]["ios"], lines["host"]["p99_ms"]) == ("host1", 100, 1.0)
    assert [c["subject"] for c in api.events("compliance.changed")][-1] == "db"
    # the overview and the application carry the same judgement
    assert [c["state"] for c in api.ok("GET", "/compliance") if c["application"] == "db"] == ["compliant"]
    assert api.ok("GET", "/apps/db")["compliance"]["evidence"] == comp["evidence"]

    # five I/Os over the plain channel 1: a session and a path without digests carried the app's data
    api.clock.advance(10)
    report_evidence(api, tokens,
                    sessions=[session_entry(), session_entry(channel=1, services=PLAIN_LOGIN, commands=5)],
                    paths=[path_entry(), path_entry(channel=1, services=PLAIN_LOGIN, ios=5)])
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "non_compliant"
    by = services(api)
    assert by["integrity"]["observed"] == (
        "5 I/Os on host1 path to ctl1 channel 1, whose login did not settle header digests and data digests; "
        f"5 commands on ctl1 session of {HOST1_IQN} channel 1 (volume db-0), "
        "whose login did not settle header digests and data digests")
    assert by["security"]["state"] == "non_compliant"
    change = api.events("compliance.changed")[-1]
    assert change["data"] == {"before": "compliant", "after": "non_compliant"}
    assert "channel 1" in change["message"]

    # two minutes later none of it counts: unknown again
    api.clock.advance(121)
    keep_alive(api, tokens)
    assert api.ok("GET", "/apps/db/compliance")["state"] == "unknown"
    assert services(api)["integrity"]["observed"].startswith("no I/O observed in the last 120 s")

    # the controller refuses the app's commands: non_compliant, naming the reasons
    report_evidence(api, tokens,
                    sessions=[session_entry(commands=0, rejected={"pi_format": 12, "service_class": 1})],
                    paths=[path_entry(ios=0, rejected=13)])
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "non_compliant"
    assert services(api)["enforcement"]["observed"] == "the controller refused 13 commands: pi_format 12, service_class 1"


def test_an_idle_window_does_not_erase_fresh_evidence(api: Api):
    tokens = gold_app(api)
    report_evidence(api, tokens)
    api.clock.advance(10)
    report_evidence(api, tokens, sessions=[session_entry(commands=0)], paths=[path_entry(ios=0)])
    assert api.ok("GET", "/apps/db/compliance")["state"] == "compliant"
    [ctl] = [e for e in api.ok("GET", "/apps/db/compliance")["evidence"] if e["side"] == "controller"]
    assert (ctl["ios"], ctl["age_seconds"]) == (100, 10)


def test_a_policy_change_is_judged_on_new_evidence(api: Api):
    tokens = gold_app(api)
    report_evidence(api, tokens)
    assert api.ok("GET", "/apps/db/compliance")["state"] == "compliant"
    api.ok("PUT", "/apps/db/policy", json={"policy": "silver"})
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "unknown" and comp["evidence"] == []


def test_a_failed_binding_makes_availability_non_compliant(api: Api):
    tokens = gold_app(api)
    report_evidence(api, tokens)
    api.ok("PUT", "/hosts/host1/bindings/state", token=tokens["host1"], json={"bindings": [
        {"application": "db", "state": "failed", "reason": "no path carries PI type 1", "policy_version": 1}]})
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "non_compliant"
    assert services(api)["availability"]["observed"] == "host host1 reports the binding failed: no path carries PI type 1"
    api.ok("PUT", "/hosts/host1/bindings/state", token=tokens["host1"], json={"bindings": [
        {"application": "db", "state": "running", "policy_version": 1}]})
    assert services(api)["availability"]["observed"] == "all advertising; binding running on host1"


# --- attacks: a node reporting for another, or about what is not its own ----------------------------


def test_a_node_cannot_report_evidence_for_another_node(api: Api):
    tokens = gold_app(api)
    h2 = api.register("host2", "host")
    body = {"window_seconds": 10, "sessions": [session_entry()]}
    r = api.req("PUT", "/controllers/ctl1/evidence", token=tokens["ctl2"], json=body)
    assert r.status_code == 403 and "may only act for itself, not for ctl1" in r.json()["detail"]
    assert api.req("PUT", "/controllers/ctl1/evidence", token=tokens["host1"], json=body).status_code == 403
    hbody = {"window_seconds": 10, "paths": [path_entry()]}
    assert api.req("PUT", "/hosts/host1/evidence", token=h2, json=hbody).status_code == 403
    assert api.req("PUT", "/hosts/host1/evidence", token=tokens["ctl1"], json=hbody).status_code == 403
    # a host posing as a controller under its own name: there is no such controller
    assert api.req("PUT", "/controllers/host1/evidence", token=tokens["host1"], json=body).status_code == 404
    assert api.req("PUT", "/hosts/host1/evidence", token=None, json=hbody).status_code == 401
    assert api.req("PUT", "/hosts/host1/evidence", token="difs-node-forged", json=hbody).status_code == 401
    # none of it counted
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "unknown" and comp["evidence"] == []
    # the admin may report for a node (tools, tests)
    assert api.ok("PUT", "/hosts/host1/evidence", json=hbody) == {"accepted": 1, "ignored": []}


def test_evidence_about_what_is_not_the_nodes_own_is_ignored_with_the_reason(api: Api):
    tokens = gold_app(api)
    h2 = api.register("host2", "host")
    api.advertise("host2", h2, **host_adv(name="host2"))
    # ctl2, with its own token, vouches for the digest sessions of a volume that lives on ctl1
    ack = api.ok("PUT", "/controllers/ctl2/evidence", token=tokens["ctl2"], json={
        "window_seconds": 10,
        "sessions": [session_entry(), session_entry(volume="ghost"),
                     session_entry(channel=3, application="other")]})
    assert ack == {"accepted": 0, "ignored": [
        {"entry": f"volume db-0 initiator {HOST1_IQN} channel 0", "reason": "volume db-0 is not on controller ctl2"},
        {"entry": f"volume ghost initiator {HOST1_IQN} channel 0", "reason": "no volume named ghost"},
        {"entry": f"volume db-0 initiator {HOST1_IQN} channel 3", "reason": "volume db-0 is not on controller ctl2"},
    ]}
    # host2 reports I/O of db, which is bound to host1
    ack = api.ok("PUT", "/hosts/host2/evidence", token=h2, json={
        "window_seconds": 10, "paths": [path_entry(), path_entry(application="ghost")]})
    assert ack["accepted"] == 0
    assert [i["reason"] for i in ack["ignored"]] == ["application db is not bound to host host2",
                                                     "no application named ghost"]
    comp = api.ok("GET", "/apps/db/compliance")
    assert comp["state"] == "unknown" and comp["evidence"] == []
    # ctl1 naming the wrong application for its own volume, or one session twice: the entry is ignored
    ack = api.ok("PUT", "/controllers/ctl1/evidence", token=tokens["ctl1"], json={
        "window_seconds": 10, "sessions": [session_entry(application="other"), session_entry(), session_entry()]})
    assert ack["accepted"] == 1
    assert [i["reason"] for i in ack["ignored"]] == [
        "volume db-0 belongs to application db, not other",
        "a second entry for the same volume, initiator and channel in one report"]


def test_another_initiators_io_on_an_exclusive_volume_is_non_compliant(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "host": "host1",
                                      "services": {"isolation": {"exclusive": True}}})
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": HOST1_IQN})
    report_evidence(api, tokens)
    assert api.ok("GET", "/apps/db/compliance")["state"] == "compliant"
    report_evidence(api, tokens, sessions=[session_entry(), session_entry(initiator="iqn.2025-01.org.evil:x",
                                                                           commands=7)])
    assert services(api)["isolation"]["observed"] == "initiator iqn.2025-01.org.evil:x carried 7 commands to volume db-0 on ctl1"


@pytest.mark.parametrize("path,body", [
    ("/controllers/ctl1/evidence", {"sessions": []}),  # no window
    ("/controllers/ctl1/evidence", {"window_seconds": 0, "sessions": []}),
    ("/controllers/ctl1/evidence", {"window_seconds": 10, "sessions": [{"volume": "db-0"}]}),
    ("/controllers/ctl1/evidence", {"window_seconds": 10, "sessions": [session_entry(commands=-1)]}),
    ("/controllers/ctl1/evidence", {"window_seconds": 10, "sessions": [session_entry(evil=True)]}),
    ("/controllers/ctl1/evidence", {"window_seconds": 10, "sessions": [session_entry(latency={"counts": [1]})]}),
    ("/controllers/ctl1/evidence", {"window_seconds": 10, "sessions": [session_entry(volume="../x")]}),
    ("/hosts/host1/evidence", {"window_seconds": 10, "paths": [path_entry(), path_entry()]}),  # one key twice
    ("/hosts/host1/evidence", {"window_seconds": 10, "paths": [path_entry(channel=70000)]}),
    ("/hosts/host1/evidence", {"window_seconds": 10, "paths": "all"}),
])
def test_bad_evidence_bodies_are_422(sqlite_api: Api, path: str, body: dict[str, Any]):
    api = sqlite_api
    tokens = gold_app(api)
    node = path.split("/")[2]
    r = api.req("PUT", path, token=tokens[node], json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["errors"]
