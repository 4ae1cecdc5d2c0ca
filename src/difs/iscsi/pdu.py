"""PDU codec: one precompiled ``struct.Struct`` per Basic Header Segment layout (RFC 7143 ch. 11).

Two levels live here:

* **Structs** (``SCSI_COMMAND``, ``DATA_IN``, ...) laid over the full 48-byte BHS. The per-I/O
  path of the connections packs and unpacks these directly: no object per PDU.
  Bytes 4..7 of every BHS are read/written as one 32-bit word ``ahs_dsl``
  (TotalAHSLength << 24 | DataSegmentLength).
* **Typed PDUs** (slotted dataclasses, one per opcode) with ``pull_pdu(framed) -> typed`` and
  ``encode_pdu(typed) -> bytes``. They serve the edges (login, text, task management, tests) where
  clarity matters more than a microsecond.

Helpers for the Additional Header Segments (extended CDB, bidirectional read length) and for the
8-byte LUN field (flat / peripheral addressing, SAM-5 4.7) are here too.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from .constants import (
    BHS_LENGTH,
    CMD_ATTR_MASK,
    CMD_READ,
    CMD_WRITE,
    DATA_ACK,
    DATA_OVERFLOW,
    DATA_STATUS,
    DATA_UNDERFLOW,
    FINAL_BIT,
    IMMEDIATE_BIT,
    LOGIN_CONTINUE,
    LOGIN_TRANSIT,
    OPCODE_MASK,
    RESERVED_TAG,
    RSP_BIDI_OVERFLOW,
    RSP_BIDI_UNDERFLOW,
    RSP_OVERFLOW,
    RSP_UNDERFLOW,
    TEXT_CONTINUE,
    AhsType,
    Opcode,
    RejectReason,
)
from .digest import PADDING, data_digest, header_digest
from .errors import PduRejected

# ---------------------------------------------------------------------------------------------
# BHS layouts. Field order is the wire order; "x" are reserved bytes.
# ---------------------------------------------------------------------------------------------
#                       op flags rsvd ahs_dsl lun itt edtl cmdsn expstatsn cdb
SCSI_COMMAND = struct.Struct(">BBHIQIIII16s")
#                       op flags response status ahs_dsl rsvd itt snacktag statsn expcmdsn
#                       maxcmdsn expdatasn bidi_residual residual
SCSI_RESPONSE = struct.Struct(">BBBBIQIIIIIIII")
#                       op flags rsvd ahs_dsl lun itt ref_itt cmdsn expstatsn refcmdsn expdatasn
TASK_MGMT_REQUEST = struct.Struct(">BBHIQIIIIII8x")
#                       op flags response rsvd ahs_dsl rsvd itt rsvd statsn expcmdsn maxcmdsn
TASK_MGMT_RESPONSE = struct.Struct(">BBBBIQIIIII12x")
#                       op flags rsvd ahs_dsl lun itt ttt rsvd expstatsn rsvd datasn offset
DATA_OUT = struct.Struct(">BBHIQIIIIIII4x")
#                       op flags rsvd status ahs_dsl lun itt ttt statsn expcmdsn maxcmdsn datasn
#                       offset residual
DATA_IN = struct.Struct(">BBBBIQIIIIIIII")
#                       op flags rsvd ahs_dsl lun itt ttt statsn expcmdsn maxcmdsn r2tsn offset
#                       desired_length
R2T = struct.Struct(">BBHIQIIIIIIII")
#                       op flags rsvd ahs_dsl lun tag rsvd statsn expcmdsn maxcmdsn event vcode
#                       param1 param2 param3
ASYNC_MESSAGE = struct.Struct(">BBHIQIIIIIBBHHH4x")
#                       op flags rsvd ahs_dsl lun itt ttt cmdsn expstatsn   (also NOP-Out)
TEXT_REQUEST = struct.Struct(">BBHIQIIII16x")
#                       op flags rsvd ahs_dsl lun itt ttt statsn expcmdsn maxcmdsn  (also NOP-In)
TEXT_RESPONSE = struct.Struct(">BBHIQIIIII12x")
#                       op flags vmax vmin ahs_dsl isid tsih itt cid cmdsn expstatsn
LOGIN_REQUEST = struct.Struct(">BBBBI6sHIH2xII16x")
#                       op flags vmax vactive ahs_dsl isid tsih itt statsn expcmdsn maxcmdsn
#                       status_class status_detail
LOGIN_RESPONSE = struct.Struct(">BBBBI6sHI4xIIIBB10x")
#                       op flags rsvd ahs_dsl itt cid cmdsn expstatsn
LOGOUT_REQUEST = struct.Struct(">BBHI8xIH2xII16x")
#                       op flags response rsvd ahs_dsl itt statsn expcmdsn maxcmdsn time2wait
#                       time2retain
LOGOUT_RESPONSE = struct.Struct(">BBBBI8xI4xIII4xHH4x")
#                       op flags rsvd ahs_dsl lun itt ttt expstatsn begrun runlength
SNACK_REQUEST = struct.Struct(">BBHIQII4xI8xII")
#                       op flags reason rsvd ahs_dsl tag statsn expcmdsn maxcmdsn datasn
REJECT = struct.Struct(">BBBBI8xI4xIIII8x")
NOP_OUT = TEXT_REQUEST
NOP_IN = TEXT_RESPONSE

_AHS_HEADER = struct.Struct(">HB")
_U32 = struct.Struct(">I")

for _s in (SCSI_COMMAND, SCSI_RESPONSE, TASK_MGMT_REQUEST, TASK_MGMT_RESPONSE, DATA_OUT, DATA_IN,
           R2T, ASYNC_MESSAGE, TEXT_REQUEST, TEXT_RESPONSE, LOGIN_REQUEST, LOGIN_RESPONSE,
           LOGOUT_REQUEST, LOGOUT_RESPONSE, SNACK_REQUEST, REJECT):
    assert _s.size == BHS_LENGTH, _s.format


def ahs_dsl(ahs_length: int, data_length: int) -> int:
    """The BHS word at bytes 4..7: TotalAHSLength (in 4-byte words) and DataSegmentLength."""
    return ((ahs_length >> 2) << 24) | data_length


# ---------------------------------------------------------------------------------------------
# LUN field (8 bytes, SAM-5 4.7): peripheral (00b) and flat (01b) single-level addressing
# ---------------------------------------------------------------------------------------------


def decode_lun(field_value: int) -> int:
    """LUN number from the 64-bit LUN field. Single-level peripheral/flat addressing is decoded;
    any other addressing method is returned as the raw 64-bit value (never a valid small LUN)."""
    top = field_value >> 48
    if top >> 14 <= 1:  # address method 00b (peripheral, bus 0) or 01b (flat)
        if field_value & 0xFFFF_FFFF_FFFF == 0:
            return top & 0x3FFF
    return field_value


def encode_lun(lun: int) -> int:
    """64-bit LUN field for ``lun``: peripheral addressing below 256, flat addressing above."""
    if lun < 256:
        return lun << 48
    if lun < 0x4000:
        return (0x4000 | lun) << 48
    return lun  # already a raw 64-bit LUN field


# ---------------------------------------------------------------------------------------------
# Additional Header Segments (RFC 7143 11.2.2)
# ---------------------------------------------------------------------------------------------


def pull_ahs(ahs: bytes | memoryview) -> list[tuple[int, memoryview]]:
    """Split the AHS area into ``(type, specific bytes)``; the specific bytes start after the
    type-specific byte. Raises ``PduRejected`` (invalid PDU field) on out-of-bounds lengths."""
    view = memoryview(ahs)
    out = []
    pos = 0
    end = len(view)
    while pos < end:
        if end - pos < 4:
            raise PduRejected("truncated AHS", reject_reason=RejectReason.INVALID_PDU_FIELD)
        length, ahs_type = _AHS_HEADER.unpack_from(view, pos)
        if length == 0 or pos + 3 + length > end:
            raise PduRejected(f"AHS length {length} out of bounds",
                              reject_reason=RejectReason.INVALID_PDU_FIELD)
        out.append((ahs_type, view[pos + 4:pos + 3 + length]))
        pos += (3 + length + 3) & ~3
    return out


def push_ahs(ahs_type: int, specific: bytes) -> bytes:
    """One AHS with its type-specific reserved byte and padding."""
    length = len(specific) + 1
    raw = _AHS_HEADER.pack(length, ahs_type) + b"\x00" + specific
    return raw + PADDING[len(raw) & 3]


def encode_command_ahs(cdb: bytes, bidi_read_length: int | None) -> tuple[bytes, bytes]:
    """(16-byte BHS CDB, AHS bytes) for a CDB of any length and an optional bidi read length."""
    ahs = b""
    if len(cdb) > 16:
        ahs += push_ahs(AhsType.EXTENDED_CDB, bytes(cdb[16:]))
        cdb16 = bytes(cdb[:16])
    else:
        cdb16 = bytes(cdb).ljust(16, b"\x00")
    if bidi_read_length is not None:
        ahs += push_ahs(AhsType.BIDI_READ_LENGTH, _U32.pack(bidi_read_length))
    return cdb16, ahs


def pull_command_ahs(cdb16: bytes, ahs: bytes | memoryview) -> tuple[bytes, int | None]:
    """Full CDB and bidirectional read length from a SCSI Command's BHS CDB field and AHS."""
    cdb = cdb16
    bidi = None
    for ahs_type, specific in pull_ahs(ahs):
        if ahs_type == AhsType.EXTENDED_CDB:
            cdb = cdb16 + bytes(specific)
        elif ahs_type == AhsType.BIDI_READ_LENGTH:
            if len(specific) != 4:
                raise PduRejected("bad bidirectional read length AHS",
                                  reject_reason=RejectReason.INVALID_PDU_FIELD)
            bidi = _U32.unpack_from(specific)[0]
        else:
            raise PduRejected(f"unknown AHS type {ahs_type}",
                              reject_reason=RejectReason.INVALID_PDU_FIELD)
    return cdb, bidi


