"""Logical block provisioning (SBC-4 4.7): UNMAP, GET LBA STATUS, and what WRITE SAME
(whose path is :mod:`difs.scsi.rw`) does with them.

Thin and resource-provisioned LUs advertise LBPME/LBPRZ, LBPU, LBPWS and LBPWS10: UNMAP
and WRITE SAME with the UNMAP bit unmap through ``lu.deallocate`` and those blocks read
back as zeros.  A thin LU gives the space back (``store.discard``), GET LBA STATUS then
reports the blocks deallocated; a resource-provisioned ("thick") LU keeps it reserved
(``store.write_zeroes``), and reports blocks the store no longer holds data for as
anchored.  On a fully provisioned LU the UNMAP command is not in the command table and
WRITE SAME with UNMAP=1 is INVALID FIELD IN CDB.  The ANCHOR bit is not supported
(ANC_SUP=0), so ANCHOR=1 is always INVALID FIELD IN CDB.

WRITE SAME with UNMAP=1 unmaps the range whatever block it carries; without UNMAP a zero
block uses ``store.write_zeroes`` (keeps the range allocated) and any other pattern is
written block by block in chunks of up to 1 MiB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.status import GOOD
from difs.sam.cdb import U16, U32, U64
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

PROVISIONING_MAPPED, PROVISIONING_DEALLOCATED, PROVISIONING_ANCHORED = 0, 1, 2


def unmap(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    if cdb[1] & 0x01:
        raise S.invalid_field_in_cdb(1, 0)  # ANCHOR
    length = U16.unpack_from(cdb, 7)[0]
    lu.check_writable()
    if length == 0:
        return ScsiResult(GOOD)
    data = bytes(data_out or b"")[:length]
    if length < 8 or len(data) < length:
        raise S.parameter_list_length_error()
    bd_len = U16.unpack_from(data, 2)[0]
    if 8 + bd_len > length:
        raise S.parameter_list_length_error()
    count = bd_len // 16  # an incomplete trailing descriptor is ignored (SBC-4 5.32.2)
    if count > lu.max_unmap_descriptors:
        raise S.invalid_field_in_parameter_list(2)
    extents = []
    total = 0
    for i in range(count):
        pos = 8 + 16 * i
        lba = U64.unpack_from(data, pos)[0]
        n = U32.unpack_from(data, pos + 8)[0]
        if lba + n > lu.num_blocks or (n and lba >= lu.num_blocks):
            raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
        total += n
        if n:
            extents.append((lba, n))
    if total > lu.max_unmap_blocks:
        raise S.invalid_field_in_parameter_list(8)
    bs = lu.block_size
    for lba, n in extents:
        lu.deallocate(lba * bs, n * bs)
    return ScsiResult(GOOD)


def get_lba_status(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lba = U64.unpack_from(cdb, 2)[0]
    alloc = U32.unpack_from(cdb, 10)[0]
    if lba >= lu.num_blocks:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    if alloc < 24:
        max_desc = 1
    else:
        max_desc = min((alloc - 8) // 16, 1024)
    bs = lu.block_size
    unmapped = PROVISIONING_DEALLOCATED if lu.thin else PROVISIONING_ANCHORED
    descs = bytearray()
    pos, end = lba, lu.num_blocks
    while pos < end and len(descs) < max_desc * 16:
        if lu.lbpme:
            mapped, run = lu.store.map_status(pos * bs, (end - pos) * bs)
            blocks = max(1, -(-run // bs))
        else:
            mapped, blocks = True, end - pos
        blocks = min(blocks, end - pos, 0xFFFFFFFF)
        descs += U64.pack(pos) + U32.pack(blocks)
        descs += bytes((PROVISIONING_MAPPED if mapped else unmapped, 0, 0, 0))
        pos += blocks
    data = U32.pack(len(descs) + 4) + bytes(4) + bytes(descs)
    return ScsiResult(GOOD, data[:alloc])
