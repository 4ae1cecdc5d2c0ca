"""INQUIRY: standard data and the vital product data pages (SPC-4 / SBC-4).

Supported VPD pages: 00h supported pages, 80h unit serial number, 83h device
identification, 86h extended INQUIRY, B0h block limits, B1h block device characteristics, B2h logical block
provisioning (thin and resource-provisioned LUs).

Device identification (83h) designators, in order: NAA 6 (from the volume uuid), T10
vendor id (vendor + uuid hex), an optional SCSI name string for the LU, and - because they
depend on the port the command came through - relative target port, target port name and
target device name (iSCSI SCSI name strings).
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

# version descriptors: SAM-5, SPC-4, SBC-3, SBC-4, iSCSI (libiscsi looks for 04C0h)
VERSION_DESCRIPTORS = (0x00A0, 0x0460, 0x04C0, 0x0600, 0x0960)

PROTO_ISCSI = 0x5
CODE_BINARY, CODE_ASCII, CODE_UTF8 = 1, 2, 3
ASSOC_LU, ASSOC_PORT, ASSOC_TARGET = 0, 1, 2
TYPE_T10, TYPE_NAA, TYPE_RELATIVE_PORT, TYPE_SCSI_NAME = 1, 3, 4, 8


def _ascii(text: str, size: int) -> bytes:
    raw = text.encode("ascii", "replace")[:size]
    return raw + b" " * (size - len(raw))


def standard_inquiry(lu: LogicalUnit | None, *, present: bool = True) -> bytes:
    """96 bytes of standard INQUIRY data; ``present=False`` gives the 'no LU here' form
    (peripheral qualifier 011b, device type 1Fh)."""
    buf = bytearray(96)
    buf[0] = 0x00 if present else 0x7F
    buf[2] = 0x06  # SPC-4
    buf[3] = 0x12  # HISUP, response data format 2
    buf[4] = len(buf) - 5
    if lu is not None and lu.xcopy_supported:
        buf[5] = 0x08  # 3PC
    if lu is not None and lu.pi_type:
        buf[5] |= 0x01  # PROTECT: formatted with protection information
    buf[7] = 0x02  # CMDQUE
    vendor, product, rev = ("DIFS", "difs volume", "0001")
    if lu is not None:
        ident = lu.identity
        vendor, product, rev = ident.vendor, ident.product, ident.revision
    buf[8:16] = _ascii(vendor, 8)
    buf[16:32] = _ascii(product, 16)
    buf[32:36] = _ascii(rev, 4)
    for i, desc in enumerate(VERSION_DESCRIPTORS):
        U16.pack_into(buf, 58 + 2 * i, desc)
    return bytes(buf)


def _designator(proto: int, code_set: int, assoc: int, dtype: int, value: bytes,
                *, piv: bool = False) -> bytes:
    b0 = (proto << 4 | code_set) if piv else code_set
    b1 = (0x80 if piv else 0) | (assoc << 4) | dtype
    return bytes((b0, b1, 0, len(value))) + value


def _scsi_name(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\x00"
    return raw + b"\x00" * (-len(raw) % 4)


def lu_designators(lu: LogicalUnit) -> list[bytes]:
    """The LU-associated designators (also used to match EXTENDED COPY targets)."""
    ident = lu.identity
    out = [
        _designator(0, CODE_BINARY, ASSOC_LU, TYPE_NAA, ident.naa),
        _designator(0, CODE_ASCII, ASSOC_LU, TYPE_T10,
                    _ascii(ident.vendor, 8) + ident.uuid.hex.encode()),
    ]
    if ident.device_name:
        out.append(_designator(0, CODE_UTF8, ASSOC_LU, TYPE_SCSI_NAME, _scsi_name(ident.device_name)))
    return out


def _page_device_identification(lu: LogicalUnit, nexus: Nexus) -> bytes:
    descs = lu_designators(lu)
    descs.append(_designator(PROTO_ISCSI, CODE_BINARY, ASSOC_PORT, TYPE_RELATIVE_PORT,
                             U32.pack(nexus.relative_port & 0xFFFF), piv=True))
    if nexus.target_port:
        descs.append(_designator(PROTO_ISCSI, CODE_UTF8, ASSOC_PORT, TYPE_SCSI_NAME,
                                 _scsi_name(nexus.target_port), piv=True))
        descs.append(_designator(PROTO_ISCSI, CODE_UTF8, ASSOC_TARGET, TYPE_SCSI_NAME,
                                 _scsi_name(nexus.target_name), piv=True))
    return b"".join(descs)


def _page_serial(lu: LogicalUnit, nexus: Nexus) -> bytes:
    return lu.identity.serial.encode("ascii", "replace")


def _page_extended_inquiry(lu: LogicalUnit, nexus: Nexus) -> bytes:
    body = bytearray(60)
    if lu.pi_type:
        # SPT: the formatted type (000b type 1, 100b type 3; FORMAT UNIT is not offered),
        # GRD_CHK, APP_CHK (when the volume has an expected tag), REF_CHK (type 1)
        spt = 0 if lu.pi_type == 1 else 4
        body[0] = (spt << 3) | 0x04 | (0x02 if lu.app_tag_checked else 0) \
            | (0x01 if lu.pi_type == 1 else 0)
    body[1] = 0x07  # HEADSUP, ORDSUP, SIMPSUP
    body[2] = 0x01 if lu.write_cache else 0x00  # V_SUP: volatile cache present
    return bytes(body)


def _page_block_limits(lu: LogicalUnit, nexus: Nexus) -> bytes:
    """Block limits (SBC-4 6.6.4); ``body`` offsets are page offsets minus 4."""
    body = bytearray(60)
    body[0] = 0x00  # WSNZ=0: WRITE SAME with 0 blocks means "to the last LBA"
    body[1] = lu.max_compare_write_blocks
    U16.pack_into(body, 2, lu.granularity_blocks)  # optimal transfer length granularity
    U32.pack_into(body, 4, lu.max_transfer_blocks)
    U32.pack_into(body, 8, lu.max_transfer_blocks)  # optimal transfer length
    if lu.lbpme:
        U32.pack_into(body, 16, lu.max_unmap_blocks)
        U32.pack_into(body, 20, lu.max_unmap_descriptors)
        U32.pack_into(body, 24, lu.granularity_blocks)  # optimal unmap granularity
        U32.pack_into(body, 28, 0x80000000)  # UGAVALID, alignment 0
    U64.pack_into(body, 32, lu.max_write_same_blocks)
    if lu.max_atomic_blocks:
        U32.pack_into(body, 40, lu.max_atomic_blocks)  # maximum atomic transfer length
        # atomic alignment 0, atomic transfer length granularity 0: no restriction;
        # atomic boundaries are not supported (both boundary fields 0)
    return bytes(body)


def _page_block_device_characteristics(lu: LogicalUnit, nexus: Nexus) -> bytes:
    body = bytearray(60)
    U16.pack_into(body, 0, 0x0001)  # non-rotating medium
    return bytes(body)


def _page_logical_block_provisioning(lu: LogicalUnit, nexus: Nexus) -> bytes:
    body = bytearray(4)
    if lu.lbpme:
        body[1] = 0xE4  # LBPU, LBPWS, LBPWS10, LBPRZ=001b
        body[2] = 0x02 if lu.thin else 0x01  # provisioning type: thin / resource
    return bytes(body)


def _page_supported(lu: LogicalUnit, nexus: Nexus) -> bytes:
    return bytes(supported_pages(lu))


PAGES = {
    0x00: _page_supported,
    0x80: _page_serial,
    0x83: _page_device_identification,
    0x86: _page_extended_inquiry,
    0xB0: _page_block_limits,
    0xB1: _page_block_device_characteristics,
    0xB2: _page_logical_block_provisioning,
}


def supported_pages(lu: LogicalUnit) -> list[int]:
    pages = sorted(PAGES)
    if not lu.lbpme:
        pages.remove(0xB2)
    return pages


def vpd_page(lu: LogicalUnit, page: int, nexus: Nexus) -> bytes:
    if page not in supported_pages(lu):
        raise S.invalid_field_in_cdb(2)
    body = PAGES[page](lu, nexus)
    return bytes((0x00, page)) + U16.pack(len(body)) + body


def inquiry(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    evpd = cdb[1] & 0x01
    page = cdb[2]
    alloc = U16.unpack_from(cdb, 3)[0]
    if not evpd:
        if page:
            raise S.invalid_field_in_cdb(2)
        data = standard_inquiry(lu)
    else:
        data = vpd_page(lu, page, nexus)
    return ScsiResult(GOOD, data[:alloc])
