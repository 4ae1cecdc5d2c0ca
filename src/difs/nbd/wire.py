"""Encoders for what the NBD server puts on the wire, and the precompiled structs it parses with.

Naming: ``encode_*`` return the bytes of one message; ``*_STRUCT`` are precompiled
``struct.Struct`` objects (big endian, as the protocol is). Parsing lives next to the state
machine that needs it (``negotiation.py`` for options, ``connection.py`` for requests).
"""

from __future__ import annotations

import struct

from difs.nbd import constants as c

GREETING_STRUCT = struct.Struct(">QQH")  # NBDMAGIC, IHAVEOPT, handshake flags
CLIENT_FLAGS_STRUCT = struct.Struct(">I")
OPTION_HEADER_STRUCT = struct.Struct(">QII")  # IHAVEOPT, option, length
OPTION_REPLY_STRUCT = struct.Struct(">QIII")  # magic, option, reply type, length
EXPORT_NAME_REPLY_STRUCT = struct.Struct(">QH")  # size, transmission flags
INFO_EXPORT_STRUCT = struct.Struct(">HQH")  # NBD_INFO_EXPORT, size, transmission flags
INFO_BLOCK_SIZE_STRUCT = struct.Struct(">HIII")  # NBD_INFO_BLOCK_SIZE, min, preferred, max
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")

REQUEST_STRUCT = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
SIMPLE_REPLY_STRUCT = struct.Struct(">IIQ")  # magic, error, handle
STRUCTURED_REPLY_STRUCT = struct.Struct(">IHHQI")  # magic, flags, type, handle, length
OFFSET_DATA_HEADER_STRUCT = struct.Struct(">IHHQIQ")  # structured header + data offset
ERROR_PAYLOAD_STRUCT = struct.Struct(">IH")  # error, message length
EXTENT_STRUCT = struct.Struct(">II")  # length, status flags

REQUEST_SIZE = REQUEST_STRUCT.size  # 28
ZEROES_124 = bytes(124)


def encode_greeting() -> bytes:
    return GREETING_STRUCT.pack(c.NBDMAGIC, c.IHAVEOPT, c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES)


def encode_option_reply(option: int, reply_type: int, payload: bytes = b"") -> bytes:
    header = OPTION_REPLY_STRUCT.pack(c.OPTION_REPLY_MAGIC, option, reply_type, len(payload))
    return header + payload


def encode_rep_server(name: str, description: str = "") -> bytes:
    raw = name.encode()
    return U32.pack(len(raw)) + raw + description.encode()


def encode_info_export(size: int, tflags: int) -> bytes:
    return INFO_EXPORT_STRUCT.pack(c.INFO_EXPORT, size, tflags)


def encode_info_block_size(minimum: int, preferred: int, maximum: int) -> bytes:
    return INFO_BLOCK_SIZE_STRUCT.pack(c.INFO_BLOCK_SIZE, minimum, preferred, maximum)


def encode_info_string(info_type: int, text: str) -> bytes:
    return U16.pack(info_type) + text.encode()[: c.MAX_STRING]


def encode_meta_context(context_id: int, name: str) -> bytes:
    return U32.pack(context_id) + name.encode()


def encode_export_name_reply(size: int, tflags: int, no_zeroes: bool) -> bytes:
    head = EXPORT_NAME_REPLY_STRUCT.pack(size, tflags)
    return head if no_zeroes else head + ZEROES_124


def encode_simple_reply(handle: int, error: int = 0) -> bytes:
    return SIMPLE_REPLY_STRUCT.pack(c.SIMPLE_REPLY_MAGIC, error, handle)


def encode_structured_none(handle: int) -> bytes:
    return STRUCTURED_REPLY_STRUCT.pack(
        c.STRUCTURED_REPLY_MAGIC, c.REPLY_FLAG_DONE, c.REPLY_TYPE_NONE, handle, 0
    )


def encode_structured_error(handle: int, error: int, message: str = "") -> bytes:
    msg = message.encode()[: c.MAX_STRING]
    return (
        STRUCTURED_REPLY_STRUCT.pack(
            c.STRUCTURED_REPLY_MAGIC, c.REPLY_FLAG_DONE, c.REPLY_TYPE_ERROR, handle, 6 + len(msg)
        )
        + ERROR_PAYLOAD_STRUCT.pack(error, len(msg))
        + msg
    )


def encode_offset_data_header(handle: int, offset: int, data_length: int) -> bytes:
    """Header of a final NBD_REPLY_TYPE_OFFSET_DATA chunk; the data follows it."""
    return OFFSET_DATA_HEADER_STRUCT.pack(
        c.STRUCTURED_REPLY_MAGIC,
        c.REPLY_FLAG_DONE,
        c.REPLY_TYPE_OFFSET_DATA,
        handle,
        8 + data_length,
        offset,
    )


def encode_block_status(
    handle: int, context_id: int, extents: list[tuple[int, int]], done: bool = True
) -> bytes:
    """An NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context (the last one is done)."""
    body = b"".join(EXTENT_STRUCT.pack(length, flags) for length, flags in extents)
    return (
        STRUCTURED_REPLY_STRUCT.pack(
            c.STRUCTURED_REPLY_MAGIC,
            c.REPLY_FLAG_DONE if done else 0,
            c.REPLY_TYPE_BLOCK_STATUS,
            handle,
            4 + len(body),
        )
        + U32.pack(context_id)
        + body
    )
