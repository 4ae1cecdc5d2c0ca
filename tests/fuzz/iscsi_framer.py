"""Fuzz target: the iSCSI PDU framer (iscsi/framer.py) and the PDU codec (iscsi/pdu.py).

Knobs: byte 0 bit 0 header digest, bit 1 data digest, bits 2-4 MaxRecvDataSegmentLength
(one of ``LIMITS``); byte 1 the receive chunk size. The rest is the byte stream.

Oracles: ``next_pdu`` returns a PDU, ``None`` or raises ``FramingError`` / ``HeaderDigestError``
(the connection ends) / ``DataDigestError`` (with the PDU attached); ``pull_pdu`` returns a
typed PDU or raises ``PduRejected``. Every framed byte is accounted for; no data segment is
longer than the limit; what the framer keeps never exceeds one PDU of the declared bounds; a
typed PDU re-encodes to bytes that frame and decode to the same PDU.
"""

from __future__ import annotations

from difs.iscsi.constants import BHS_LENGTH
from difs.iscsi.errors import DataDigestError, FramingError, HeaderDigestError, PduRejected
from difs.iscsi.framer import PduFramer
from difs.iscsi.pdu import encode_pdu, pull_pdu

from fuzz import chunks, knobs

MAX_INPUT = 1 << 16
LIMITS = (0, 8, 512, 4096, 8192, 65536, 262144, (1 << 24) - 1)
MAX_AHS = 255 * 4


def TestOneInput(data: bytes) -> None:
    (flags, split), stream = knobs(data[:MAX_INPUT], 2)
    header_digest, data_digest = bool(flags & 1), bool(flags & 2)
    limit = LIMITS[(flags >> 2) & 7]
    framer = PduFramer(limit, header_digest=header_digest, data_digest=data_digest)
    bound = BHS_LENGTH + MAX_AHS + limit + 3 + 8  # one whole PDU, padded, with both digests
    consumed = 0
    for chunk in chunks(stream, split + 1):
        framer.feed(chunk)
        while True:
            try:
                pdu = framer.next_pdu()
            except DataDigestError as exc:
                pdu = exc.pdu
                assert pdu is not None
            except (FramingError, HeaderDigestError):
                return
            if pdu is None:
                break
            consumed += _size(pdu, header_digest, data_digest)
            _check(pdu, limit)
        assert framer.buffered < bound, (framer.buffered, bound)
    assert consumed + framer.buffered == len(stream)


def _size(pdu, header_digest: bool, data_digest: bool) -> int:
    n = len(pdu.data)
    return (BHS_LENGTH + len(pdu.ahs) + ((n + 3) & ~3) + 4 * header_digest
            + 4 * (bool(n) and data_digest))


def _check(pdu, limit: int) -> None:
    assert len(pdu.header) == BHS_LENGTH and pdu.header[0] & 0x3F == pdu.opcode
    assert len(pdu.data) <= limit and len(pdu.ahs) % 4 == 0
    try:
        typed = pull_pdu(pdu.header, pdu.ahs, pdu.data)
    except PduRejected:
        return
    again = PduFramer((1 << 24) - 1)
    again.feed(encode_pdu(typed))
    framed = again.next_pdu()
    assert framed is not None and again.buffered == 0
    assert pull_pdu(framed.header, framed.ahs, framed.data) == typed
