"""The initiator core reports the CRC32C mismatches it finds (``DigestFailure``) before it ends
the connection, so the host can count a path's digest errors."""

from __future__ import annotations

from difs.iscsi.events import ConnectionClosed, DigestFailure

from .helpers import ConnectionPair, initiator_config, read10

DIGESTS = dict(data_digest=("CRC32C",), header_digest=("CRC32C",))


def logged_in() -> ConnectionPair:
    pair = ConnectionPair(initiator=initiator_config(**DIGESTS))
    pair.pump()
    return pair


def _answer_of_read(pair: ConnectionPair) -> tuple[int, bytearray]:
    itt = pair.initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    pair.target.receive_data(b"".join(bytes(c) for c in pair.initiator.data_to_send()))
    while (event := pair.target.next_event()) is not None:
        pair.target.complete_command(event, status=0, data_in=b"r" * 512)
    return itt, bytearray(b"".join(bytes(c) for c in pair.target.data_to_send()))


def test_a_data_in_failing_its_data_digest_is_reported_with_its_command() -> None:
    pair = logged_in()
    itt, wire = _answer_of_read(pair)
    wire[48 + 4 + 100] ^= 0x01  # in the data segment, after the header and its digest
    pair.initiator.receive_data(bytes(wire))
    events = []
    while (event := pair.initiator.next_event()) is not None:
        events.append(event)
    failures = [e for e in events if isinstance(e, DigestFailure)]
    assert failures == [DigestFailure("data", itt)]
    assert isinstance(events[-1], ConnectionClosed)


def test_a_header_failing_its_digest_is_reported() -> None:
    pair = logged_in()
    _itt, wire = _answer_of_read(pair)
    wire[20] ^= 0x01  # in the BHS
    pair.initiator.receive_data(bytes(wire))
    events = []
    while (event := pair.initiator.next_event()) is not None:
        events.append(event)
    assert [e.kind for e in events if isinstance(e, DigestFailure)] == ["header"]
    assert isinstance(events[-1], ConnectionClosed)
