"""The soak's sector pattern and model: current, stale, corrupt and lost are told apart."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from difssoak.pattern import SECTOR, AppModel, Verdict, make_sector, read_sector  # noqa: E402


def test_a_sector_names_its_application_sector_and_generation() -> None:
    tag = b"app01".ljust(16, b"\0")
    data = make_sector(tag, 7, 42)
    assert len(data) == SECTOR
    assert read_sector(tag, 7, data) == 42
    assert read_sector(tag, 7, bytes(SECTOR)) == 0
    assert read_sector(tag, 8, data) is None  # misdirected: another sector's content
    assert read_sector(b"app02".ljust(16, b"\0"), 7, data) is None  # another application's
    for byte in (0, 30, 100, SECTOR - 1):  # any bit flipped anywhere is caught
        flipped = bytearray(data)
        flipped[byte] ^= 0x10
        assert read_sector(tag, 7, bytes(flipped)) is None


def _written(model: AppModel, first: int, count: int) -> tuple[int, bytes]:
    gen, data = model.begin_write(first, count)
    model.write_acked(gen)
    return gen, data


def test_the_model_tells_flushed_loss_from_unflushed_loss() -> None:
    m = AppModel("app", 16)
    _, old = _written(m, 0, 4)
    assert m.flush_acked() == 1
    _, new = _written(m, 0, 4)
    # the new write is there: current; the old one came back: an unflushed write was lost
    assert m.judge_extent(0, new) == {}
    assert m.judge_extent(0, old) == {Verdict.LOST_UNFLUSHED: [0, 1, 2, 3]}
    assert m.judge(0, bytes(SECTOR)) is Verdict.LOST_FLUSHED  # flushed data gone: zeros
    m.flush_acked()
    assert m.judge_extent(0, old) == {Verdict.LOST_FLUSHED: [0, 1, 2, 3]}


def test_a_torn_write_is_judged_per_sector() -> None:
    m = AppModel("app", 16)
    _, old = _written(m, 0, 2)
    m.flush_acked()
    gen, new = m.begin_write(0, 2)  # failed: never acknowledged, may or may not have landed
    torn = new[:SECTOR] + old[SECTOR:]
    assert m.judge_extent(0, torn) == {}


def test_a_lost_connection_leaves_its_unflushed_writes_in_doubt() -> None:
    m = AppModel("app", 16)
    _, old = _written(m, 0, 1)
    m.flush_acked()
    _written(m, 0, 1)
    assert m.connection_lost() == 1
    assert m.flush_acked() == 0  # a flush on the next connection does not cover it
    assert m.judge(0, old[:SECTOR]) is Verdict.LOST_UNFLUSHED


def test_corruption_and_phantoms_are_corrupt() -> None:
    m = AppModel("app", 16)
    _, data = _written(m, 2, 2)
    assert m.judge(0, make_sector(m.tag, 0, 1)) is Verdict.CORRUPT  # gen 1 never wrote sector 0
    assert m.judge(2, make_sector(m.tag, 2, 99)) is Verdict.CORRUPT  # a generation never issued
    bad = bytearray(data)
    bad[SECTOR + 200] ^= 1
    assert m.judge_extent(2, bytes(bad)) == {Verdict.CORRUPT: [3]}
