"""Sense data (SPC-4 4.5): sense keys, ASC/ASCQ codes, and sense build and parse.

The controller's SCSI device builds sense (:func:`build_sense`, fixed format 70h by default,
descriptor format 72h when the logical unit's D_SENSE bit asks for it); the iSCSI layer carries
it; the host and the controller's own accounting read it back (:func:`parse_sense`,
:func:`sense_information`, :func:`sense_field_pointer`, :func:`is_unit_attention`,
:func:`sense_text`). Both formats, current and deferred, are read everywhere.

Layouts::

    fixed (70h current / 71h deferred), 18 bytes here
      0  VALID(7) | response code        7  additional length (10)
      2  sense key (bits 3..0)          12  ASC
      3  INFORMATION (4 bytes, VALID)   13  ASCQ
                                        15  SKSV(7) C/D(6) BPV(3) bit pointer(2..0)
                                        16  field pointer (2 bytes)
    descriptor (72h / 73h)
      0  response code   1 sense key   2 ASC   3 ASCQ   7 additional length, then descriptors:
      00h information        [00h, 0Ah, VALID(7), 0, INFORMATION (8 bytes)]
      02h sense key specific [02h, 06h, 0, 0, SKSV/C/D/BPV/bit, field pointer (2), 0]

Parsing never raises for the bytes a peer sent, whatever they are (empty, truncated, another
response code): the fields that are not there read as the documented default — ``(0, 0, 0)``
for key/ASC/ASCQ, ``None`` for INFORMATION and the field pointer. Status codes are in
:mod:`difs.sam.status`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

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
VENDOR_SPECIFIC = 0x9
COPY_ABORTED = 0xA
ABORTED_COMMAND = 0xB
VOLUME_OVERFLOW = 0xD
MISCOMPARE = 0xE
COMPLETED = 0xF

SENSE_KEY_NAMES: dict[int, str] = {
    NO_SENSE: "NO SENSE",
    RECOVERED_ERROR: "RECOVERED ERROR",
    NOT_READY: "NOT READY",
    MEDIUM_ERROR: "MEDIUM ERROR",
    HARDWARE_ERROR: "HARDWARE ERROR",
    ILLEGAL_REQUEST: "ILLEGAL REQUEST",
    UNIT_ATTENTION: "UNIT ATTENTION",
    DATA_PROTECT: "DATA PROTECT",
    BLANK_CHECK: "BLANK CHECK",
    VENDOR_SPECIFIC: "VENDOR SPECIFIC",
    COPY_ABORTED: "COPY ABORTED",
    ABORTED_COMMAND: "ABORTED COMMAND",
    VOLUME_OVERFLOW: "VOLUME OVERFLOW",
    MISCOMPARE: "MISCOMPARE",
    COMPLETED: "COMPLETED",
}

# --- additional sense code / qualifier pairs (SPC-4 table 49) --------------------------
ASC_NO_ADDITIONAL_SENSE = (0x00, 0x00)
ASC_LU_NOT_READY_INIT_REQUIRED = (0x04, 0x02)
ASC_LU_NOT_READY_SANITIZE = (0x04, 0x1B)
ASC_UNREACHABLE_COPY_TARGET = (0x08, 0x04)
ASC_WRITE_ERROR = (0x0C, 0x00)
ASC_COPY_TARGET_DEVICE_NOT_REACHABLE = (0x0D, 0x02)
ASC_INVALID_FIELD_IN_CIU = (0x0E, 0x03)
ASC_GUARD_CHECK_FAILED = (0x10, 0x01)
ASC_APP_TAG_CHECK_FAILED = (0x10, 0x02)
ASC_REF_TAG_CHECK_FAILED = (0x10, 0x03)
ASC_UNRECOVERED_READ_ERROR = (0x11, 0x00)
ASC_PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
ASC_MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
ASC_INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
ASC_LBA_OUT_OF_RANGE = (0x21, 0x00)
ASC_INVALID_FIELD_IN_CDB = (0x24, 0x00)
ASC_LU_NOT_SUPPORTED = (0x25, 0x00)
ASC_INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00)
ASC_INVALID_RELEASE_OF_PR = (0x26, 0x04)
ASC_TOO_MANY_TARGET_DESCRIPTORS = (0x26, 0x06)
ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE = (0x26, 0x07)
ASC_TOO_MANY_SEGMENT_DESCRIPTORS = (0x26, 0x08)
ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE = (0x26, 0x09)
ASC_WRITE_PROTECTED = (0x27, 0x00)
ASC_SOFTWARE_WRITE_PROTECTED = (0x27, 0x02)
#: SBC-4 4.7.3.6/4.7.3.8: a thin-provisioned unit could not allocate space for a write
ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT = (0x27, 0x07)
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
ASC_PROTOCOL_SERVICE_CRC_ERROR = (0x47, 0x05)
ASC_MEDIUM_REMOVAL_PREVENTED = (0x53, 0x02)
ASC_INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04)
ASC_LU_ACCESS_NOT_AUTHORIZED = (0x74, 0x71)

ASC_NAMES: dict[tuple[int, int], str] = {
    ASC_NO_ADDITIONAL_SENSE: "NO ADDITIONAL SENSE INFORMATION",
    ASC_LU_NOT_READY_INIT_REQUIRED: "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
    ASC_LU_NOT_READY_SANITIZE: "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS",
    ASC_UNREACHABLE_COPY_TARGET: "UNREACHABLE COPY TARGET",
    ASC_WRITE_ERROR: "WRITE ERROR",
    ASC_COPY_TARGET_DEVICE_NOT_REACHABLE: "COPY TARGET DEVICE NOT REACHABLE",
    ASC_INVALID_FIELD_IN_CIU: "INVALID FIELD IN COMMAND INFORMATION UNIT",
    ASC_GUARD_CHECK_FAILED: "LOGICAL BLOCK GUARD CHECK FAILED",
    ASC_APP_TAG_CHECK_FAILED: "LOGICAL BLOCK APPLICATION TAG CHECK FAILED",
    ASC_REF_TAG_CHECK_FAILED: "LOGICAL BLOCK REFERENCE TAG CHECK FAILED",
    ASC_UNRECOVERED_READ_ERROR: "UNRECOVERED READ ERROR",
    ASC_PARAMETER_LIST_LENGTH_ERROR: "PARAMETER LIST LENGTH ERROR",
    ASC_MISCOMPARE_DURING_VERIFY: "MISCOMPARE DURING VERIFY OPERATION",
    ASC_INVALID_COMMAND_OPERATION_CODE: "INVALID COMMAND OPERATION CODE",
    ASC_LBA_OUT_OF_RANGE: "LOGICAL BLOCK ADDRESS OUT OF RANGE",
    ASC_INVALID_FIELD_IN_CDB: "INVALID FIELD IN CDB",
    ASC_LU_NOT_SUPPORTED: "LOGICAL UNIT NOT SUPPORTED",
    ASC_INVALID_FIELD_IN_PARAMETER_LIST: "INVALID FIELD IN PARAMETER LIST",
    ASC_INVALID_RELEASE_OF_PR: "INVALID RELEASE OF PERSISTENT RESERVATION",
    ASC_TOO_MANY_TARGET_DESCRIPTORS: "TOO MANY TARGET DESCRIPTORS",
    ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE: "UNSUPPORTED TARGET DESCRIPTOR TYPE CODE",
    ASC_TOO_MANY_SEGMENT_DESCRIPTORS: "TOO MANY SEGMENT DESCRIPTORS",
    ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE: "UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE",
    ASC_WRITE_PROTECTED: "WRITE PROTECTED",
    ASC_SOFTWARE_WRITE_PROTECTED: "SOFTWARE WRITE PROTECTED",
    ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT: "SPACE ALLOCATION FAILED WRITE PROTECT",
    ASC_POWER_ON_RESET_OR_BDR: "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED",
    ASC_POWER_ON_OCCURRED: "POWER ON OCCURRED",
    ASC_SCSI_BUS_RESET_OCCURRED: "SCSI BUS RESET OCCURRED",
    ASC_BUS_DEVICE_RESET_FUNCTION_OCCURRED: "BUS DEVICE RESET FUNCTION OCCURRED",
    ASC_I_T_NEXUS_LOSS_OCCURRED: "I_T NEXUS LOSS OCCURRED",
    ASC_MODE_PARAMETERS_CHANGED: "MODE PARAMETERS CHANGED",
    ASC_RESERVATIONS_PREEMPTED: "RESERVATIONS PREEMPTED",
    ASC_RESERVATIONS_RELEASED: "RESERVATIONS RELEASED",
    ASC_REGISTRATIONS_PREEMPTED: "REGISTRATIONS PREEMPTED",
    ASC_CAPACITY_DATA_HAS_CHANGED: "CAPACITY DATA HAS CHANGED",
    ASC_COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: "COMMANDS CLEARED BY ANOTHER INITIATOR",
    ASC_SAVING_PARAMETERS_NOT_SUPPORTED: "SAVING PARAMETERS NOT SUPPORTED",
    ASC_MEDIUM_NOT_PRESENT: "MEDIUM NOT PRESENT",
    ASC_REPORTED_LUNS_DATA_CHANGED: "REPORTED LUNS DATA HAS CHANGED",
    ASC_INTERNAL_TARGET_FAILURE: "INTERNAL TARGET FAILURE",
    ASC_PROTOCOL_SERVICE_CRC_ERROR: "PROTOCOL SERVICE CRC ERROR",
    ASC_MEDIUM_REMOVAL_PREVENTED: "MEDIUM REMOVAL PREVENTED",
    ASC_INSUFFICIENT_REGISTRATION_RESOURCES: "INSUFFICIENT REGISTRATION RESOURCES",
    ASC_LU_ACCESS_NOT_AUTHORIZED: "LOGICAL UNIT ACCESS NOT AUTHORIZED",
}

# --- T10 PI check failures (SBC-4 4.22): ABORTED COMMAND, ASC 10h, ASCQ = the check -------
ASC_PI_CHECK = 0x10
#: the check (as :class:`difs.integrity.PiCheckError` names it) -> its ASC/ASCQ
PI_CHECK_ASC: dict[str, tuple[int, int]] = {
    "guard": ASC_GUARD_CHECK_FAILED,
    "app": ASC_APP_TAG_CHECK_FAILED,
    "ref": ASC_REF_TAG_CHECK_FAILED,
}
#: ASCQ under ASC 10h -> the check that failed
PI_CHECK_BY_ASCQ: dict[int, str] = {ascq: kind for kind, (_, ascq) in PI_CHECK_ASC.items()}


def pi_check_kind(key: int, asc: int, ascq: int) -> str | None:
    """``"guard"``, ``"app"`` or ``"ref"`` for a PI check failure, else None."""
    if key == ABORTED_COMMAND and asc == ASC_PI_CHECK:
        return PI_CHECK_BY_ASCQ.get(ascq)
    return None


# --- formats ---------------------------------------------------------------------------
FIXED_CURRENT, FIXED_DEFERRED = 0x70, 0x71
DESCRIPTOR_CURRENT, DESCRIPTOR_DEFERRED = 0x72, 0x73
FIXED_SENSE_LEN = 18
_FIXED = (FIXED_CURRENT, FIXED_DEFERRED)
_DESCRIPTOR = (DESCRIPTOR_CURRENT, DESCRIPTOR_DEFERRED)
_DESC_INFORMATION, _DESC_SENSE_KEY_SPECIFIC = 0x00, 0x02

_INFO = struct.Struct(">I")
_FIELD_PTR = struct.Struct(">BH")
_SKSV, _CD, _BPV = 0x80, 0x40, 0x08


class FieldPointer(NamedTuple):
    """The sense-key-specific field pointer (SPC-4 4.5.2.4.2) of an ILLEGAL REQUEST."""

    byte: int  # the byte of the CDB or parameter list in error
    bit: int | None  # its bit 0..7, or None when the whole byte is (BPV=0)
    in_cdb: bool  # C/D: True in the CDB, False in the parameter data


# --- build -----------------------------------------------------------------------------


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
    """Build sense data: fixed format (70h, 18 bytes) or descriptor format (72h).

    ``information`` goes into INFORMATION with VALID set (fixed format: only when it fits 32
    bits, else VALID stays 0 as SPC-4 requires; descriptor format: 64 bits). ``field_byte``
    sets the sense-key-specific field pointer (SKSV=1), with ``field_bit`` (BPV=1) and
    ``in_cdb`` (C/D)."""
    if descriptor:
        return _build_descriptor_sense(key, asc, ascq, information, field_byte, field_bit, in_cdb)
    buf = bytearray(FIXED_SENSE_LEN)
    buf[0] = FIXED_CURRENT
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
    flags = _SKSV
    if in_cdb:
        flags |= _CD  # the error is in the CDB
    if field_bit is not None:
        flags |= _BPV | (field_bit & 0x07)
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
        descs += bytes((_DESC_INFORMATION, 0x0A, 0x80, 0x00)) + information.to_bytes(8, "big")
    if field_byte is not None:
        descs += bytes((_DESC_SENSE_KEY_SPECIFIC, 0x06, 0x00, 0x00))
        descs += _FIELD_PTR.pack(_sks_flags(field_bit, in_cdb), field_byte & 0xFFFF) + b"\x00"
    return bytes((DESCRIPTOR_CURRENT, key & 0x0F, asc, ascq, 0, 0, 0, len(descs))) + bytes(descs)


# --- parse -----------------------------------------------------------------------------


def parse_sense(sense: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(sense key, ASC, ASCQ) of fixed or descriptor sense data.

    ``(0, 0, 0)`` when there is none (empty, too short, an unknown response code); a fixed
    sense cut before its ASC gives ``(key, 0, 0)``."""
    n = len(sense)
    if n >= 3 and sense[0] & 0x7F in _FIXED:
        if n >= 14:
            return sense[2] & 0x0F, sense[12], sense[13]
        return sense[2] & 0x0F, 0, 0
    if n >= 4 and sense[0] & 0x7F in _DESCRIPTOR:
        return sense[1] & 0x0F, sense[2], sense[3]
    return 0, 0, 0


