"""Fuzz target: the NBD server's transmission phase (request parsing, validation, write
payloads, replies) on a connection that negotiated its export first.

Knobs: byte 0 bit 0 structured replies, bit 1 base:allocation meta context, bit 2 read-only,
bit 3 4096-byte blocks, bit 4 EOF after the input; byte 1 the receive chunk size. The rest is
the request stream.

Oracles: those of :mod:`fuzz.nbd_handshake` (no exception, documented events, every request
answered, bounded buffers), and with structured replies the reply stream parses completely
with exactly one reply per request or rejection, matched by handle.
"""

from __future__ import annotations

import struct

from difs.nbd import constants as c
from difs.nbd import wire
from difs.nbd.events import ExportChosen, ProtocolViolation, Request, RequestRejected

from fuzz import chunks, knobs
from fuzz.nbd_handshake import connection, feed

MAX_INPUT = 1 << 17


def option(opt: int, payload: bytes = b"") -> bytes:
    return wire.OPTION_HEADER_STRUCT.pack(c.IHAVEOPT, opt, len(payload)) + payload


def handshake(structured: bool, meta: bool) -> bytes:
    """Client flags and options choosing export vm1."""
    name = b"vm1"
    data = struct.pack(">I", c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES)
    if structured:
        data += option(c.OPT_STRUCTURED_REPLY)
    if meta:
        query = c.META_BASE_ALLOCATION.encode()
        data += option(c.OPT_SET_META_CONTEXT, struct.pack(">I", 3) + name + struct.pack(">I", 1)
                       + struct.pack(">I", len(query)) + query)
    return data + option(c.OPT_GO, struct.pack(">I", 3) + name + struct.pack(">H", 0))


def TestOneInput(data: bytes) -> None:
    (flags, split), stream = knobs(data[:MAX_INPUT], 2)
    structured, meta = bool(flags & 1), bool(flags & 1 and flags & 2)
    conn = connection((flags >> 3 & 1) | (flags & 4 and 2))
    out = bytearray()
    [chosen] = feed(conn, [handshake(structured, meta)], out, eof=False)
    assert isinstance(chosen, ExportChosen) and chosen.structured_replies == structured
    out.clear()
    events = feed(conn, chunks(stream, split + 1), out, eof=bool(flags & 16))
    if structured:
        check_replies(bytes(out), events)


def check_replies(raw: bytes, events: list) -> None:
    """The structured reply stream parses whole; one reply per request, by handle."""
    handles = []
    pos = 0
    while pos < len(raw):
        (magic,) = struct.unpack_from(">I", raw, pos)
        if magic == c.SIMPLE_REPLY_MAGIC:
            _m, _error, handle = wire.SIMPLE_REPLY_STRUCT.unpack_from(raw, pos)
            pos += wire.SIMPLE_REPLY_STRUCT.size
            handles.append(handle)
            continue
        assert magic == c.STRUCTURED_REPLY_MAGIC, hex(magic)
        _m, rflags, _rtype, handle, length = wire.STRUCTURED_REPLY_STRUCT.unpack_from(raw, pos)
        pos += wire.STRUCTURED_REPLY_STRUCT.size + length
        if rflags & c.REPLY_FLAG_DONE:
            handles.append(handle)
    assert pos == len(raw), "truncated reply"
    expected = [e.handle for e in events if isinstance(e, (Request, RequestRejected))
                and not (isinstance(e, Request) and e.command == c.CMD_DISC)]
    if events and isinstance(events[-1], ProtocolViolation) and "exceeds" in events[-1].reason:
        handles = handles[:-1]  # the oversized write's final error reply
    assert sorted(handles) == sorted(expected), (handles, expected)
