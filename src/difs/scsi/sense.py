"""SCSI status codes, sense keys, additional sense codes and the errors that carry them.

Every fault a command can report is raised inside the device as a :class:`ScsiError`
carrying its wire code; :meth:`LogicalUnit.execute` turns it into a :class:`ScsiResult`
(status + sense bytes).  Nothing else may escape ``execute``: an exception of any other
type leaving the SCSI core is a bug.

Exception tree::

    Exception
     └── ScsiError                      status CHECK CONDITION, sense key/ASC/ASCQ,
         │                              optional INFORMATION and sense-key-specific
         │                              field pointer (SKSV)
         └── ReservationConflict        status RESERVATION CONFLICT, no sense data

Helpers below build the common errors with the field pointer SPC-4 asks for
(``invalid_field_in_cdb(byte, bit)`` points at the offending CDB byte/bit).

Sense data is built in fixed format (response code 70h) unless descriptor format (72h) is
requested; see :func:`build_sense`.
"""

from __future__ import annotations

import struct

# --- status codes (SAM-5) --------------------------------------------------------------
GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
ACA_ACTIVE = 0x30
TASK_ABORTED = 0x40

# --- sense keys (SPC-4 table 48) -------------------------------------------------------
NO_SENSE = 0x0
RECOVERED_ERROR = 0x1
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
BLANK_CHECK = 0x8
COPY_ABORTED = 0xA
ABORTED_COMMAND = 0xB
MISCOMPARE = 0xE

# --- additional sense code / qualifier pairs -------------------------------------------
ASC_NO_ADDITIONAL_SENSE = (0x00, 0x00)
ASC_LU_NOT_READY_INIT_REQUIRED = (0x04, 0x02)
ASC_LU_NOT_READY_SANITIZE = (0x04, 0x1B)
ASC_WRITE_ERROR = (0x0C, 0x00)
ASC_INVALID_FIELD_IN_CIU = (0x0E, 0x03)
ASC_GUARD_CHECK_FAILED = (0x10, 0x01)
ASC_APP_TAG_CHECK_FAILED = (0x10, 0x02)
ASC_REF_TAG_CHECK_FAILED = (0x10, 0x03)
ASC_UNRECOVERED_READ_ERROR = (0x11, 0x00)
ASC_MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
ASC_PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
ASC_INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
ASC_LBA_OUT_OF_RANGE = (0x21, 0x00)
ASC_INVALID_FIELD_IN_CDB = (0x24, 0x00)
ASC_LU_NOT_SUPPORTED = (0x25, 0x00)
ASC_INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00)
ASC_TOO_MANY_TARGET_DESCRIPTORS = (0x26, 0x06)
ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE = (0x26, 0x07)
ASC_TOO_MANY_SEGMENT_DESCRIPTORS = (0x26, 0x08)
ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE = (0x26, 0x09)
ASC_WRITE_PROTECTED = (0x27, 0x00)
ASC_SOFTWARE_WRITE_PROTECTED = (0x27, 0x02)
ASC_POWER_ON_RESET_OR_BDR = (0x29, 0x00)
ASC_POWER_ON_OCCURRED = (0x29, 0x01)
ASC_SCSI_BUS_RESET_OCCURRED = (0x29, 0x02)
ASC_BUS_DEVICE_RESET_FUNCTION_OCCURRED = (0x29, 0x03)
ASC_I_T_NEXUS_LOSS_OCCURRED = (0x29, 0x07)
ASC_MODE_PARAMETERS_CHANGED = (0x2A, 0x01)
ASC_RESERVATIONS_PREEMPTED = (0x2A, 0x03)
ASC_RESERVATIONS_RELEASED = (0x2A, 0x04)
ASC_REGISTRATIONS_PREEMPTED = (0x2A, 0x05)
ASC_CAPACITY_DATA_HAS_CHANGED = (0x2A, 0x09)
ASC_COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (0x2F, 0x00)
ASC_SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00)
ASC_MEDIUM_NOT_PRESENT = (0x3A, 0x00)
ASC_REPORTED_LUNS_DATA_CHANGED = (0x3F, 0x0E)
ASC_INTERNAL_TARGET_FAILURE = (0x44, 0x00)
ASC_MEDIUM_REMOVAL_PREVENTED = (0x53, 0x02)
ASC_INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04)
ASC_UNREACHABLE_COPY_TARGET = (0x08, 0x04)
ASC_COPY_TARGET_DEVICE_NOT_REACHABLE = (0x0D, 0x02)
ASC_LU_ACCESS_NOT_AUTHORIZED = (0x74, 0x71)

FIXED_SENSE_LEN = 18
_INFO = struct.Struct(">I")
_FIELD_PTR = struct.Struct(">BH")


