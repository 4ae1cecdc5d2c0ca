"""Text key=value codec and the negotiation rule of every key type (RFC 7143 6.2, ch. 13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from difs.iscsi.errors import TextError
from difs.iscsi.negotiation import KEYS, Negotiator, Rule
from difs.iscsi.text import (
    TextAccumulator,
    encode_binary,
    encode_text,
    pull_binary,
    pull_number,
    pull_text,
    split_text,
)

key_names = st.from_regex(r"[A-Za-z][A-Za-z0-9.\-+@_]{0,62}", fullmatch=True)
values = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                        blacklist_categories=("Cs",)), max_size=100)


@given(st.lists(st.tuples(key_names, values), max_size=20))
def test_text_round_trip(pairs):
    assert pull_text(encode_text(pairs)) == pairs


@given(st.lists(st.tuples(key_names, values), max_size=20), st.integers(1, 50))
def test_continued_text_split_anywhere(pairs, size):
    text = encode_text(pairs)
    acc = TextAccumulator()
    pieces = split_text(text, size)
    result = None
    for i, piece in enumerate(pieces):
        result = acc.feed(piece, more=i < len(pieces) - 1)
        if i < len(pieces) - 1:
            assert result is None
    assert result == pairs


def test_text_errors():
    for bad in (b"NoEquals\x00", b"Bad Key=1\x00", b"K=" + b"\xff\xfe" + b"\x00",
                b"K" * 64 + b"=1\x00"):
        with pytest.raises(TextError):
            pull_text(bad)
    acc = TextAccumulator()
    with pytest.raises(TextError):
        for _ in range(20):
            acc.feed(b"A=" + b"x" * 8000 + b"\x00", more=True)


def test_number_encodings():
    assert pull_number("8192") == 8192
    assert pull_number("0x2000") == 8192
    assert pull_number("0bIAA=") == 8192  # base64 of b"\x20\x00"
    for bad in ("", "-1", "12a", "0xZZ", "0b!!", "١٢"):
        with pytest.raises(TextError):
            pull_number(bad)


@given(st.binary(min_size=1, max_size=64), st.booleans())
def test_binary_round_trip(data, b64):
    assert pull_binary(encode_binary(data, use_base64=b64)) == data


def target(**local) -> Negotiator:
    return Negotiator(role="target", local=local)


def test_list_rule_first_of_offerers_list_acceptable_to_responder():
    n = target(HeaderDigest=("CRC32C", "None"), DataDigest=("None",))
    answers = n.respond([("HeaderDigest", "None,CRC32C"), ("DataDigest", "CRC32C")])
    assert answers == [("HeaderDigest", "None"), ("DataDigest", "Reject")]
    assert n.values["HeaderDigest"] == "None" and n.values["DataDigest"] == "None"
    n = target(HeaderDigest=("CRC32C",))
    assert n.respond([("HeaderDigest", "None,CRC32C")]) == [("HeaderDigest", "CRC32C")]


@pytest.mark.parametrize("key,offer,mine,result", [
    ("MaxBurstLength", 262144, 65536, 65536),
    ("FirstBurstLength", 8192, 65536, 8192),
    ("MaxConnections", 4, 1, 1),
    ("MaxOutstandingR2T", 1, 16, 1),
    ("DefaultTime2Retain", 0, 20, 0),
    ("ErrorRecoveryLevel", 2, 0, 0),
])
def test_min_rule(key, offer, mine, result):
    n = target(**{key: mine})
    assert n.respond([(key, str(offer))]) == [(key, str(result))]
    assert KEYS[key].rule is Rule.MIN and n.values[key] == result


def test_max_rule_default_time2wait():
    n = target(DefaultTime2Wait=5)
    assert n.respond([("DefaultTime2Wait", "2")]) == [("DefaultTime2Wait", "5")]
    n = target(DefaultTime2Wait=1)
    assert n.respond([("DefaultTime2Wait", "0x3")]) == [("DefaultTime2Wait", "3")]


@pytest.mark.parametrize("key,rule", [("ImmediateData", "and"), ("InitialR2T", "or"),
                                      ("DataPDUInOrder", "or"), ("DataSequenceInOrder", "or")])
def test_boolean_rules(key, rule):
    for offer in (True, False):
        for mine in (True, False):
            n = target(**{key: mine})
            expected = (offer and mine) if rule == "and" else (offer or mine)
            answer = n.respond([(key, "Yes" if offer else "No")])
            assert answer == [(key, "Yes" if expected else "No")]
    assert target().respond([(key, "Maybe")]) == [(key, "Reject")]


def test_declaratives_are_not_answered_and_kept_per_direction():
    n = target(MaxRecvDataSegmentLength=262144)
    assert n.respond([("MaxRecvDataSegmentLength", "4096"), ("InitiatorAlias", "h1")]) == []
    assert n.peer_declared["MaxRecvDataSegmentLength"] == 4096
    assert n.offer(["MaxRecvDataSegmentLength"]) == [("MaxRecvDataSegmentLength", "262144")]
    # a target-only declarative from the initiator is refused
    assert n.respond([("TargetAlias", "x")]) == [("TargetAlias", "Reject")]


def test_unknown_out_of_range_irrelevant_obsolete():
    n = Negotiator(role="target", local={}, discovery=True)
    answers = n.respond([("X-com.example.Thing", "1"), ("MaxBurstLength", "100"),
                         ("OFMarker", "Yes"), ("IFMarkInt", "1~10")])
    assert answers == [("X-com.example.Thing", "NotUnderstood"), ("MaxBurstLength", "Irrelevant"),
                       ("OFMarker", "No"), ("IFMarkInt", "Reject")]
    n = target()
    assert n.respond([("MaxBurstLength", "100")]) == [("MaxBurstLength", "Reject")]
    assert n.respond([("ErrorRecoveryLevel", "7")]) == [("ErrorRecoveryLevel", "Reject")]


def test_first_burst_not_above_max_burst():
    n = target(MaxBurstLength=1048576, FirstBurstLength=1048576)
    answers = dict(n.respond([("FirstBurstLength", "262144"), ("MaxBurstLength", "65536")]))
    assert answers == {"FirstBurstLength": "65536", "MaxBurstLength": "65536"}
    n.finish()


def test_key_negotiated_twice_is_an_error():
    n = target()
    n.respond([("MaxBurstLength", "65536")])
    with pytest.raises(TextError):
        n.respond([("MaxBurstLength", "65536")])


def test_full_feature_phase_allows_only_all_keys():
    n = target(MaxRecvDataSegmentLength=8192)
    answers = n.respond([("MaxBurstLength", "512"), ("MaxRecvDataSegmentLength", "1024")],
                        full_feature=True)
    assert answers == [("MaxBurstLength", "Reject")]
    assert n.peer_declared["MaxRecvDataSegmentLength"] == 1024


def test_originator_checks_answers():
    n = Negotiator(role="initiator", local={"MaxBurstLength": 65536, "InitialR2T": True,
                                             "ImmediateData": False,
                                             "HeaderDigest": ("CRC32C", "None")})
    offers = n.offer(["MaxBurstLength", "InitialR2T", "ImmediateData", "HeaderDigest"])
    assert offers == [("MaxBurstLength", "65536"), ("InitialR2T", "Yes"),
                      ("ImmediateData", "No"), ("HeaderDigest", "CRC32C,None")]
    assert n.awaiting
    rest = n.accept([("MaxBurstLength", "8192"), ("InitialR2T", "Yes"), ("ImmediateData", "No"),
                     ("HeaderDigest", "CRC32C"), ("TargetAlias", "d")])
    assert rest == [("TargetAlias", "d")] and not n.awaiting
    assert n.values["MaxBurstLength"] == 8192 and n.values["HeaderDigest"] == "CRC32C"
    for bad in ([("MaxBurstLength", "131072")], [("InitialR2T", "No")],
                [("ImmediateData", "Yes")], [("HeaderDigest", "MD5")]):
        n = Negotiator(role="initiator", local={"MaxBurstLength": 65536, "InitialR2T": True,
                                                 "ImmediateData": False,
                                                 "HeaderDigest": ("CRC32C", "None")})
        n.offer(["MaxBurstLength", "InitialR2T", "ImmediateData", "HeaderDigest"])
        with pytest.raises(TextError):
            n.accept(bad)


def test_every_rfc_key_has_a_rule():
    for name in ("HeaderDigest", "DataDigest", "AuthMethod", "MaxConnections", "SendTargets",
                 "TargetName", "InitiatorName", "TargetAlias", "InitiatorAlias", "TargetAddress",
                 "TargetPortalGroupTag", "InitialR2T", "ImmediateData",
                 "MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength",
                 "DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder",
                 "DataSequenceInOrder", "ErrorRecoveryLevel", "SessionType"):
        assert name in KEYS
