"""Block commands (SBC-4) that do not move logical blocks through the one read/write path:
WRITE ATOMIC, READ CAPACITY, SYNCHRONIZE CACHE, PRE-FETCH, READ DEFECT DATA.

READ, WRITE, WRITE AND VERIFY, VERIFY and WRITE SAME are :mod:`difs.scsi.rw` (plain and
PI-formatted units alike).  Handlers are plain functions
``handler(lu, cdb, data_out, nexus) -> ScsiResult``; the command table in
:mod:`difs.scsi.commands` has already rejected reserved bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.status import GOOD
from difs.sam import cdb as C
from difs.sam.cdb import LAYOUTS, U16, U32, U64
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult
from difs.scsi.rw import data_out_blocks

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

_fields10 = LAYOUTS[C.SYNCHRONIZE_CACHE_10].fields  # (byte 1, LBA, length) of a 10-byte CDB
_fields16 = LAYOUTS[C.SYNCHRONIZE_CACHE_16].fields
_fields_atomic = LAYOUTS[C.WRITE_ATOMIC_16].fields


# --- WRITE ATOMIC ------------------------------------------------------------------------


def write_atomic16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    """WRITE ATOMIC(16) (SBC-4 5.48): all of the blocks are written or none, also across
    a crash (the store journals the write), and they are stable when GOOD is returned.
    No alignment or granularity restriction; atomic boundaries are not supported."""
    flags, lba, n = _fields_atomic(cdb)
    if flags & C.PROTECT_MASK:
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT: only 000b (PI generated)
    if U16.unpack_from(cdb, 10)[0]:
        raise S.invalid_field_in_cdb(10)  # ATOMIC BOUNDARY: not supported
    if n > lu.max_atomic_blocks:
        raise S.invalid_field_in_cdb(12)
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    if lu._write_protect:
        lu.check_writable()
    if not n:
        return ScsiResult(GOOD)
    data_out, n = data_out_blocks(lu, data_out, n)
    if n:
        lu.store.pwrite_atomic(lba << lu.block_shift, data_out)
    return ScsiResult(GOOD)


# --- cache management ------------------------------------------------------------------


def _sync_range(lu: LogicalUnit, lba: int, n: int) -> ScsiResult:
    if lba >= lu.num_blocks or lba + n > lu.num_blocks:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    lu.store.flush()
    return ScsiResult(GOOD)


def synchronize_cache10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, lba, n = _fields10(cdb)
    return _sync_range(lu, lba, n)


def synchronize_cache16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, lba, n = _fields16(cdb)
    return _sync_range(lu, lba, n)


def pre_fetch10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, lba, n = _fields10(cdb)
    lu.check_range(lba, n)
    return ScsiResult(GOOD)  # no cache to fill: GOOD, not CONDITION MET


def pre_fetch16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, lba, n = _fields16(cdb)
    lu.check_range(lba, n)
    return ScsiResult(GOOD)


# --- capacity --------------------------------------------------------------------------


def read_capacity10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lba = U32.unpack_from(cdb, 2)[0]
    if lba and not cdb[8] & 0x01:
        raise S.invalid_field_in_cdb(2)  # LBA given without PMI
    last = min(lu.num_blocks - 1, 0xFFFFFFFF)
    return ScsiResult(GOOD, U32.pack(last & 0xFFFFFFFF) + U32.pack(lu.block_size))


def read_capacity16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lba = U64.unpack_from(cdb, 2)[0]
    if lba and not cdb[14] & 0x01:
        raise S.invalid_field_in_cdb(2)
    alloc = U32.unpack_from(cdb, 10)[0]
    buf = bytearray(32)
    U64.pack_into(buf, 0, max(lu.num_blocks - 1, 0))
    U32.pack_into(buf, 8, lu.block_size)
    if lu.pi_type:
        buf[12] = ((lu.pi_type - 1) << 1) | 0x01  # P_TYPE, PROT_EN (P_I_EXPONENT 0)
    buf[13] = lu.lbppbe & 0x0F
    if lu.lbpme:
        buf[14] = 0xC0  # LBPME, LBPRZ
    return ScsiResult(GOOD, bytes(buf[:alloc]))


# --- defect data -----------------------------------------------------------------------


def read_defect_data10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    alloc = int.from_bytes(cdb[7:9], "big")
    hdr = bytes((0, cdb[2] & 0x1F, 0, 0))  # echo PLISTV/GLISTV/format; empty lists
    return ScsiResult(GOOD, hdr[:alloc])


def read_defect_data12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    alloc = U32.unpack_from(cdb, 6)[0]
    hdr = bytes((0, cdb[1] & 0x1F, 0, 0, 0, 0, 0, 0))
    return ScsiResult(GOOD, hdr[:alloc])
