"""Events the NBD server core hands to its adapter (``NbdServerConnection.next_event``).

Edge events (export chosen, disconnects, rejections) are small frozen dataclasses. The per-I/O
event, :class:`Request`, is a plain ``__slots__`` class: one is built for every command on the
hot path and it is also the token the adapter passes back to the ``reply_*`` methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from difs.nbd.constants import COMMAND_NAMES


class Event:
    """Base class of everything ``next_event`` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ExportChosen(Event):
    """Negotiation is over: the client entered transmission on ``export`` (the backend object
    from the exports mapping). ``structured_replies`` and ``meta_contexts`` say what was
    negotiated (context id -> name)."""

    name: str
    export: Any
    structured_replies: bool
    meta_contexts: dict[int, str]


class Request(Event):
    """One transmission-phase command that passed validation; the adapter must answer it with
    exactly one of ``reply_ok``/``reply_read``/``reply_error``/``reply_block_status``.

    ``data`` is the write payload (a memoryview the adapter may keep) for NBD_CMD_WRITE, else
    ``None``.
    """

    __slots__ = ("command", "flags", "handle", "offset", "length", "data", "replied")

    def __init__(
        self,
        command: int,
        flags: int,
        handle: int,
        offset: int,
        length: int,
        data: memoryview | None = None,
    ) -> None:
        self.command = command
        self.flags = flags
        self.handle = handle
        self.offset = offset
        self.length = length
        self.data = data
        self.replied = False

    def __repr__(self) -> str:
        name = COMMAND_NAMES.get(self.command, str(self.command))
        return (
            f"Request({name}, flags={self.flags:#x}, handle={self.handle:#x}, "
            f"offset={self.offset}, length={self.length})"
        )


@dataclass(frozen=True, slots=True)
class RequestRejected(Event):
    """The core answered a request with an error itself (bad range, flags, length...).
    Informational: the reply is already queued; the connection goes on."""

    handle: int
    command: int
    error: int
    reason: str


@dataclass(frozen=True, slots=True)
class ClientDisconnect(Event):
    """Soft disconnect (NBD_CMD_DISC or NBD_OPT_ABORT). The adapter finishes the requests in
    flight, sends what is queued and closes."""

    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The peer broke the protocol so the stream cannot continue. The adapter sends what is
    queued (possibly a final error reply) and closes this connection."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side (EOF) before a soft disconnect."""

    during: str


@dataclass(frozen=True, slots=True)
class HandshakeTimedOut(Event):
    """The client did not choose an export in time (``handle_timer``): the connection is
    CLOSED; the adapter closes its socket."""

    reason: str
