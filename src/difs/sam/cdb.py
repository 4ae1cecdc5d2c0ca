"""CDB layouts and operation codes (SPC-4 / SBC-4): how both ends of a path read and build a
command descriptor block.

The target's device server (:mod:`difs.scsi`) decodes CDBs with these layouts, the host
(:mod:`difs.host.disk`) builds its READ/WRITE/WRITE SAME/SYNCHRONIZE CACHE(16) with them,
and the controller's policy check takes its operation codes from here.

:data:`LAYOUTS` is the one table of the commands that address logical blocks or carry a
parameter list, indexed by operation code (``None``: a command that does neither).  A
:class:`CdbLayout` says where the LBA and the length fields are, whether byte 1 holds a
protect field (RDPROTECT / WRPROTECT / VRPROTECT / ORPROTECT, bits 7-5) and FUA / DPO bits,
where the GROUP NUMBER is, and the rule for the bytes of Data-Out the command describes
(:func:`data_out_length`):

================  ==========================================================================
data-out rule     bytes of Data-Out
================  ==========================================================================
``NONE``          0 (READ, PRE-FETCH, SYNCHRONIZE CACHE)
``BLOCKS``        length x block (WRITE, WRITE AND VERIFY, ORWRITE, WRITE ATOMIC)
``BYTCHK``        VERIFY: BYTCHK 01b length x block, 11b one block, 00b nothing
``ONE_BLOCK``     WRITE SAME: one block, none with NDOB=1
``TWO_BLOCKS``    COMPARE AND WRITE: 2 x length blocks (verify data, then write data)
``PARAMETERS``    the length field counts bytes (MODE SELECT, UNMAP, PERSISTENT RESERVE OUT,
                  EXTENDED COPY, SANITIZE)
================  ==========================================================================

On a logical unit formatted with protection information, a protect field of 001b-101b
on a command whose layout has ``pi_travels`` makes every block travel with its 8 bytes
of PI (SBC-4 4.22), so a "block" above is block size + 8 bytes.

The per-I/O path decodes with one call: ``layout.fields(cdb)`` returns
``(byte 1, LBA, transfer length)`` for every layout that has an LBA (a precompiled
``struct.Struct.unpack_from``; READ(6)/WRITE(6) mask their 21-bit LBA and read a
length of 0 as 256).  ``RW10`` / ``RW12`` / ``RW16`` pack or unpack whole CDBs
``(opcode, byte 1, LBA, length, GROUP NUMBER, CONTROL)`` (the 10-byte form has the GROUP
NUMBER before the length).  Everything here is pure and allocation-free apart from the
tuples ``unpack_from`` returns.
"""

from __future__ import annotations

import struct
from typing import Callable

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

# --- bits of byte 1 ----------------------------------------------------------------------
PROTECT_MASK = 0xE0    #: RDPROTECT / WRPROTECT / VRPROTECT / ORPROTECT, bits 7-5
PROTECT_SHIFT = 5
DPO = 0x10             #: READ/WRITE/VERIFY... disable page out
FUA = 0x08             #: READ/WRITE... force unit access
WS_ANCHOR = 0x10       #: WRITE SAME
WS_UNMAP = 0x08        #: WRITE SAME
WS_NDOB = 0x01         #: WRITE SAME(16): no data-out buffer
BYTCHK_MASK = 0x06     #: VERIFY / WRITE AND VERIFY, bits 2-1
BYTCHK_SHIFT = 1

#: bytes of protection information that travel with each block when PI is transferred
PI_TUPLE_SIZE = 8

# --- whole CDBs and field groups (precompiled) -----------------------------------------
#: READ(6)/WRITE(6): bytes 0-3 as one word (LBA in the low 21 bits), TRANSFER LENGTH
RW6 = struct.Struct(">I B")
#: (10): opcode, byte 1, LBA, GROUP NUMBER, length, CONTROL
RW10 = struct.Struct(">B B I B H B")
#: (12): opcode, byte 1, LBA, length, GROUP NUMBER, CONTROL
RW12 = struct.Struct(">B B I I B B")
#: (16): opcode, byte 1, LBA, length, GROUP NUMBER, CONTROL
RW16 = struct.Struct(">B B Q I B B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")

#: (byte 1, LBA, length) of the 10/12/16-byte block CDBs and of COMPARE AND WRITE (length
#: byte 13) and WRITE ATOMIC(16) (length bytes 12-13, after ATOMIC BOUNDARY)
_FIELDS10 = struct.Struct(">x B I x H")
_FIELDS12 = struct.Struct(">x B I I")
_FIELDS16 = struct.Struct(">x B Q I")
_FIELDS_CAW = struct.Struct(">x B Q x x x B")
_FIELDS_ATOMIC = struct.Struct(">x B Q x x H")
_rw6_unpack = RW6.unpack_from


