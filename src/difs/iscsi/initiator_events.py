"""Events an ``InitiatorConnection`` hands to its adapter, and the negotiated session record.

The core's timer decisions (see :mod:`difs.iscsi.initiator_timers`) arrive as events too:
``CommandTimeout`` (ABORT TASK sent), ``CommandAborted(timed_out=True)`` (the abort was
confirmed) and ``ConnectionDead`` (the core gave up on the target; ``ConnectionClosed``
follows with the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import ConnectionClosed, DigestFailure, LogoutComplete, ProtocolViolation

if TYPE_CHECKING:
    from .params import NegotiatedParams


@dataclass(slots=True)
class InitiatorSession:
    """What the login established, as seen by the initiator: the wire identity of the session
    (ISID, TSIH, the target's portal group tag and alias) and ``params``, the
    ``NegotiatedParams`` the target holds too."""

    params: NegotiatedParams
    isid: int
    tsih: int
    target_portal_group_tag: int | None = None
    target_alias: str | None = None

    @property
    def initiator_port(self) -> str:
        return f"{self.params.initiator_name},i,0x{self.isid:012x}"


@dataclass(slots=True, eq=False)
class LoginSucceeded:
    session: InitiatorSession


@dataclass(slots=True)
class LoginFailed:
    status_class: int
    status_detail: int
    reason: str


class CommandComplete:
    """A SCSI command finished. ``data`` holds the Data-In received (``len(data)`` bytes: the
    expected length minus any underflow residual). ``overflow``/``underflow`` with ``residual``
    mirror the SCSI Response (or final Data-In) flags."""

    __slots__ = ("itt", "status", "data", "sense", "residual", "overflow", "underflow",
                 "response")

    def __init__(self, itt: int, status: int, data: bytes | memoryview, sense: bytes,
                 residual: int, overflow: bool, underflow: bool, response: int = 0) -> None:
        self.itt = itt
        self.status = status
        self.data = data
        self.sense = sense
        self.residual = residual
        self.overflow = overflow
        self.underflow = underflow
        self.response = response

    def __repr__(self) -> str:
        return (f"CommandComplete(itt=0x{self.itt:x}, status=0x{self.status:02x}, "
                f"data={len(self.data)} bytes, sense={self.sense.hex()}, "
                f"residual={self.residual})")


@dataclass(slots=True)
class CommandAborted:
    """The command was terminated by a task management function (no status will come).

    ``timed_out``: the core had aborted it for not being answered in time (after a
    ``CommandTimeout``): it did not run and the connection works, so it can be sent again."""

    itt: int
    timed_out: bool = False


@dataclass(slots=True)
class CommandTimeout:
    """The command was not answered within ``after`` seconds: the core sent ABORT TASK
    (ITT ``tmf_itt``). A ``CommandAborted(timed_out=True)`` follows when the target confirms
    the abort, a ``ConnectionDead`` when it does not."""

    itt: int
    tmf_itt: int
    after: float


@dataclass(slots=True)
class ConnectionDead:
    """The core gave up on the target: a NOP-Out ping or an ABORT TASK went unanswered, or an
    abort was answered without ending its task (the command's fate is unknown). Everything in
    flight is lost; a ``ConnectionClosed`` with the same reason follows."""

    reason: str


@dataclass(slots=True)
class CommandRejected:
    """The target answered the command with a Reject PDU."""

    itt: int
    reason: int


@dataclass(slots=True)
class DiscoveryResult:
    """SendTargets answer: target name -> its TargetAddress values ("host:port,tpgt")."""

    itt: int
    targets: dict[str, list[str]]


@dataclass(slots=True)
class TextResult:
    """Answer to a text request other than SendTargets."""

    itt: int
    pairs: list[tuple[str, str]]


@dataclass(slots=True)
class PingComplete:
    itt: int
    data: bytes


@dataclass(slots=True)
class TaskManagementComplete:
    itt: int
    response: int


@dataclass(slots=True)
class AsyncEventReceived:
    event: int
    lun: int
    parameter1: int
    parameter2: int
    parameter3: int
    data: bytes


@dataclass(slots=True)
class RejectReceived:
    reason: int
    header: bytes


#: every event type an InitiatorConnection hands to its adapter: its own, and the edge
#: events it shares with the target (for checks that it never hands over anything else)
INITIATOR_EVENTS: tuple[type, ...] = (
    LoginSucceeded, LoginFailed, CommandComplete, CommandAborted, CommandTimeout, ConnectionDead,
    CommandRejected, DiscoveryResult, TextResult, PingComplete, TaskManagementComplete,
    AsyncEventReceived, RejectReceived,
    LogoutComplete, ConnectionClosed, ProtocolViolation, DigestFailure)
