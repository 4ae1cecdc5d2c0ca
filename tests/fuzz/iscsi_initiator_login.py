"""Fuzz target: the initiator's side of login (iscsi/initiator_login.py, negotiation.py, text.py,
chap.py) through the sans-I/O initiator connection core, fed arbitrary target PDUs. Once the
login succeeds the harness sends a READ(10), a NOP-Out ping and a SendTargets, so the same
stream also reaches the initiator's Full Feature answers.

Knobs: byte 0 bit 0 one-way CHAP, bit 1 mutual CHAP (the initiator checks the target), bit 2
a Discovery session, bit 3 digests offered (CRC32C,None); byte 1 the receive chunk size
(0: one PDU at a time). The
initiator's ITTs and CHAP challenges are deterministic, so seeds recorded from a real exchange
with the target core (``python -m fuzz seeds``) answer them.

Oracles: nothing escapes the core; only the documented events come out; at most one
ConnectionClosed; what the framer keeps is at most one PDU of the negotiated bounds; what the
initiator sends frames and decodes.
"""

from __future__ import annotations

from difs.iscsi.config import InitiatorConfig
from difs.iscsi.constants import BHS_LENGTH
from difs.iscsi.events import ConnectionClosed
from difs.iscsi.framer import PduFramer
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_events import INITIATOR_EVENTS, LoginSucceeded
from difs.iscsi.pdu import pull_pdu
from difs.iscsi.state import State

from fuzz import knobs, pieces
from fuzz.iscsi_target_login import CHAP, INITIATOR, MUTUAL, TARGET, fixed_random

MAX_INPUT = 1 << 16
ALLOWED = INITIATOR_EVENTS
READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])


def config(flags: int) -> InitiatorConfig:
    digests = ("CRC32C", "None") if flags & 8 else ("None",)
    return InitiatorConfig(initiator_name=INITIATOR, isid=0x400001370000,
                           target_name=None if flags & 4 else TARGET,
                           chap=CHAP if flags & 1 else None,
                           mutual_chap=MUTUAL if flags & 3 == 3 else None,
                           header_digest=digests, data_digest=digests,
                           max_recv_data_segment_length=8192, random_bytes=fixed_random)


def after_login(conn: InitiatorConnection, discovery: bool) -> None:
    """What the harness asks of a logged-in connection (the seeds answer it)."""
    if discovery:
        conn.send_targets()
        return
    conn.submit_command(0, READ10, expected_in_length=512)
    conn.ping(b"ping", now=1.0)


def TestOneInput(data: bytes) -> None:
    (flags, split), stream = knobs(data[:MAX_INPUT], 2)
    conn = InitiatorConnection(config=config(flags), now=0.0)
    sent = [bytes(b) for b in conn.data_to_send()]
    closes = 0
    digests = False
    for piece in pieces(conn._framer, stream, split):
        conn.receive_data(piece)
        closes += drain(conn, flags)
        sent.extend(bytes(b) for b in conn.data_to_send())
        digests = digests or conn.header_digest or conn.data_digest
        if not conn.closed:
            framer = conn._framer
            assert framer.buffered < BHS_LENGTH + 1020 + framer.max_data_segment_length + 11
    conn.handle_timer(1e9)
    closes += drain(conn, flags)
    assert closes <= 1, closes
    conn.close()
    drain(conn, flags)
    assert conn.closed
    if not digests:
        framer = PduFramer((1 << 24) - 1)
        framer.feed(b"".join(sent))
        while (pdu := framer.next_pdu()) is not None:
            pull_pdu(pdu.header, pdu.ahs, pdu.data)
        assert framer.buffered == 0, "the initiator sent a truncated PDU"


def drain(conn: InitiatorConnection, flags: int) -> int:
    closes = 0
    while (event := conn.next_event()) is not None:
        assert isinstance(event, ALLOWED), event
        closes += isinstance(event, ConnectionClosed)
        if isinstance(event, LoginSucceeded) and conn.state is State.FULL_FEATURE:
            after_login(conn, bool(flags & 4))
    return closes