# ---------------------------------------------------------------------------------------------
# Segment assembly
# ---------------------------------------------------------------------------------------------


def push_segments(out: list, header: bytes, ahs: bytes, data: bytes | memoryview, *,
                  header_digest_on: bool, data_digest_on: bool) -> None:
    """Append one PDU (BHS, AHS, header digest, data, padding, data digest) to ``out`` without
    copying ``data``."""
    if ahs:
        header = header + ahs
    if header_digest_on:
        header = header + header_digest(header)
    out.append(header)
    if data:
        out.append(data)
        pad = len(data) & 3
        if pad:
            out.append(PADDING[pad])
        if data_digest_on:
            out.append(data_digest(data))


def size_pdu(ahs_length: int, data_length: int, *, header_digest_on: bool = False,
             data_digest_on: bool = False) -> int:
    """Total wire size of a PDU."""
    size = BHS_LENGTH + ahs_length + ((data_length + 3) & ~3)
    if header_digest_on:
        size += 4
    if data_length and data_digest_on:
        size += 4
    return size


# ---------------------------------------------------------------------------------------------
# Typed PDUs (edges and tests)
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class BasePdu(ABC):
    """A decoded PDU: its BHS fields as attributes, ``data`` the data segment (no padding)."""

    opcode: ClassVar[Opcode]
    data: bytes = field(default=b"", kw_only=True)

    @abstractmethod
    def pack_header(self, ahs_length: int) -> bytes:
        """The 48-byte BHS, given the length of the AHS that follows it."""

    def ahs(self) -> bytes:
        return b""


