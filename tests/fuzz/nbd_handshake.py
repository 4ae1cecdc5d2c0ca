"""Fuzz target: the NBD server's handshake and option haggling (nbd/connection.py,
nbd/negotiation.py), and whatever transmission requests follow a chosen export.

Knobs: byte 0 bit 0 export with 4096-byte blocks (else 512), bit 1 read-only, bit 2 a second
export with a long description, bit 3 EOF after the input; byte 1 the receive chunk size. The
rest is what the client sends after the server's greeting (client flags, options, requests).

Oracles: feeding never raises; only the documented events come out and nothing follows a
terminal one; every request handed out is answered (and the core's in-flight counts return to
zero); while no export is chosen every byte the server sent after its greeting is a well-formed
option reply; the receive buffer stays within its declared bounds (the handshake buffer grows
only to hold one option of at most MAX_OPTION_LENGTH; a write payload of at most max_payload).
"""

from __future__ import annotations

from difs.nbd import constants as c
from difs.nbd import wire
from difs.nbd.backend import MemoryBackend
from difs.nbd.connection import CLOSED, NbdServerConnection
from difs.nbd.events import (
    ClientDisconnect,
    ConnectionClosed,
    ExportChosen,
    HandshakeTimedOut,
    ProtocolViolation,
    Request,
    RequestRejected,
)

from fuzz import chunks, knobs

MAX_INPUT = 1 << 17
MAX_PAYLOAD = 1 << 16
RECV_BUFFER = 1 << 17  # holds the largest option (MAX_OPTION_LENGTH + header)
ALLOWED = (ExportChosen, Request, RequestRejected, ClientDisconnect, ProtocolViolation,
           ConnectionClosed, HandshakeTimedOut)
TERMINAL = (ClientDisconnect, ProtocolViolation, ConnectionClosed, HandshakeTimedOut)
GREETING = wire.encode_greeting()


def exports(flags: int) -> dict:
    block = 4096 if flags & 1 else 512
    out = {"vm1": MemoryBackend(1 << 20, block_size=block, read_only=bool(flags & 2),
                                description="fuzz disk")}
    if flags & 4:
        out["vm2"] = MemoryBackend(8192, description="d" * 5000)
    return out


def connection(flags: int) -> NbdServerConnection:
    conn = NbdServerConnection(exports(flags), max_payload=MAX_PAYLOAD,
                               recv_buffer_size=RECV_BUFFER)
    assert bytes(b"".join(bytes(b) for b in conn.data_to_send())) == GREETING
    return conn


def TestOneInput(data: bytes) -> None:
    (flags, split), stream = knobs(data[:MAX_INPUT], 2)
    conn = connection(flags)
    out = bytearray()
    events = feed(conn, chunks(stream, split + 1), out, eof=bool(flags & 8))
    if not any(isinstance(e, ExportChosen) for e in events):
        parse_option_replies(bytes(out))


def feed(conn: NbdServerConnection, pieces: list[bytes], out: bytearray, *,
         eof: bool) -> list:
    """Feed ``pieces`` (then EOF), answering every request at once; check the invariants."""
    events: list = []
    for piece in pieces + ([b""] if eof else []):
        conn.receive_data(piece)
        while (event := conn.next_event()) is not None:
            assert isinstance(event, ALLOWED), event
            assert not (events and isinstance(events[-1], TERMINAL)), (events[-1], event)
            events.append(event)
            answer(conn, event)
        out += b"".join(bytes(b) for b in conn.data_to_send())
        check_bounds(conn)
    if events and isinstance(events[-1], TERMINAL):
        assert conn.state == CLOSED
    assert conn.in_flight == 0 and conn.in_flight_bytes == 0
    return events


def answer(conn: NbdServerConnection, event) -> None:
    if not isinstance(event, Request):
        return
    assert event.offset + event.length <= conn.export.size or event.command == c.CMD_FLUSH
    if event.command == c.CMD_READ:
        conn.reply_read(event, bytes(event.length))
    elif event.command == c.CMD_BLOCK_STATUS:
        conn.reply_block_status(event, [(event.length, 0)])
    else:
        if event.command == c.CMD_WRITE:
            assert len(event.data) == event.length <= conn.max_payload
        conn.reply_ok(event)


def check_bounds(conn: NbdServerConnection) -> None:
    assert len(conn._buf) <= RECV_BUFFER, len(conn._buf)
    payload = conn._payload
    assert payload is None or len(payload) <= conn.max_payload


def parse_option_replies(raw: bytes) -> None:
    """Every byte is a whole option reply with the reply magic."""
    pos = 0
    while pos < len(raw):
        magic, _option, _rtype, length = wire.OPTION_REPLY_STRUCT.unpack_from(raw, pos)
        assert magic == c.OPTION_REPLY_MAGIC, hex(magic)
        pos += wire.OPTION_REPLY_STRUCT.size + length
    assert pos == len(raw), "truncated option reply"
