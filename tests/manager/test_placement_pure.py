"""Placement, in-place feasibility and compliance as pure functions (no database)."""

from __future__ import annotations

from difs.manager.placement import (
    ContainerCandidate,
    HostCandidate,
    PlacementRequest,
    check_in_place,
    place,
)
from difs.policy import (
    BRONZE,
    GOLD,
    SILVER,
    ContainerAdvert,
    NodeKind,
    NodeView,
    PolicyServices,
    ServiceCapabilities,
)

ALL = ServiceCapabilities.model_validate(
    {
        "integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
        "security": {"authentication": ["chap", "mutual_chap"], "tls": True},
        "qos": {"reservation": True, "limit": True, "weight": True, "max_iops": 5000, "dscp_classes": [46]},
        "isolation": {"exclusive": True},
    }
)
DIGESTS = ServiceCapabilities.model_validate({"integrity": {"header_digest": True, "data_digest": True}})


def ctl(name, caps=ALL, alive=True):
    return NodeView(name=name, kind=NodeKind.CONTROLLER, services=caps, alive=alive)


def host(name, caps=ALL, alive=True):
    return NodeView(name=name, kind=NodeKind.HOST, services=caps, alive=alive)


def cont(controller, name="pool", free=1 << 30, pi=(1,), reserved=0):
    return ContainerCandidate(
        controller=controller,
        container=ContainerAdvert(name=name, capacity_bytes=free, pi_types=list(pi)),
        free_bytes=free,
        reserved_iops=reserved,
    )


def test_gold_goes_to_the_capable_controller_and_the_others_are_explained():
    decision = place(
        request=PlacementRequest(size_bytes=1 << 20, services=GOLD.services),
        containers=[cont(ctl("a", DIGESTS), free=1 << 40), cont(ctl("b")), cont(ctl("c"), free=10)],
        hosts=[HostCandidate(host("h1"))],
    )
    assert decision.choice.model_dump() == {"controller": "b", "container": "pool", "host": "h1"}
    why = {r.candidate: r.reasons for r in decision.rejected}
    assert set(why) == {"a/pool", "c/pool"}
    assert "controller a does not support T10 PI type 1" in why["a/pool"]
    assert "controller a does not offer mutual CHAP" in why["a/pool"]
    assert why["c/pool"] == ["container c/pool has 10 bytes free, the volume needs 1048576"]


def test_most_free_space_wins_among_feasible_containers():
    decision = place(
        request=PlacementRequest(size_bytes=4096, services=BRONZE.services),
        containers=[cont(ctl("a"), free=1 << 20), cont(ctl("b"), free=1 << 30)],
        hosts=[],
    )
    assert (decision.choice.controller, decision.choice.host) == ("b", None)
    [r] = decision.rejected
    assert r.candidate == "a/pool" and "was preferred" in r.reasons[0]


def test_hosts_that_cannot_reach_are_explained_per_container():
    weak = host("weak", DIGESTS)
    decision = place(
        request=PlacementRequest(size_bytes=4096, services=GOLD.services),
        containers=[cont(ctl("b"))],
        hosts=[HostCandidate(weak), HostCandidate(host("gone", alive=False))],
    )
    assert decision.choice is None
    why = {r.candidate: r.reasons for r in decision.rejected}
    assert "to b/pool: host weak does not support T10 PI type 1" in why["weak"]
    assert why["gone"] == ["host gone stopped advertising (its lease expired)"]


def test_requested_host_and_switches_on_its_path():
    sw = NodeView(name="sw1", kind=NodeKind.SWITCH, services=ServiceCapabilities())
    policy = PolicyServices.model_validate({"qos": {"dscp": "ef"}})
    good = HostCandidate(host("h1"))
    via_switch = HostCandidate(host("h2"), switches_to={"b": (sw,)})
    decision = place(
        request=PlacementRequest(size_bytes=4096, services=policy, host="h2"),
        containers=[cont(ctl("b"))],
        hosts=[good, via_switch],
    )
    assert decision.choice is None
    why = {r.candidate: r.reasons for r in decision.rejected}
    assert why["h1"] == ["host h2 was requested"]
    assert why["h2"] == ["to b/pool: switch sw1 does not honour DSCP 46"]
    missing = place(request=PlacementRequest(size_bytes=1, services=None, host="nope"), containers=[cont(ctl("b"))], hosts=[])
    assert missing.rejected[-1].reasons == ["host nope is not a registered host"]


def test_qos_headroom():
    busy = cont(ctl("b"), reserved=4500)
    decision = place(request=PlacementRequest(size_bytes=1, services=GOLD.services), containers=[busy], hosts=[])
    assert decision.choice is None
    assert decision.rejected[0].reasons == [
        "controller b: reservations 4,500 + 1,000 IOPS > 100% of 5,000 (500 IOPS left to reserve)"
    ]


def test_check_in_place_for_live_change():
    site = cont(ctl("a", DIGESTS))
    assert check_in_place(services=SILVER.services, sites=[site], host=HostCandidate(host("h"))) == []
    problems = check_in_place(services=GOLD.services, sites=[site], host=None)
    assert {u.service for u in problems} >= {"integrity.protection_information", "security.authentication"}
    assert all(u.node == "a" for u in problems)


# compliance (expected vs observed from evidence) is tested in test_compliance_pure.py
