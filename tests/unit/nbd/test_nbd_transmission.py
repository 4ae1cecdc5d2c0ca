"""NBD transmission phase of the core: requests, validation, replies, backpressure."""

from __future__ import annotations

import os

import pytest
from nbd_testlib import FEED_MODES, drain, feed, negotiated, output, parse_tx_replies, request

from difs.nbd import constants as c
from difs.nbd.backend import MemoryBackend
from difs.nbd.connection import CLOSED, EXPECT_REQUEST, EXPECT_WRITE_PAYLOAD
from difs.nbd.errors import LocalProtocolError
from difs.nbd.events import (
    ClientDisconnect,
    ConnectionClosed,
    ProtocolViolation,
    Request,
    RequestRejected,
)

MiB = 1 << 20


@pytest.fixture(params=FEED_MODES)
def mode(request):
    return request.param


def test_read_request_event_and_simple_reply(mode):
    conn = negotiated()
    [req] = feed(conn, request(c.CMD_READ, 4096, 1024, handle=0xDEADBEEF), mode)
    assert isinstance(req, Request)
    assert (req.command, req.flags, req.handle, req.offset, req.length) == (
        c.CMD_READ, 0, 0xDEADBEEF, 4096, 1024,
    )
    assert conn.in_flight == 1 and conn.in_flight_bytes == 1024
    conn.reply_read(req, b"\x5a" * 1024)
    [reply] = parse_tx_replies(output(conn), {0xDEADBEEF: 1024})
    assert (reply.kind, reply.error, reply.data) == ("simple", 0, b"\x5a" * 1024)
    assert conn.in_flight == 0 and conn.in_flight_bytes == 0


def test_read_structured_reply_is_one_offset_data_chunk():
    conn = negotiated(structured=True)
    [req] = feed(conn, request(c.CMD_READ, 8192, 512, handle=7, flags=c.CMD_FLAG_DF))
    conn.reply_read(req, memoryview(b"x" * 512))
    [reply] = parse_tx_replies(output(conn))
    assert reply.kind == c.REPLY_TYPE_OFFSET_DATA and reply.flags == c.REPLY_FLAG_DONE
    assert (reply.handle, reply.offset, reply.data) == (7, 8192, b"x" * 512)


def test_read_error_structured_and_simple():
    for structured in (False, True):
        conn = negotiated(structured=structured)
        [req] = feed(conn, request(c.CMD_READ, 0, 512, handle=3))
        conn.reply_error(req, c.EIO, "disk on fire")
        [reply] = parse_tx_replies(output(conn))
        assert reply.handle == 3 and reply.error == c.EIO
        if structured:
            assert reply.kind == c.REPLY_TYPE_ERROR and reply.message == "disk on fire"
            assert reply.flags == c.REPLY_FLAG_DONE
        else:
            assert reply.kind == "simple" and reply.data == b""


def test_write_payload_whole_bytewise_trailing(mode):
    conn = negotiated()
    payload = os.urandom(4096)
    data = request(c.CMD_WRITE, 512, 4096, handle=9, flags=c.CMD_FLAG_FUA, data=payload)
    [req] = feed(conn, data, mode)
    assert req.command == c.CMD_WRITE and req.flags == c.CMD_FLAG_FUA
    assert bytes(req.data) == payload
    conn.reply_ok(req)
    [reply] = parse_tx_replies(output(conn))
    assert (reply.handle, reply.error, reply.kind) == (9, 0, "simple")


def test_large_write_payload_is_received_into_its_own_buffer():
    conn = negotiated({"vm1": MemoryBackend(4 * MiB)})
    payload = os.urandom(3 * MiB)
    wire_bytes = request(c.CMD_WRITE, 0, len(payload), handle=1, data=payload)
    # like asyncio.BufferedProtocol: the transport fills whatever get_buffer hands out
    pos, buffers = 0, set()
    while pos < len(wire_bytes):
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(wire_bytes) - pos, 100_000)
        buf[:n] = wire_bytes[pos : pos + n]
        conn.buffer_updated(n)
        pos += n
        if conn.state == EXPECT_WRITE_PAYLOAD:
            buffers.add(id(buf.obj))
        if pos < len(wire_bytes):
            assert conn.next_event() is None
    [req] = drain(conn)
    assert bytes(req.data) == payload
    assert len(buffers) == 1  # every chunk after the header landed in the one payload buffer
    assert req.data.obj is not conn._buf


def test_pipelined_requests_replied_out_of_order(mode):
    conn = negotiated(structured=True)
    data = b"".join(request(c.CMD_READ, i * 512, 512, handle=100 + i) for i in range(5))
    reqs = feed(conn, data, mode)
    assert [r.handle for r in reqs] == [100, 101, 102, 103, 104]
    for r in reversed(reqs):
        conn.reply_read(r, bytes([r.handle]) * 512)
    replies = parse_tx_replies(output(conn))
    assert [r.handle for r in replies] == [104, 103, 102, 101, 100]
    assert all(r.data == bytes([r.handle]) * 512 for r in replies)


