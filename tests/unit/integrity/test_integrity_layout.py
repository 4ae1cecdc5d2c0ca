"""At-rest layout helpers: intent records, complemented PI storage, crash reconciliation.

The last test runs the recommended write protocol (log, data, PI) against in-memory files,
"kills" it in the middle of any pwrite at a page boundary, replays the log and checks that
data and PI agree everywhere and every acknowledged write reads back.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.integrity import PiCheckError, generate, verify
from difs.integrity.layout import (
    decode_intents,
    encode_intent,
    from_stored,
    reconcile,
    to_stored,
)

BS = 512
PAGE = 4096


def rand(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()


def test_intent_records_round_trip_and_stop_at_torn_tail() -> None:
    a = encode_intent(1, 100, rand(8 * 3, 1))
    b = encode_intent(2, 7, rand(8, 2))
    recs, end = decode_intents(a + b)
    assert [(r.seq, r.lba, r.nblocks) for r in recs] == [(1, 100, 3), (2, 7, 1)]
    assert end == len(a) + len(b)
    for cut in range(len(b)):  # every torn tail is ignored, the intact record is kept
        recs, end = decode_intents(a + b[:cut])
        assert [r.seq for r in recs] == [1] and end == len(a)
    bad = bytearray(a + b)
    bad[len(a) + 30] ^= 1  # corrupt the second record's body
    assert [r.seq for r in decode_intents(bytes(bad))[0]] == [1]
    assert decode_intents(b"")[0] == []


def test_stored_pi_is_complemented_so_holes_read_as_unwritten() -> None:
    pi = rand(64, 3)
    assert from_stored(to_stored(pi)) == pi
    assert to_stored(pi) != pi
    assert from_stored(bytes(16)) == b"\xff" * 16  # SBC-4 PI of an unwritten block


def test_reconcile_keeps_what_agrees_and_poisons_torn_blocks() -> None:
    old, new = rand(8 * BS, 4), rand(8 * BS, 5)
    p_old = generate(old, lba=8, pi_type=1, app_tag=1)
    p_new = generate(new, lba=8, pi_type=1, app_tag=2)
    found = new[: 3 * BS] + old[3 * BS : 6 * BS] + rand(BS, 6) + new[7 * BS :]
    r = reconcile(found, p_old, p_new, pi_type=1)
    assert (r.rolled_forward, r.kept, r.poisoned) == (4, 3, (6,))
    good = np.r_[0:6, 7:8]
    for i in good:
        verify(found[i * BS : (i + 1) * BS], r.pi[i * 8 : i * 8 + 8], lba=8 + i, pi_type=1)
    try:
        verify(found, r.pi, lba=8, pi_type=1)
    except PiCheckError as e:
        assert (e.kind, e.lba) == ("guard", 14)
    else:
        raise AssertionError("a torn block must never verify")


def test_reconcile_keeps_unwritten_blocks_whose_write_never_landed() -> None:
    new = rand(3 * BS, 7)
    found = bytes(BS) + new[BS:]  # crash: block 0 of the write never reached the data file
    unwritten = from_stored(bytes(24))  # PI file hole: all-ones, the SBC-4 "unwritten" PI
    r = reconcile(found, unwritten, generate(new, lba=0, pi_type=1), pi_type=1)
    assert (r.rolled_forward, r.kept, r.poisoned) == (2, 1, ())
    assert r.pi[:8] == b"\xff" * 8
    verify(found, r.pi, lba=0, pi_type=1)


def test_reconcile_type3_escape_needs_both_tags() -> None:
    new, other = rand(BS, 8), rand(BS, 9)
    app_only = bytes.fromhex("0000ffff00000000")
    r = reconcile(other, app_only, generate(new, lba=0, pi_type=3), pi_type=3)
    assert r.poisoned == (0,)
    r = reconcile(other, app_only, generate(new, lba=0, pi_type=1), pi_type=1)
    assert (r.kept, r.poisoned) == (1, ())


class Volume:
    """The recommended protocol over in-memory 'files'; ``budget`` counts bytes until kill."""

    def __init__(self, nblocks: int) -> None:
        self.data = bytearray(nblocks * BS)
        self.pi = bytearray(nblocks * 8)  # complemented: zeros = unwritten
        self.log = bytearray()
        self.budget: int | None = None
        self.seq = 0

    def _pwrite(self, f: bytearray, off: int, buf: bytes) -> None:
        if self.budget is not None and self.budget < len(buf):
            # killed inside this pwrite: it got as far as the last whole page it started in
            done = 0 if self.budget <= 0 else ((off + self.budget) // PAGE * PAGE - off)
            done = max(0, min(done, len(buf)))
            f[off : off + done] = buf[:done]
            raise KeyboardInterrupt
        if self.budget is not None:
            self.budget -= len(buf)
        f[off : off + len(buf)] = buf

    def write(self, lba: int, data: bytes, app: int) -> None:
        pi = generate(data, lba=lba, pi_type=1, app_tag=app)
        self.seq += 1
        self._pwrite(self.log, len(self.log), encode_intent(self.seq, lba, pi))
        self._pwrite(self.data, lba * BS, data)
        self._pwrite(self.pi, lba * 8, to_stored(pi))

    def recover(self) -> list[int]:
        """Replay the log in order; a block's verdict is that of the last record naming it
        (a later record that reconciles a block heals an earlier poisoning)."""
        poisoned: set[int] = set()
        records, _ = decode_intents(bytes(self.log))
        for rec in records:
            a, b = rec.lba * BS, (rec.lba + rec.nblocks) * BS
            stored = from_stored(bytes(self.pi[rec.lba * 8 : rec.lba * 8 + len(rec.pi)]))
            r = reconcile(bytes(self.data[a:b]), stored, rec.pi, pi_type=1)
            self.pi[rec.lba * 8 : rec.lba * 8 + len(rec.pi)] = to_stored(r.pi)
            bad = {rec.lba + i for i in r.poisoned}
            poisoned -= set(range(rec.lba, rec.lba + rec.nblocks)) - bad
            poisoned |= bad
        self.log.clear()
        return sorted(poisoned)


writes = st.lists(st.tuples(st.integers(0, 56), st.integers(1, 8), st.integers(0, 2**31)),
                  min_size=1, max_size=12)


@settings(max_examples=120, deadline=None)
@given(ops=writes, budget=st.integers(0, 60_000))
def test_crash_anywhere_then_replay_keeps_data_and_pi_in_agreement(ops, budget) -> None:
    vol = Volume(64)
    expected: dict[int, bytes] = {}  # block -> data of the last acknowledged write
    vol.budget = budget
    for lba, n, seed in ops:
        data = rand(n * BS, seed)
        try:
            vol.write(lba, data, app=seed & 0xFFFF)
        except KeyboardInterrupt:
            # the in-flight write may or may not have landed, block by block
            for i in range(n):
                expected.pop(lba + i, None)
            break
        for i in range(n):
            expected[lba + i] = data[i * BS : (i + 1) * BS]
    assert vol.recover() == []  # page-granular tears never split a 512-byte block
    pi = from_stored(bytes(vol.pi))
    for blk in range(64):
        block, tup = vol.data[blk * BS : (blk + 1) * BS], pi[blk * 8 : blk * 8 + 8]
        verify(bytes(block), tup, lba=blk, pi_type=1)  # data and PI agree everywhere
        if blk in expected:
            assert bytes(block) == expected[blk]  # acknowledged writes read back
