"""Events a target connection hands to its adapter (``TargetConnection.next_event()``).

Edge events are slotted dataclasses. ``ScsiTask`` is created per I/O, so it is a plain
``__slots__`` class; the adapter answers it with ``TargetConnection.complete_command(task, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

if TYPE_CHECKING:
    from .params import NegotiatedParams
    from .session import Session


class ScsiTask:
    """A SCSI command ready to execute: all its Data-Out (immediate, unsolicited and R2T'd)
    has been collected into ``data_out``.

    ``lun`` is decoded from the 8-byte LUN field (``lun_field`` keeps the raw value), ``cdb`` is
    the full CDB (16 bytes from the BHS, zero padded, or longer with an extended CDB AHS),
    ``expected_length`` the Expected Data Transfer Length, ``bidi_read_length`` the expected
    read length of a bidirectional command (else None), ``arrived`` the adapter's clock
    reading (``receive_data(arrived_ns=)``) for the bytes that carried the command PDU.
    """

    __slots__ = ("session", "connection_id", "itt", "lun", "lun_field", "cdb", "data_out",
                 "expected_length", "bidi_read_length", "read", "write", "attr", "cmdsn",
                 "immediate", "state", "arrived")

    # ``state`` values (core bookkeeping)
    RECEIVING = 0  # waiting for CmdSN order and/or Data-Out
    DELIVERED = 1  # handed to the adapter
    ABORTED = 2  # aborted by task management / logout / connection loss: no response is sent
    DONE = 3  # response sent
    FAILED = 4  # a data digest error: answered by the core with CHECK CONDITION

    def __init__(self, session: Session, connection_id: int, itt: int, lun: int, lun_field: int,
                 cdb: bytes, expected_length: int, read: bool, write: bool, attr: int,
                 cmdsn: int, immediate: bool, data_out: bytes | memoryview = b"",
                 bidi_read_length: int | None = None, arrived: int = 0) -> None:
        self.session = session
        self.connection_id = connection_id
        self.itt = itt
        self.lun = lun
        self.lun_field = lun_field
        self.cdb = cdb
        self.expected_length = expected_length
        self.read = read
        self.write = write
        self.attr = attr
        self.cmdsn = cmdsn
        self.immediate = immediate
        self.data_out = data_out
        self.bidi_read_length = bidi_read_length
        self.arrived = arrived
        self.state = ScsiTask.RECEIVING

    def __repr__(self) -> str:
        return (f"ScsiTask(itt=0x{self.itt:x}, lun={self.lun}, cdb={bytes(self.cdb[:1]).hex()}.., "
                f"edtl={self.expected_length}, read={self.read}, write={self.write}, "
                f"cmdsn={self.cmdsn})")


@dataclass(slots=True, eq=False)
class LoginComplete:
    """Login succeeded; the connection is in Full Feature Phase. ``params`` is what this
    connection's login settled (``session.params`` unless it joined an existing session)."""

    session: Session
    connection_id: int
    params: NegotiatedParams


@dataclass(slots=True)
class LoginRejected:
    """A login was refused with a Login Response carrying this status (the connection will
    close). For logs and metrics; the core already answered the initiator."""

    status_class: int
    status_detail: int
    reason: str
    initiator_name: str | None
    target_name: str | None


@dataclass(slots=True, eq=False)
class TaskManagementRequest:
    """A task management function to perform; answer with
    ``TargetConnection.complete_task_management(event, response=TmfResponse...)``.

    ``referenced_task`` is the task an ABORT TASK refers to (already handed to the adapter).
    """

    session: Session
    function: int
    lun: int
    referenced_itt: int
    itt: int
    referenced_task: ScsiTask | None = None
    connection_id: int = 0


@dataclass(slots=True, eq=False)
class SessionReinstated:
    """A new leading login replaced ``old_session`` (same initiator name, ISID and portal group).
    The adapter must close the transports of ``old_connection_ids``."""

    old_session: Session
    old_connection_ids: tuple[int, ...]


@dataclass(slots=True, eq=False)
class ConnectionReinstated:
    """A login with the TSIH and CID of an existing connection replaced it; close its transport."""

    session: Session
    old_connection_id: int


@dataclass(slots=True, eq=False)
class LogoutComplete:
    """The initiator logged out (reason: LogoutReason); a ConnectionClosed follows."""

    session: Session
    reason: int


@dataclass(slots=True)
class ConnectionClosed:
    """The core is done with this connection: flush ``data_to_send()`` then close the transport."""

    reason: str


@dataclass(slots=True)
class ProtocolViolation:
    """The peer broke the protocol. For logs and metrics; the core already reacted (Reject or
    termination, in which case a ConnectionClosed follows)."""

    reason: str
    reject_reason: int | None = None


@dataclass(slots=True)
class DigestFailure:
    """A CRC32C digest did not match (``kind`` is "header" or "data")."""

    kind: str
    itt: int | None = None


Event = (ScsiTask | LoginComplete | LoginRejected | TaskManagementRequest | SessionReinstated
         | ConnectionReinstated | LogoutComplete | ConnectionClosed | ProtocolViolation
         | DigestFailure)

#: every event type a TargetConnection hands to its adapter (for checks that it never
#: hands over anything else)
TARGET_EVENTS: tuple[type, ...] = get_args(Event)