def test_flush_trim_zeroes_events():
    conn = negotiated()
    data = (
        request(c.CMD_FLUSH, handle=1)
        + request(c.CMD_TRIM, 0, 4096, handle=2, flags=c.CMD_FLAG_FUA)
        + request(c.CMD_WRITE_ZEROES, 4096, 8192, handle=3,
                  flags=c.CMD_FLAG_NO_HOLE | c.CMD_FLAG_FAST_ZERO)
    )
    reqs = drain_feed = feed(conn, data)
    assert [(r.command, r.flags) for r in drain_feed] == [
        (c.CMD_FLUSH, 0),
        (c.CMD_TRIM, c.CMD_FLAG_FUA),
        (c.CMD_WRITE_ZEROES, c.CMD_FLAG_NO_HOLE | c.CMD_FLAG_FAST_ZERO),
    ]
    for r in reqs:
        conn.reply_ok(r)
    assert [r.handle for r in parse_tx_replies(output(conn))] == [1, 2, 3]
    assert conn.in_flight == 0


def test_disc_is_a_soft_disconnect(mode):
    conn = negotiated()
    events = feed(conn, request(c.CMD_DISC, handle=5), mode)
    assert len(events) == 1 and isinstance(events[0], ClientDisconnect)
    assert conn.state == CLOSED
    assert output(conn) == b""  # NBD_CMD_DISC has no reply


def _rejected(conn, data, mode="whole", **read_lengths):
    events = feed(conn, data, mode)
    assert len(events) == 1 and isinstance(events[0], RequestRejected), events
    [reply] = parse_tx_replies(output(conn))
    assert reply.handle == events[0].handle and reply.error == events[0].error
    assert conn.state == EXPECT_REQUEST and conn.in_flight == 0
    return events[0]


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (request(c.CMD_READ, MiB - 512, 1024), c.EINVAL),  # crosses the end
        (request(c.CMD_READ, 1 << 62, 512), c.EINVAL),  # far beyond the end
        (request(c.CMD_TRIM, MiB, 512), c.EINVAL),
        (request(c.CMD_WRITE_ZEROES, MiB - 512, 4096), c.ENOSPC),
        (request(c.CMD_READ, 100, 512), c.EINVAL),  # unaligned offset
        (request(c.CMD_READ, 0, 100), c.EINVAL),  # unaligned length
        (request(c.CMD_READ, 0, 0), c.EINVAL),  # zero length
        (request(c.CMD_READ, 0, 33 * MiB), c.EINVAL),  # larger than the maximum
        (request(c.CMD_READ, 0, 512, flags=c.CMD_FLAG_DF), c.EINVAL),  # DF needs structured
        (request(c.CMD_READ, 0, 512, flags=1 << 9), c.EINVAL),  # unknown flag
        (request(c.CMD_FLUSH, flags=c.CMD_FLAG_NO_HOLE), c.EINVAL),  # flag not for FLUSH
        (request(c.CMD_CACHE, 0, 512), c.EINVAL),  # not supported
        (request(c.CMD_BLOCK_STATUS, 0, 512), c.EINVAL),  # no meta context negotiated
        (request(77, 0, 512), c.EINVAL),  # unknown command
    ],
    ids=[
        "read-crosses-end", "read-far-beyond", "trim-beyond", "zeroes-beyond", "unaligned-offset",
        "unaligned-length", "zero-length", "read-too-large", "df-unnegotiated", "unknown-flag",
        "flush-bad-flag", "cache-unsupported", "block-status-unnegotiated", "unknown-command",
    ],
)
def test_bad_requests_get_an_error_and_the_connection_goes_on(mode, req, error):
    conn = negotiated()
    event = _rejected(conn, req, mode)
    assert event.error == error and event.reason
    if mode != "trailing":  # (trailing mode left a partial header pending)
        # the stream is still in sync: a valid request follows
        [ok] = feed(conn, request(c.CMD_READ, 0, 512, handle=42))
        assert ok.handle == 42


def test_write_beyond_end_is_enospc_and_its_payload_is_skipped(mode):
    conn = negotiated()
    data = request(c.CMD_WRITE, MiB - 512, 1024, handle=11, data=b"\xee" * 1024)
    data += request(c.CMD_WRITE, 0, 512, handle=12, data=b"\x01" * 512)
    events = feed(conn, data, mode)
    assert isinstance(events[0], RequestRejected) and events[0].error == c.ENOSPC
    assert isinstance(events[1], Request) and bytes(events[1].data) == b"\x01" * 512
    [reply] = parse_tx_replies(output(conn))
    assert (reply.handle, reply.error) == (11, c.ENOSPC)


def test_write_to_read_only_export_is_eperm():
    conn = negotiated({"ro": MemoryBackend(MiB, read_only=True)}, "ro")
    event = _rejected(conn, request(c.CMD_WRITE, 0, 512, handle=2, data=bytes(512)))
    assert event.error == c.EPERM
    event = _rejected(conn, request(c.CMD_TRIM, 0, 512, handle=3))
    assert event.error == c.EPERM  # the spec's answer to trim on a read-only export


