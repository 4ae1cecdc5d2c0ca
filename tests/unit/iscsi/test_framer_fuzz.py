"""Fuzz invariant for the framer and the PDU parser (h11's afl harness, in hypothesis).

Arbitrary bytes, and the golden PDUs of tests/unit/vectors/iscsi with bytes flipped, cut and
inserted, either parse or raise the core's remote-error type (``RemoteProtocolError``) —
nothing else: no ``struct.error``, ``IndexError``, ``ValueError`` or ``UnicodeDecodeError``. What
parses is accounted for byte by byte and decodes to a PDU whose encoding decodes to itself.
The initiator core, logged in with commands, a ping, a text request and a TMF outstanding, is
fed the target's golden PDUs retargeted at those tasks and mutated: nothing escapes it either.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from fuzzing import edits, mutate
from hypothesis import strategies as st
from pairs.helpers import ConnectionPair, read10, write10

from difs.iscsi.config import InitiatorConfig
from difs.iscsi.constants import BHS_LENGTH, RESERVED_TAG
from difs.iscsi.errors import (
    ConnectionFault,
    DataDigestError,
    FramingError,
    HeaderDigestError,
    PduRejected,
    RemoteProtocolError,
)
from difs.iscsi.events import ConnectionClosed
from difs.iscsi.framer import PduFramer
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_events import INITIATOR_EVENTS, LoginFailed
from difs.iscsi.pdu import LoginResponse, encode_pdu, pull_pdu
from difs.iscsi.state import State

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "iscsi"
MANIFEST: dict[str, dict] = json.loads((VECTORS / "manifest.json").read_text())
SEEDS = {name: (VECTORS / f"{name}.bin").read_bytes() for name in sorted(MANIFEST)}
TARGET_SEEDS = sorted(n for n, m in MANIFEST.items() if m["direction"] == "t2c")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])





def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def frame_and_parse(data: bytes, split: int, *, limit: int, header_digest: bool,
                    data_digest: bool) -> None:
    """Feed ``data`` in ``split``-byte chunks; every PDU parses or raises a protocol error."""
    framer = PduFramer(limit, header_digest=header_digest, data_digest=data_digest)
    consumed = 0
    for chunk in chunks(data, split):
        framer.feed(chunk)
        while True:
            try:
                pdu = framer.next_pdu()
            except DataDigestError as exc:  # the stream stays in sync: the PDU is attached
                pdu = exc.pdu
                assert pdu is not None
            except (FramingError, HeaderDigestError):
                return  # the connection ends here
            if pdu is None:
                break
            consumed += _size(pdu, header_digest, data_digest)
            assert bytes(pdu.header)[0] & 0x3F == pdu.opcode and len(pdu.header) == BHS_LENGTH
            assert len(pdu.data) <= limit
            try:
                typed = pull_pdu(pdu.header, pdu.ahs, pdu.data)
            except PduRejected:
                continue
            # what decodes re-encodes to something that decodes to the same PDU
            again = PduFramer((1 << 24) - 1)
            again.feed(encode_pdu(typed))
            framed = again.next_pdu()
            assert framed is not None and again.buffered == 0
            assert pull_pdu(framed.header, framed.ahs, framed.data) == typed
    assert consumed + framer.buffered == len(data)


def _size(pdu, header_digest: bool, data_digest: bool) -> int:
    data = len(pdu.data)
    return (BHS_LENGTH + len(pdu.ahs) + ((data + 3) & ~3) + (4 if header_digest else 0)
            + (4 if data and data_digest else 0))


limits = st.sampled_from([0, 512, 8192, 262144, (1 << 24) - 1])


@FUZZ
@given(data=st.binary(max_size=600), split=st.integers(1, 200), limit=limits,
       header_digest=st.booleans(), data_digest=st.booleans())
def test_arbitrary_bytes_parse_or_raise_a_protocol_error(data, split, limit, header_digest,
                                                         data_digest):
    frame_and_parse(data, split, limit=limit, header_digest=header_digest,
                    data_digest=data_digest)


@FUZZ
@given(names=st.lists(st.sampled_from(sorted(SEEDS)), min_size=1, max_size=4), changes=edits,
       split=st.integers(1, 300), noise=st.binary(max_size=60))
def test_mutated_golden_pdus_parse_or_raise_a_protocol_error(names, changes, split, noise):
    header_digest = all(MANIFEST[n]["header_digest"] for n in names)
    stream = b"".join(SEEDS[n] for n in names if MANIFEST[n]["header_digest"] == header_digest)
    frame_and_parse(mutate(stream, changes) + noise, split, limit=262144,
                    header_digest=header_digest, data_digest=False)


@FUZZ
@given(header=st.binary(min_size=BHS_LENGTH, max_size=BHS_LENGTH),
       ahs=st.binary(max_size=64), data=st.binary(max_size=64))
def test_pull_pdu_on_any_header_returns_a_pdu_or_a_rejection(header, ahs, data):
    try:
        typed = pull_pdu(header, ahs, data)
    except PduRejected as exc:
        assert exc.reject_reason in (0x05, 0x09)  # unknown opcode / invalid AHS
        return
    assert typed.opcode == header[0] & 0x3F and typed.data == data


# ---------------------------------------------------------------------------------------------
# The initiator core, fed the target's golden PDUs
# ---------------------------------------------------------------------------------------------

INITIATOR_EVENTS = INITIATOR_EVENTS


FFP_SEEDS = [n for n in TARGET_SEEDS if MANIFEST[n]["opcode"] != 0x23
             and not MANIFEST[n]["header_digest"]]
LOGIN_SEEDS = [n for n in TARGET_SEEDS if MANIFEST[n]["opcode"] == 0x23]
#: which outstanding task a target PDU of each opcode answers (index into busy_initiator's ITTs)
ANSWERS = {0x25: (0,), 0x21: (0, 1), 0x31: (1,), 0x20: (2,), 0x24: (3,), 0x22: (4,)}


def busy_initiator():
    """A logged-in initiator with a read, a write waiting for R2T, a ping, a text request and a
    LUN reset outstanding (none of them has reached the target). Returns it and those ITTs."""
    pair = ConnectionPair(auto_complete=False)
    pair.pump()
    initiator = pair.initiator
    assert initiator.state is State.FULL_FEATURE
    itts = [initiator.submit_command(0, read10(0, 8), expected_in_length=4096),
            initiator.submit_command(0, write10(0, 1024), data_out=bytes(1024 * 512)),
            initiator.ping(b"ping", now=1000.0),
            initiator.send_targets(),
            initiator.task_management(5)]
    initiator.data_to_send()
    return initiator, itts


def retarget(raw: bytes, itt: int) -> bytes:
    """The PDU with its ITT replaced (bytes 16..19)."""
    return raw[:16] + itt.to_bytes(4, "big") + raw[20:]


def drain(conn) -> int:
    """Take the events (all of the documented kinds) and output; return the closes seen."""
    closes = 0
    while (event := conn.next_event()) is not None:
        assert isinstance(event, INITIATOR_EVENTS), event
        closes += isinstance(event, ConnectionClosed)
    conn.data_to_send()
    return closes


@FUZZ
@given(picks=st.lists(st.tuples(st.sampled_from(FFP_SEEDS), st.integers(0, 3)), min_size=1,
                      max_size=6),
       changes=edits, split=st.integers(1, 300), timer=st.booleans())
def test_initiator_core_takes_mutated_target_pdus(picks, changes, split, timer):
    initiator, itts = busy_initiator()
    stream = b""
    for name, which in picks:  # mostly aimed at the task the PDU answers, sometimes not
        mine = ANSWERS.get(MANIFEST[name]["opcode"], ())
        choices = [itts[i] for i in mine] + [RESERVED_TAG, itts[which]]
        stream += retarget(SEEDS[name], choices[which % len(choices)])
    closes = 0
    for chunk in chunks(mutate(stream, changes), split):
        initiator.receive_data(chunk)
        closes += drain(initiator)
    assert closes <= 1 and ((closes == 1) == initiator.closed
                            or initiator.state is State.LOGGED_OUT)
    if timer:
        initiator.handle_timer(1e9)
        drain(initiator)
    initiator.close()
    assert initiator.closed


@FUZZ
@given(picks=st.lists(st.sampled_from(LOGIN_SEEDS), min_size=1, max_size=4), changes=edits,
       split=st.integers(1, 300))
def test_initiator_login_takes_mutated_login_responses(picks, changes, split):
    pair = ConnectionPair()
    initiator = pair.initiator
    request = b"".join(bytes(c) for c in initiator.data_to_send())
    isid_tsih, itt = request[8:16], request[16:20]
    stream = b"".join(SEEDS[n][:8] + isid_tsih[:6] + SEEDS[n][14:16] + itt + SEEDS[n][20:]
                      for n in picks)
    closes = 0
    for chunk in chunks(mutate(stream, changes), split):
        initiator.receive_data(chunk)
        closes += drain(initiator)
    assert closes <= 1
    initiator.handle_timer(1e9)
    drain(initiator)
    assert initiator.closed or initiator.state is State.FULL_FEATURE


@pytest.mark.parametrize("value,valid", [(b"", False), (b"x", False), (b"65536", False), (b"0x1", True), (b"7", True)])
def test_portal_group_tag_from_the_target_never_escapes(value, valid):
    conn = InitiatorConnection(config=InitiatorConfig(initiator_name="iqn.2024-01.org.difs:i",
                                                      isid=0x400001370000,
                                                      target_name="iqn.2024-01.org.difs:t"),
                               now=0.0)
    request = b"".join(bytes(c) for c in conn.data_to_send())
    stage = (request[1] >> 2) & 3
    conn.receive_data(encode_pdu(LoginResponse(
        isid=0x400001370000, itt=int.from_bytes(request[16:20], "big"), csg=stage, nsg=3,
        transit=True, data=b"TargetPortalGroupTag=" + value + b"\x00")))
    events = []
    while (event := conn.next_event()) is not None:
        assert isinstance(event, INITIATOR_EVENTS)
        events.append(event)
    if not valid:
        assert isinstance(events[0], LoginFailed) and conn.closed
    else:  # the tag is taken; whatever else the login says is not about it
        assert not any("TargetPortalGroupTag" in repr(e) for e in events), events


def test_protocol_error_tree_is_what_the_fuzz_allows():
    """FramingError/HeaderDigestError end the connection; DataDigestError is a rejection."""
    assert issubclass(FramingError, ConnectionFault) and issubclass(HeaderDigestError,
                                                                   ConnectionFault)
    assert issubclass(DataDigestError, PduRejected)
    assert issubclass(ConnectionFault, RemoteProtocolError)
