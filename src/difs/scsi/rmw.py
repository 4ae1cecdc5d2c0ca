"""Read-modify-write commands: COMPARE AND WRITE and ORWRITE(16) (SBC-4 5.3, 5.9).

Both run under ``lu.rmw_lock`` so two of them never interleave on the same LU, even when
an adapter executes commands from several threads (libiscsi's MultipathIO tests race
COMPARE AND WRITE through two sessions).

COMPARE AND WRITE takes exactly ``2 * NUMBER OF LOGICAL BLOCKS`` blocks of data-out
(verify data, then write data).  Any other data-out length - including data with NUMBER
OF LOGICAL BLOCKS = 0 - is ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at byte 13.
A miscompare is MISCOMPARE 1Dh/00h with INFORMATION = offset of the first differing
byte within the verify data; nothing is written then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.status import GOOD
from difs.sam.cdb import RW16, U64
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult
from difs.scsi.rw import data_out_blocks, first_difference

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus


def compare_and_write(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    flags = cdb[1]
    lba = U64.unpack_from(cdb, 2)[0]
    n = cdb[13]
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT
    if n > lu.max_compare_write_blocks:
        raise S.invalid_field_in_cdb(13)
    lu.check_range(lba, n)
    lu.check_writable()
    shift = lu.block_shift
    got = len(data_out) if data_out is not None else 0
    if got != (2 * n) << shift:
        raise S.invalid_field_in_cdb(13)
    if not n:
        return ScsiResult(GOOD)
    half = n << shift
    view = memoryview(data_out)
    verify, write = view[:half], view[half:]
    with lu.rmw_lock:
        current = lu.store.pread(lba << shift, half)
        if current != verify:
            raise S.miscompare(first_difference(verify, current))
        lu.store.pwrite(lba << shift, write)
        if flags & 0x08 or not lu.write_cache:
            lu.store.flush()
    return ScsiResult(GOOD)


def orwrite16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = RW16.unpack_from(cdb)
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # ORPROTECT
    lu.check_range(lba, n)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(10)
    lu.check_writable()
    if not n:
        return ScsiResult(GOOD)
    data, n = data_out_blocks(lu, data_out, n)
    if not n:
        return ScsiResult(GOOD)
    shift = lu.block_shift
    size = n << shift
    with lu.rmw_lock:
        current = lu.store.pread(lba << shift, size)
        merged = (int.from_bytes(current, "big") | int.from_bytes(data, "big")).to_bytes(size, "big")
        lu.store.pwrite(lba << shift, merged)
        if flags & 0x08 or not lu.write_cache:
            lu.store.flush()
    return ScsiResult(GOOD)
