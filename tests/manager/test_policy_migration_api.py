"""updateDIFS as a transaction through the real app: refused whole, or a migration the bound host
reports on until it commits (or is aborted) — nodes played by their API calls."""

from __future__ import annotations

from typing import Any

from mgr_support import Api, controller_adv, host_adv, path_entry, report_evidence, session_entry

HOST_IQN = "iqn.2025-01.org.difs:host1"
PLAIN_CTL = {"integrity": {"header_digest": True, "data_digest": True}, "isolation": {"exclusive": True}}
PI_DIGESTS = {"services": {"integrity": {"header_digest": True, "data_digest": True, "protection_information": 1}},
              "migrate": True}
PATH = {"controller": "ctl1", "channel": 0, "portal": "127.0.0.1:3260",
        "negotiated": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]}}


def bound_app(api: Api, *, paths: list[dict[str, Any]] | None = None) -> dict[str, str]:
    tokens = {n: api.register(n, k) for n, k in (("ctl1", "controller"), ("host1", "host"))}
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    api.advertise("host1", tokens["host1"], **host_adv(paths=[PATH] if paths is None else paths))
    api.ok("POST", "/apps", 201, json={"name": "db", "size_bytes": 1 << 20, "policy": "bronze"})
    api.ok("POST", "/apps/db/binding", token=tokens["host1"], json={"initiator_iqn": HOST_IQN})
    return tokens


def snapshot(api: Api, tokens: dict[str, str]) -> Any:
    app = api.ok("GET", "/apps/db")
    return (app["policy"], app["volumes"], app["binding"],
            api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"]),
            api.ok("GET", "/hosts/host1/bindings", token=tokens["host1"]), len(api.events()))


def report(api: Api, tokens: dict[str, str], migration: dict[str, Any] | None = None, version: int = 1) -> None:
    b = {"application": "db", "state": "running", "policy_version": version}
    if migration is not None:
        b["migration"] = migration
    api.ok("PUT", "/hosts/host1/bindings/state", token=tokens["host1"], json={"bindings": [b]})


def test_an_unsatisfiable_change_is_refused_with_every_reason_and_changes_nothing(api: Api):
    # the host's only established path to ctl1 negotiated no digest
    tokens = bound_app(api, paths=[{**PATH, "negotiated": {}}])
    before = snapshot(api, tokens)
    r = api.req("PUT", "/apps/db/policy", json={"services": {"integrity": {"data_digest": True}}})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert "nothing was changed" in body["detail"]
    assert body["reasons"] == [
        "host host1 has no established path to controller ctl1 that satisfies the policy: "
        "channel 0 did not negotiate CRC32C data digests"]
    # PI on the plain volume without asking for a migration: refused, saying why
    r = api.req("PUT", "/apps/db/policy", json={"services": {"integrity": {"protection_information": 1}}})
    assert r.status_code == 409
    assert "volume db-0 is formatted without T10 PI" in r.json()["reasons"][0]
    assert snapshot(api, tokens) == before


