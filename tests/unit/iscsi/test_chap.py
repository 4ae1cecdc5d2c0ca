"""CHAP: golden vectors and both roles of the exchange."""

from __future__ import annotations

import pytest

from difs.iscsi.chap import ChapRequester, ChapResponder, chap_response
from difs.iscsi.errors import AuthenticationFailure
from difs.iscsi.text import encode_binary


def test_golden_vectors():
    # H(id || secret || challenge) with id=0x61 'a', secret b"b", challenge b"c" is H(b"abc"),
    # the classic RFC 1321 / FIPS 180 / FIPS 202 test vector.
    assert chap_response(5, 0x61, b"b", b"c").hex() == "900150983cd24fb0d6963f7d28e17f72"
    assert chap_response(6, 0x61, "b", b"c").hex() == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert chap_response(7, 0x61, b"b", b"c").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert chap_response(8, 0x61, b"b", b"c").hex() == (
        "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532")


def counter_bytes():
    state = [0]

    def random_bytes(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] + i) & 0xFF for i in range(n))
    return random_bytes


def make_pair(*, mutual=True, algorithms=(5,)):
    issued: set[bytes] = set()
    responder = ChapResponder(user="u", secret="initiator-secret", mutual_user="t",
                              mutual_secret="target-secret", issued=issued,
                              random_bytes=counter_bytes())
    requester = ChapRequester(user="u", secret="initiator-secret",
                              mutual_user="t" if mutual else None,
                              mutual_secret="target-secret" if mutual else None,
                              algorithms=algorithms, random_bytes=lambda n: b"\x99" * n)
    return responder, requester, issued


@pytest.mark.parametrize("algorithms,chosen", [((5,), 5), ((7, 5), 7), ((9, 8), 8)])
def test_mutual_exchange(algorithms, chosen):
    responder, requester, issued = make_pair(algorithms=algorithms)
    challenge = dict(responder.challenge_keys(",".join(map(str, algorithms))))
    assert int(challenge["CHAP_A"]) == chosen and issued
    answer = dict(requester.respond(challenge))
    back = dict(responder.verify(answer))
    assert responder.mutual and responder.done and not issued
    requester.verify(back)


def test_one_way_exchange_md5():
    responder, requester, _ = make_pair(mutual=False)
    challenge = dict(responder.challenge_keys("5"))
    assert len(bytes.fromhex(challenge["CHAP_C"][2:])) == 16
    assert responder.verify(dict(requester.respond(challenge))) == []
    assert not responder.mutual


def test_wrong_secret_and_wrong_user():
    responder, _, _ = make_pair()
    challenge = dict(responder.challenge_keys("5"))
    bad = ChapRequester(user="u", secret="wrong", algorithms=(5,))
    with pytest.raises(AuthenticationFailure):
        responder.verify(dict(bad.respond(challenge)))
    responder, _, _ = make_pair()
    challenge = dict(responder.challenge_keys("5"))
    other = ChapRequester(user="someone", secret="initiator-secret", algorithms=(5,))
    with pytest.raises(AuthenticationFailure):
        responder.verify(dict(other.respond(challenge)))


def test_reflected_challenge_refused():
    responder, requester, issued = make_pair()
    challenge = dict(responder.challenge_keys("5"))
    answer = dict(requester.respond(challenge))
    answer["CHAP_C"] = challenge["CHAP_C"]  # send the target's own challenge back
    with pytest.raises(AuthenticationFailure, match="reflected"):
        responder.verify(answer)


def test_challenge_outstanding_on_another_connection_refused():
    responder, requester, issued = make_pair()
    challenge = dict(responder.challenge_keys("5"))
    other = ChapResponder(user="x", secret="y" * 12, issued=issued, random_bytes=counter_bytes())
    other_challenge = dict(other.challenge_keys("5"))
    answer = dict(requester.respond(challenge))
    answer["CHAP_C"] = other_challenge["CHAP_C"]
    with pytest.raises(AuthenticationFailure):
        responder.verify(answer)


def test_no_acceptable_algorithm_and_malformed():
    responder, _, _ = make_pair()
    with pytest.raises(AuthenticationFailure):
        responder.challenge_keys("3,4")
    responder, _, _ = make_pair()
    responder.challenge_keys("5")
    with pytest.raises(AuthenticationFailure):
        responder.verify({"CHAP_N": "u", "CHAP_R": "nothex"})
    with pytest.raises(AuthenticationFailure):
        responder.verify({"CHAP_N": "u"})


def test_same_secret_both_directions_refused():
    issued: set[bytes] = set()
    responder = ChapResponder(user="u", secret="same-secret-1", mutual_user="t",
                              mutual_secret="same-secret-1", issued=issued)
    challenge = dict(responder.challenge_keys("5"))
    requester = ChapRequester(user="u", secret="same-secret-1", mutual_user="t",
                              mutual_secret="same-secret-1", algorithms=(5,))
    with pytest.raises(AuthenticationFailure):
        responder.verify(dict(requester.respond(challenge)))


def test_requester_refuses_bad_mutual_answer():
    responder, requester, _ = make_pair()
    challenge = dict(responder.challenge_keys("5"))
    requester.respond(challenge)
    with pytest.raises(AuthenticationFailure):
        requester.verify({"CHAP_N": "t", "CHAP_R": encode_binary(b"\x00" * 16)})
