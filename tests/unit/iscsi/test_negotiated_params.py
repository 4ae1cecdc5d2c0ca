"""NegotiatedParams: one typed field per settled key, built once from a Negotiator (either role)."""

from __future__ import annotations

import dataclasses

import pytest

from difs.iscsi.config import InitiatorConfig, PortalConfig
from difs.iscsi.framer import PduFramer
from difs.iscsi.negotiation import KEYS, OPERATIONAL_KEYS, Negotiator, Rule, Use, proposals
from difs.iscsi.params import NegotiatedParams

IDENTITY = dict(initiator_name="iqn.2024-01.org.difs:host1",
                target_name="iqn.2024-01.org.difs:disk1", session_type="Normal")


def _settled_keys() -> dict[str, str]:
    return {f.metadata["key"]: f.name for f in dataclasses.fields(NegotiatedParams)
            if "key" in f.metadata}


def test_every_negotiated_key_has_exactly_one_field_with_the_rfc_default():
    negotiated = {name for name, key in KEYS.items()
                  if key.rule is not Rule.DECLARATIVE and key.use is not Use.SECURITY}
    fields = _settled_keys()
    assert set(fields) == negotiated
    assert len(set(fields.values())) == len(fields)
    params = NegotiatedParams(**IDENTITY)
    assert params.key_values() == {name: KEYS[name].default for name in negotiated}
    assert params.header_digest is False and params.data_digest is False
    assert params.initiator_max_recv_data_segment_length == 8192
    assert params.target_max_recv_data_segment_length == 8192


def _negotiate(initiator_local: dict, target_local: dict) -> tuple[Negotiator, Negotiator]:
    """Initiator offers, target answers, initiator accepts; both sides declare their limit."""
    initiator = Negotiator(role="initiator", local=initiator_local)
    target = Negotiator(role="target", local=target_local)
    answers = target.respond(initiator.offer(OPERATIONAL_KEYS))
    answers.append(("MaxRecvDataSegmentLength", str(target_local["MaxRecvDataSegmentLength"])))
    assert initiator.respond(initiator.accept(answers)) == []
    initiator.finish()
    target.finish()
    return initiator, target


def test_both_roles_settle_the_same_value():
    portal = PortalConfig(addresses=["127.0.0.1:3260"], max_burst_length=65536,
                          first_burst_length=16384, max_recv_data_segment_length=131072)
    config = InitiatorConfig(initiator_name=IDENTITY["initiator_name"], isid=1,
                             target_name=IDENTITY["target_name"], header_digest=("CRC32C",),
                             data_digest=("None", "CRC32C"), max_recv_data_segment_length=4096,
                             initial_r2t=True)
    initiator, target = _negotiate(
        proposals(config, header_digest=config.header_digest, data_digest=config.data_digest),
        proposals(portal, header_digest=("CRC32C", "None"), data_digest=("CRC32C", "None")))
    mine = NegotiatedParams.from_login(initiator, auth_method="None", **IDENTITY)
    theirs = NegotiatedParams.from_login(target, auth_method="None", **IDENTITY)
    assert mine == theirs
    assert (mine.header_digest, mine.data_digest) == (True, False)
    assert (mine.max_burst_length, mine.first_burst_length) == (65536, 16384)
    assert mine.initial_r2t is True and mine.default_time2retain == 0
    assert mine.initiator_max_recv_data_segment_length == 4096
    assert mine.target_max_recv_data_segment_length == 131072
    assert mine.receive_limit("initiator") == mine.send_limit("target") == 4096
    assert mine.receive_limit("target") == mine.send_limit("initiator") == 131072


def test_key_values_seed_a_further_negotiation_to_the_same_value():
    params = NegotiatedParams(header_digest=True, max_burst_length=65536,
                              first_burst_length=4096, immediate_data=False, **IDENTITY)
    again = Negotiator(role="target", local={})
    again.values.update(params.key_values())
    assert again.values["HeaderDigest"] == "CRC32C" and again.values["DataDigest"] == "None"
    assert NegotiatedParams.from_login(again, auth_method="None", **IDENTITY) == params


class _Chap:
    def __init__(self, *, mutual: bool) -> None:
        self.user, self.algorithm, self.mutual = "host1", 5, mutual


@pytest.mark.parametrize("auth_method, mutual, expected", [
    ("None", False, (None, None, False)),
    ("CHAP", False, ("host1", 5, False)),
    ("CHAP", True, ("host1", 5, True)),
])
def test_chap_outcome_is_kept_only_when_chap_was_used(auth_method, mutual, expected):
    negotiator = Negotiator(role="target", local={})
    params = NegotiatedParams.from_login(negotiator, auth_method=auth_method,
                                         chap=_Chap(mutual=mutual), **IDENTITY)
    assert (params.chap_user, params.chap_algorithm, params.mutual_chap) == expected


@pytest.mark.parametrize("change, problem", [
    (dict(auth_method="None", mutual_chap=True), "mutual CHAP"),
    (dict(auth_method="KRB5"), "AuthMethod"),
    (dict(first_burst_length=65536, max_burst_length=16384), "FirstBurstLength"),
    (dict(target_name=None), "names its target"),
    (dict(session_type="Bogus"), "SessionType"),
])
def test_invalid_combinations_are_refused(change, problem):
    with pytest.raises(ValueError, match=problem):
        NegotiatedParams(**{**IDENTITY, **change})


def test_discovery_needs_no_target_and_the_value_is_frozen():
    params = NegotiatedParams(initiator_name="i", target_name=None, session_type="Discovery")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.header_digest = True  # type: ignore[misc]


def test_proposals_are_the_same_keys_for_both_roles():
    portal = proposals(PortalConfig(addresses=["a:1"]), header_digest=("None",),
                       data_digest=("None",))
    initiator = proposals(InitiatorConfig(initiator_name="i", isid=1), header_digest=("None",),
                          data_digest=("None",))
    assert set(portal) == set(initiator) == set(OPERATIONAL_KEYS)
    assert initiator["DefaultTime2Wait"] == 2 and initiator["DefaultTime2Retain"] == 0


def test_framer_takes_the_digests_and_its_own_receive_limit():
    params = NegotiatedParams(header_digest=True, data_digest=True,
                              initiator_max_recv_data_segment_length=4096,
                              target_max_recv_data_segment_length=65536, **IDENTITY)
    framer = PduFramer(8192)
    framer.start_full_feature(params, role="target")
    assert (framer.header_digest, framer.data_digest) == (True, True)
    assert framer.max_data_segment_length == 65536
    framer.start_full_feature(params, role="initiator")
    assert framer.max_data_segment_length == 4096
