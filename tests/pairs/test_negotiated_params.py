"""Both roles settle one NegotiatedParams from the same login, and everything takes it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.iscsi.config import ChapCredentials, TargetConfig
from difs.iscsi.events import LoginComplete, LoginRejected
from difs.iscsi.initiator_events import LoginFailed, LoginSucceeded
from difs.policy.fast import NegotiatedServices

from .helpers import TARGET, ConnectionPair, initiator_config, portal_config

CHAP = ChapCredentials("host1", "initiator-secret-123")
MUTUAL = ChapCredentials("disk1", "target-secret-4567")


def settled(pair: ConnectionPair):
    """(target's params, initiator's params) after a successful login."""
    [complete] = pair.events_of("target", LoginComplete)
    [succeeded] = pair.events_of("initiator", LoginSucceeded)
    assert complete.params is complete.session.params
    return complete.params, succeeded.session.params


CASES = {
    "plain": (dict(), dict()),
    "digests": (dict(), dict(header_digest=("CRC32C",), data_digest=("CRC32C",))),
    "header only": (dict(require_header_digest=True), dict(header_digest=("None", "CRC32C"))),
    "chap": (dict(chap=CHAP), dict(chap=CHAP)),
    "chap offered, not asked": (dict(), dict(chap=CHAP)),
    "mutual chap and digests": (
        dict(chap=CHAP, mutual_chap=MUTUAL, require_data_digest=True),
        dict(chap=CHAP, mutual_chap=MUTUAL, chap_algorithms=(7,), data_digest=("CRC32C",))),
    "discovery": (None, dict(target_name=None)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunk", [None, 3])
def test_both_roles_settle_equal_params(case, chunk):
    target_kw, initiator_kw = CASES[case]
    targets = None if target_kw is None else {TARGET: TargetConfig(name=TARGET, **target_kw)}
    pair = ConnectionPair(portal=portal_config(targets=targets),
                          initiator=initiator_config(**initiator_kw), chunk=chunk)
    pair.pump()
    target, initiator = settled(pair)
    assert target == initiator
    assert target.session_type == ("Discovery" if target_kw is None else "Normal")
    # the same services, whichever process derives them
    assert NegotiatedServices.from_login(target) == NegotiatedServices.from_login(initiator)


def test_framers_and_send_limits_follow_the_params():
    pair = ConnectionPair(portal=portal_config(max_recv_data_segment_length=65536),
                          initiator=initiator_config(max_recv_data_segment_length=4096,
                                                     header_digest=("CRC32C",)))
    pair.pump()
    params, _ = settled(pair)
    assert params.header_digest and not params.data_digest
    assert pair.target._framer.max_data_segment_length == 65536 == pair.initiator.send_limit
    assert pair.initiator._framer.max_data_segment_length == 4096 == pair.target.send_limit
    for side in (pair.target, pair.initiator):
        assert side._framer.header_digest and side.header_digest
        assert not side._framer.data_digest and not side.data_digest


@settings(max_examples=40, deadline=None)
@given(target_burst=st.integers(512, 1 << 20), initiator_burst=st.integers(512, 1 << 20),
       first=st.integers(512, 1 << 20), target_r2t=st.booleans(), initiator_r2t=st.booleans(),
       target_immediate=st.booleans(), initiator_immediate=st.booleans(),
       outstanding=st.integers(1, 16), digests=st.sampled_from(
           [("None",), ("CRC32C",), ("None", "CRC32C"), ("CRC32C", "None")]))
def test_any_configuration_settles_equal_params(target_burst, initiator_burst, first,
                                                 target_r2t, initiator_r2t, target_immediate,
                                                 initiator_immediate, outstanding, digests):
    pair = ConnectionPair(
        portal=portal_config(max_burst_length=target_burst,
                             first_burst_length=min(first, target_burst),
                             initial_r2t=target_r2t, immediate_data=target_immediate),
        initiator=initiator_config(max_burst_length=initiator_burst,
                                   first_burst_length=min(first, initiator_burst),
                                   initial_r2t=initiator_r2t, immediate_data=initiator_immediate,
                                   max_outstanding_r2t=outstanding, header_digest=digests,
                                   data_digest=digests[::-1]))
    pair.pump()
    target, initiator = settled(pair)
    assert target == initiator
    assert target.max_burst_length == min(target_burst, initiator_burst)
    assert target.initial_r2t == (target_r2t or initiator_r2t)
    assert target.immediate_data == (target_immediate and initiator_immediate)
    assert target.header_digest == (digests[0] == "CRC32C")


REFUSED = {  # target config, initiator config, who refuses, the reason it gives
    "header digest required": (dict(require_header_digest=True), dict(), "target",
                               "requires HeaderDigest=CRC32C"),
    "data digest required": (dict(require_data_digest=True), dict(), "target",
                             "requires DataDigest=CRC32C"),
    "chap required": (dict(chap=CHAP), dict(), "target", "target requires CHAP"),
    "mutual not configured": (dict(chap=CHAP), dict(chap=CHAP, mutual_chap=MUTUAL), "target",
                              "mutual CHAP requested but not configured"),
    "mutual secret wrong": (dict(chap=CHAP, mutual_chap=MUTUAL),
                            dict(chap=CHAP, mutual_chap=ChapCredentials("disk1", "other-secret")),
                            "initiator", "mutual"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_invalid_combinations_are_refused_without_params(case):
    target_kw, initiator_kw, refuser, reason = REFUSED[case]
    pair = ConnectionPair(portal=portal_config(targets={TARGET: TargetConfig(name=TARGET,
                                                                             **target_kw)}),
                          initiator=initiator_config(**initiator_kw))
    pair.pump()
    assert not pair.events_of("target", LoginComplete)
    assert not pair.events_of("initiator", LoginSucceeded)
    [failed] = pair.events_of("initiator", LoginFailed)
    if refuser == "target":
        [rejected] = pair.events_of("target", LoginRejected)
        assert reason in rejected.reason
        assert (failed.status_class, failed.status_detail) == (
            rejected.status_class, rejected.status_detail)
    else:
        assert reason in failed.reason
