"""The PI store on files: data + complemented PI + intent log, and recovery after a crash
left any prefix of a write's steps done (log record, data, PI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from difs.integrity import PiCheckError, generate
from difs.integrity.layout import encode_intent, to_stored
from difs.scsi.store import PiBlockStore
from difs.storage.filestore import FileStore
from difs.storage.pistore import FileIntentLog, PiStore

BLOCKS = 64


def open_store(root: Path, *, pi_type: int = 1, app_tag: int | None = None,
               checkpoint_bytes: int = 1 << 20) -> PiStore:
    data = FileStore.open(root / "v.img", size=BLOCKS * 512)
    pi = FileStore.open(root / "v.pi", size=BLOCKS * 8)
    store = PiStore(data, pi, pi_type=pi_type, app_tag=app_tag,
                    log=FileIntentLog(root / "v.pilog"), checkpoint_bytes=checkpoint_bytes)
    return store


def blocks(n: int, seed: int) -> bytes:
    return bytes((i * 13 + seed) & 0xFF for i in range(n * 512))


def test_round_trip_and_layout_on_disk(tmp_path):
    s = open_store(tmp_path, app_tag=0x21)
    data = blocks(4, 1)
    s.pwrite(8 * 512, data)
    assert s.pread(8 * 512, 4 * 512) == data
    pi = generate(data, lba=8, pi_type=1, app_tag=0x21)
    raw_pi = (tmp_path / "v.pi").read_bytes()
    assert raw_pi[64:96] == to_stored(pi)  # complemented at lba * 8
    assert raw_pi[:64] == bytes(64)  # never written: reads back as escape PI
    assert (tmp_path / "v.img").read_bytes()[8 * 512:12 * 512] == data  # raw image
    assert (tmp_path / "v.pilog").stat().st_size > 0
    s.flush()
    assert (tmp_path / "v.pilog").stat().st_size == 0
    s.close()


def test_log_is_checkpointed_when_it_grows(tmp_path):
    s = open_store(tmp_path, checkpoint_bytes=200)
    s.pwrite(0, blocks(1, 1))
    size1 = (tmp_path / "v.pilog").stat().st_size
    assert 0 < size1 < 200
    for i in range(1, 10):
        s.pwrite(i * 512, blocks(1, i))
    assert (tmp_path / "v.pilog").stat().st_size < 200
    s.close()


def test_pread_detects_bit_flip_at_rest(tmp_path):
    s = open_store(tmp_path)
    s.pwrite(0, blocks(2, 5))
    s.close()
    with open(tmp_path / "v.img", "r+b") as f:
        f.seek(512 + 17)
        b = f.read(1)
        f.seek(512 + 17)
        f.write(bytes((b[0] ^ 0x04,)))
    s = open_store(tmp_path)
    assert s.recover().records == 1  # the log was not flushed: replay keeps the new PI
    with pytest.raises(PiCheckError) as exc:
        s.pread(0, 1024)
    assert exc.value.kind == "guard" and exc.value.lba == 1
    s.close()


def _crash(root: Path, old: bytes, new: bytes, lba: int, *, steps: str) -> PiStore:
    """Leave the files as a crash after ``steps`` of a write of ``new`` over ``old``."""
    s = open_store(root)
    s.pwrite(lba * 512, old)
    s.flush()
    pi = generate(new, lba=lba, pi_type=1)
    if "log" in steps:
        s.log.append(encode_intent(99, lba, pi))
    if "data" in steps:
        s.data.pwrite(lba * 512, new)
    if "torn" in steps:  # only the first block's data reached the file
        s.data.pwrite(lba * 512, new[:512])
    if "pi" in steps:
        s.pi.pwrite(lba * 8, to_stored(pi))
    s.data.close()
    s.pi.close()
    s.log.close()  # no flush: the process died
    return open_store(root)


@pytest.mark.parametrize("steps, expect", [
    ("", "old"), ("log", "old"), ("log data", "new"), ("log data pi", "new")])
def test_recovery_keeps_what_agrees(tmp_path, steps, expect):
    old, new = blocks(3, 1), blocks(3, 2)
    s = _crash(tmp_path, old, new, 5, steps=steps)
    rec = s.recover()
    assert rec.poisoned == ()
    assert s.pread(5 * 512, 3 * 512) == (new if expect == "new" else old)
    assert (tmp_path / "v.pilog").stat().st_size == 0
    s.close()


def test_recovery_poisons_a_block_matching_neither(tmp_path):
    old, new = blocks(2, 1), blocks(2, 2)
    s = _crash(tmp_path, old, new, 9, steps="log torn")
    rec = s.recover()
    assert rec.rolled_forward == 1 and rec.kept == 1 and rec.poisoned == ()
    assert s.pread(9 * 512, 1024) == new[:512] + old[512:]  # each block old or new, valid
    s.close()
    # a block whose bytes are half old, half new (a torn sector) is poisoned
    s = open_store(tmp_path)
    s.recover()
    s.pwrite(9 * 512, old)
    s.flush()
    pi = generate(new, lba=9, pi_type=1)
    s.log.append(encode_intent(1, 9, pi))
    s.data.pwrite(9 * 512 + 256, new[256:512])
    s.log.close()
    s.data.close()
    s.pi.close()
    s = open_store(tmp_path)
    assert s.recover().poisoned == (9,)
    with pytest.raises(PiCheckError) as exc:
        s.pread(9 * 512, 512)
    assert exc.value.kind == "guard" and exc.value.lba == 9
    s.pwrite(9 * 512, new[:512])  # rewriting heals it
    assert s.pread(9 * 512, 512) == new[:512]
    s.close()


def test_second_write_whose_pi_did_not_land_is_not_poisoned(tmp_path):
    s = open_store(tmp_path)
    a, b = blocks(1, 1), blocks(1, 2)
    s.pwrite(0, a)  # record 1, complete
    s.log.append(encode_intent(50, 0, generate(b, lba=0, pi_type=1)))  # record 2
    s.data.pwrite(0, b)  # its data landed, its PI did not
    s.data.close(), s.pi.close(), s.log.close()
    s = open_store(tmp_path)
    rec = s.recover()
    assert rec.records == 2 and rec.poisoned == ()
    assert s.pread(0, 512) == b
    s.close()


def test_unmap_escapes_pi_before_data(tmp_path):
    s = open_store(tmp_path)
    s.pwrite(0, blocks(16, 3))
    s.discard(512, 8 * 512)
    assert s.pread(512, 8 * 512) == bytes(8 * 512)
    assert s.pread_stored_pi(1, 8) == b"\xff" * 64
    s.write_zeroes(0, 512)
    assert s.pread_stored_pi(0, 1) == b"\xff" * 8
    s.close()


def test_atomic_write_goes_through_the_data_journal_and_the_log(tmp_path):
    data = FileStore.open(tmp_path / "v.img", size=BLOCKS * 512, journal=tmp_path / "v.atomic")
    pi = FileStore.open(tmp_path / "v.pi", size=BLOCKS * 8)
    s = PiStore(data, pi, pi_type=3, log=FileIntentLog(tmp_path / "v.pilog"))
    assert s.atomic_write_max > 0
    payload = blocks(4, 7)
    s.pwrite_atomic(4 * 512, payload)
    assert s.pread(4 * 512, 2048) == payload
    assert s.pread_stored_pi(4, 4) == generate(payload, lba=4, pi_type=3)
    assert os.path.getsize(tmp_path / "v.atomic") == 0
    s.close()


def test_the_pi_store_is_the_cores_pi_block_store_with_nothing_left_abstract():
    assert issubclass(PiStore, PiBlockStore) and not PiStore.__abstractmethods__
    assert {"pread_pi", "pwrite_pi", "verify", "generate"} <= PiBlockStore.__abstractmethods__
    s = PiStore.in_memory(8 * 512, pi_type=1, app_tag=5)
    assert (s.pi_type, s.app_tag, s.block_size) == (1, 5, 512)
    assert s.pread_stored_pi(0, 8) == b"\xff" * 64   # never written: the escape tuple
