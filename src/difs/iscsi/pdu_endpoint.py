"""What both ends of an iSCSI connection share: the outgoing PDU queue, the event queue,
the CRC32C digest accounting, and the state and closed views.

:class:`TargetConnection` and :class:`InitiatorConnection` mix this in; each sets up
``_events`` (a deque), ``_out`` (a list), ``_framer``, ``_machine`` (its login state table),
``_closed`` and the digest flags and counters in its own ``__init__``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .digest import data_digest, header_digest
from .framer import PduFramer
from .state import State, StateMachine


class PduEndpoint:
    _events: deque
    _out: list[bytes | memoryview]
    _framer: PduFramer
    header_digest: bool
    data_digest: bool
    digests_sent: int
    digest_bytes_sent: int
    _machine: StateMachine
    _closed: bool

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def closed(self) -> bool:
        return self._closed

    def next_event(self) -> Any:
        events = self._events
        return events.popleft() if events else None

    def data_to_send(self) -> list[bytes | memoryview]:
        out = self._out
        if out:
            self._out = []
        return out

    @property
    def digest_work(self) -> tuple[int, int]:
        """(CRC32C digests computed or verified, bytes they covered) on this connection."""
        f = self._framer
        return (self.digests_sent + f.digests_checked,
                self.digest_bytes_sent + f.digest_bytes_checked)

    def _push(self, header: bytes, data: bytes | memoryview = b"") -> None:
        """Queue one PDU (already packed BHS) with padding and digests as negotiated."""
        out = self._out
        if self.header_digest:
            self.digests_sent += 1
            self.digest_bytes_sent += len(header)
            header += header_digest(header)
        out.append(header)
        if data:
            out.append(data)
            pad = len(data) & 3
            if pad:
                out.append(b"\x00" * (4 - pad))
            if self.data_digest:
                out.append(data_digest(data))
                self.digests_sent += 1
                self.digest_bytes_sent += (len(data) + 3) & ~3