@dataclass(slots=True)
class NopOut(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.NOP_OUT
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    lun: int = 0
    immediate: bool = False

    def pack_header(self, ahs_length: int) -> bytes:
        return NOP_OUT.pack(self.opcode | (IMMEDIATE_BIT if self.immediate else 0), FINAL_BIT, 0,
                            ahs_dsl(ahs_length, len(self.data)), encode_lun(self.lun), self.itt,
                            self.ttt, self.cmdsn, self.expstatsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> NopOut:
        op, _f, _r, _ad, lun, itt, ttt, cmdsn, expstatsn = NOP_OUT.unpack(h)
        return cls(itt=itt, ttt=ttt, cmdsn=cmdsn, expstatsn=expstatsn, lun=decode_lun(lun),
                   immediate=bool(op & IMMEDIATE_BIT), data=data)


@dataclass(slots=True)
class NopIn(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.NOP_IN
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    lun: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return NOP_IN.pack(self.opcode, FINAL_BIT, 0, ahs_dsl(ahs_length, len(self.data)),
                           encode_lun(self.lun), self.itt, self.ttt, self.statsn, self.expcmdsn,
                           self.maxcmdsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> NopIn:
        _op, _f, _r, _ad, lun, itt, ttt, statsn, expcmdsn, maxcmdsn = NOP_IN.unpack(h)
        return cls(itt=itt, ttt=ttt, statsn=statsn, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn,
                   lun=decode_lun(lun), data=data)


@dataclass(slots=True)
class ScsiCommand(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.SCSI_COMMAND
    itt: int = 0
    lun: int = 0
    cdb: bytes = b"\x00" * 16
    expected_length: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    read: bool = False
    write: bool = False
    final: bool = True
    attr: int = 1
    immediate: bool = False
    bidi_read_length: int | None = None

    def ahs(self) -> bytes:
        return encode_command_ahs(self.cdb, self.bidi_read_length)[1]

    def pack_header(self, ahs_length: int) -> bytes:
        flags = (FINAL_BIT if self.final else 0) | (CMD_READ if self.read else 0) | (
            CMD_WRITE if self.write else 0) | (self.attr & CMD_ATTR_MASK)
        cdb16 = encode_command_ahs(self.cdb, None)[0]
        return SCSI_COMMAND.pack(self.opcode | (IMMEDIATE_BIT if self.immediate else 0), flags, 0,
                                 ahs_dsl(ahs_length, len(self.data)), encode_lun(self.lun),
                                 self.itt, self.expected_length, self.cmdsn, self.expstatsn, cdb16)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> ScsiCommand:
        op, flags, _r, _ad, lun, itt, edtl, cmdsn, expstatsn, cdb16 = SCSI_COMMAND.unpack(h)
        cdb, bidi = pull_command_ahs(cdb16, ahs)
        return cls(itt=itt, lun=decode_lun(lun), cdb=cdb, expected_length=edtl, cmdsn=cmdsn,
                   expstatsn=expstatsn, read=bool(flags & CMD_READ), write=bool(flags & CMD_WRITE),
                   final=bool(flags & FINAL_BIT), attr=flags & CMD_ATTR_MASK,
                   immediate=bool(op & IMMEDIATE_BIT), bidi_read_length=bidi, data=data)


@dataclass(slots=True)
class ScsiResponse(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.SCSI_RESPONSE
    itt: int = 0
    response: int = 0
    status: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    expdatasn: int = 0
    residual: int = 0
    overflow: bool = False
    underflow: bool = False
    bidi_residual: int = 0
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    snack_tag: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        flags = FINAL_BIT | (RSP_OVERFLOW if self.overflow else 0) | (
            RSP_UNDERFLOW if self.underflow else 0) | (
            RSP_BIDI_OVERFLOW if self.bidi_overflow else 0) | (
            RSP_BIDI_UNDERFLOW if self.bidi_underflow else 0)
        return SCSI_RESPONSE.pack(self.opcode, flags, self.response, self.status,
                                  ahs_dsl(ahs_length, len(self.data)), 0, self.itt,
                                  self.snack_tag, self.statsn, self.expcmdsn, self.maxcmdsn,
                                  self.expdatasn, self.bidi_residual, self.residual)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> ScsiResponse:
        (_op, flags, response, status, _ad, _r, itt, snack_tag, statsn, expcmdsn, maxcmdsn,
         expdatasn, bidi_residual, residual) = SCSI_RESPONSE.unpack(h)
        return cls(itt=itt, response=response, status=status, statsn=statsn, expcmdsn=expcmdsn,
                   maxcmdsn=maxcmdsn, expdatasn=expdatasn, residual=residual,
                   overflow=bool(flags & RSP_OVERFLOW), underflow=bool(flags & RSP_UNDERFLOW),
                   bidi_residual=bidi_residual, bidi_overflow=bool(flags & RSP_BIDI_OVERFLOW),
                   bidi_underflow=bool(flags & RSP_BIDI_UNDERFLOW), snack_tag=snack_tag,
                   data=data)


def encode_sense_segment(sense: bytes) -> bytes:
    """SCSI Response data segment: 2-byte SenseLength then the sense data (11.4.7)."""
    return len(sense).to_bytes(2, "big") + sense if sense else b""


def pull_sense_segment(data: bytes | memoryview) -> bytes:
    """Sense data from a SCSI Response data segment (empty if none)."""
    if len(data) < 2:
        return b""
    length = int.from_bytes(data[:2], "big")
    return bytes(data[2:2 + length])


@dataclass(slots=True)
class TaskMgmtRequest(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.TASK_MGMT_REQUEST
    function: int = 1
    itt: int = 0
    lun: int = 0
    referenced_itt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    refcmdsn: int = 0
    expdatasn: int = 0
    immediate: bool = True

    def pack_header(self, ahs_length: int) -> bytes:
        return TASK_MGMT_REQUEST.pack(
            self.opcode | (IMMEDIATE_BIT if self.immediate else 0), FINAL_BIT | self.function, 0,
            ahs_dsl(ahs_length, len(self.data)), encode_lun(self.lun), self.itt,
            self.referenced_itt, self.cmdsn, self.expstatsn, self.refcmdsn, self.expdatasn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> TaskMgmtRequest:
        (op, flags, _r, _ad, lun, itt, ref_itt, cmdsn, expstatsn, refcmdsn,
         expdatasn) = TASK_MGMT_REQUEST.unpack(h)
        return cls(function=flags & 0x7F, itt=itt, lun=decode_lun(lun), referenced_itt=ref_itt,
                   cmdsn=cmdsn, expstatsn=expstatsn, refcmdsn=refcmdsn, expdatasn=expdatasn,
                   immediate=bool(op & IMMEDIATE_BIT), data=data)


@dataclass(slots=True)
class TaskMgmtResponse(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.TASK_MGMT_RESPONSE
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return TASK_MGMT_RESPONSE.pack(self.opcode, FINAL_BIT, self.response, 0,
                                       ahs_dsl(ahs_length, len(self.data)), 0, self.itt, 0,
                                       self.statsn, self.expcmdsn, self.maxcmdsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> TaskMgmtResponse:
        (_op, _f, response, _r, _ad, _l, itt, _x, statsn, expcmdsn,
         maxcmdsn) = TASK_MGMT_RESPONSE.unpack(h)
        return cls(response=response, itt=itt, statsn=statsn, expcmdsn=expcmdsn,
                   maxcmdsn=maxcmdsn, data=data)


@dataclass(slots=True)
class DataOut(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.DATA_OUT
    itt: int = 0
    ttt: int = RESERVED_TAG
    lun: int = 0
    expstatsn: int = 0
    datasn: int = 0
    offset: int = 0
    final: bool = True

    def pack_header(self, ahs_length: int) -> bytes:
        return DATA_OUT.pack(self.opcode, FINAL_BIT if self.final else 0, 0,
                             ahs_dsl(ahs_length, len(self.data)), encode_lun(self.lun), self.itt,
                             self.ttt, 0, self.expstatsn, 0, self.datasn, self.offset)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> DataOut:
        (_op, flags, _r, _ad, lun, itt, ttt, _x, expstatsn, _y, datasn,
         offset) = DATA_OUT.unpack(h)
        return cls(itt=itt, ttt=ttt, lun=decode_lun(lun), expstatsn=expstatsn, datasn=datasn,
                   offset=offset, final=bool(flags & FINAL_BIT), data=data)


@dataclass(slots=True)
class DataIn(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.DATA_IN
    itt: int = 0
    ttt: int = RESERVED_TAG
    lun: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn: int = 0
    offset: int = 0
    residual: int = 0
    final: bool = False
    acknowledge: bool = False
    has_status: bool = False
    status: int = 0
    overflow: bool = False
    underflow: bool = False

    def pack_header(self, ahs_length: int) -> bytes:
        flags = (FINAL_BIT if self.final else 0) | (DATA_ACK if self.acknowledge else 0) | (
            DATA_OVERFLOW if self.overflow else 0) | (DATA_UNDERFLOW if self.underflow else 0) | (
            DATA_STATUS if self.has_status else 0)
        return DATA_IN.pack(self.opcode, flags, 0, self.status, ahs_dsl(ahs_length, len(self.data)),
                            encode_lun(self.lun), self.itt, self.ttt, self.statsn, self.expcmdsn,
                            self.maxcmdsn, self.datasn, self.offset, self.residual)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> DataIn:
        (_op, flags, _r, status, _ad, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, datasn, offset,
         residual) = DATA_IN.unpack(h)
        return cls(itt=itt, ttt=ttt, lun=decode_lun(lun), statsn=statsn, expcmdsn=expcmdsn,
                   maxcmdsn=maxcmdsn, datasn=datasn, offset=offset, residual=residual,
                   final=bool(flags & FINAL_BIT), acknowledge=bool(flags & DATA_ACK),
                   has_status=bool(flags & DATA_STATUS), status=status,
                   overflow=bool(flags & DATA_OVERFLOW), underflow=bool(flags & DATA_UNDERFLOW),
                   data=data)


@dataclass(slots=True)
class ReadyToTransfer(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.R2T
    itt: int = 0
    ttt: int = 0
    lun: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    r2tsn: int = 0
    offset: int = 0
    desired_length: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return R2T.pack(self.opcode, FINAL_BIT, 0, ahs_dsl(ahs_length, len(self.data)),
                        encode_lun(self.lun), self.itt, self.ttt, self.statsn, self.expcmdsn,
                        self.maxcmdsn, self.r2tsn, self.offset, self.desired_length)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> ReadyToTransfer:
        (_op, _f, _r, _ad, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn, offset,
         desired) = R2T.unpack(h)
        return cls(itt=itt, ttt=ttt, lun=decode_lun(lun), statsn=statsn, expcmdsn=expcmdsn,
                   maxcmdsn=maxcmdsn, r2tsn=r2tsn, offset=offset, desired_length=desired,
                   data=data)


@dataclass(slots=True)
class AsyncMessage(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
    event: int = 0
    vcode: int = 0
    lun: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return ASYNC_MESSAGE.pack(self.opcode, FINAL_BIT, 0, ahs_dsl(ahs_length, len(self.data)),
                                  encode_lun(self.lun), RESERVED_TAG, 0, self.statsn,
                                  self.expcmdsn, self.maxcmdsn, self.event, self.vcode,
                                  self.parameter1, self.parameter2, self.parameter3)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> AsyncMessage:
        (_op, _f, _r, _ad, lun, _tag, _x, statsn, expcmdsn, maxcmdsn, event, vcode, p1, p2,
         p3) = ASYNC_MESSAGE.unpack(h)
        return cls(event=event, vcode=vcode, lun=decode_lun(lun), statsn=statsn,
                   expcmdsn=expcmdsn, maxcmdsn=maxcmdsn, parameter1=p1, parameter2=p2,
                   parameter3=p3, data=data)


@dataclass(slots=True)
class TextRequest(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.TEXT_REQUEST
    itt: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    final: bool = True
    cont: bool = False
    lun: int = 0
    immediate: bool = False

    def pack_header(self, ahs_length: int) -> bytes:
        flags = (FINAL_BIT if self.final else 0) | (TEXT_CONTINUE if self.cont else 0)
        return TEXT_REQUEST.pack(self.opcode | (IMMEDIATE_BIT if self.immediate else 0), flags, 0,
                                 ahs_dsl(ahs_length, len(self.data)), encode_lun(self.lun),
                                 self.itt, self.ttt, self.cmdsn, self.expstatsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> TextRequest:
        op, flags, _r, _ad, lun, itt, ttt, cmdsn, expstatsn = TEXT_REQUEST.unpack(h)
        return cls(itt=itt, ttt=ttt, cmdsn=cmdsn, expstatsn=expstatsn,
                   final=bool(flags & FINAL_BIT), cont=bool(flags & TEXT_CONTINUE),
                   lun=decode_lun(lun), immediate=bool(op & IMMEDIATE_BIT), data=data)


@dataclass(slots=True)
class TextResponse(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    final: bool = True
    cont: bool = False
    lun: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        flags = (FINAL_BIT if self.final else 0) | (TEXT_CONTINUE if self.cont else 0)
        return TEXT_RESPONSE.pack(self.opcode, flags, 0, ahs_dsl(ahs_length, len(self.data)),
                                  encode_lun(self.lun), self.itt, self.ttt, self.statsn,
                                  self.expcmdsn, self.maxcmdsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> TextResponse:
        _op, flags, _r, _ad, lun, itt, ttt, statsn, expcmdsn, maxcmdsn = TEXT_RESPONSE.unpack(h)
        return cls(itt=itt, ttt=ttt, statsn=statsn, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn,
                   final=bool(flags & FINAL_BIT), cont=bool(flags & TEXT_CONTINUE),
                   lun=decode_lun(lun), data=data)


@dataclass(slots=True)
class LoginRequest(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
    isid: int = 0
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    csg: int = 0
    nsg: int = 0
    transit: bool = False
    cont: bool = False
    version_max: int = 0
    version_min: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        flags = (LOGIN_TRANSIT if self.transit else 0) | (LOGIN_CONTINUE if self.cont else 0) | (
            (self.csg & 3) << 2) | (self.nsg & 3)
        return LOGIN_REQUEST.pack(self.opcode | IMMEDIATE_BIT, flags, self.version_max,
                                  self.version_min, ahs_dsl(ahs_length, len(self.data)),
                                  self.isid.to_bytes(6, "big"), self.tsih, self.itt, self.cid,
                                  self.cmdsn, self.expstatsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> LoginRequest:
        (_op, flags, vmax, vmin, _ad, isid, tsih, itt, cid, cmdsn,
         expstatsn) = LOGIN_REQUEST.unpack(h)
        return cls(isid=int.from_bytes(isid, "big"), tsih=tsih, itt=itt, cid=cid, cmdsn=cmdsn,
                   expstatsn=expstatsn, csg=(flags >> 2) & 3, nsg=flags & 3,
                   transit=bool(flags & LOGIN_TRANSIT), cont=bool(flags & LOGIN_CONTINUE),
                   version_max=vmax, version_min=vmin, data=data)


@dataclass(slots=True)
class LoginResponse(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
    isid: int = 0
    tsih: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    status_class: int = 0
    status_detail: int = 0
    csg: int = 0
    nsg: int = 0
    transit: bool = False
    cont: bool = False
    version_max: int = 0
    version_active: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        flags = (LOGIN_TRANSIT if self.transit else 0) | (LOGIN_CONTINUE if self.cont else 0) | (
            (self.csg & 3) << 2) | (self.nsg & 3)
        return LOGIN_RESPONSE.pack(self.opcode, flags, self.version_max, self.version_active,
                                   ahs_dsl(ahs_length, len(self.data)),
                                   self.isid.to_bytes(6, "big"), self.tsih, self.itt, self.statsn,
                                   self.expcmdsn, self.maxcmdsn, self.status_class,
                                   self.status_detail)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> LoginResponse:
        (_op, flags, vmax, vact, _ad, isid, tsih, itt, statsn, expcmdsn, maxcmdsn, sclass,
         sdetail) = LOGIN_RESPONSE.unpack(h)
        return cls(isid=int.from_bytes(isid, "big"), tsih=tsih, itt=itt, statsn=statsn,
                   expcmdsn=expcmdsn, maxcmdsn=maxcmdsn, status_class=sclass,
                   status_detail=sdetail, csg=(flags >> 2) & 3, nsg=flags & 3,
                   transit=bool(flags & LOGIN_TRANSIT), cont=bool(flags & LOGIN_CONTINUE),
                   version_max=vmax, version_active=vact, data=data)


@dataclass(slots=True)
class LogoutRequest(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    reason: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    immediate: bool = False

    def pack_header(self, ahs_length: int) -> bytes:
        return LOGOUT_REQUEST.pack(self.opcode | (IMMEDIATE_BIT if self.immediate else 0),
                                   FINAL_BIT | self.reason, 0,
                                   ahs_dsl(ahs_length, len(self.data)), self.itt, self.cid,
                                   self.cmdsn, self.expstatsn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> LogoutRequest:
        op, flags, _r, _ad, itt, cid, cmdsn, expstatsn = LOGOUT_REQUEST.unpack(h)
        return cls(reason=flags & 0x7F, itt=itt, cid=cid, cmdsn=cmdsn, expstatsn=expstatsn,
                   immediate=bool(op & IMMEDIATE_BIT), data=data)


@dataclass(slots=True)
class LogoutResponse(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return LOGOUT_RESPONSE.pack(self.opcode, FINAL_BIT, self.response, 0,
                                    ahs_dsl(ahs_length, len(self.data)), self.itt, self.statsn,
                                    self.expcmdsn, self.maxcmdsn, self.time2wait,
                                    self.time2retain)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> LogoutResponse:
        (_op, _f, response, _r, _ad, itt, statsn, expcmdsn, maxcmdsn, t2w,
         t2r) = LOGOUT_RESPONSE.unpack(h)
        return cls(response=response, itt=itt, statsn=statsn, expcmdsn=expcmdsn,
                   maxcmdsn=maxcmdsn, time2wait=t2w, time2retain=t2r, data=data)


@dataclass(slots=True)
class SnackRequest(BasePdu):
    opcode: ClassVar[Opcode] = Opcode.SNACK_REQUEST
    snack_type: int = 0
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    begrun: int = 0
    runlength: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return SNACK_REQUEST.pack(self.opcode, FINAL_BIT | (self.snack_type & 0x0F), 0,
                                  ahs_dsl(ahs_length, len(self.data)), encode_lun(self.lun),
                                  self.itt, self.ttt, self.expstatsn, self.begrun, self.runlength)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> SnackRequest:
        (_op, flags, _r, _ad, lun, itt, ttt, expstatsn, begrun,
         runlength) = SNACK_REQUEST.unpack(h)
        return cls(snack_type=flags & 0x0F, lun=decode_lun(lun), itt=itt, ttt=ttt,
                   expstatsn=expstatsn, begrun=begrun, runlength=runlength, data=data)


@dataclass(slots=True)
class Reject(BasePdu):
    """Reject; ``data`` carries the complete header of the rejected PDU."""

    opcode: ClassVar[Opcode] = Opcode.REJECT
    reason: int = RejectReason.PROTOCOL_ERROR
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn: int = 0

    def pack_header(self, ahs_length: int) -> bytes:
        return REJECT.pack(self.opcode, FINAL_BIT, self.reason, 0,
                           ahs_dsl(ahs_length, len(self.data)), RESERVED_TAG, self.statsn,
                           self.expcmdsn, self.maxcmdsn, self.datasn)

    @classmethod
    def pull(cls, h: bytes, ahs: bytes, data: bytes) -> Reject:
        _op, _f, reason, _r, _ad, _tag, statsn, expcmdsn, maxcmdsn, datasn = REJECT.unpack(h)
        return cls(reason=reason, statsn=statsn, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn,
                   datasn=datasn, data=data)


PDU_TYPES: dict[int, type[BasePdu]] = {
    cls.opcode: cls
    for cls in (NopOut, NopIn, ScsiCommand, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse,
                DataOut, DataIn, ReadyToTransfer, AsyncMessage, TextRequest, TextResponse,
                LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, SnackRequest, Reject)
}


def encode_pdu_segments(pdu: BasePdu, *, header_digest_on: bool = False,
                        data_digest_on: bool = False) -> list[bytes | memoryview]:
    """Wire segments of a typed PDU (no copy of its data)."""
    ahs = pdu.ahs()
    out: list[bytes | memoryview] = []
    push_segments(out, pdu.pack_header(len(ahs)), ahs, pdu.data,
                  header_digest_on=header_digest_on, data_digest_on=data_digest_on)
    return out


def encode_pdu(pdu: BasePdu, *, header_digest_on: bool = False,
               data_digest_on: bool = False) -> bytes:
    """Wire bytes of a typed PDU."""
    return b"".join(encode_pdu_segments(pdu, header_digest_on=header_digest_on,
                                        data_digest_on=data_digest_on))


def pull_pdu(header: bytes | memoryview, ahs: bytes | memoryview = b"",
             data: bytes | memoryview = b"") -> BasePdu:
    """Typed PDU from a framed header/AHS/data. Unknown opcodes raise ``PduRejected``."""
    opcode = header[0] & OPCODE_MASK
    cls = PDU_TYPES.get(opcode)
    if cls is None:
        raise PduRejected(f"unknown opcode 0x{opcode:02x}",
                          reject_reason=RejectReason.COMMAND_NOT_SUPPORTED)
    return cls.pull(bytes(header[:BHS_LENGTH]), bytes(ahs), bytes(data))
