"""CRC32C digests for iSCSI HeaderDigest / DataDigest (RFC 7143 section 13.1, appendix B).

The CRC is computed by the C-backed ``crc32c`` library and sent least significant byte first
(the byte order every implementation uses, e.g. libiscsi and Linux). The data digest covers the
data segment *and* its padding.
"""

from __future__ import annotations

import struct

from crc32c import crc32c

_LE32 = struct.Struct("<I")
pack_digest = _LE32.pack
unpack_digest_from = _LE32.unpack_from

PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # indexed by length % 4


def pad_length(length: int) -> int:
    """Number of padding bytes after a segment of ``length`` bytes."""
    return -length & 3


def header_digest(header: bytes | memoryview) -> bytes:
    """Digest bytes for a BHS (+AHS)."""
    return _LE32.pack(crc32c(header))


def data_digest(data: bytes | memoryview) -> bytes:
    """Digest bytes for a data segment, including its zero padding."""
    crc = crc32c(data)
    pad = -len(data) & 3
    if pad:
        crc = crc32c(PADDING[len(data) & 3], crc)
    return _LE32.pack(crc)


def data_crc(data: bytes | memoryview) -> int:
    """CRC32C value of a data segment including padding (to compare against a received one)."""
    crc = crc32c(data)
    if len(data) & 3:
        crc = crc32c(PADDING[len(data) & 3], crc)
    return crc


__all__ = ["crc32c", "data_crc", "data_digest", "header_digest", "pack_digest", "pad_length",
           "unpack_digest_from", "PADDING"]
