"""Block commands (SBC-4): READ, WRITE, WRITE ATOMIC, VERIFY, WRITE AND VERIFY, READ
CAPACITY, SYNCHRONIZE CACHE, PRE-FETCH, READ DEFECT DATA.

Handlers are plain functions ``handler(lu, cdb, data_out, nexus) -> ScsiResult``; the
command table in :mod:`difs.scsi.commands` has already rejected reserved bits.
READ/WRITE(10/16) are the hot path: one ``unpack_from``, a few comparisons and the
store call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.status import GOOD
from difs.scsi import sense as S
from difs.scsi.cdb import RW6, RW10, RW12, RW16, U16, U32, U64
from difs.scsi.result import ScsiResult

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

_RW10_unpack = RW10.unpack_from
_RW12_unpack = RW12.unpack_from
_RW16_unpack = RW16.unpack_from


# --- READ ------------------------------------------------------------------------------


def read_blocks(lu: LogicalUnit, lba: int, n: int, tl_byte: int) -> ScsiResult:
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(tl_byte)
    if not n:
        return ScsiResult(GOOD)
    shift = lu.block_shift
    return ScsiResult(GOOD, lu.store.pread(lba << shift, n << shift))


def read6(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    word, n = RW6.unpack_from(cdb)
    return read_blocks(lu, word & 0x1FFFFF, n or 256, 4)


def read10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # RDPROTECT: no protection information
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(7)
    if not n:
        return ScsiResult(GOOD)
    shift = lu.block_shift
    return ScsiResult(GOOD, lu.store.pread(lba << shift, n << shift))


def read12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)
    return read_blocks(lu, lba, n, 6)


def read16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(10)
    if not n:
        return ScsiResult(GOOD)
    shift = lu.block_shift
    return ScsiResult(GOOD, lu.store.pread(lba << shift, n << shift))


# --- WRITE -----------------------------------------------------------------------------


def data_out_blocks(lu: LogicalUnit, data_out, n: int) -> tuple[memoryview | bytes, int]:
    """Return (buffer, blocks) for the whole blocks of ``data_out`` the command may use.

    Shorter data-out than the transfer length: use the whole blocks received; a partial
    block is ILLEGAL REQUEST 0Eh/03h.  Longer data-out: truncated.
    """
    need = n << lu.block_shift
    got = len(data_out) if data_out is not None else 0
    if got == need:
        return data_out, n
    if got > need:
        return memoryview(data_out)[:need], n
    if got & (lu.block_size - 1):
        raise S.invalid_field_in_command_iu()
    return (memoryview(data_out) if got else b""), got >> lu.block_shift


def write_blocks(lu: LogicalUnit, lba: int, n: int, data_out, fua: int, tl_byte: int) -> ScsiResult:
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(tl_byte)
    if lu._write_protect:
        lu.check_writable()
    if not n:
        return ScsiResult(GOOD)
    shift = lu.block_shift
    if data_out is None or len(data_out) != n << shift:
        data_out, n = data_out_blocks(lu, data_out, n)
        if not n:
            return ScsiResult(GOOD)
    store = lu.store
    store.pwrite(lba << shift, data_out)
    if fua or not lu.write_cache:
        store.flush()
    return ScsiResult(GOOD)


def write6(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    word, n = RW6.unpack_from(cdb)
    return write_blocks(lu, word & 0x1FFFFF, n or 256, data_out, 0, 4)


def write10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT: no protection information
    return write_blocks(lu, lba, n, data_out, flags & 0x08, 7)


def write12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)
    return write_blocks(lu, lba, n, data_out, flags & 0x08, 6)


def write16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)
    return write_blocks(lu, lba, n, data_out, flags & 0x08, 10)


def write_atomic16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    """WRITE ATOMIC(16) (SBC-4 5.48): all of the blocks are written or none, also across
    a crash (the store journals the write), and they are stable when GOOD is returned.
    No alignment or granularity restriction; atomic boundaries are not supported."""
    flags = cdb[1]
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT: no protection information
    lba = U64.unpack_from(cdb, 2)[0]
    if U16.unpack_from(cdb, 10)[0]:
        raise S.invalid_field_in_cdb(10)  # ATOMIC BOUNDARY: not supported
    n = U16.unpack_from(cdb, 12)[0]
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


# --- VERIFY / WRITE AND VERIFY ---------------------------------------------------------


def first_difference(a, b) -> int:
    """Offset of the first byte where ``a`` and ``b`` differ (they must differ)."""
    a = memoryview(a).cast("B")
    b = memoryview(b).cast("B")
    lo, step = 0, 4096
    n = min(len(a), len(b))
    while lo < n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    for i in range(lo, min(lo + step, n)):
        if a[i] != b[i]:
            return i
    return n


def verify_blocks(lu: LogicalUnit, flags: int, lba: int, n: int, data_out) -> ScsiResult:
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # VRPROTECT
    bytchk = (flags >> 1) & 0x03
    if bytchk == 2:
        raise S.invalid_field_in_cdb(1, 2)
    lu.check_range(lba, n)
    if not n or not bytchk:
        return ScsiResult(GOOD)  # medium verification: the store has no media errors
    shift = lu.block_shift
    if bytchk == 1:
        if n > lu.max_transfer_blocks:
            raise S.invalid_field_in_cdb(1, 2)
        expected, n = data_out_blocks(lu, data_out, n)
        if not n:
            return ScsiResult(GOOD)
        actual = lu.store.pread(lba << shift, n << shift)
        if actual != expected:
            raise S.miscompare(first_difference(expected, actual))
        return ScsiResult(GOOD)
    # BYTCHK 11b: one block of data-out compared with every block in the range
    pattern, got = data_out_blocks(lu, data_out, 1)
    if not got:
        raise S.invalid_field_in_command_iu()
    pattern = bytes(pattern)
    bs = lu.block_size
    chunk_blocks = max(1, (1 << 20) >> shift)
    done = 0
    while done < n:
        k = min(chunk_blocks, n - done)
        actual = lu.store.pread((lba + done) << shift, k << shift)
        if actual != pattern * k:
            off = first_difference(pattern * k, actual)
            raise S.miscompare((off % bs) if done + off // bs else off)
        done += k
    return ScsiResult(GOOD)


def verify10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    return verify_blocks(lu, flags, lba, n, data_out)


def verify12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    return verify_blocks(lu, flags, lba, n, data_out)


def verify16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    return verify_blocks(lu, flags, lba, n, data_out)


def write_and_verify(lu: LogicalUnit, flags: int, lba: int, n: int, data_out, tl_byte: int) -> ScsiResult:
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT
    if (flags >> 1) & 0x03 > 1:
        raise S.invalid_field_in_cdb(1, 2)  # BYTCHK 10b/11b are reserved here
    # the data is verified against the medium, so it must reach stable storage first
    return write_blocks(lu, lba, n, data_out, 1, tl_byte)


def write_verify10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    return write_and_verify(lu, flags, lba, n, data_out, 7)


def write_verify12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    return write_and_verify(lu, flags, lba, n, data_out, 6)


def write_verify16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    return write_and_verify(lu, flags, lba, n, data_out, 10)


# --- cache management ------------------------------------------------------------------


def _sync_range(lu: LogicalUnit, lba: int, n: int) -> ScsiResult:
    if lba >= lu.num_blocks or lba + n > lu.num_blocks:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    lu.store.flush()
    return ScsiResult(GOOD)


def synchronize_cache10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, _, lba, _, n, _ = _RW10_unpack(cdb)
    return _sync_range(lu, lba, n)


def synchronize_cache16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, _, lba, n, _, _ = _RW16_unpack(cdb)
    return _sync_range(lu, lba, n)


def pre_fetch10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, _, lba, _, n, _ = _RW10_unpack(cdb)
    lu.check_range(lba, n)
    return ScsiResult(GOOD)  # no cache to fill: GOOD, not CONDITION MET


def pre_fetch16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, _, lba, n, _, _ = _RW16_unpack(cdb)
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
