"""The state a host reports of its bindings (starting / running / failed with the reason), on
SQLite and PostgreSQL: stored per application, shown with the binding, only from that host."""

from __future__ import annotations

from mgr_support import Api
from test_api_fleet import fleet

OWN = "iqn.2025-01.org.difs:host1"


def report(api: Api, token: str, *bindings: dict, host: str = "host1", status: int = 200):
    return api.ok("PUT", f"/hosts/{host}/bindings/state", status, token=token, json={"bindings": list(bindings)})


def test_a_hosts_report_is_shown_with_the_binding(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "app2", "size_bytes": 1 << 20, "policy": "bronze"})
    api.ok("POST", "/apps/app2/binding", token=tokens["host1"], json={"initiator_iqn": OWN})
    binding = api.ok("GET", "/apps/app2")["binding"]
    assert (binding["state"], binding["state_reason"]) == (None, None)  # nothing reported yet

    assert report(api, tokens["host1"], {"application": "app2", "state": "starting", "policy_version": 1}) == {"accepted": 1}
    assert api.ok("GET", "/apps/app2")["binding"]["state"] == "starting"
    why = "policy version 1 cannot be applied: no PI"
    report(api, tokens["host1"], {"application": "app2", "state": "failed", "reason": why, "policy_version": 1})
    binding = api.ok("GET", "/apps/app2")["binding"]
    assert (binding["state"], binding["state_reason"]) == ("failed", why) and binding["state_at"]
    assert [e["subject"] for e in api.events("app.failed")] == ["app2"]
    assert api.ok("GET", "/hosts/host1/bindings", token=tokens["host1"])[0]["state"] == "failed"

    # a report for a policy version the manager does not have, or of an unbound app, is ignored
    assert report(api, tokens["host1"], {"application": "app2", "state": "running", "policy_version": 7},
                  {"application": "nope", "state": "running"}) == {"accepted": 0}
    assert api.ok("GET", "/apps/app2")["binding"]["state"] == "failed"

    api.ok("DELETE", "/apps/app2/binding", 204)
    api.ok("POST", "/apps/app2/binding", token=tokens["host1"], json={"initiator_iqn": OWN})
    assert api.ok("GET", "/apps/app2")["binding"]["state"] is None  # a new binding starts blank


def test_only_the_host_itself_reports_and_bad_reports_are_refused(api: Api):
    tokens = fleet(api)
    body = {"bindings": [{"application": "app2", "state": "running"}]}
    assert api.req("PUT", "/hosts/host1/bindings/state", json=body).status_code == 403  # admin
    assert api.req("PUT", "/hosts/host1/bindings/state", token=tokens["ctl1"], json=body).status_code == 403
    bad = {"bindings": [{"application": "app2", "state": "sleeping"}]}
    assert api.req("PUT", "/hosts/host1/bindings/state", token=tokens["host1"], json=bad).status_code == 422
    extra = {"bindings": [{"application": "app2", "state": "running", "secret": 1}]}
    assert api.req("PUT", "/hosts/host1/bindings/state", token=tokens["host1"], json=extra).status_code == 422
