"""Helpers for the NBD core tests: build client bytes, feed them three ways, parse replies."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from difs.nbd import constants as c
from difs.nbd import wire
from difs.nbd.backend import MemoryBackend
from difs.nbd.connection import NbdServerConnection
from difs.nbd.events import Event

FEED_MODES = ["whole", "bytewise", "trailing"]


def client_flags(flags: int = c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES) -> bytes:
    return struct.pack(">I", flags)


def option(opt: int, payload: bytes = b"") -> bytes:
    return wire.OPTION_HEADER_STRUCT.pack(c.IHAVEOPT, opt, len(payload)) + payload


def go_payload(name: str, infos: tuple[int, ...] = ()) -> bytes:
    raw = name.encode()
    return (
        struct.pack(">I", len(raw)) + raw + struct.pack(">H", len(infos))
        + b"".join(struct.pack(">H", i) for i in infos)
    )


def meta_payload(name: str, queries: list[str]) -> bytes:
    raw = name.encode()
    body = struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
    for q in queries:
        body += struct.pack(">I", len(q.encode())) + q.encode()
    return body


def request(
    command: int, offset: int = 0, length: int = 0, *, handle: int = 1, flags: int = 0,
    data: bytes = b"", magic: int = c.REQUEST_MAGIC,
) -> bytes:
    return wire.REQUEST_STRUCT.pack(magic, flags, command, handle, offset, length) + data


def feed(conn: NbdServerConnection, data: bytes, mode: str = "whole") -> list[Event]:
    """Feed ``data`` and collect events. ``bytewise`` feeds one byte at a time (collecting
    events after each), ``trailing`` appends a request header prefix that must stay pending."""
    events: list[Event] = []
    if mode == "bytewise":
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
            events.extend(drain(conn))
        return events
    if mode == "trailing":
        data = data + request(c.CMD_READ)[:10]
    conn.receive_data(data)
    return drain(conn)


def drain(conn: NbdServerConnection) -> list[Event]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def output(conn: NbdServerConnection) -> bytes:
    return b"".join(bytes(chunk) for chunk in conn.data_to_send())


@dataclass
class OptionReply:
    option: int
    type: int
    data: bytes


def parse_option_replies(data: bytes) -> list[OptionReply]:
    replies, pos = [], 0
    while pos < len(data):
        magic, opt, rtype, length = wire.OPTION_REPLY_STRUCT.unpack_from(data, pos)
        assert magic == c.OPTION_REPLY_MAGIC
        pos += 20
        replies.append(OptionReply(opt, rtype, data[pos : pos + length]))
        pos += length
    assert pos == len(data)
    return replies


@dataclass
class TxReply:
    handle: int
    error: int
    data: bytes
    kind: str  # "simple" or the structured chunk type
    flags: int = 0
    message: str = ""
    offset: int | None = None


def parse_tx_replies(data: bytes, read_lengths: dict[int, int] | None = None) -> list[TxReply]:
    """Parse transmission replies. Simple read replies need ``read_lengths`` (handle -> length)
    for the handles whose payload follows."""
    read_lengths = read_lengths or {}
    replies, pos = [], 0
    while pos < len(data):
        (magic,) = struct.unpack_from(">I", data, pos)
        if magic == c.SIMPLE_REPLY_MAGIC:
            _m, error, handle = wire.SIMPLE_REPLY_STRUCT.unpack_from(data, pos)
            pos += 16
            n = read_lengths.get(handle, 0) if error == 0 else 0
            replies.append(TxReply(handle, error, data[pos : pos + n], "simple"))
            pos += n
        elif magic == c.STRUCTURED_REPLY_MAGIC:
            _m, flags, rtype, handle, length = wire.STRUCTURED_REPLY_STRUCT.unpack_from(data, pos)
            pos += 20
            payload = data[pos : pos + length]
            assert len(payload) == length, "truncated structured reply"
            pos += length
            reply = TxReply(handle, 0, b"", rtype, flags)
            if rtype == c.REPLY_TYPE_OFFSET_DATA:
                (reply.offset,) = struct.unpack_from(">Q", payload)
                reply.data = payload[8:]
            elif rtype & (1 << 15):
                reply.error, mlen = wire.ERROR_PAYLOAD_STRUCT.unpack_from(payload)
                reply.message = payload[6 : 6 + mlen].decode()
            else:
                reply.data = payload
            replies.append(reply)
        else:
            raise AssertionError(f"bad reply magic {magic:#x} at {pos}")
    return replies


def new_connection(exports=None, **kwargs) -> NbdServerConnection:
    if exports is None:
        exports = {"vm1": MemoryBackend(1 << 20, description="test disk")}
    conn = NbdServerConnection(exports, **kwargs)
    greeting = output(conn)
    assert greeting == wire.GREETING_STRUCT.pack(c.NBDMAGIC, c.IHAVEOPT, 3)
    return conn


def negotiated(
    exports=None, name: str = "vm1", *, structured: bool = False, meta: bool = False, **kwargs
) -> NbdServerConnection:
    """A connection already in transmission on ``name`` (output drained)."""
    conn = new_connection(exports, **kwargs)
    data = client_flags()
    if structured:
        data += option(c.OPT_STRUCTURED_REPLY)
    if meta:
        data += option(c.OPT_SET_META_CONTEXT, meta_payload(name, [c.META_BASE_ALLOCATION]))
    data += option(c.OPT_GO, go_payload(name))
    conn.receive_data(data)
    events = drain(conn)
    assert type(events[-1]).__name__ == "ExportChosen", events
    output(conn)
    return conn