def test_a_migration_commits_when_the_host_has_switched(api: Api):
    tokens = bound_app(api)
    r = api.req("PUT", "/apps/db/policy", json=PI_DIGESTS)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == "/api/v1/apps/db/migration"
    out = r.json()
    assert out["version"] == 1 and out["source"] == "bronze"  # the policy changes when done
    m = out["migration"]
    assert (m["state"], m["source_volume"], m["target_volume"], m["policy_version"]) == ("copying", "db-0", "db-1", 2)
    # the controller creates the new volume (with the new policy, so PI), opened to the host
    vols = {v["name"]: v for v in api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])}
    assert vols["db-1"]["policy"]["integrity"]["protection_information"] == 1
    assert vols["db-1"]["allowed_initiators"] == [HOST_IQN] and vols["db-0"]["policy_version"] == 1
    [b] = api.ok("GET", "/hosts/host1/bindings", token=tokens["host1"])
    assert [v["name"] for v in b["volumes"]] == ["db-0"] and b["policy_version"] == 1
    assert (b["migration"]["target"]["name"], b["migration"]["policy_version"]) == ("db-1", 2)
    # no second change meanwhile
    r = api.req("PUT", "/apps/db/policy", json={"policy": "silver"})
    assert r.status_code == 409 and "in progress" in r.json()["detail"]

    report(api, tokens, {"id": m["id"], "phase": "copy", "bytes_copied": 1 << 19, "bytes_total": 1 << 20})
    got = api.ok("GET", "/apps/db/migration")
    assert (got["state"], got["phase"], got["bytes_copied"]) == ("copying", "copy", 1 << 19)
    report(api, tokens, {"id": m["id"], "phase": "pause", "bytes_copied": 1 << 20, "bytes_total": 1 << 20})
    assert api.ok("GET", "/apps/db/migration")["state"] == "switching"
    r = api.req("DELETE", "/apps/db/migration")
    assert r.status_code == 409 and "can no longer be aborted" in r.json()["detail"]
    # both volumes carried I/O meanwhile (the application's on db-0, the copy's on db-1): their
    # evidence goes with the old volume and the old policy, it does not stop the commit
    report_evidence(api, tokens, sessions=[session_entry(volume="db-0", initiator=HOST_IQN),
                                           session_entry(volume="db-1", initiator=HOST_IQN)],
                    paths=[path_entry()])
    report(api, tokens, {"id": m["id"], "phase": "switched", "bytes_copied": 1 << 20, "bytes_total": 1 << 20,
                         "pause_ms": 12.5})
    done = api.ok("GET", "/apps/db/migration")
    assert (done["state"], done["pause_ms"]) == ("done", 12.5)
    app = api.ok("GET", "/apps/db")
    assert (app["policy"]["source"], app["policy"]["version"]) == (None, 2)
    assert app["policy"]["services"]["integrity"]["protection_information"] == 1
    assert [v["name"] for v in app["volumes"]] == ["db-1"]
    assert [v["name"] for v in api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])] == ["db-1"]
    [b] = api.ok("GET", "/hosts/host1/bindings", token=tokens["host1"])
    assert b["migration"] is None and b["policy_version"] == 2 and b["volumes"][0]["name"] == "db-1"
    kinds = [e["kind"] for e in api.events("app.")]
    assert "app.migration_started" in kinds and "app.migration_done" in kinds


def test_an_aborted_or_failed_migration_leaves_the_application_as_it_was(api: Api):
    tokens = bound_app(api)
    before = api.ok("GET", "/apps/db")
    m = api.ok("PUT", "/apps/db/policy", 202, json=PI_DIGESTS)["migration"]
    aborted = api.ok("DELETE", "/apps/db/migration")
    assert (aborted["state"], aborted["error"]) == ("aborted", "aborted by request")
    after = api.ok("GET", "/apps/db")
    assert (after["policy"], after["volumes"]) == (before["policy"], before["volumes"])
    assert [v["name"] for v in api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])] == ["db-0"]
    report(api, tokens, {"id": m["id"], "phase": "switched"})  # too late: ignored
    assert api.ok("GET", "/apps/db")["volumes"] == before["volumes"]
    assert api.req("DELETE", "/apps/db/migration").status_code == 404
    # a copy failure the host reports ends it the same way
    m = api.ok("PUT", "/apps/db/policy", 202, json=PI_DIGESTS)["migration"]
    report(api, tokens, {"id": m["id"], "phase": "failed", "error": "read at LBA 8 failed"})
    failed = api.ok("GET", "/apps/db/migration")
    assert (failed["state"], failed["error"]) == ("failed", "read at LBA 8 failed")
    assert api.ok("GET", "/apps/db")["volumes"] == before["volumes"]
    # and unbinding the host stops a copy
    api.ok("PUT", "/apps/db/policy", 202, json=PI_DIGESTS)
    api.ok("DELETE", "/apps/db/binding", 204)
    assert api.ok("GET", "/apps/db/migration")["state"] == "aborted"
    assert [v["name"] for v in api.ok("GET", "/apps/db")["volumes"]] == ["db-0"]
