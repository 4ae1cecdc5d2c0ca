"""CDB field layouts (precompiled ``struct.Struct``) and operation code constants.

Field layouts follow SBC-4 / SPC-4; names say what they unpack.  Everything here is pure
and allocation-free apart from the tuples ``unpack_from`` returns.
"""

from __future__ import annotations

import struct

# --- operation codes -------------------------------------------------------------------
TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
READ_6 = 0x08
WRITE_6 = 0x0A
INQUIRY = 0x12
MODE_SELECT_6 = 0x15
RESERVE_6 = 0x16
RELEASE_6 = 0x17
MODE_SENSE_6 = 0x1A
START_STOP_UNIT = 0x1B
PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
WRITE_AND_VERIFY_10 = 0x2E
VERIFY_10 = 0x2F
PRE_FETCH_10 = 0x34
SYNCHRONIZE_CACHE_10 = 0x35
READ_DEFECT_DATA_10 = 0x37
WRITE_SAME_10 = 0x41
UNMAP = 0x42
SANITIZE = 0x48
MODE_SELECT_10 = 0x55
RESERVE_10 = 0x56
RELEASE_10 = 0x57
MODE_SENSE_10 = 0x5A
PERSISTENT_RESERVE_IN = 0x5E
PERSISTENT_RESERVE_OUT = 0x5F
EXTENDED_COPY = 0x83
RECEIVE_COPY_RESULTS = 0x84
READ_16 = 0x88
COMPARE_AND_WRITE = 0x89
WRITE_16 = 0x8A
ORWRITE_16 = 0x8B
WRITE_AND_VERIFY_16 = 0x8E
VERIFY_16 = 0x8F
PRE_FETCH_16 = 0x90
SYNCHRONIZE_CACHE_16 = 0x91
WRITE_SAME_16 = 0x93
WRITE_ATOMIC_16 = 0x9C
SERVICE_ACTION_IN_16 = 0x9E
REPORT_LUNS = 0xA0
MAINTENANCE_IN = 0xA3
READ_12 = 0xA8
WRITE_12 = 0xAA
WRITE_AND_VERIFY_12 = 0xAE
VERIFY_12 = 0xAF
READ_DEFECT_DATA_12 = 0xB7

# service actions
SAI_READ_CAPACITY_16 = 0x10
SAI_GET_LBA_STATUS = 0x12
MI_REPORT_SUPPORTED_OPCODES = 0x0C
MI_REPORT_SUPPORTED_TMFS = 0x0D

# --- field layouts ---------------------------------------------------------------------
#: READ(6)/WRITE(6): opcode, lba (21 bits inside 3 bytes after masking), length, control
RW6 = struct.Struct(">I B")             # bytes 0-3 as one word (lba in low 21 bits), length
#: READ/WRITE/VERIFY/PRE-FETCH/SYNC CACHE(10): opcode, flags, lba, group, length, control
RW10 = struct.Struct(">B B I B H B")
#: (12): opcode, flags, lba, length, group, control
RW12 = struct.Struct(">B B I I B B")
#: (16): opcode, flags, lba, length, group, control
RW16 = struct.Struct(">B B Q I B B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


def cdb_length(opcode: int) -> int:
    """CDB length from the group code (SPC-4 4.2.5.1); 0 for variable/vendor groups."""
    group = opcode >> 5
    return (6, 10, 10, 0, 16, 12, 0, 0)[group]


def allocation_length(cdb: bytes | memoryview, offset: int, size: int) -> int:
    return int.from_bytes(cdb[offset:offset + size], "big")
