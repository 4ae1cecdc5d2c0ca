"""Admission control: a controller admits reservations up to its advertised capacity minus the
manager's QoS headroom (pure arithmetic, then the placement functions that use it)."""

from __future__ import annotations

from difs.manager.placement import (
    ContainerCandidate,
    HostCandidate,
    PlacementRequest,
    admission_refusal,
    check_in_place,
    place,
    qos_headroom_unmet,
)
from difs.policy import ContainerAdvert, NodeKind, NodeView, PolicyServices, ServiceCapabilities


def refusal(**kw):
    args = dict(controller="ctl1", unit="IOPS", reserved=0, asked=1000, capacity=5000, headroom=0.1)
    return admission_refusal(**{**args, **kw})


def test_nothing_asked_is_always_admitted():
    assert refusal(asked=0, capacity=None) is None


def test_a_controller_without_capacity_takes_no_reservation():
    assert refusal(capacity=None) == "controller ctl1 advertises no IOPS capacity: it cannot take a reservation of 1,000 IOPS"
    assert refusal(capacity=None, unit="B/s", asked=1 << 20).endswith("a reservation of 1,048,576 B/s")


def test_up_to_capacity_minus_headroom_is_admitted():
    assert refusal(reserved=3500, asked=1000) is None  # 4,500 == 90% of 5,000
    assert refusal(reserved=4000, asked=1000, headroom=0.0) is None


def test_past_it_is_refused_naming_the_numbers():
    assert refusal(reserved=3500, asked=1001) == (
        "controller ctl1: reservations 3,500 + 1,001 IOPS > 90% of 5,000 (1,000 IOPS left to reserve)"
    )
    assert refusal(reserved=4500, asked=1000) == (
        "controller ctl1: reservations 4,500 + 1,000 IOPS > 90% of 5,000 (0 IOPS left to reserve)"
    )
    assert refusal(reserved=0, asked=5000, headroom=0.25) == (
        "controller ctl1: reservations 0 + 5,000 IOPS > 75% of 5,000 (3,750 IOPS left to reserve)"
    )


def test_already_over_capacity_leaves_nothing():
    # a controller whose capacity shrank (recalibrated) below what is reserved admits nothing more
    assert "(0 IOPS left to reserve)" in refusal(reserved=9000, asked=1)


def caps(**qos):
    return ServiceCapabilities.model_validate({"qos": qos})


def candidate(services, *, reserved_iops=0, reserved_bps=0, headroom=0.1, name="ctl1"):
    return ContainerCandidate(
        controller=NodeView(name=name, kind=NodeKind.CONTROLLER, services=services),
        container=ContainerAdvert(name="pool", capacity_bytes=1 << 30),
        free_bytes=1 << 30,
        reserved_iops=reserved_iops,
        reserved_bytes_per_second=reserved_bps,
        qos_headroom=headroom,
    )


RESERVE = PolicyServices.model_validate({"qos": {"reservation_iops": 1000, "reservation_bytes_per_second": 100 << 20}})
FULL = caps(reservation=True, max_iops=5000, max_bytes_per_second=1000 << 20)


def test_each_unit_is_checked_on_its_own():
    assert qos_headroom_unmet(candidate(FULL, reserved_iops=3500, reserved_bps=800 << 20), RESERVE) == []
    [iops] = qos_headroom_unmet(candidate(FULL, reserved_iops=4000), RESERVE)
    assert iops.service == "qos.reservation_iops" and iops.node == "ctl1"
    [bps] = qos_headroom_unmet(candidate(FULL, reserved_bps=850 << 20), RESERVE)
    assert bps.service == "qos.reservation_bytes_per_second"
    assert bps.reason == (
        "controller ctl1: reservations 891,289,600 + 104,857,600 B/s > 90% of 1,048,576,000 "
        "(52,428,800 B/s left to reserve)"
    )


def test_capacity_in_one_unit_only_admits_only_that_unit():
    iops_only = candidate(caps(reservation=True, max_iops=5000))
    [u] = qos_headroom_unmet(iops_only, RESERVE)
    assert u.service == "qos.reservation_bytes_per_second" and "advertises no B/s capacity" in u.reason
    assert qos_headroom_unmet(iops_only, PolicyServices.model_validate({"qos": {"reservation_iops": 10}})) == []


def test_no_reservation_asked_or_no_reservation_offered():
    assert qos_headroom_unmet(candidate(FULL, reserved_iops=9999), PolicyServices.model_validate({"qos": {"limit_iops": 5}})) == []
    assert qos_headroom_unmet(candidate(FULL), None) == []
    # a controller that cannot reserve at all is named once, by the policy check
    assert qos_headroom_unmet(candidate(caps()), RESERVE) == []


def test_placement_refuses_the_full_controller_and_takes_the_other():
    decision = place(
        request=PlacementRequest(size_bytes=1, services=RESERVE),
        containers=[candidate(FULL, reserved_iops=4000, name="full"), candidate(FULL, name="free")],
        hosts=[],
    )
    assert decision.choice.controller == "free"
    [full] = [r for r in decision.rejected if r.candidate == "full/pool"]
    assert full.reasons == ["controller full: reservations 4,000 + 1,000 IOPS > 90% of 5,000 (500 IOPS left to reserve)"]


def test_a_live_change_is_checked_against_the_other_applications_reservations():
    host = HostCandidate(NodeView(name="h", kind=NodeKind.HOST))
    site = candidate(FULL, reserved_iops=3000)
    more = PolicyServices.model_validate({"qos": {"reservation_iops": 1600}})
    [u] = check_in_place(services=more, sites=[site], host=host)
    assert u.reason == "controller ctl1: reservations 3,000 + 1,600 IOPS > 90% of 5,000 (1,500 IOPS left to reserve)"
    assert check_in_place(services=PolicyServices.model_validate({"qos": {"reservation_iops": 1500}}), sites=[site], host=host) == []