def _fields6(cdb) -> tuple[int, int, int]:
    """READ(6)/WRITE(6): no byte-1 flags, 21-bit LBA, a length of 0 means 256 blocks."""
    word, n = _rw6_unpack(cdb)
    return 0, word & 0x1FFFFF, n or 256


# --- data-out rules ----------------------------------------------------------------------
NONE = "none"
BLOCKS = "blocks"
BYTCHK = "bytchk"
ONE_BLOCK = "one block"
TWO_BLOCKS = "two blocks"
PARAMETERS = "parameters"


class CdbLayout:
    """Where the fields of one operation code's CDB are (a row of :data:`LAYOUTS`).

    Offsets are byte offsets in the CDB; ``lba_at`` / ``length_at`` are ``None`` when the
    command has no such field.  ``length_at`` is also the field pointer of INVALID FIELD
    IN CDB when the transfer length is too long."""

    __slots__ = ("opcode", "name", "size", "lba_at", "lba_size", "length_at", "length_size",
                 "protect", "pi_travels", "fua", "dpo", "group_at", "data_out", "ndob",
                 "fields", "cdb")

    def __init__(self, opcode: int, name: str, size: int, *, lba: tuple[int, int] | None = None,
                 length: tuple[int, int] | None = None, protect: str | None = None,
                 pi_travels: bool = False, fua: int = 0, dpo: int = 0,
                 group_at: int | None = None, data_out: str = NONE, ndob: int = 0,
                 fields: Callable[..., tuple[int, int, int]] | None = None,
                 cdb: struct.Struct | None = None) -> None:
        self.opcode = opcode
        self.name = name
        self.size = size
        self.lba_at, self.lba_size = lba if lba is not None else (None, 0)
        self.length_at, self.length_size = length if length is not None else (None, 0)
        #: name of the byte-1 protect field, or None (no protect field)
        self.protect = protect
        #: a protect value of 001b-101b on a PI-formatted unit sends PI with each block
        self.pi_travels = pi_travels
        self.fua = fua
        self.dpo = dpo
        self.group_at = group_at
        self.data_out = data_out
        self.ndob = ndob
        #: cdb -> (byte 1, LBA, transfer length); None for layouts without an LBA
        self.fields = fields
        #: the whole-CDB struct (RW10/RW12/RW16) when the layout is one of those
        self.cdb = cdb

    def __repr__(self) -> str:
        return f"CdbLayout({self.name})"


def _block10(op: int, name: str, **kw) -> CdbLayout:
    return CdbLayout(op, name, 10, lba=(2, 4), length=(7, 2), group_at=6,
                     fields=_FIELDS10.unpack_from, cdb=RW10, **kw)


def _block12(op: int, name: str, **kw) -> CdbLayout:
    return CdbLayout(op, name, 12, lba=(2, 4), length=(6, 4), group_at=10,
                     fields=_FIELDS12.unpack_from, cdb=RW12, **kw)


def _block16(op: int, name: str, **kw) -> CdbLayout:
    return CdbLayout(op, name, 16, lba=(2, 8), length=(10, 4), group_at=14,
                     fields=_FIELDS16.unpack_from, cdb=RW16, **kw)


def _parameters(op: int, name: str, size: int, length: tuple[int, int], **kw) -> CdbLayout:
    return CdbLayout(op, name, size, length=length, data_out=PARAMETERS, **kw)


_RD = {"protect": "RDPROTECT", "pi_travels": True, "fua": FUA, "dpo": DPO}
_WR = {"protect": "WRPROTECT", "pi_travels": True, "fua": FUA, "dpo": DPO, "data_out": BLOCKS}
_WV = {"protect": "WRPROTECT", "pi_travels": True, "dpo": DPO, "data_out": BLOCKS}
_VR = {"protect": "VRPROTECT", "pi_travels": True, "dpo": DPO, "data_out": BYTCHK}
_WS = {"protect": "WRPROTECT", "pi_travels": True, "data_out": ONE_BLOCK}

