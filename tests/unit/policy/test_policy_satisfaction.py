"""Does a path satisfy a policy: the explained form (unmet) and the hot-path form."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from difs.policy import (
    BRONZE,
    GOLD,
    SILVER,
    ContainerAdvert,
    NegotiatedServices,
    NegotiatedServicesModel,
    NodeKind,
    NodeView,
    PolicyServices,
    Requirement,
    Route,
    ServiceCapabilities,
    class_covers,
    path_satisfies,
    service_class,
    unmet,
)
from difs.policy import fast

EVERYTHING = ServiceCapabilities.model_validate(
    {
        "integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
        "security": {"authentication": ["chap", "mutual_chap"], "tls": True, "at_host_encryption": True},
        "qos": {
            "reservation": True,
            "limit": True,
            "weight": True,
            "latency_target": True,
            "dscp_classes": [0, 34, 46],
            "max_iops": 100000,
        },
        "isolation": {"exclusive": True, "tags": True, "vlans": [100]},
    }
)


def node(name, kind, caps=EVERYTHING, alive=True):
    return NodeView(name=name, kind=kind, services=caps, alive=alive)


def full_route(**over):
    parts = dict(
        host=node("h1", NodeKind.HOST),
        controller=node("c1", NodeKind.CONTROLLER),
        container=ContainerAdvert(name="pool", capacity_bytes=1 << 40, pi_types=[1, 3]),
        switches=(node("sw1", NodeKind.SWITCH),),
    )
    parts.update(over)
    return Route(**parts)


def test_capable_route_meets_gold():
    assert unmet(full_route(), GOLD) == []
    assert unmet(full_route(), None) == []


def test_plain_controller_explains_each_missing_service():
    plain = node("c1", NodeKind.CONTROLLER, ServiceCapabilities())
    reasons = unmet(full_route(controller=plain), GOLD)
    by_service = {u.service: u for u in reasons}
    assert set(by_service) >= {
        "integrity.header_digest",
        "integrity.data_digest",
        "integrity.protection_information",
        "security.authentication",
        "qos.reservation",
        "qos.weight",
    }
    assert by_service["integrity.data_digest"].reason == "controller c1 does not offer CRC32C data digests"
    assert by_service["security.authentication"].reason == "controller c1 does not offer mutual CHAP"
    assert all(u.node == "c1" for u in reasons)


def test_container_without_pi_format_is_named():
    route = full_route(container=ContainerAdvert(name="flat", capacity_bytes=10, pi_types=[]))
    [u] = unmet(route, GOLD)
    assert u.service == "integrity.protection_information"
    assert "container flat" in u.reason and "PI type 1" in u.reason


def test_switch_must_honour_dscp_and_vlan():
    sw = node("sw9", NodeKind.SWITCH, ServiceCapabilities())
    policy = PolicyServices.model_validate({"qos": {"dscp": "ef"}, "isolation": {"vlan": 100}})
    reasons = unmet(full_route(switches=(sw,)), policy)
    assert [(u.service, u.node) for u in reasons] == [("qos.dscp", "sw9"), ("isolation.vlan", "sw9")]
    assert "does not honour DSCP 46" in reasons[0].reason


def test_negotiated_channel_is_checked():
    neg = NegotiatedServicesModel(header_digest=True, data_digest=False)
    reasons = unmet(full_route(negotiated=neg, channel=1), SILVER)
    assert [u.reason for u in reasons] == ["channel 1 did not negotiate CRC32C data digests"]


def test_expired_node_is_unavailable():
    reasons = unmet(full_route(controller=node("c1", NodeKind.CONTROLLER, alive=False)), BRONZE)
    assert [u.service for u in reasons] == ["availability"]
    assert "lease expired" in reasons[0].reason


def test_latency_and_reservation_limits():
    caps = EVERYTHING.model_copy(
        update={"qos": EVERYTHING.qos.model_copy(update={"min_latency_ms": 2.0, "max_iops": 100})}
    )
    policy = PolicyServices.model_validate({"qos": {"latency_target_ms": 1, "reservation_iops": 500}})
    reasons = {u.service: u.reason for u in unmet(full_route(controller=node("c1", NodeKind.CONTROLLER, caps)), policy)}
    assert "best latency is 2 ms, above the target 1 ms" in reasons["qos.latency_target_ms"]
    assert "at most 100 IOPS" in reasons["qos.reservation_iops"]


def test_limit_can_be_enforced_by_host_alone():
    ctl_caps = EVERYTHING.model_copy(update={"qos": EVERYTHING.qos.model_copy(update={"limit": False})})
    policy = PolicyServices.model_validate({"qos": {"limit_iops": 10}})
    assert unmet(full_route(controller=node("c1", NodeKind.CONTROLLER, ctl_caps)), policy) == []
    host_plain = node("h1", NodeKind.HOST, ServiceCapabilities())
    reasons = unmet(full_route(controller=node("c1", NodeKind.CONTROLLER, ctl_caps), host=host_plain), policy)
    assert [u.service for u in reasons if u.service.startswith("qos")] == ["qos.limit"]


def test_limit_refusal_reads_well_for_one_or_two_candidates():
    ctl_caps = EVERYTHING.model_copy(update={"qos": EVERYTHING.qos.model_copy(update={"limit": False})})
    ctl = node("ctl1", NodeKind.CONTROLLER, ctl_caps)
    policy = PolicyServices.model_validate({"qos": {"limit_iops": 10}})
    alone = [u.reason for u in unmet(Route(controller=ctl), policy) if u.service == "qos.limit"]
    assert alone == ["controller ctl1 cannot enforce a limit"]
    both = [u.reason for u in unmet(Route(controller=ctl, host=node("h1", NodeKind.HOST, ServiceCapabilities())),
                                    policy) if u.service == "qos.limit"]
    assert both == ["neither host h1 nor controller ctl1 can enforce a limit"]


# --- the hot-path form -------------------------------------------------------------------------


def test_service_classes_of_tiers():
    assert service_class(BRONZE.services) == 0
    assert service_class(SILVER.services) == fast.HEADER_DIGEST | fast.DATA_DIGEST
    assert service_class(GOLD.services) == fast.HEADER_DIGEST | fast.DATA_DIGEST | fast.PI | fast.AUTH
    assert 0 <= service_class(GOLD.services) <= 63


def test_path_satisfies_examples():
    gold = GOLD.requirement
    full = NegotiatedServices(header_digest=True, data_digest=True, pi_types=[1], authentication="mutual_chap")
    one_way = NegotiatedServices(header_digest=True, data_digest=True, pi_types=[1], authentication="chap")
    type3 = NegotiatedServices(header_digest=True, data_digest=True, pi_types=[3], authentication="mutual_chap")
    assert path_satisfies(full, gold)
    assert not path_satisfies(one_way, gold)
    assert not path_satisfies(type3, gold)
    assert path_satisfies(NegotiatedServices(), BRONZE.requirement)
    tagged = Requirement.from_policy(PolicyServices.model_validate({"isolation": {"tag": "a"}, "qos": {"dscp": 46}}))
    assert path_satisfies(NegotiatedServices(isolation_tag="a", dscp=46), tagged)
    assert not path_satisfies(NegotiatedServices(isolation_tag="b", dscp=46), tagged)
    assert not path_satisfies(NegotiatedServices(isolation_tag="a", dscp=0), tagged)


def test_service_class_round_trip_and_cover():
    sc = GOLD.service_class
    coarse = Requirement.from_service_class(sc)
    assert coarse.service_class == sc
    assert class_covers(sc, SILVER.service_class)
    assert not class_covers(SILVER.service_class, sc)
    full = NegotiatedServices(header_digest=True, data_digest=True, pi_types=[3], authentication="chap")
    assert path_satisfies(full, coarse)  # the class does not carry PI type or mutual CHAP


negotiated_models = st.builds(
    NegotiatedServicesModel,
    header_digest=st.booleans(),
    data_digest=st.booleans(),
    pi_types=st.lists(st.sampled_from([1, 3]), unique=True),
    authentication=st.sampled_from(["none", "chap", "mutual_chap"]),
    tls=st.booleans(),
    dscp=st.none() | st.sampled_from([0, 34, 46]),
    vlan=st.none() | st.sampled_from([100, 200]),
    isolation_tag=st.none() | st.sampled_from(["a", "b"]),
)

policies = st.builds(
    lambda hd, dd, pi, auth, tls, dscp, vlan, tag: PolicyServices.model_validate(
        {
            "integrity": {"header_digest": hd, "data_digest": dd, "protection_information": pi},
            "security": {"authentication": auth, "tls": tls},
            "qos": {"dscp": dscp},
            "isolation": {"vlan": vlan, "tag": tag},
        }
    ),
    st.booleans(),
    st.booleans(),
    st.none() | st.sampled_from([1, 3]),
    st.sampled_from(["none", "chap", "mutual_chap"]),
    st.booleans(),
    st.none() | st.sampled_from([0, 34, 46]),
    st.none() | st.sampled_from([100, 200]),
    st.none() | st.sampled_from(["a", "b"]),
)


@given(negotiated_models, policies)
def test_fast_check_agrees_with_explained_check(neg, policy):
    """On a route whose nodes can do everything, only the channel decides: both forms agree."""
    caps = EVERYTHING.model_copy(
        update={"isolation": EVERYTHING.isolation.model_copy(update={"vlans": [100, 200]})}
    )
    route = Route(
        host=node("h", NodeKind.HOST, caps),
        controller=node("c", NodeKind.CONTROLLER, caps),
        negotiated=neg,
        channel=0,
    )
    explained = unmet(route, policy)
    assert path_satisfies(neg.compile(), Requirement.from_policy(policy)) == (explained == [])