def sense_information(sense: bytes | bytearray | memoryview) -> int | None:
    """The INFORMATION field (e.g. the failing LBA of a PI check) when VALID, else None."""
    n = len(sense)
    if n >= 7 and sense[0] & 0x7F in _FIXED:
        return int.from_bytes(sense[3:7], "big") if sense[0] & 0x80 else None
    i = _find_descriptor(sense, _DESC_INFORMATION, 12)
    if i is not None and sense[i + 2] & 0x80:
        return int.from_bytes(sense[i + 4:i + 12], "big")
    return None


def sense_field_pointer(sense: bytes | bytearray | memoryview) -> FieldPointer | None:
    """The sense-key-specific bytes read as a field pointer when SKSV is set, else None.

    They mean a field pointer for ILLEGAL REQUEST (and what :func:`build_sense` writes from
    ``field_byte``); for other sense keys SPC-4 gives the same three bytes other meanings,
    so check the key first."""
    if len(sense) >= 18 and sense[0] & 0x7F in _FIXED:
        at = 15
    else:
        at = _find_descriptor(sense, _DESC_SENSE_KEY_SPECIFIC, 7)
        if at is None:
            return None
        at += 4
    flags, field = _FIELD_PTR.unpack_from(sense, at)
    if not flags & _SKSV:
        return None
    return FieldPointer(field, flags & 0x07 if flags & _BPV else None, bool(flags & _CD))


