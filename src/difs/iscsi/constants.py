"""Wire constants of iSCSI (RFC 7143): opcodes, flag bits, status and reason codes.

Everything here is a plain ``int`` or an ``IntEnum`` so it can be written straight into a PDU.
Section numbers refer to RFC 7143.
"""

from __future__ import annotations

from enum import IntEnum

from difs.sam import status as _status

BHS_LENGTH = 48
DIGEST_LENGTH = 4
RESERVED_TAG = 0xFFFFFFFF  # "no tag" value for ITT / TTT (section 11.1)
MAX_DATA_SEGMENT_LENGTH = (1 << 24) - 1
LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH = 8192  # limit that applies to login PDUs (13.12)


class Opcode(IntEnum):
    """BHS opcodes (section 11.1.1); initiator opcodes are 0x00-0x1f, target 0x20-0x3f."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


OPCODE_MASK = 0x3F
IMMEDIATE_BIT = 0x40  # byte 0, requests only

# byte 1 flags
FINAL_BIT = 0x80
# SCSI Command
CMD_READ = 0x40
CMD_WRITE = 0x20
CMD_ATTR_MASK = 0x07
# SCSI Response
RSP_BIDI_OVERFLOW = 0x10
RSP_BIDI_UNDERFLOW = 0x08
RSP_OVERFLOW = 0x04
RSP_UNDERFLOW = 0x02
# Data-In
DATA_ACK = 0x40
DATA_OVERFLOW = 0x04
DATA_UNDERFLOW = 0x02
DATA_STATUS = 0x01
# Login / Text
LOGIN_TRANSIT = 0x80
LOGIN_CONTINUE = 0x40
TEXT_CONTINUE = 0x40


class TaskAttribute(IntEnum):
    """SCSI Command ATTR field (section 11.3.1)."""

    UNTAGGED = 0
    SIMPLE = 1
    ORDERED = 2
    HEAD_OF_QUEUE = 3
    ACA = 4


class Stage(IntEnum):
    """Login stages, CSG/NSG (section 11.12.3)."""

    SECURITY_NEGOTIATION = 0
    OPERATIONAL_NEGOTIATION = 1
    FULL_FEATURE_PHASE = 3


class AhsType(IntEnum):
    """Additional header segment types (section 11.2.2)."""

    EXTENDED_CDB = 1
    BIDI_READ_LENGTH = 2


class RejectReason(IntEnum):
    """Reject PDU reasons (section 11.17.1)."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OP_REJECT = 0x0A
    WAITING_FOR_LOGOUT = 0x0C


class LoginStatus(IntEnum):
    """Login Response (Status-Class << 8 | Status-Detail), section 11.13.5."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302

    @property
    def status_class(self) -> int:
        return self.value >> 8

    @property
    def status_detail(self) -> int:
        return self.value & 0xFF


class TmfFunction(IntEnum):
    """Task Management Function Request codes (section 11.5.1)."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(IntEnum):
    """Task Management Function Response codes (section 11.6.1)."""

    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED = 4
    NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    REJECTED = 255


class LogoutReason(IntEnum):
    """Logout Request reason codes (section 11.14.1)."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


class LogoutResponse(IntEnum):
    """Logout Response codes (section 11.15.1)."""

    SUCCESS = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class AsyncEvent(IntEnum):
    """Asynchronous Message events (section 11.9.1)."""

    SCSI_ASYNC_EVENT = 0
    LOGOUT_REQUESTED = 1
    CONNECTION_DROP = 2
    SESSION_DROP = 3
    NEGOTIATION_REQUEST = 4
    TASK_TERMINATION = 5
    VENDOR_SPECIFIC = 255


class SnackType(IntEnum):
    """SNACK Request types (section 11.16.1)."""

    DATA_R2T = 0
    STATUS = 1
    DATA_ACK = 2
    R_DATA = 3


class ScsiStatus(IntEnum):
    """The SAM status codes of :mod:`difs.sam.status` as an enum (the per-I/O path uses the
    plain ints from there)."""

    GOOD = _status.GOOD
    CHECK_CONDITION = _status.CHECK_CONDITION
    BUSY = _status.BUSY
    RESERVATION_CONFLICT = _status.RESERVATION_CONFLICT
    TASK_SET_FULL = _status.TASK_SET_FULL
    ACA_ACTIVE = _status.ACA_ACTIVE
    TASK_ABORTED = _status.TASK_ABORTED


# SCSI Response "Response" field (section 11.4.3)
RESPONSE_COMPLETED = 0x00
RESPONSE_TARGET_FAILURE = 0x01
