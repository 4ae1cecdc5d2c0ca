"""API through the real app on SQLite and PostgreSQL: policy catalogue, tiers, nodes, tokens, bad input."""

from __future__ import annotations


from mgr_support import ADMIN_TOKEN, Api, controller_adv, host_adv


def test_health_and_seeded_tiers(api: Api):
    health = api.ok("GET", "/healthz", token=None)
    assert health["status"] == "ok" and health["database"] in ("sqlite", "postgresql")
    tiers = {t["name"]: t for t in api.ok("GET", "/tiers")}
    assert set(tiers) == {"gold", "silver", "bronze"}
    assert tiers["gold"]["builtin"] and tiers["gold"]["services"]["integrity"]["protection_information"] == 1
    assert tiers["silver"]["summary"] == ["header digest", "data digest"]
    assert tiers["bronze"]["service_class"] == 0
    assert api.ok("GET", "/policies") == []


def test_builtin_tiers_are_protected_and_users_manage_their_own(api: Api):
    r = api.req("PUT", "/tiers/gold", json={"description": "mine now"})
    assert r.status_code == 409 and "built in" in r.json()["detail"]
    assert api.req("DELETE", "/tiers/bronze").status_code == 409
    t = api.ok("POST", "/tiers", 201, json={"name": "platinum", "services": {"integrity": {"data_digest": True}}})
    assert t["kind"] == "tier" and t["version"] == 1
    t2 = api.ok("PUT", "/tiers/platinum", json={"services": {"security": {"tls": True}}})
    assert t2["version"] == 2 and t2["services"]["security"]["tls"] is True
    assert t2["services"]["integrity"] is None  # the update replaced the services
    api.ok("DELETE", "/tiers/platinum", 204)
    assert api.req("GET", "/tiers/platinum").status_code == 404


