"""A policy that names a DSCP class is placed only with a host that marks its packets with it."""

from __future__ import annotations

from mgr_support import FULL_SERVICES, Api, controller_adv, host_adv

HOST_SERVICES = {**FULL_SERVICES, "qos": {"limit": True}}


def test_dscp_policy_goes_to_the_host_that_marks_it(api: Api):
    tokens = {n: api.register(n, k) for n, k in (("ctl1", "controller"), ("host1", "host"), ("host2", "host"))}
    api.advertise("ctl1", tokens["ctl1"], **controller_adv())
    marks = {**HOST_SERVICES, "qos": {"limit": True, "dscp_classes": ["af41"]}}
    path = {"controller": "ctl1", "channel": 0, "portal": "127.0.0.1:3260", "negotiated": {"dscp": 34}}
    api.advertise("host1", tokens["host1"], **host_adv(name="host1", services=marks, paths=[path]))
    api.advertise("host2", tokens["host2"], **host_adv(name="host2", services=HOST_SERVICES))

    policy = {"qos": {"dscp": "af41", "limit_iops": 500}}
    created = api.ok("POST", "/apps", 201, json={"name": "a", "size_bytes": 4096, "services": policy})
    assert created["placement"]["choice"]["host"] == "host1"
    rejected = {r["candidate"]: r["reasons"] for r in created["placement"]["rejected"]}
    assert rejected["host2"] == ["to ctl1/pool: host host2 cannot mark packets with DSCP 34"]
    r = api.req("POST", "/apps", json={"name": "b", "size_bytes": 4096, "services": policy, "host": "host2"})
    assert r.status_code == 409 and "host host2 cannot mark packets with DSCP 34" in r.json()["detail"]
