"""MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 6.11-6.14, SBC-4 6.5).

Mode pages: caching (08h, WCE changeable), control (0Ah, D_SENSE and SWP changeable;
ATO=1, not changeable, on a PI-formatted unit),
informational exceptions control (1Ch, fixed).  Parameters are shared by all I_T
nexuses; a change made through one nexus queues MODE PARAMETERS CHANGED (2Ah/01h) for
the others.  Saved values are not implemented: page control 11b and SP=1 are rejected
with SAVING PARAMETERS NOT SUPPORTED / INVALID FIELD IN CDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from difs.sam.sense import ASC_SAVING_PARAMETERS_NOT_SUPPORTED, ILLEGAL_REQUEST
from difs.sam.status import GOOD
from difs.sam.cdb import U16, U32, U64
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult
from difs.scsi.sense import ScsiError

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3
ALL_PAGES = 0x3F


def _caching(lu: LogicalUnit, pc: int) -> bytearray:
    page = bytearray(20)
    page[0], page[1] = 0x08, 0x12
    if pc == PC_CHANGEABLE:
        page[2] = 0x04
    elif pc == PC_DEFAULT:
        page[2] = 0x04 if lu.default_write_cache else 0
    else:
        page[2] = 0x04 if lu.write_cache else 0
    return page


def _control(lu: LogicalUnit, pc: int) -> bytearray:
    page = bytearray(12)
    page[0], page[1] = 0x0A, 0x0A
    if pc == PC_CHANGEABLE:
        page[2] = 0x04  # D_SENSE
        page[4] = 0x08  # SWP
        return page
    page[2] = 0x02  # GLTSD: no log parameters are saved
    page[3] = 0x10  # queue algorithm modifier 1: unrestricted reordering
    if pc == PC_CURRENT:
        page[2] |= 0x04 if lu.d_sense else 0
        page[4] = 0x08 if lu.swp else 0
    if lu.pi_type:
        page[5] = 0x80  # ATO: the application tag belongs to the application client
    U16.pack_into(page, 8, 0xFFFF)  # busy timeout period: unlimited
    return page


def _informational_exceptions(lu: LogicalUnit, pc: int) -> bytearray:
    page = bytearray(12)
    page[0], page[1] = 0x1C, 0x0A
    if pc != PC_CHANGEABLE:
        page[2] = 0x08  # DEXCPT: no informational exception reporting
    return page


PAGES: dict[int, Callable[[LogicalUnit, int], bytearray]] = {
    0x08: _caching,
    0x0A: _control,
    0x1C: _informational_exceptions,
}


def _pages(lu: LogicalUnit, page_code: int, subpage: int, pc: int) -> bytes:
    if page_code == ALL_PAGES:
        if subpage not in (0x00, 0xFF):
            raise S.invalid_field_in_cdb(3)
        return b"".join(bytes(fn(lu, pc)) for _, fn in sorted(PAGES.items()))
    fn = PAGES.get(page_code)
    if fn is None:
        raise S.invalid_field_in_cdb(2, 5)
    if subpage not in (0x00, 0xFF):
        raise S.invalid_field_in_cdb(3)
    return bytes(fn(lu, pc))


def _device_specific(lu: LogicalUnit) -> int:
    return (0x80 if lu.write_protected else 0) | 0x10  # WP, DPOFUA


def _block_descriptor(lu: LogicalUnit, long_lba: bool) -> bytes:
    if long_lba:
        return U64.pack(lu.num_blocks) + b"\x00\x00\x00\x00" + U32.pack(lu.block_size)
    return U32.pack(min(lu.num_blocks, 0xFFFFFFFF)) + b"\x00" + lu.block_size.to_bytes(3, "big")


def _sense(lu: LogicalUnit, cdb, ten: bool) -> bytes:
    dbd = cdb[1] & 0x08
    llbaa = ten and bool(cdb[1] & 0x10)
    pc = cdb[2] >> 6
    if pc == PC_SAVED:
        raise ScsiError(ILLEGAL_REQUEST, *ASC_SAVING_PARAMETERS_NOT_SUPPORTED,
                        field_byte=2, field_bit=7)
    pages = _pages(lu, cdb[2] & 0x3F, cdb[3], pc)
    bdesc = b"" if dbd else _block_descriptor(lu, llbaa)
    if ten:
        hdr = bytearray(8)
        U16.pack_into(hdr, 0, 6 + len(bdesc) + len(pages))
        hdr[3] = _device_specific(lu)
        hdr[4] = 0x01 if (llbaa and bdesc) else 0
        U16.pack_into(hdr, 6, len(bdesc))
    else:
        hdr = bytearray(4)
        hdr[0] = min(3 + len(bdesc) + len(pages), 0xFF)
        hdr[2] = _device_specific(lu)
        hdr[3] = len(bdesc)
    return bytes(hdr) + bdesc + pages


def mode_sense6(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    return ScsiResult(GOOD, _sense(lu, cdb, False)[:cdb[4]])


def mode_sense10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    return ScsiResult(GOOD, _sense(lu, cdb, True)[:U16.unpack_from(cdb, 7)[0]])


# --- MODE SELECT -----------------------------------------------------------------------


def _select(lu: LogicalUnit, cdb, data_out, nexus: Nexus, ten: bool) -> ScsiResult:
    length = U16.unpack_from(cdb, 7)[0] if ten else cdb[4]
    if cdb[1] & 0x01:
        raise S.invalid_field_in_cdb(1, 0)  # SP: saved pages are not implemented
    if not length:
        return ScsiResult(GOOD)
    if not cdb[1] & 0x10:
        raise S.invalid_field_in_cdb(1, 4)  # PF=0: vendor-specific page format
    data = bytes(data_out or b"")[:length]
    hdr_len = 8 if ten else 4
    if len(data) < length or length < hdr_len:
        raise S.parameter_list_length_error()
    if ten:
        medium, long_lba, bd_len = data[2], data[4] & 0x01, U16.unpack_from(data, 6)[0]
    else:
        medium, long_lba, bd_len = data[1], 0, data[3]
    if medium:
        raise S.invalid_field_in_parameter_list(2 if ten else 1)
    pos = hdr_len
    if bd_len:
        size = 16 if long_lba else 8
        if bd_len != size or pos + bd_len > length:
            raise S.parameter_list_length_error() if pos + bd_len > length else \
                S.invalid_field_in_parameter_list(6 if ten else 3)
        bd = data[pos:pos + bd_len]
        blocks = U64.unpack_from(bd)[0] if long_lba else U32.unpack_from(bd)[0]
        blen = U32.unpack_from(bd, 12)[0] if long_lba else int.from_bytes(bd[5:8], "big")
        if blen not in (0, lu.block_size):
            raise S.invalid_field_in_parameter_list(pos + (12 if long_lba else 5))
        if blocks not in (0, lu.num_blocks, min(lu.num_blocks, 0xFFFFFFFF)):
            raise S.invalid_field_in_parameter_list(pos)
        pos += bd_len
    changes: dict[str, bool] = {}
    while pos < length:
        if pos + 2 > length:
            raise S.parameter_list_length_error()
        code = data[pos] & 0x3F
        if data[pos] & 0x80:
            raise S.invalid_field_in_parameter_list(pos, 7)  # PS is reserved here
        if data[pos] & 0x40:
            raise S.invalid_field_in_parameter_list(pos, 6)  # no subpages implemented
        fn = PAGES.get(code)
        if fn is None:
            raise S.invalid_field_in_parameter_list(pos, 5)
        current, mask = fn(lu, PC_CURRENT), fn(lu, PC_CHANGEABLE)
        plen = data[pos + 1]
        if plen != current[1]:
            raise S.invalid_field_in_parameter_list(pos + 1)
        if pos + 2 + plen > length:
            raise S.parameter_list_length_error()
        page = data[pos:pos + 2 + plen]
        for i in range(2, len(page)):
            diff = (page[i] ^ current[i]) & ~mask[i] & 0xFF
            if diff:
                raise S.invalid_field_in_parameter_list(pos + i, diff.bit_length() - 1)
        if code == 0x08:
            changes["write_cache"] = bool(page[2] & 0x04)
        elif code == 0x0A:
            changes["d_sense"] = bool(page[2] & 0x04)
            changes["swp"] = bool(page[4] & 0x08)
        pos += 2 + plen
    lu.set_mode(by=nexus, **changes)
    return ScsiResult(GOOD)


def mode_select6(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    return _select(lu, cdb, data_out, nexus, False)


def mode_select10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    return _select(lu, cdb, data_out, nexus, True)
