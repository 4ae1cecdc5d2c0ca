"""generate/verify: golden tuples, fast == reference, every check, escapes, first failing LBA."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.integrity import (
    PI_SIZE,
    PiCheckError,
    generate,
    pack_tuple,
    tuples,
    unpack_tuple,
    verify,
)
from difs.integrity.pi import generate_reference, verify_reference

U32 = 2**32


def blocks(n: int, seed: int = 1, block_size: int = 512) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n * block_size, np.uint8).tobytes()


def flip(buf: bytes, byte: int, bit: int = 0) -> bytes:
    out = bytearray(buf)
    out[byte] ^= 1 << bit
    return bytes(out)


def outcome(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except PiCheckError as e:
        return (e.kind, e.lba)
    return None


# --- golden tuples -------------------------------------------------------------------------


def test_golden_tuple_type1() -> None:
    pi = generate(bytes(range(256)) * 2, lba=0x12345678, pi_type=1, app_tag=0xBEEF)
    assert pi == bytes.fromhex("4f10beef12345678")
    assert unpack_tuple(pi) == (0x4F10, 0xBEEF, 0x12345678)
    assert pack_tuple(0x4F10, 0xBEEF, 0x12345678) == pi


def test_golden_type1_ref_tag_is_low_32_bits_and_wraps() -> None:
    data = b"\xff" * 512 + bytes(512)
    pi = generate(data, lba=0x1_FFFF_FFFF, pi_type=1, app_tag=0x0102)
    assert pi == bytes.fromhex("e6a10102ffffffff" "0000010200000000")
    verify(data, pi, lba=0x1_FFFF_FFFF, pi_type=1, app_tag=0x0102)


def test_type2_and_type3_reference_tags() -> None:
    data = blocks(3)
    t2 = tuples(generate(data, lba=100, pi_type=2, ref_tag=7))
    assert t2["ref"].tolist() == [7, 8, 9]
    assert tuples(generate(data, lba=100, pi_type=2))["ref"].tolist() == [100, 101, 102]
    assert tuples(generate(data, lba=100, pi_type=3))["ref"].tolist() == [0, 0, 0]
    assert tuples(generate(data, lba=100, pi_type=3, ref_tag=0xABCD))["ref"].tolist() == [
        0xABCD
    ] * 3


# --- fast path == reference ----------------------------------------------------------------

pi_types = st.sampled_from([1, 2, 3])
lbas = st.one_of(st.integers(0, 2**64 - 1), st.integers(U32 - 40, U32 + 40))
nblocks = st.integers(0, 80)  # both sides of the small/numpy threshold (16) and a 64 chunk


@settings(max_examples=80, deadline=None)
@given(n=nblocks, seed=st.integers(0, 2**31), lba=lbas, pi_type=pi_types,
       app=st.integers(0, 0xFFFF), ref=st.none() | st.integers(0, U32 - 1))
def test_generate_matches_reference(n, seed, lba, pi_type, app, ref) -> None:
    if pi_type == 1:
        ref = None
    data = blocks(n, seed)
    pi = generate(data, lba=lba, pi_type=pi_type, app_tag=app, ref_tag=ref)
    assert len(pi) == n * PI_SIZE
    assert pi == generate_reference(data, lba=lba, pi_type=pi_type, app_tag=app, ref_tag=ref)
    verify(data, pi, lba=lba, pi_type=pi_type, app_tag=app, ref_tag=ref)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 80), seed=st.integers(0, 2**31), lba=lbas, pi_type=pi_types,
    app=st.integers(0, 0xFFFF), mask=st.sampled_from([0xFFFF, 0xFF00, 0x00FF, 0]),
    corruptions=st.lists(st.tuples(st.sampled_from(["data", "pi"]), st.integers(0, 2**31),
                                   st.integers(0, 7)), max_size=3),
    checks=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    know_app=st.booleans(),
)
def test_verify_matches_reference(n, seed, lba, pi_type, app, mask, corruptions, checks,
                                  know_app) -> None:
    data = bytearray(blocks(n, seed))
    pi = bytearray(generate(data, lba=lba, pi_type=pi_type, app_tag=app))
    for where, pos, bit in corruptions:
        buf = data if where == "data" else pi
        buf[pos % len(buf)] ^= 1 << bit
    kw = dict(lba=lba, pi_type=pi_type, app_tag=app if know_app else None, app_tag_mask=mask,
              check_guard=checks[0], check_app=checks[1], check_ref=checks[2])
    assert outcome(verify, bytes(data), bytes(pi), **kw) == outcome(
        verify_reference, bytes(data), bytes(pi), **kw
    )


# --- each check detects its corruption, at the first failing LBA ------------------------------


@pytest.mark.parametrize("n", [4, 40])  # small path and numpy path
@pytest.mark.parametrize("pi_type", [1, 2, 3])
def test_single_bit_flip_in_data_fails_guard(n: int, pi_type: int) -> None:
    data = blocks(n)
    pi = generate(data, lba=1000, pi_type=pi_type, app_tag=5)
    for block in (0, n // 2, n - 1):
        bad = flip(data, block * 512 + 137, 3)
        with pytest.raises(PiCheckError) as ei:
            verify(bad, pi, lba=1000, pi_type=pi_type, app_tag=5)
        e = ei.value
        assert (e.kind, e.lba, e.information) == ("guard", 1000 + block, 1000 + block)
        assert (e.sense_key, e.asc, e.ascq) == (0x0B, 0x10, 0x01)


@pytest.mark.parametrize("n", [4, 40])
def test_app_tag_flip_fails_app_check(n: int) -> None:
    data = blocks(n)
    pi = generate(data, lba=7, pi_type=1, app_tag=0x1234)
    bad = flip(pi, (n - 2) * PI_SIZE + 3, 0)  # low byte of the app tag
    with pytest.raises(PiCheckError) as ei:
        verify(data, bad, lba=7, pi_type=1, app_tag=0x1234)
    assert (ei.value.kind, ei.value.lba) == ("app", 7 + n - 2)
    assert (ei.value.asc, ei.value.ascq) == (0x10, 0x02)
    assert (ei.value.expected, ei.value.found) == (0x1234, 0x1235)
    # the mask hides the flipped bit; an unknown expected tag is not checked
    verify(data, bad, lba=7, pi_type=1, app_tag=0x1234, app_tag_mask=0xFF00)
    verify(data, bad, lba=7, pi_type=1, app_tag=None)
    verify(data, bad, lba=7, pi_type=1, app_tag=0x1234, check_app=False)


@pytest.mark.parametrize("n", [4, 40])
@pytest.mark.parametrize("pi_type", [1, 2])
def test_ref_tag_flip_fails_ref_check(n: int, pi_type: int) -> None:
    data = blocks(n)
    pi = generate(data, lba=U32 - 2, pi_type=pi_type)  # reference tags wrap inside the run
    bad = flip(pi, 3 * PI_SIZE + 7, 6)
    with pytest.raises(PiCheckError) as ei:
        verify(data, bad, lba=U32 - 2, pi_type=pi_type)
    assert (ei.value.kind, ei.value.lba) == ("ref", U32 + 1)
    assert (ei.value.asc, ei.value.ascq) == (0x10, 0x03)
    verify(data, bad, lba=U32 - 2, pi_type=pi_type, check_ref=False)


def test_misdirected_write_is_caught_by_type1_ref_tag() -> None:
    data = blocks(20)
    pi = generate(data, lba=500, pi_type=1)
    with pytest.raises(PiCheckError) as ei:
        verify(data, pi, lba=501, pi_type=1)
    assert (ei.value.kind, ei.value.lba) == ("ref", 501)


def test_type2_ref_is_checked_against_the_expected_initial_tag() -> None:
    data = blocks(20)
    pi = generate(data, lba=500, pi_type=2, ref_tag=0)
    verify(data, pi, lba=500, pi_type=2, ref_tag=0)
    with pytest.raises(PiCheckError, match="reference tag"):
        verify(data, pi, lba=500, pi_type=2)  # default expected initial tag = LBA


def test_type3_ref_tag_is_not_checked() -> None:
    data = blocks(20)
    pi = bytearray(generate(data, lba=9, pi_type=3, app_tag=1))
    pi[4 * PI_SIZE + 5] ^= 0xFF
    verify(data, bytes(pi), lba=9, pi_type=3, app_tag=1)


@pytest.mark.parametrize("n", [6, 30])
def test_first_failing_lba_wins_across_kinds(n: int) -> None:
    data = blocks(n)
    pi = generate(data, lba=0, pi_type=1, app_tag=3)
    bad_data = flip(data, (n - 1) * 512)  # guard failure late
    bad_pi = flip(pi, 2 * PI_SIZE + 5)  # ref failure earlier
    with pytest.raises(PiCheckError) as ei:
        verify(bad_data, bad_pi, lba=0, pi_type=1, app_tag=3)
    assert (ei.value.kind, ei.value.lba) == ("ref", 2)


@pytest.mark.parametrize("n", [3, 30])
def test_within_a_block_guard_then_app_then_ref(n: int) -> None:
    data = blocks(n)
    pi = bytearray(generate(data, lba=0, pi_type=1, app_tag=3))
    pi[PI_SIZE + 3] ^= 1  # app of block 1
    pi[PI_SIZE + 7] ^= 1  # ref of block 1
    with pytest.raises(PiCheckError) as ei:
        verify(data, bytes(pi), lba=0, pi_type=1, app_tag=3)
    assert (ei.value.kind, ei.value.lba) == ("app", 1)
    bad = flip(data, 512 + 9)
    with pytest.raises(PiCheckError) as ei:
        verify(bad, bytes(pi), lba=0, pi_type=1, app_tag=3)
    assert (ei.value.kind, ei.value.lba) == ("guard", 1)


# --- escapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 40])
@pytest.mark.parametrize("pi_type", [1, 2])
def test_app_tag_ffff_disables_checks_type1_2(n: int, pi_type: int) -> None:
    data = blocks(n)
    pi = bytearray(generate(data, lba=0, pi_type=pi_type, app_tag=3))
    pi[2 * PI_SIZE : 3 * PI_SIZE] = pack_tuple(0x0BAD, 0xFFFF, 0xDEADBEEF)
    verify(data, bytes(pi), lba=0, pi_type=pi_type, app_tag=3)
    pi[3 * PI_SIZE + 6] ^= 1  # a real failure after the escaped block is still reported
    with pytest.raises(PiCheckError) as ei:
        verify(data, bytes(pi), lba=0, pi_type=pi_type, app_tag=3)
    assert (ei.value.kind, ei.value.lba) == ("ref", 3)


@pytest.mark.parametrize("n", [4, 40])
def test_type3_escape_needs_app_and_ref_all_ones(n: int) -> None:
    data = blocks(n)
    pi = bytearray(generate(data, lba=0, pi_type=3, app_tag=3))
    pi[PI_SIZE : 2 * PI_SIZE] = pack_tuple(0x0BAD, 0xFFFF, 0xFFFFFFFF)
    verify(data, bytes(pi), lba=0, pi_type=3, app_tag=3)
    pi[PI_SIZE : 2 * PI_SIZE] = pack_tuple(0x0BAD, 0xFFFF, 0)  # app escape alone: checked
    with pytest.raises(PiCheckError) as ei:
        verify(data, bytes(pi), lba=0, pi_type=3, app_tag=3)
    assert (ei.value.kind, ei.value.lba) == ("guard", 1)


def test_generated_type3_tuple_with_app_ffff_is_still_checked() -> None:
    data = blocks(2)
    pi = generate(data, lba=0, pi_type=3, app_tag=0xFFFF)  # ref defaults to 0, not escape
    with pytest.raises(PiCheckError):
        verify(flip(data, 3), pi, lba=0, pi_type=3)


def test_unwritten_pi_all_ones_is_not_checked() -> None:
    verify(blocks(20), b"\xff" * 8 * 20, lba=123, pi_type=1, app_tag=4)
    verify(blocks(20), b"\xff" * 8 * 20, lba=123, pi_type=3, app_tag=4)


# --- inputs --------------------------------------------------------------------------------


def test_zero_blocks_and_no_checks() -> None:
    assert generate(b"", lba=0, pi_type=1) == b""
    verify(b"", b"", lba=0, pi_type=1)
    data = blocks(20)
    verify(data, bytes(160), lba=5, pi_type=1, check_guard=False, check_app=False,
           check_ref=False)


def test_caller_errors_are_value_errors() -> None:
    data = blocks(2)
    pi = generate(data, lba=0, pi_type=1)
    with pytest.raises(ValueError, match="PI"):
        verify(data, pi[:-1], lba=0, pi_type=1)
    with pytest.raises(ValueError, match="whole number"):
        generate(data[:-1], lba=0, pi_type=1)
    with pytest.raises(ValueError, match="type"):
        generate(data, lba=0, pi_type=0)
    with pytest.raises(ValueError, match="type 1"):
        generate(data, lba=0, pi_type=1, ref_tag=5)


def test_block_size_4096() -> None:
    data = blocks(3, block_size=4096)
    pi = generate(data, lba=10, pi_type=1, block_size=4096)
    assert len(pi) == 24
    verify(data, pi, lba=10, pi_type=1, block_size=4096)
    with pytest.raises(PiCheckError) as ei:
        verify(flip(data, 4096 * 2 + 4000), pi, lba=10, pi_type=1, block_size=4096)
    assert ei.value.lba == 12


def test_check_error_pickles() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(PiCheckError("ref", 42, expected=1, found=2)))
    assert (e.kind, e.lba, e.ascq, e.expected, e.found) == ("ref", 42, 0x03, 1, 2)
