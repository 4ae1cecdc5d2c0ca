"""Property tests: whatever bytes arrive, the core answers with events and error replies only.

The invariant (h11's fuzz rule): feeding the core never raises; it produces only the event
types it documents; a Request is answerable; after ProtocolViolation nothing more is parsed.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbd_testlib import (
    client_flags,
    go_payload,
    meta_payload,
    negotiated,
    new_connection,
    option,
    output,
    parse_option_replies,
    parse_tx_replies,
    request,
)

from difs.nbd import constants as c
from difs.nbd.backend import MemoryBackend
from difs.nbd.connection import CLOSED
from difs.nbd.events import (
    ClientDisconnect,
    ConnectionClosed,
    ExportChosen,
    ProtocolViolation,
    Request,
    RequestRejected,
)

ALLOWED = (
    ExportChosen, Request, RequestRejected, ClientDisconnect, ProtocolViolation, ConnectionClosed
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(0, x), len(data)) for x in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def _run(conn, chunks, *, eof: bool):
    """Feed ``chunks``; answer every request at once; return the events."""
    events = []
    for chunk in chunks + ([b""] if eof else []):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not None:
            assert isinstance(event, ALLOWED), event
            events.append(event)
            if isinstance(event, Request):
                if event.command == c.CMD_READ:
                    conn.reply_read(event, bytes(event.length))
                elif event.command == c.CMD_BLOCK_STATUS:
                    conn.reply_block_status(event, [(event.length, 0)])
                else:
                    conn.reply_ok(event)
    for i, event in enumerate(events):
        if isinstance(event, (ProtocolViolation, ClientDisconnect, ConnectionClosed)):
            assert i == len(events) - 1, "nothing may follow a terminal event"
            assert conn.state == CLOSED
    return events


# Option-phase messages that are plausible, so that fuzzing goes beyond the first magic check.
_option_msgs = st.one_of(
    st.builds(option, st.sampled_from(sorted(c.OPTION_NAMES) + [0, 12, 0xFFFFFFFF]),
              st.binary(max_size=40)),
    st.builds(lambda n, i: option(c.OPT_INFO, go_payload(n, tuple(i))),
              st.sampled_from(["vm1", "", "x"]), st.lists(st.integers(0, 5), max_size=4)),
    st.builds(lambda q: option(c.OPT_LIST_META_CONTEXT, meta_payload("vm1", q)),
              st.lists(st.sampled_from(["base:allocation", "base:", "x:y", ""]), max_size=3)),
    st.binary(max_size=24),
)


@FUZZ
@given(
    flags=st.sampled_from([3, 1, 0, 2, 7, 0xFFFFFFFF]),
    msgs=st.lists(_option_msgs, max_size=8),
    tail=st.binary(max_size=64),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    eof=st.booleans(),
)
def test_negotiation_fuzz(flags, msgs, tail, cuts, eof):
    conn = new_connection()
    data = client_flags(flags) + b"".join(msgs) + tail
    _run(conn, _chunks(data, cuts), eof=eof)
    out = output(conn)
    if conn.export is None:
        # every byte the server sent during haggling is a well-formed option reply
        parse_option_replies(out)


_request_msgs = st.builds(
    lambda cmd, flags, handle, off, length, payload: request(
        cmd, off, length, handle=handle, flags=flags,
        data=payload if cmd == c.CMD_WRITE else b"",
    )[: None],
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 99]),
    st.integers(0, 0x1F),
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 512, 4096, 1 << 20, (1 << 20) - 512, 100, 2**64 - 512]),
    st.sampled_from([0, 512, 1024, 4096, 100, 40 << 20, 2**32 - 1]),
    st.binary(min_size=0, max_size=64),
)


@FUZZ
@given(
    structured=st.booleans(),
    msgs=st.lists(st.one_of(_request_msgs, st.binary(max_size=40)), max_size=10),
    cuts=st.lists(st.integers(0, 5000), max_size=6),
    eof=st.booleans(),
)
def test_transmission_fuzz(structured, msgs, cuts, eof):
    conn = negotiated(structured=structured, meta=structured)
    data = b"".join(msgs)
    events = _run(conn, _chunks(data, cuts), eof=eof)
    out = output(conn)
    if structured:
        # structured mode: the reply stream is self-describing, so it must parse completely
        replies = parse_tx_replies(out)
        expected = sorted(e.handle for e in events if isinstance(e, (Request, RequestRejected)))
        got = [r.handle for r in replies]
        if events and isinstance(events[-1], ProtocolViolation) and "exceeds" in events[-1].reason:
            assert replies[-1].error == c.EINVAL  # the oversized write's final error reply
            got = got[:-1]
        assert sorted(got) == expected  # exactly one reply per request, matched by handle
    assert conn.in_flight == 0 and conn.in_flight_bytes == 0


@FUZZ
@given(
    cmd=st.sampled_from([c.CMD_READ, c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES, c.CMD_FLUSH]),
    flags=st.integers(0, 0x1F),
    offset=st.integers(0, 3 << 20),
    length=st.integers(0, 3 << 20),
)
def test_every_well_framed_request_is_accepted_or_answered_with_an_error(
    cmd, flags, offset, length
):
    size = 2 << 20
    conn = negotiated({"vm1": MemoryBackend(size)}, structured=True)
    data = request(cmd, offset, length, handle=0xABC, flags=flags,
                   data=bytes(length) if cmd == c.CMD_WRITE else b"")
    [event] = _run(conn, [data], eof=False)
    if isinstance(event, Request):
        # anything handed to the backend is in range and aligned
        if cmd != c.CMD_FLUSH:
            assert 0 < length and offset + length <= size
            assert offset % 512 == 0 and length % 512 == 0
    else:
        assert isinstance(event, RequestRejected)
        [reply] = parse_tx_replies(output(conn))
        assert reply.handle == 0xABC and reply.error == event.error
        assert reply.error in c.WIRE_ERRORS
    assert conn.state != CLOSED
