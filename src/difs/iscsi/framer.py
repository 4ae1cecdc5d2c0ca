"""Streaming PDU framer: bytes in, complete PDUs out (RFC 7143 11.1 framing).

``PduFramer.feed(data)`` accepts ``bytes`` / ``bytearray`` / ``memoryview``; ``next_pdu()`` returns
a ``Pdu`` (header, AHS and data segment as memoryviews) or ``None`` when more bytes are needed.

Copying rules: a ``bytes`` chunk is kept as is and PDUs lying inside one chunk are handed out as
memoryview slices of it (zero copy). Mutable inputs (``bytearray``/``memoryview``, e.g. the
adapter's receive buffer) are copied once on entry, because the core may keep PDU data after
``feed`` returns. A PDU that spans chunks is joined once.

Limits are enforced from the header alone, before any data is buffered: a data segment longer
than ``max_data_segment_length`` raises ``FramingError``. Digests are checked when enabled (they
only apply in Full Feature Phase; the connection switches them on after login): a header digest
mismatch raises ``HeaderDigestError`` (the stream cannot be trusted any more), a data digest
mismatch raises ``DataDigestError`` with the framed PDU attached as ``.pdu`` — the stream stays in
sync and the PDU can be answered with a Reject. ``start_full_feature(params, role=...)`` takes
the login's ``NegotiatedParams``: its digests and this side's declared receive limit.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from crc32c import crc32c

from .constants import BHS_LENGTH, IMMEDIATE_BIT, OPCODE_MASK
from .digest import unpack_digest_from
from .errors import DataDigestError, FramingError, HeaderDigestError

if TYPE_CHECKING:
    from .params import NegotiatedParams


_EMPTY = memoryview(b"")


class Pdu:
    """One framed PDU. ``header`` is the 48-byte BHS; ``ahs`` and ``data`` exclude padding and
    digests."""

    __slots__ = ("opcode", "immediate", "header", "ahs", "data")

    def __init__(self, opcode: int, immediate: bool, header: memoryview, ahs: memoryview,
                 data: memoryview) -> None:
        self.opcode = opcode
        self.immediate = immediate
        self.header = header
        self.ahs = ahs
        self.data = data

    def __repr__(self) -> str:
        return f"Pdu(opcode=0x{self.opcode:02x}, ahs={len(self.ahs)}, data={len(self.data)})"


class PduFramer:
    """Accumulates received bytes and cuts them into PDUs."""

    __slots__ = ("_chunks", "_offset", "_available", "_pending_total", "max_data_segment_length",
                 "header_digest", "data_digest", "digests_checked", "digest_bytes_checked")

    def __init__(self, max_data_segment_length: int, *, header_digest: bool = False,
                 data_digest: bool = False) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # consumed bytes of _chunks[0]
        self._available = 0
        self._pending_total = 0  # size of the PDU whose header was seen, 0 if none yet
        self.max_data_segment_length = max_data_segment_length
        self.header_digest = header_digest
        self.data_digest = data_digest
        #: CRC32C digests verified on receive, and the bytes they covered
        self.digests_checked = 0
        self.digest_bytes_checked = 0

    def start_full_feature(self, params: NegotiatedParams, *, role: str) -> None:
        """Frame as the login settled: digests on or off, at most ``role``'s own declared
        MaxRecvDataSegmentLength per data segment (from the next PDU on)."""
        self.header_digest = params.header_digest
        self.data_digest = params.data_digest
        self.max_data_segment_length = params.receive_limit(role)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as PDUs."""
        return self._available

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._chunks.append(data)
        self._available += len(data)

    def _take(self, n: int) -> memoryview:
        """Consume ``n`` bytes as one contiguous memoryview."""
        chunks = self._chunks
        first = chunks[0]
        off = self._offset
        if len(first) - off >= n:
            view = memoryview(first)[off:off + n]
            off += n
            if off == len(first):
                chunks.popleft()
                off = 0
            self._offset = off
        else:
            parts = []
            need = n
            while need:
                chunk = chunks[0]
                have = len(chunk) - off
                if have <= need:
                    parts.append(memoryview(chunk)[off:])
                    chunks.popleft()
                    need -= have
                    off = 0
                else:
                    parts.append(memoryview(chunk)[off:off + need])
                    off += need
                    need = 0
            self._offset = off
            view = memoryview(b"".join(parts))
        self._available -= n
        return view

    def _peek_header(self) -> bytes | memoryview:
        first = self._chunks[0]
        off = self._offset
        if len(first) - off >= 8:
            return first[off:off + 8]
        out = bytearray()
        for chunk in self._chunks:
            out += chunk[off:]
            off = 0
            if len(out) >= 8:
                break
        return bytes(out[:8])

    def next_pdu(self) -> Pdu | None:
        """The next complete PDU, or None if more bytes are needed."""
        total = self._pending_total
        if not total:
            if self._available < BHS_LENGTH:
                return None
            head = self._peek_header()
            data_length = (head[5] << 16) | (head[6] << 8) | head[7]
            if data_length > self.max_data_segment_length:
                raise FramingError(
                    f"data segment of {data_length} bytes exceeds MaxRecvDataSegmentLength "
                    f"{self.max_data_segment_length}")
            total = BHS_LENGTH + (head[4] << 2) + ((data_length + 3) & ~3)
            if self.header_digest:
                total += 4
            if data_length and self.data_digest:
                total += 4
            self._pending_total = total
        if self._available < total:
            return None
        self._pending_total = 0
        raw = self._take(total)
        ahs_end = BHS_LENGTH + (raw[4] << 2)
        data_length = (raw[5] << 16) | (raw[6] << 8) | raw[7]
        pos = ahs_end
        if self.header_digest:
            self.digests_checked += 1
            self.digest_bytes_checked += ahs_end
            if crc32c(raw[:ahs_end]) != unpack_digest_from(raw, ahs_end)[0]:
                raise HeaderDigestError("header digest mismatch")
            pos += 4
        byte0 = raw[0]
        pdu = Pdu(byte0 & OPCODE_MASK, byte0 & IMMEDIATE_BIT != 0, raw[:BHS_LENGTH],
                  raw[BHS_LENGTH:ahs_end] if ahs_end > BHS_LENGTH else _EMPTY,
                  raw[pos:pos + data_length] if data_length else _EMPTY)
        if data_length and self.data_digest:
            padded = (data_length + 3) & ~3
            self.digests_checked += 1
            self.digest_bytes_checked += padded
            if crc32c(raw[pos:pos + padded]) != unpack_digest_from(raw, pos + padded)[0]:
                raise DataDigestError("data digest mismatch", pdu=pdu)
        return pdu
