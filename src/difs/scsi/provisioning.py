"""Logical block provisioning (SBC-4 4.7): WRITE SAME(10/16), UNMAP, GET LBA STATUS.

A thin LU (``thin=True``) advertises LBPME/LBPRZ, LBPU, LBPWS and LBPWS10: UNMAP and
WRITE SAME with the UNMAP bit deallocate through ``store.discard`` and those blocks read
back as zeros.  On a fully provisioned LU the UNMAP command is not in the command table
and WRITE SAME with UNMAP=1 is INVALID FIELD IN CDB.  Anchored state is not supported
(ANC_SUP=0), so ANCHOR=1 is always INVALID FIELD IN CDB.

WRITE SAME of a zero block without UNMAP uses ``store.write_zeroes`` (keeps the range
allocated); with UNMAP it deallocates; any other pattern is written block by block in
chunks of up to 1 MiB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.scsi import sense as S
from difs.scsi.cdb import RW10, RW16, U16, U32, U64
from difs.scsi.result import ScsiResult
from difs.scsi.sense import GOOD

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

_CHUNK = 1 << 20
PROVISIONING_MAPPED, PROVISIONING_DEALLOCATED = 0, 1


def _write_same(lu: LogicalUnit, flags: int, lba: int, n: int, data_out, ndob: bool,
                nb_byte: int) -> ScsiResult:
    if flags & 0xE0:
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT
    if n == 0:
        raise S.invalid_field_in_cdb(nb_byte)  # WSNZ=1
    if n > lu.max_write_same_blocks:
        raise S.invalid_field_in_cdb(nb_byte)
    lu.check_range(lba, n)
    lu.check_writable()
    unmap = bool(flags & 0x08)
    if flags & 0x10:
        raise S.invalid_field_in_cdb(1, 4)  # ANCHOR: anchored LBAs are not supported
    if unmap and not lu.thin:
        raise S.invalid_field_in_cdb(1, 3)
    bs = lu.block_size
    if ndob:
        if data_out:
            raise S.invalid_field_in_command_iu()
        block = None
    else:
        if data_out is None or len(data_out) != bs:
            raise S.invalid_field_in_command_iu()
        block = bytes(data_out)
    store = lu.store
    offset, length = lba * bs, n * bs
    if block is None or not any(block):
        if unmap:
            store.discard(offset, length)
        else:
            store.write_zeroes(offset, length)
    else:
        per_chunk = max(1, _CHUNK // bs)
        chunk = block * min(per_chunk, n)
        done = 0
        while done < n:
            k = min(per_chunk, n - done)
            store.pwrite(offset + done * bs, chunk if k * bs == len(chunk) else chunk[:k * bs])
            done += k
    if not lu.write_cache:
        store.flush()
    return ScsiResult(GOOD)


def write_same10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = RW10.unpack_from(cdb)
    return _write_same(lu, flags, lba, n, data_out, False, 7)


def write_same16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = RW16.unpack_from(cdb)
    return _write_same(lu, flags & 0xFE, lba, n, data_out, bool(flags & 0x01), 10)


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
        lu.store.discard(lba * bs, n * bs)
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
    descs = bytearray()
    pos, end = lba, lu.num_blocks
    while pos < end and len(descs) < max_desc * 16:
        if lu.thin:
            mapped, run = lu.store.map_status(pos * bs, (end - pos) * bs)
            blocks = max(1, -(-run // bs))
        else:
            mapped, blocks = True, end - pos
        blocks = min(blocks, end - pos, 0xFFFFFFFF)
        descs += U64.pack(pos) + U32.pack(blocks)
        descs += bytes((PROVISIONING_MAPPED if mapped else PROVISIONING_DEALLOCATED, 0, 0, 0))
        pos += blocks
    data = U32.pack(len(descs) + 4) + bytes(4) + bytes(descs)
    return ScsiResult(GOOD, data[:alloc])
