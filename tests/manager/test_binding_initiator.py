"""A host's token binds its application only to that host's own initiator name (issue 17,
finding 6), on SQLite and PostgreSQL: any other name is 403 with a problem document that says
why, and the LUN is not opened to it; the admin token binds as before."""

from __future__ import annotations

from mgr_support import Api, host_adv
from test_api_fleet import fleet

OWN = "iqn.2025-01.org.difs:host1"  # what host1 advertises (host_adv)
EVIL = "iqn.2026-11.io.evil:x"


def test_a_host_token_cannot_bind_to_another_initiator_name(api: Api):
    tokens = fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "app2", "size_bytes": 1 << 20, "policy": "gold"})
    r = api.req("POST", "/apps/app2/binding", token=tokens["host1"], json={"initiator_iqn": EVIL})
    assert r.status_code == 403, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:difs:problem:forbidden"
    assert OWN in problem["detail"] and EVIL in problem["detail"] and "own initiator name" in problem["detail"]
    # nothing changed: not bound, and no controller opens the volume to that name
    assert api.ok("GET", "/apps/app2")["binding"] is None
    [vol] = api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])
    assert vol["allowed_initiators"] == []
    # its own name binds
    bound = api.ok("POST", "/apps/app2/binding", token=tokens["host1"], json={"initiator_iqn": OWN})
    assert bound["initiator_iqn"] == OWN
    [vol] = api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])
    assert vol["allowed_initiators"] == [OWN]
    # and a re-bind cannot switch to another name either
    r = api.req("POST", "/apps/app2/binding", token=tokens["host1"], json={"initiator_iqn": EVIL})
    assert r.status_code == 403
    [vol] = api.ok("GET", "/controllers/ctl1/volumes", token=tokens["ctl1"])
    assert vol["allowed_initiators"] == [OWN]


def test_the_admin_token_binds_any_initiator_name_as_before(api: Api):
    fleet(api)
    api.ok("POST", "/apps", 201, json={"name": "app2", "size_bytes": 1 << 20, "policy": "gold"})
    bound = api.ok("POST", "/apps/app2/binding", json={"initiator_iqn": EVIL, "host": "host1"})
    assert bound["host"] == "host1" and bound["initiator_iqn"] == EVIL


def test_a_host_cannot_advertise_another_hosts_initiator_name(api: Api):
    tokens = fleet(api)
    h2 = api.register("host2", "host")
    r = api.req("PUT", "/nodes/host2/advertisement", token=h2, json=host_adv(name="host1"))
    assert r.status_code == 409 and "advertised by host host1" in r.json()["detail"]
    api.advertise("host2", h2, **host_adv(name="host2"))
    # host1 keeps its own name across advertisements
    api.advertise("host1", tokens["host1"], **host_adv())