class ScsiError(Exception):
    """A command failed with CHECK CONDITION and this sense.

    ``information`` is put in the INFORMATION field (VALID bit set) when given.  The
    sense-key-specific field pointer (SKSV=1) is given by ``field_byte`` (byte offset),
    ``field_bit`` (bit 0..7 or None), and ``in_cdb`` (C/D bit: CDB or parameter data).
    """

    status = CHECK_CONDITION

    def __init__(
        self,
        sense_key: int,
        asc: int,
        ascq: int,
        *,
        information: int | None = None,
        field_byte: int | None = None,
        field_bit: int | None = None,
        in_cdb: bool = True,
        message: str = "",
    ) -> None:
        self.sense_key = sense_key
        self.asc = asc
        self.ascq = ascq
        self.information = information
        self.field_byte = field_byte
        self.field_bit = field_bit
        self.in_cdb = in_cdb
        super().__init__(
            message or f"sense key {sense_key:#x} asc/ascq {asc:#04x}/{ascq:#04x}"
        )

    def sense(self, *, descriptor: bool = False) -> bytes:
        return build_sense(
            self.sense_key,
            self.asc,
            self.ascq,
            information=self.information,
            field_byte=self.field_byte,
            field_bit=self.field_bit,
            in_cdb=self.in_cdb,
            descriptor=descriptor,
        )


class ReservationConflict(ScsiError):
    """The command conflicts with a reservation held through another I_T nexus."""

    status = RESERVATION_CONFLICT

    def __init__(self, message: str = "reservation conflict") -> None:
        super().__init__(NO_SENSE, 0, 0, message=message)


def build_sense(
    key: int,
    asc: int,
    ascq: int,
    *,
    information: int | None = None,
    field_byte: int | None = None,
    field_bit: int | None = None,
    in_cdb: bool = True,
    descriptor: bool = False,
) -> bytes:
    """Build sense data: fixed format (70h, 18 bytes) or descriptor format (72h)."""
    if descriptor:
        return _build_descriptor_sense(key, asc, ascq, information, field_byte, field_bit, in_cdb)
    buf = bytearray(FIXED_SENSE_LEN)
    buf[0] = 0x70
    buf[2] = key & 0x0F
    if information is not None and 0 <= information <= 0xFFFFFFFF:
        buf[0] |= 0x80
        _INFO.pack_into(buf, 3, information)
    buf[7] = FIXED_SENSE_LEN - 8
    buf[12] = asc
    buf[13] = ascq
    if field_byte is not None:
        _FIELD_PTR.pack_into(buf, 15, _sks_flags(field_bit, in_cdb), field_byte & 0xFFFF)
    return bytes(buf)


def _sks_flags(field_bit: int | None, in_cdb: bool) -> int:
    flags = 0x80  # SKSV
    if in_cdb:
        flags |= 0x40  # C/D: the error is in the CDB
    if field_bit is not None:
        flags |= 0x08 | (field_bit & 0x07)  # BPV + bit pointer
    return flags


def _build_descriptor_sense(
    key: int,
    asc: int,
    ascq: int,
    information: int | None,
    field_byte: int | None,
    field_bit: int | None,
    in_cdb: bool,
) -> bytes:
    descs = bytearray()
    if information is not None:
        # Information descriptor (type 00h), VALID bit, 64-bit INFORMATION.
        descs += bytes((0x00, 0x0A, 0x80, 0x00)) + information.to_bytes(8, "big")
    if field_byte is not None:
        # Sense key specific descriptor (type 02h).
        descs += bytes((0x02, 0x06, 0x00, 0x00))
        descs += _FIELD_PTR.pack(_sks_flags(field_bit, in_cdb), field_byte & 0xFFFF) + b"\x00"
    return bytes((0x72, key & 0x0F, asc, ascq, 0, 0, 0, len(descs))) + bytes(descs)


def parse_sense(sense: bytes) -> tuple[int, int, int]:
    """Return (sense key, ASC, ASCQ) from fixed or descriptor sense data."""
    code = sense[0] & 0x7F
    if code in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    return sense[2] & 0x0F, sense[12], sense[13]


# --- constructors for the common errors ------------------------------------------------


def invalid_opcode() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_COMMAND_OPERATION_CODE, field_byte=0,
                     message="invalid command operation code")


def invalid_field_in_cdb(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_CDB, field_byte=byte,
                     field_bit=bit, message=f"invalid field in CDB byte {byte}")


def invalid_field_in_parameter_list(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_PARAMETER_LIST, field_byte=byte,
                     field_bit=bit, in_cdb=False,
                     message=f"invalid field in parameter list byte {byte}")


def parameter_list_length_error() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_PARAMETER_LIST_LENGTH_ERROR,
                     message="parameter list length error")


def invalid_field_in_command_iu() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_CIU,
                     message="data-out length does not match the command")


def lba_out_of_range(lba: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_LBA_OUT_OF_RANGE, information=lba,
                     message="logical block address out of range")


def write_protected(software: bool = False) -> ScsiError:
    asc = ASC_SOFTWARE_WRITE_PROTECTED if software else ASC_WRITE_PROTECTED
    return ScsiError(DATA_PROTECT, *asc, message="write protected")


def miscompare(offset: int) -> ScsiError:
    return ScsiError(MISCOMPARE, *ASC_MISCOMPARE_DURING_VERIFY, information=offset,
                     message=f"miscompare at byte offset {offset}")


def lu_not_supported() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_LU_NOT_SUPPORTED,
                     message="logical unit not supported")


def unit_attention(asc: int, ascq: int) -> ScsiError:
    return ScsiError(UNIT_ATTENTION, asc, ascq, message=f"unit attention {asc:#04x}/{ascq:#04x}")


def medium_error(*, write: bool, lba: int | None = None) -> ScsiError:
    asc = ASC_WRITE_ERROR if write else ASC_UNRECOVERED_READ_ERROR
    return ScsiError(MEDIUM_ERROR, *asc, information=lba, message="medium error")
