"""Interleaved data+PI layout: each logical block followed by its 8-byte PI tuple.

This is how SCSI moves protected data when RDPROTECT/WRPROTECT is not zero (SBC-4: "the
protection information is transferred with the logical block data", 520 bytes per 512-byte
block), and it is the classic "520-byte sector" layout of a formatted disk.

``interleave`` and ``split`` do exactly one strided copy with numpy (memory speed, no Python
per block) and can write into a caller's buffer (``out=``, e.g. a preallocated PDU buffer)
so nothing else is copied.  When only the PI is needed, :func:`pi_view` and
:func:`data_view` give zero-copy strided numpy views of an interleaved buffer.
"""

from __future__ import annotations

import numpy as np

import functools
import itertools
import struct

from difs.integrity.crc import Buffer, as_byte_view, block_count, blocks_struct
from difs.integrity.pi import PI_SIZE

# Up to this many blocks a C-level struct cut + join beats numpy's fixed per-call costs.
_SMALL_BLOCKS = 16


@functools.lru_cache(maxsize=64)
def _interleaved_struct(block_size: int, n: int) -> struct.Struct:
    return struct.Struct(f"{block_size}s{PI_SIZE}s" * n)

__all__ = ["data_view", "interleave", "interleaved_size", "pi_view", "split"]


def interleaved_size(nblocks: int, *, block_size: int = 512) -> int:
    """Bytes of ``nblocks`` blocks with their PI interleaved."""
    return nblocks * (block_size + PI_SIZE)


def _rows(buf: Buffer, n: int, block_size: int, *, writable: bool = False) -> np.ndarray:
    mv = as_byte_view(buf)
    if len(mv) != interleaved_size(n, block_size=block_size):
        raise ValueError(
            f"{n} blocks of {block_size}+{PI_SIZE} bytes need "
            f"{interleaved_size(n, block_size=block_size)} bytes, got {len(mv)}"
        )
    if writable and memoryview(mv).readonly:
        raise ValueError("output buffer is read-only")
    return np.frombuffer(mv, dtype=np.uint8).reshape(n, block_size + PI_SIZE)


def interleave(
    data: Buffer, pi: Buffer, *, block_size: int = 512, out: Buffer | None = None
) -> bytearray | memoryview:
    """``data`` and its ``pi`` as one interleaved buffer (returns ``out`` if given)."""
    dv = as_byte_view(data)
    n = block_count(len(dv), block_size)
    pv = as_byte_view(pi)
    if len(pv) != n * PI_SIZE:
        raise ValueError(f"{n} blocks need {n * PI_SIZE} bytes of PI, got {len(pv)}")
    if out is None and n <= _SMALL_BLOCKS:
        blocks = blocks_struct(block_size, n).unpack(dv)
        tuples = blocks_struct(PI_SIZE, n).unpack(pv)
        return bytearray().join(itertools.chain.from_iterable(zip(blocks, tuples)))
    result = bytearray(interleaved_size(n, block_size=block_size)) if out is None else out
    rows = _rows(result, n, block_size, writable=True)
    rows[:, :block_size] = np.frombuffer(dv, dtype=np.uint8).reshape(n, block_size)
    rows[:, block_size:] = np.frombuffer(pv, dtype=np.uint8).reshape(n, PI_SIZE)
    return result


def split(
    interleaved: Buffer,
    *,
    block_size: int = 512,
    data_out: Buffer | None = None,
    pi_out: Buffer | None = None,
) -> tuple[bytearray | memoryview, bytearray | memoryview]:
    """``(data, pi)`` out of an interleaved buffer (into ``data_out``/``pi_out`` if given)."""
    mv = as_byte_view(interleaved)
    n = block_count(len(mv), block_size + PI_SIZE)
    if data_out is None and pi_out is None and n <= _SMALL_BLOCKS:
        parts = _interleaved_struct(block_size, n).unpack(mv)
        return bytearray().join(parts[0::2]), bytearray().join(parts[1::2])
    rows = _rows(mv, n, block_size)
    data = bytearray(n * block_size) if data_out is None else data_out
    pi = bytearray(n * PI_SIZE) if pi_out is None else pi_out
    for name, buf, size in (("data_out", data, n * block_size), ("pi_out", pi, n * PI_SIZE)):
        bv = as_byte_view(buf)
        if len(bv) != size or memoryview(bv).readonly:
            raise ValueError(f"{name} must be a writable buffer of {size} bytes")
    np.frombuffer(as_byte_view(data), dtype=np.uint8).reshape(n, block_size)[:] = rows[
        :, :block_size
    ]
    np.frombuffer(as_byte_view(pi), dtype=np.uint8).reshape(n, PI_SIZE)[:] = rows[:, block_size:]
    return data, pi


def data_view(interleaved: Buffer, *, block_size: int = 512) -> np.ndarray:
    """Zero-copy ``(nblocks, block_size)`` uint8 view of the data in an interleaved buffer."""
    mv = as_byte_view(interleaved)
    n = block_count(len(mv), block_size + PI_SIZE)
    return _rows(mv, n, block_size)[:, :block_size]


def pi_view(interleaved: Buffer, *, block_size: int = 512) -> np.ndarray:
    """Zero-copy ``(nblocks, 8)`` uint8 view of the PI tuples in an interleaved buffer."""
    mv = as_byte_view(interleaved)
    n = block_count(len(mv), block_size + PI_SIZE)
    return _rows(mv, n, block_size)[:, block_size:]