def _find_descriptor(sense: bytes | bytearray | memoryview, kind: int, size: int) -> int | None:
    """Offset of the first descriptor of type ``kind`` holding ``size`` bytes, in
    descriptor-format sense; None when it is absent, cut short, or the format is fixed."""
    if len(sense) < 8 or sense[0] & 0x7F not in _DESCRIPTOR:
        return None
    end = min(len(sense), 8 + sense[7])
    i = 8
    while i + 2 <= end:
        if sense[i] == kind and 2 + sense[i + 1] >= size and i + size <= end:
            return i
        i += 2 + sense[i + 1]
    return None


def is_unit_attention(sense: bytes | bytearray | memoryview) -> bool:
    return parse_sense(sense)[0] == UNIT_ATTENTION


def sense_text(sense: bytes | bytearray | memoryview) -> str:
    """One line for a log: ``sense key bh (ABORTED COMMAND) asc/ascq 10h/01h (LOGICAL BLOCK
    GUARD CHECK FAILED), information 4660``."""
    if not len(sense):
        return "no sense data"
    code = sense[0] & 0x7F
    if code not in _FIXED and code not in _DESCRIPTOR or len(sense) < 3:
        return f"unrecognized sense data {bytes(sense[:18]).hex()}"
    key, asc, ascq = parse_sense(sense)
    text = (f"sense key {key:x}h ({SENSE_KEY_NAMES.get(key, 'RESERVED')}) "
            f"asc/ascq {asc:02x}h/{ascq:02x}h")
    name = ASC_NAMES.get((asc, ascq))
    if name:
        text += f" ({name})"
    information = sense_information(sense)
    if information is not None:
        text += f", information {information}"
    return text