def test_policy_versions_etag_and_if_match(api: Api):
    api.ok("POST", "/policies", 201, json={"name": "db", "services": {"qos": {"limit_iops": 100}}})
    r = api.req("GET", "/policies/db")
    assert r.headers["etag"] == '"1"'
    assert api.ok("PUT", "/policies/db", json={"description": "same services"})["version"] == 2
    stale = api.req("PUT", "/policies/db", json={"description": "x"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["current_version"] == 2
    assert api.ok("PUT", "/policies/db", json={"description": "y"}, headers={"If-Match": '"2"'})["version"] == 3
    clash = api.req("POST", "/policies", json={"name": "gold"})
    assert clash.status_code == 409 and "tier gold" in clash.json()["detail"]


def _state(api: Api):
    return (
        api.ok("GET", "/policies"),
        api.ok("GET", "/nodes"),
        api.ok("GET", "/apps"),
        len(api.events()),
    )


BAD_INPUTS = [
        ("POST", "/policies", {"content": b'{"name": "y", "services": {', "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
        ("POST", "/policies", {"json": {"name": "y", "services": {"compression": {}}}}, 422, "unknown service 'compression'"),
        ("POST", "/policies", {"json": {"name": "y", "services": {"qos": {"dscp": 99}}}}, 422, "DSCP 99 is out of range"),
        ("POST", "/policies", {"json": {"name": "y", "services": {"qos": {"limit_iops": -5}}}}, 422, "limit_iops"),
        ("POST", "/policies", {"json": {"name": "y", "services": {"qos": {"reservation_iops": 9, "limit_iops": 1}}}}, 422, "a reservation must fit inside the limit"),
        ("POST", "/policies", {"json": {"name": "y", "extra": 1}}, 422, "unknown field 'extra'"),
        ("POST", "/policies", {"json": {"name": "y"}, "token": "wrong-token"}, 401, "token is not valid"),
        ("POST", "/policies", {"json": {"name": "y"}, "token": None}, 401, "send a token"),
        ("POST", "/apps", {"json": {"name": "a", "size_bytes": 1000}}, 422, "multiple of 4096"),
        ("POST", "/apps", {"json": {"name": "a", "size_bytes": 4096, "policy": "nope"}}, 404, "no policy or tier named 'nope'"),
        ("PUT", "/policies/x", {"json": {"description": "z"}, "headers": {"If-Match": "banana"}}, 400, "If-Match"),
        ("POST", "/nodes", {"json": {"name": "n", "kind": "toaster"}}, 422, "kind"),
        ("POST", "/apps/none/policy", {"json": {"policy": "gold", "services": {}}}, 422, "exactly one of"),
]


def test_bad_input_is_refused_with_a_problem_and_changes_nothing(api: Api):
    api.ok("POST", "/policies", 201, json={"name": "x"})
    before = _state(api)
    for method, path, kwargs, status, phrase in BAD_INPUTS:
        kwargs = dict(kwargs)
        token = kwargs.pop("token", ADMIN_TOKEN)
        r = api.req(method, path, token=token, **kwargs)
        assert r.status_code == status, (path, kwargs, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == status and body["type"].startswith("urn:difs:problem:")
        assert phrase in body["detail"] + " ".join(body.get("errors") or []), body
    assert _state(api) == before


def test_node_tokens_advertise_only_for_themselves(api: Api):
    ctl = api.register("ctl1", "controller")
    host = api.register("host1", "host")
    assert ctl != host and ctl.startswith("difs-node-")
    # the admin cannot advertise for a node, nor one node for another
    assert api.req("PUT", "/nodes/ctl1/advertisement", json=controller_adv()).status_code == 403
    r = api.req("PUT", "/nodes/ctl1/advertisement", token=host, json=controller_adv())
    assert r.status_code == 403 and "only advertise for itself" in r.json()["detail"]
    # a node's token does not open admin routes
    assert api.req("GET", "/nodes", token=ctl).status_code == 403
    assert api.req("POST", "/policies", token=ctl, json={"name": "p"}).status_code == 403
    # kind must match the registration
    bad = {**host_adv(), "containers": [{"name": "c", "capacity_bytes": 1}]}
    r = api.req("PUT", "/nodes/host1/advertisement", token=host, json=bad)
    assert r.status_code == 422 and "only a controller advertises storage containers" in r.json()["detail"]
    r = api.req("PUT", "/nodes/ctl1/advertisement", token=ctl, json=host_adv())
    assert r.status_code == 400 and "registered as a controller" in r.json()["detail"]
    ack = api.advertise("ctl1", ctl, **controller_adv())
    assert ack["state"] == "alive" and ack["lease_seconds"] == 30
    node = api.ok("GET", "/nodes/ctl1", token=ctl)
    assert node["containers"] == ["pool"] and node["portals"][1]["tls"]
    # rotation: the old token stops working
    new = api.ok("POST", "/nodes/ctl1/token")["token"]
    assert api.req("GET", "/nodes/ctl1", token=ctl).status_code == 401
    assert api.req("GET", "/nodes/ctl1", token=new).status_code == 200
    assert [e["kind"] for e in api.events("node.")][:3] == ["node.registered", "node.registered", "node.alive"]


def test_secrets_never_logged(api: Api, caplog):
    caplog.set_level("DEBUG")
    token = api.register("ctl1", "controller")
    api.advertise("ctl1", token, **controller_adv())
    api.req("GET", "/nodes", token="wrong-" + token)
    text = caplog.text
    assert token not in text and ADMIN_TOKEN not in text


def test_unknown_routes_and_methods_are_problems(api: Api):
    r = api.req("GET", "/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = api.req("PATCH", "/policies")
    assert r.status_code == 405 and r.json()["title"] == "Method Not Allowed"


def test_dashboard_and_metrics(api: Api):
    token = api.register("ctl1", "controller")
    api.advertise("ctl1", token, **controller_adv())
    html = api.c.get("/")
    assert html.status_code == 200 and "difs manager" in html.text
    assert api.c.get("/static/dashboard.js").status_code == 200
    m = api.c.get("/metrics").text
    assert 'difs_manager_nodes{kind="controller",state="alive"} 1.0' in m
    assert 'difs_manager_container_capacity_bytes{container="pool",controller="ctl1"}' in m
    assert "difs_manager_requests_total" in m