_ROWS = [
    CdbLayout(READ_6, "READ(6)", 6, lba=(1, 3), length=(4, 1), fields=_fields6),
    CdbLayout(WRITE_6, "WRITE(6)", 6, lba=(1, 3), length=(4, 1), fields=_fields6,
              data_out=BLOCKS),
    _block10(READ_10, "READ(10)", **_RD),
    _block10(WRITE_10, "WRITE(10)", **_WR),
    _block10(WRITE_AND_VERIFY_10, "WRITE AND VERIFY(10)", **_WV),
    _block10(VERIFY_10, "VERIFY(10)", **_VR),
    _block10(PRE_FETCH_10, "PRE-FETCH(10)"),
    _block10(SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)"),
    _block10(WRITE_SAME_10, "WRITE SAME(10)", **_WS),
    _block12(READ_12, "READ(12)", **_RD),
    _block12(WRITE_12, "WRITE(12)", **_WR),
    _block12(WRITE_AND_VERIFY_12, "WRITE AND VERIFY(12)", **_WV),
    _block12(VERIFY_12, "VERIFY(12)", **_VR),
    _block16(READ_16, "READ(16)", **_RD),
    _block16(WRITE_16, "WRITE(16)", **_WR),
    _block16(WRITE_AND_VERIFY_16, "WRITE AND VERIFY(16)", **_WV),
    _block16(VERIFY_16, "VERIFY(16)", **_VR),
    _block16(PRE_FETCH_16, "PRE-FETCH(16)"),
    _block16(SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)"),
    _block16(WRITE_SAME_16, "WRITE SAME(16)", ndob=WS_NDOB, **_WS),
    _block16(ORWRITE_16, "ORWRITE(16)", protect="ORPROTECT", fua=FUA, dpo=DPO,
             data_out=BLOCKS),
    CdbLayout(COMPARE_AND_WRITE, "COMPARE AND WRITE", 16, lba=(2, 8), length=(13, 1),
              protect="WRPROTECT", fua=FUA, dpo=DPO, group_at=14, data_out=TWO_BLOCKS,
              fields=_FIELDS_CAW.unpack_from),
    CdbLayout(WRITE_ATOMIC_16, "WRITE ATOMIC(16)", 16, lba=(2, 8), length=(12, 2),
              protect="WRPROTECT", fua=FUA, dpo=DPO, group_at=14, data_out=BLOCKS,
              fields=_FIELDS_ATOMIC.unpack_from),
    _parameters(MODE_SELECT_6, "MODE SELECT(6)", 6, (4, 1)),
    _parameters(MODE_SELECT_10, "MODE SELECT(10)", 10, (7, 2)),
    _parameters(UNMAP, "UNMAP", 10, (7, 2), group_at=6),
    _parameters(SANITIZE, "SANITIZE", 10, (7, 2)),
    _parameters(PERSISTENT_RESERVE_OUT, "PERSISTENT RESERVE OUT", 10, (5, 4)),
    _parameters(EXTENDED_COPY, "EXTENDED COPY", 16, (10, 4)),
]

#: operation code -> :class:`CdbLayout` (None: no LBA, no Data-Out)
LAYOUTS: list[CdbLayout | None] = [None] * 256
for _row in _ROWS:
    LAYOUTS[_row.opcode] = _row
del _row


def data_out_length(cdb, block_size: int, *, pi_formatted: bool = False) -> int:
    """Bytes of Data-Out ``cdb`` describes for a unit of ``block_size``-byte blocks (0 for
    a command without Data-Out).  Raises ``IndexError`` / ``struct.error`` for a CDB too
    short to hold the fields the rule reads."""
    layout = LAYOUTS[cdb[0]]
    if layout is None:
        return 0
    rule = layout.data_out
    if rule is NONE:
        return 0
    if rule is PARAMETERS:
        at = layout.length_at
        if len(cdb) < at + layout.length_size:
            raise IndexError("CDB too short for its parameter list length")
        return int.from_bytes(cdb[at:at + layout.length_size], "big")
    flags = cdb[1]
    unit = block_size
    if pi_formatted and layout.pi_travels and 0 < flags >> PROTECT_SHIFT < 6:
        unit += PI_TUPLE_SIZE
    if rule is ONE_BLOCK:
        return 0 if flags & layout.ndob else unit
    if rule is BYTCHK:
        bytchk = (flags & BYTCHK_MASK) >> BYTCHK_SHIFT
        if bytchk == 3:
            return block_size  # one block compared with every block: never with PI
        if bytchk != 1:
            return 0
    n = layout.fields(cdb)[2]
    return 2 * n * block_size if rule is TWO_BLOCKS else n * unit


def cdb_length(opcode: int) -> int:
    """CDB length from the group code (SPC-4 4.2.5.1); 0 for variable/vendor groups."""
    return (6, 10, 10, 0, 16, 12, 0, 0)[opcode >> 5]
