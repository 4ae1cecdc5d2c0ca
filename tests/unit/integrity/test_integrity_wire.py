"""interleave/split: the 520-byte wire layout, round trips, caller buffers, views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.integrity import generate, interleave, interleaved_size, split, verify
from difs.integrity.wire import data_view, pi_view


def test_layout_is_block_then_its_tuple() -> None:
    data = b"A" * 512 + b"B" * 512
    pi = b"11111111" + b"22222222"
    wire = interleave(data, pi)
    assert bytes(wire) == b"A" * 512 + b"11111111" + b"B" * 512 + b"22222222"
    assert interleaved_size(2) == len(wire) == 1040


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 70), seed=st.integers(0, 2**31),
       block_size=st.sampled_from([512, 4096]))
def test_round_trip(n: int, seed: int, block_size: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, n * block_size, np.uint8).tobytes()
    pi = rng.integers(0, 256, n * 8, np.uint8).tobytes()
    wire = interleave(data, pi, block_size=block_size)
    assert len(wire) == interleaved_size(n, block_size=block_size)
    d2, p2 = split(wire, block_size=block_size)
    assert (bytes(d2), bytes(p2)) == (data, pi)
    assert data_view(wire, block_size=block_size).tobytes() == data
    assert pi_view(wire, block_size=block_size).tobytes() == pi


def test_into_caller_buffers_without_allocating() -> None:
    data = np.random.default_rng(3).integers(0, 256, 40 * 512, np.uint8).tobytes()
    pi = generate(data, lba=0, pi_type=1)
    out = bytearray(interleaved_size(40) + 100)
    view = memoryview(out)[50:-50]
    assert interleave(data, pi, out=view) is view
    assert out[:50] == bytes(50) and out[-50:] == bytes(50)
    d_out, p_out = bytearray(40 * 512), bytearray(320)
    d2, p2 = split(view, data_out=d_out, pi_out=p_out)
    assert d2 is d_out and p2 is p_out
    verify(d_out, p_out, lba=0, pi_type=1)


def test_bad_sizes_and_read_only_outputs() -> None:
    with pytest.raises(ValueError):
        interleave(bytes(512), bytes(7))
    with pytest.raises(ValueError):
        split(bytes(519))
    with pytest.raises(ValueError):
        interleave(bytes(512 * 20), bytes(160), out=bytes(520 * 20))
    with pytest.raises(ValueError):
        split(bytes(520 * 20), data_out=bytearray(10), pi_out=bytearray(160))
