"""A policy change planned as a pure function: in place, a migration, or refused with every reason."""

from __future__ import annotations

from difs.manager.placement import ContainerCandidate, HostCandidate
from difs.manager.services.migrations import VolumeNow, needs_format, plan_change
from difs.policy import (
    ContainerAdvert,
    NegotiatedServicesModel,
    NodeKind,
    NodeView,
    PathAdvert,
    PolicyServices,
    ServiceCapabilities,
)

ALL = ServiceCapabilities.model_validate(
    {"integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
     "qos": {"limit": True}, "isolation": {"exclusive": True}})
DIGESTS_ONLY = ServiceCapabilities.model_validate({"integrity": {"header_digest": True, "data_digest": True}})

PI1 = PolicyServices.model_validate({"integrity": {"protection_information": 1}})
DIGEST = PolicyServices.model_validate({"integrity": {"data_digest": True}})
LIMIT = PolicyServices.model_validate({"qos": {"limit_iops": 100}})


def site(ctl: str, caps=ALL, pi=(1, 3), free=1 << 30) -> ContainerCandidate:
    return ContainerCandidate(controller=NodeView(name=ctl, kind=NodeKind.CONTROLLER, services=caps),
                              container=ContainerAdvert(name="pool", capacity_bytes=1 << 30, pi_types=list(pi)),
                              free_bytes=free)


HOST = HostCandidate(host=NodeView(name="h1", kind=NodeKind.HOST, services=ALL))


def vol(s: ContainerCandidate, pi: int = 0) -> VolumeNow:
    return VolumeNow(name="app-0", size_bytes=1 << 20, pi_type=pi, site=s)


def path(ctl: str, channel: int, **negotiated) -> PathAdvert:
    return PathAdvert(controller=ctl, channel=channel, portal="127.0.0.1:3260",
                      negotiated=NegotiatedServicesModel.model_validate(negotiated))


def test_only_added_pi_or_another_type_needs_a_new_format():
    assert needs_format(0, 1) and needs_format(1, 3)
    assert not needs_format(1, 0) and not needs_format(3, 3) and not needs_format(0, 0)


def test_a_change_the_volume_and_paths_can_give_is_in_place():
    s = site("ctl1")
    plan = plan_change(services=DIGEST, volumes=[vol(s)], host=HOST,
                       host_paths=[path("ctl1", 1), path("ctl1", 0, header_digest=True, data_digest=True)])
    assert plan.in_place and plan.refused == [] and plan.move == []


def test_no_established_path_satisfying_the_policy_is_refused_naming_each_path():
    s = site("ctl1")
    plan = plan_change(services=DIGEST, volumes=[vol(s)], host=HOST, host_paths=[path("ctl1", 1), path("ctl2", 0, data_digest=True)])
    [why] = plan.refused
    assert "host h1 has no established path to controller ctl1" in why
    assert "channel 1 did not negotiate CRC32C data digests" in why


def test_pi_added_to_a_plain_volume_is_a_migration_placed_where_the_host_reaches():
    here = site("ctl1")
    plan = plan_change(services=PI1, volumes=[vol(here)], host=HOST, containers=[here], migrate=True)
    assert plan.refused == []
    assert plan.move == ["volume app-0 is formatted without T10 PI, the policy needs it with T10 PI type 1"]
    assert (plan.target.controller, plan.target.container, plan.target.host) == ("ctl1", "pool", "h1")


def test_a_controller_that_cannot_give_the_policy_moves_the_data_to_one_that_can():
    here, there = site("ctl1", caps=DIGESTS_ONLY, pi=()), site("ctl2")
    plan = plan_change(services=LIMIT, volumes=[vol(here)], host=HOST, containers=[here, there], migrate=True)
    assert plan.refused == [] and plan.target.controller == "ctl2"
    assert any("ctl1/pool cannot give the policy" in m for m in plan.move)


def test_a_migration_is_refused_with_every_reason():
    here = site("ctl1")
    # not asked for, no host to copy, two volumes: all three said at once
    plan = plan_change(services=PI1, volumes=[vol(here), vol(here)], host=None, containers=[here])
    assert len(plan.refused) == 3
    assert "ask for a migration" in plan.refused[0]
    assert "bound to no host" in plan.refused[1]
    assert "2 volumes" in plan.refused[2]
    # asked for, but not bound: why it would move, then why it cannot
    plan = plan_change(services=PI1, volumes=[vol(here)], host=None, containers=[here], migrate=True)
    assert plan.refused[0].startswith("the data must move to a new volume (volume app-0")
    assert "bound to no host" in plan.refused[1]
    # asked, but no container has room or PI for the new volume
    full = site("ctl1", pi=(), free=0)
    plan = plan_change(services=PI1, volumes=[vol(full)], host=HOST, containers=[full], migrate=True)
    move, why = plan.refused
    assert move.startswith("the data must move to a new volume (volume app-0 is formatted without T10 PI, "
                           "the policy needs it with T10 PI type 1; ctl1/pool cannot give the policy: container pool")
    assert why.startswith("no placement for the new volume")
    assert "cannot store T10 PI type 1" in why and "bytes free" in why
