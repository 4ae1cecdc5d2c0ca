"""Regressions for what the coverage-guided fuzzing (tests/fuzz) found in the NBD core; each
crashing input is kept in tests/fuzz/corpus/<target>/crash-*."""

from __future__ import annotations

import pytest
from nbd_testlib import drain, negotiated, request

from difs.nbd import constants as c
from difs.nbd.events import Request


@pytest.mark.timeout(10)
def test_write_payload_followed_by_more_bytes_in_one_receive_does_not_spin():
    """receive_data() got an empty buffer from get_buffer() once a write's payload was whole
    and looped on it for ever when the next request came in the same call."""
    conn = negotiated()
    conn.receive_data(request(c.CMD_WRITE, 0, 512, handle=1, data=b"w" * 100))
    assert drain(conn) == []  # the core now waits for the rest of the payload
    conn.receive_data(b"w" * 412 + request(c.CMD_FLUSH, handle=2))
    events = drain(conn)
    assert [(type(e), e.handle) for e in events] == [(Request, 1), (Request, 2)]
    assert bytes(events[0].data) == b"w" * 512 and events[1].command == c.CMD_FLUSH


def test_get_buffer_is_never_empty_when_a_write_payload_is_whole():
    conn = negotiated()
    conn.receive_data(request(c.CMD_WRITE, 0, 512, handle=7))
    assert drain(conn) == []
    buf = conn.get_buffer(-1)
    buf[:512] = b"x" * 512
    conn.buffer_updated(512)
    assert len(conn.get_buffer(-1)) > 0  # the whole write is handed out, the rest is buffered
    [event] = drain(conn)
    assert isinstance(event, Request) and event.handle == 7 and bytes(event.data) == b"x" * 512
    assert conn.in_flight == 1 and conn.in_flight_bytes == 512
