"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18) between the logical
units of one target.

The parameter list names copy targets with *identification descriptor* CSCD descriptors
(E4h) carrying a VPD 83h LU designator; :meth:`ScsiTarget.find_lu_by_designator` resolves
them (a lone LU resolves only its own designators).  Segments are block-to-block (02h).
Copies run synchronously in chunks of at most 1 MiB under ``lu.rmw_lock``.

Errors, in the order they are checked (libiscsi's ExtendedCopy tests rely on the order):
parameter list shorter than its header says, or descriptor lists longer than MAXIMUM
DESCRIPTOR LIST LENGTH -> PARAMETER LIST LENGTH ERROR; too many CSCD / segment descriptors
-> 26h/06h / 26h/08h; unsupported descriptor type -> 26h/07h / 26h/09h; a CSCD that does
not resolve, a segment index out of range or an LBA beyond the end of a LU -> COPY ABORTED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.sense import (
    ASC_COPY_TARGET_DEVICE_NOT_REACHABLE,
    ASC_NO_ADDITIONAL_SENSE,
    ASC_TOO_MANY_SEGMENT_DESCRIPTORS,
    ASC_TOO_MANY_TARGET_DESCRIPTORS,
    ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE,
    ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE,
    COPY_ABORTED,
    ILLEGAL_REQUEST,
)
from difs.sam.status import GOOD
from difs.sam.cdb import U16, U32, U64
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult
from difs.scsi.sense import ScsiError

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

MAX_CSCD_DESCRIPTORS = 2
MAX_SEGMENT_DESCRIPTORS = 1
MAX_DESCRIPTOR_LIST_LENGTH = 1024
MAX_SEGMENT_LENGTH = 0xFFFF * 512
CSCD_IDENTIFICATION = 0xE4
SEGMENT_BLOCK_TO_BLOCK = 0x02
CSCD_LEN = 32
SEGMENT_B2B_LEN = 28
_CHUNK = 1 << 20

# LIST ID USAGE
_HOLD, _HOLD_OR_DISCARD, _DISCARD, _NO_LIST_ID = 0, 1, 2, 3


def _copy_aborted(asc: tuple[int, int] = ASC_NO_ADDITIONAL_SENSE, msg: str = "") -> ScsiError:
    return ScsiError(COPY_ABORTED, *asc, message=msg or "copy aborted")


def _resolve(lu: LogicalUnit, desc: bytes) -> LogicalUnit:
    if desc[1] & 0x1F != 0:  # peripheral device type: only block devices
        raise _copy_aborted(ASC_COPY_TARGET_DEVICE_NOT_REACHABLE, "CSCD is not a block device")
    designator = desc[4:24]
    if (designator[1] >> 4) & 0x03 != 0:
        raise _copy_aborted(ASC_COPY_TARGET_DEVICE_NOT_REACHABLE, "designator is not a LU's")
    target = lu.target
    if target is not None:
        found = target.find_lu_by_designator(designator)
    else:
        from difs.scsi.inquiry import lu_designators

        found = lu if any(_same_designator(d, designator) for d in lu_designators(lu)) else None
    if found is None:
        raise _copy_aborted(ASC_COPY_TARGET_DEVICE_NOT_REACHABLE, "CSCD not found")
    block_len = int.from_bytes(desc[29:32], "big")
    if block_len != found.block_size:
        raise _copy_aborted(ASC_COPY_TARGET_DEVICE_NOT_REACHABLE, "block length mismatch")
    return found


def _same_designator(ours: bytes, theirs: bytes) -> bool:
    n = ours[3]
    return (ours[0] & 0x0F == theirs[0] & 0x0F and ours[1] & 0x3F == theirs[1] & 0x3F
            and theirs[3] == n and ours[4:4 + n] == theirs[4:4 + n])


def extended_copy(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    length = U32.unpack_from(cdb, 10)[0]
    if length == 0:
        return ScsiResult(GOOD)
    data = bytes(data_out or b"")[:length]
    if length < 16 or len(data) < length:
        raise S.parameter_list_length_error()
    list_id, usage = data[0], (data[1] >> 3) & 0x03
    cscd_len = U16.unpack_from(data, 2)[0]
    seg_len = U32.unpack_from(data, 8)[0]
    inline_len = U32.unpack_from(data, 12)[0]
    if cscd_len + seg_len > MAX_DESCRIPTOR_LIST_LENGTH:
        raise S.parameter_list_length_error()
    if 16 + cscd_len + seg_len + inline_len > length:
        raise S.parameter_list_length_error()
    if inline_len:
        raise S.invalid_field_in_parameter_list(12)
    if usage == _NO_LIST_ID and list_id:
        raise S.invalid_field_in_parameter_list(0)
    cscds = [data[16 + i:16 + i + CSCD_LEN] for i in range(0, cscd_len, CSCD_LEN)]
    seg_area = data[16 + cscd_len:16 + cscd_len + seg_len]
    segments = []
    pos = 0
    while pos < len(seg_area):
        if pos + 4 > len(seg_area):
            raise S.parameter_list_length_error()
        dlen = 4 + U16.unpack_from(seg_area, pos + 2)[0]
        segments.append(seg_area[pos:pos + dlen])
        pos += dlen
    if cscd_len % CSCD_LEN or len(cscds) > MAX_CSCD_DESCRIPTORS:
        raise ScsiError(ILLEGAL_REQUEST, *ASC_TOO_MANY_TARGET_DESCRIPTORS)
    if len(segments) > MAX_SEGMENT_DESCRIPTORS:
        raise ScsiError(ILLEGAL_REQUEST, *ASC_TOO_MANY_SEGMENT_DESCRIPTORS)
    for desc in cscds:
        if desc[0] != CSCD_IDENTIFICATION:
            raise ScsiError(ILLEGAL_REQUEST, *ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE)
    for seg in segments:
        if seg[0] != SEGMENT_BLOCK_TO_BLOCK:
            raise ScsiError(ILLEGAL_REQUEST, *ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE)
        if len(seg) != SEGMENT_B2B_LEN:
            raise S.parameter_list_length_error()
    status = {"segments": 0, "bytes": 0, "status": 1}
    if usage in (_HOLD, _HOLD_OR_DISCARD):
        lu.copy_results[(nexus, list_id)] = status
    try:
        luns = [_resolve(lu, d) for d in cscds]
        for seg in segments:
            status["bytes"] += _copy_segment(luns, seg)
            status["segments"] += 1
    except ScsiError:
        status["status"] = 2  # completed with errors
        raise
    return ScsiResult(GOOD)


def _copy_segment(luns: list[LogicalUnit], seg: bytes) -> int:
    src_i, dst_i = U16.unpack_from(seg, 4)[0], U16.unpack_from(seg, 6)[0]
    if src_i >= len(luns) or dst_i >= len(luns):
        raise _copy_aborted(ASC_COPY_TARGET_DEVICE_NOT_REACHABLE, "CSCD index out of range")
    src, dst = luns[src_i], luns[dst_i]
    n = U16.unpack_from(seg, 10)[0]
    src_lba, dst_lba = U64.unpack_from(seg, 12)[0], U64.unpack_from(seg, 20)[0]
    if seg[1] & 0x02 and dst.block_size != src.block_size:  # DC: count in dest blocks
        n = n * dst.block_size // src.block_size
    if src_lba + n > src.num_blocks or dst_lba + n > dst.num_blocks:
        raise _copy_aborted(msg="segment beyond the end of a logical unit")
    dst.check_writable()
    bs = src.block_size
    per = max(1, _CHUNK // bs)
    done = 0
    with dst.rmw_lock:
        while done < n:
            k = min(per, n - done)
            data = src.store.pread((src_lba + done) * bs, k * bs)
            dst.store.pwrite((dst_lba + done) * bs, data)
            done += k
        if not dst.write_cache:
            dst.store.flush()
    return n * bs


def receive_copy_results(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    sa = cdb[1] & 0x1F
    list_id = cdb[2]
    alloc = U32.unpack_from(cdb, 10)[0]
    if sa == 0x00:  # COPY STATUS
        status = lu.copy_results.get((nexus, list_id))
        if status is None:
            raise S.invalid_field_in_cdb(2)
        body = bytearray(8)
        body[0] = status["status"]
        U16.pack_into(body, 1, min(status["segments"], 0xFFFF))
        body[3] = 0x00  # transfer count in bytes
        U32.pack_into(body, 4, min(status["bytes"], 0xFFFFFFFF))
        data = U32.pack(len(body)) + bytes(body)
    elif sa == 0x03:  # OPERATING PARAMETERS
        data = operating_parameters()
    else:
        raise S.invalid_field_in_cdb(1, 4)
    return ScsiResult(GOOD, data[:alloc])


def operating_parameters() -> bytes:
    body = bytearray(40)  # response bytes 4..43; implemented descriptor codes follow
    body[0] = 0x00  # SNLID: a list identifier is required
    U16.pack_into(body, 4, MAX_CSCD_DESCRIPTORS)
    U16.pack_into(body, 6, MAX_SEGMENT_DESCRIPTORS)
    U32.pack_into(body, 8, MAX_DESCRIPTOR_LIST_LENGTH)
    U32.pack_into(body, 12, MAX_SEGMENT_LENGTH)
    U32.pack_into(body, 16, 0)       # inline data
    U32.pack_into(body, 20, 0)       # held data
    U32.pack_into(body, 24, 0)       # stream transfer size
    U16.pack_into(body, 30, 1)       # total concurrent copies
    body[32] = 1                     # maximum concurrent copies
    body[33] = 9                     # data segment granularity 2^9
    body[39] = 2                     # implemented descriptor codes
    body += bytes((SEGMENT_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION))
    return U32.pack(len(body)) + bytes(body)
