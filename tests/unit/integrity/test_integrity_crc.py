"""CRC-16/T10-DIF golden vectors and the fast per-block guards against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.integrity.crc import block_guards, block_guards_reference, crc16_t10dif


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/T10-DIF straight from its definition (poly 0x8BB7, init 0, MSB first)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8BB7) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@pytest.mark.parametrize(
    ("data", "guard"),
    [
        (b"123456789", 0xD0DB),  # the catalogue check value of CRC-16/T10-DIF
        (bytes(512), 0x0000),  # init 0, no xorout: an all-zero block has guard 0
        (b"\xff" * 512, 0xE6A1),
        (bytes(range(256)) * 2, 0x4F10),
    ],
)
def test_golden_guards(data: bytes, guard: int) -> None:
    assert crc16_bitwise(data) == guard
    assert crc16_t10dif(data) == guard
    if len(data) % 512 == 0:
        assert block_guards(data).tolist() == [guard] * (len(data) // 512)


def test_crc_continues_from_initial() -> None:
    assert crc16_t10dif(b"56789", crc16_t10dif(b"1234")) == 0xD0DB


@settings(max_examples=60, deadline=None)
@given(
    nblocks=st.integers(0, 140),  # crosses the 64-block chunk of the fast path twice
    block_size=st.sampled_from([512, 520, 4096]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_guards_match_reference(nblocks: int, block_size: int, seed: int) -> None:
    data = np.random.default_rng(seed).integers(0, 256, nblocks * block_size, np.uint8).tobytes()
    fast = block_guards(data, block_size=block_size)
    assert fast.dtype == np.uint16
    assert fast.tolist() == block_guards_reference(data, block_size=block_size)


@given(st.binary(min_size=0, max_size=64))
def test_reference_guard_is_the_crc(data: bytes) -> None:
    block = data.ljust(512, b"\x5a")
    assert block_guards_reference(block) == [crc16_bitwise(block)]


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "slice", "numpy"])
def test_every_buffer_type(kind: str) -> None:
    raw = bytes(range(256)) * 2 * 70
    buf = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "slice": memoryview(b"xx" + raw)[2:],
        "numpy": np.frombuffer(raw, dtype=np.uint32),  # cast to bytes without a copy
    }[kind]
    assert block_guards(buf).tolist() == [0x4F10] * 70


def test_partial_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="whole number"):
        block_guards(bytes(513))
