"""Fuzz target: the target's login state machine, driven through the sans-I/O target
connection core (iscsi/target_connection.py + target_login.py, negotiation.py, text.py, chap.py)
with arbitrary Login PDUs — and, once a login succeeds, whatever Full Feature PDUs follow.

Knobs: byte 0 bit 0 one-way CHAP, bit 1 mutual CHAP, bit 2 CHAP for discovery sessions,
bit 3 a second connection on the same session table is fed the same stream afterwards
(joins, reinstatement, TSIH lookups), bit 4 small limits (MaxRecvDataSegmentLength 512,
command window 4); byte 1 the receive chunk size (0: one PDU at a time). The portal's CHAP challenges are
deterministic (``random_bytes``), so seeds can carry a correct CHAP_R.

Oracles: nothing at all escapes ``receive_data`` / ``handle_timer`` / ``close`` (the core answers
a peer's fault with a Login Response, a Reject or ConnectionClosed); only the documented events
come out; at most one ConnectionClosed; what the framer keeps is at most one PDU of the
negotiated bounds; CmdSN-pending commands stay within the window; every byte the target sends
frames and decodes as PDUs.
"""

from __future__ import annotations

from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.constants import BHS_LENGTH
from difs.iscsi.events import TARGET_EVENTS, ConnectionClosed, ScsiTask, TaskManagementRequest
from difs.iscsi.framer import PduFramer
from difs.iscsi.pdu import pull_pdu
from difs.iscsi.session import SessionTable
from difs.iscsi.target_connection import TargetConnection

from fuzz import knobs, pieces

MAX_INPUT = 1 << 16
TARGET = "iqn.2024-01.org.difs:disk1"
INITIATOR = "iqn.2024-01.org.difs:host1"
#: the initiator's CHAP secret and the target's own (mutual CHAP)
CHAP = ChapCredentials("host1", "host1-secret-12")
MUTUAL = ChapCredentials("disk1", "disk1-secret-12")
ALLOWED = TARGET_EVENTS


def fixed_random(n: int) -> bytes:
    """The portal's "random" bytes: fixed, so that a seed can answer the CHAP challenge."""
    return bytes(range(1, n + 1))


def portal(flags: int) -> PortalConfig:
    small = bool(flags & 16)
    target = TargetConfig(name=TARGET, alias="disk1",
                          chap=CHAP if flags & 1 else None,
                          mutual_chap=MUTUAL if flags & 3 == 3 else None)
    return PortalConfig(addresses=["127.0.0.1:3260"], targets={TARGET: target},
                        discovery_auth=CHAP if flags & 4 else None,
                        max_recv_data_segment_length=512 if small else 8192,
                        first_burst_length=4096, max_burst_length=8192, max_connections=2,
                        command_window=4 if small else 32, random_bytes=fixed_random)


def TestOneInput(data: bytes) -> None:
    (flags, split), stream = knobs(data[:MAX_INPUT], 2)
    config = portal(flags)
    sessions = SessionTable()
    run(TargetConnection(portal=config, sessions=sessions, now=0.0), stream, split)
    if flags & 8:
        run(TargetConnection(portal=config, sessions=sessions, now=1.0), stream, split)


def run(conn: TargetConnection, stream: bytes, split: int) -> None:
    out: list[bytes] = []
    closes = 0
    digests = False
    for piece in pieces(conn._framer, stream, split):
        conn.receive_data(piece)
        closes += drain(conn, out)
        digests = digests or conn.header_digest or conn.data_digest
        check_bounds(conn)
    conn.handle_timer(1e9)
    closes += drain(conn, out)
    assert closes <= 1, closes
    conn.close()
    closes += drain(conn, out)
    assert closes <= 1 and conn.closed
    if not digests:  # with digests on, the output switched framing mid-stream
        check_output(b"".join(out))


def drain(conn: TargetConnection, out: list[bytes]) -> int:
    closes = 0
    while (event := conn.next_event()) is not None:
        assert isinstance(event, ALLOWED), event
        closes += isinstance(event, ConnectionClosed)
        if isinstance(event, ScsiTask):
            conn.complete_command(event, status=0, data_in=bytes(min(event.expected_length, 512)))
        elif isinstance(event, TaskManagementRequest):
            conn.complete_task_management(event, response=0)
    out.extend(bytes(b) for b in conn.data_to_send())
    return closes


def check_bounds(conn: TargetConnection) -> None:
    if conn.closed:
        return
    framer = conn._framer
    assert framer.buffered < BHS_LENGTH + 1020 + framer.max_data_segment_length + 11
    session = conn.session
    if session is not None:
        assert len(session.pending) <= conn.portal.command_window


def check_output(raw: bytes) -> None:
    framer = PduFramer((1 << 24) - 1)
    framer.feed(raw)
    while (pdu := framer.next_pdu()) is not None:
        pull_pdu(pdu.header, pdu.ahs, pdu.data)
    assert framer.buffered == 0, "the target sent a truncated PDU"