def test_fast_zero_without_fast_backend_is_enotsup():
    backend = MemoryBackend(MiB)
    backend.can_fast_zero = False
    conn = negotiated({"vm1": backend})
    event = _rejected(conn, request(c.CMD_WRITE_ZEROES, 0, 4096, flags=c.CMD_FLAG_FAST_ZERO))
    assert event.error == c.ENOTSUP


def test_unaligned_tail_of_odd_sized_export_is_allowed():
    conn = negotiated({"odd": MemoryBackend(1000)}, "odd")
    [req] = feed(conn, request(c.CMD_READ, 512, 488))
    assert isinstance(req, Request) and req.length == 488


def test_oversized_write_ends_the_connection_with_an_error_reply(mode):
    conn = negotiated(structured=True)
    header = request(c.CMD_WRITE, 0, 64 * MiB, handle=77)
    events = feed(conn, header + b"\x00" * 100, mode)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert "exceeds" in events[0].reason
    [reply] = parse_tx_replies(output(conn))
    assert (reply.handle, reply.error) == (77, c.EINVAL)
    assert conn.state == CLOSED
    # nothing more is parsed or buffered for this connection
    conn.receive_data(b"\x00" * 1000)
    assert conn.next_event() is None


def test_garbage_magic_ends_the_connection(mode):
    conn = negotiated()
    events = feed(conn, b"GARBAGE!" * 8, mode)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert "magic" in events[0].reason and conn.state == CLOSED


def test_eof_mid_request_reports_connection_closed():
    conn = negotiated()
    conn.receive_data(request(c.CMD_WRITE, 0, 4096, data=b"x" * 100))
    assert conn.next_event() is None
    conn.receive_eof()
    event = conn.next_event()
    assert isinstance(event, ConnectionClosed) and event.during == EXPECT_WRITE_PAYLOAD


def test_in_flight_count_limits_requests_handed_out():
    conn = negotiated(max_in_flight=2)
    data = b"".join(request(c.CMD_READ, 0, 512, handle=h) for h in range(5))
    conn.receive_data(data)
    first = drain(conn)
    assert [r.handle for r in first] == [0, 1] and conn.throttled
    conn.reply_read(first[0], bytes(512))
    assert not conn.throttled
    [third] = drain(conn)
    assert third.handle == 2 and conn.throttled
    for r in (first[1], third):
        conn.reply_read(r, bytes(512))
    assert [r.handle for r in drain(conn)] == [3, 4]


def test_in_flight_bytes_limit_requests_handed_out():
    conn = negotiated(max_in_flight_bytes=8192)
    data = b"".join(request(c.CMD_READ, 0, 4096, handle=h) for h in range(4))
    conn.receive_data(data)
    got = drain(conn)
    assert [r.handle for r in got] == [0, 1] and conn.in_flight_bytes == 8192
    conn.reply_read(got[0], bytes(4096))
    assert [r.handle for r in drain(conn)] == [2]


def test_throttled_connection_buffers_at_most_what_it_was_given():
    conn = negotiated(max_in_flight=1)
    conn.receive_data(b"".join(request(c.CMD_READ, 0, 512, handle=h) for h in range(3)))
    [first] = drain(conn)
    # a well-behaved adapter stops reading now; the core keeps the two pending requests only
    assert conn._end - conn._start == 2 * 28
    conn.reply_read(first, bytes(512))
    assert [r.handle for r in drain(conn)] == [1]


def test_local_misuse_raises_local_protocol_error():
    conn = negotiated()
    [req] = feed(conn, request(c.CMD_READ, 0, 512))
    with pytest.raises(LocalProtocolError):
        conn.reply_read(req, b"short")
    with pytest.raises(LocalProtocolError):
        conn.reply_ok(req)  # a read needs reply_read
    with pytest.raises(LocalProtocolError):
        conn.reply_error(req, 12345)
    conn.reply_read(req, bytes(512))
    with pytest.raises(LocalProtocolError):
        conn.reply_read(req, bytes(512))  # answered twice
    assert conn.in_flight == 0


def test_block_status_reply_clips_merges_and_honours_req_one():
    conn = negotiated(structured=True, meta=True)
    [req] = feed(conn, request(c.CMD_BLOCK_STATUS, 0, 8192, handle=5))
    conn.reply_block_status(req, [(1024, 0), (1024, 0), (4096, c.STATE_HOLE), (99999, 0)])
    [reply] = parse_tx_replies(output(conn))
    assert reply.kind == c.REPLY_TYPE_BLOCK_STATUS and reply.flags == c.REPLY_FLAG_DONE
    import struct

    context_id, *extents = struct.unpack(">I" + "II" * 3, reply.data)
    assert context_id == 1
    assert extents == [2048, 0, 4096, c.STATE_HOLE, 2048, 0]

    [req] = feed(conn, request(c.CMD_BLOCK_STATUS, 0, 8192, handle=6, flags=c.CMD_FLAG_REQ_ONE))
    conn.reply_block_status(req, [(512, 0), (512, c.STATE_ZERO)])
    [reply] = parse_tx_replies(output(conn))
    assert struct.unpack(">III", reply.data) == (1, 512, 0)
