"""The migration copy loop, pure: a dirty map, a gate, in-memory volumes and a writer that keeps
writing while the copy runs; the switch happens with nothing in flight and nothing lost."""

from __future__ import annotations

import asyncio
import random

import pytest

from difs.host.migrate import CHUNK, GRAIN, GATED, DirtyMap, Gate, copy_pass, copy_until_small, pause_and_switch


async def _nothing() -> None:
    pass


async def _never(paused_ms: float) -> None:
    raise AssertionError("no switch after a failed copy")


def _switch_to_new(vols):
    async def switch(paused_ms: float) -> None:
        vols.on_new = True
    return switch


def test_the_dirty_map_marks_grains_and_hands_out_runs_of_at_most_a_chunk():
    d = DirtyMap(3 * CHUNK + 4096)
    assert d.dirty_bytes == len(d.bits) * GRAIN  # everything is to be copied at first
    assert d.take() == (0, CHUNK)
    assert d.take(CHUNK // GRAIN) == (CHUNK, CHUNK)
    while d.take() is not None:
        pass
    assert d.dirty_bytes == 0 and d.clean_bytes() == d.size
    d.mark(GRAIN - 1, 2)  # straddles two grains
    d.mark(3 * CHUNK + 100, 1)  # the last, short grain
    assert d.take() == (0, 2 * GRAIN)
    assert d.take() == (3 * CHUNK, 4096)
    assert d.take() is None
    d.mark(5, 0)
    assert d.dirty_bytes == 0


class Volumes:
    """Old and new volume in memory; reads and writes yield to the loop like real I/O."""

    def __init__(self, size: int) -> None:
        self.old = bytearray(random.Random(1).randbytes(size))
        self.new = bytearray(size)
        self.on_new = False  # the application's disk after the switch

    async def app_write(self, offset: int, data: bytes) -> None:
        await asyncio.sleep(0)
        target = self.new if self.on_new else self.old
        await asyncio.sleep(0)
        target[offset:offset + len(data)] = data

    async def copy(self, offset: int, length: int) -> None:
        data = bytes(self.old[offset:offset + length])
        await asyncio.sleep(0)
        self.new[offset:offset + length] = data


async def _migrate_under_writes(size: int, writes: int) -> tuple[Volumes, bytearray, float]:
    vols = Volumes(size)
    dirty = DirtyMap(size)
    gate = Gate(dirty)
    rng = random.Random(2)
    model = bytearray(vols.old)
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set() or n < writes:
            offset = rng.randrange(0, size // 512) * 512
            data = rng.randbytes(min(4096, size - offset))
            model[offset:offset + len(data)] = data
            await gate.run(vols.app_write(offset, data), offset, len(data))
            n += 1

    task = asyncio.create_task(writer())
    passes: list[int] = []
    await copy_until_small(dirty, vols.copy, on_pass=passes.append)
    assert passes[0] == 0

    async def switch(paused_ms: float) -> None:
        assert gate.inflight == 0  # drained: nothing lands on the old volume after this
        vols.on_new = True

    ms = await pause_and_switch(gate, dirty, vols.copy, finish=_nothing, switch=switch)
    stop.set()
    await task
    return vols, model, ms


def test_a_copy_under_running_writes_loses_nothing():
    vols, model, ms = asyncio.run(_migrate_under_writes(8 * CHUNK, 2000))
    assert vols.new == model  # before, during and after the copy
    assert ms >= 0


def test_a_write_held_by_the_pause_runs_after_it_on_the_new_volume():
    async def main() -> None:
        vols = Volumes(CHUNK)
        dirty = DirtyMap(CHUNK)
        gate = Gate(dirty)
        await copy_pass(dirty, vols.copy)
        entered = asyncio.Event()

        async def slow_copy(offset: int, length: int) -> None:
            entered.set()
            await vols.copy(offset, length)

        dirty.mark(0, 512)
        switching = asyncio.create_task(pause_and_switch(
            gate, dirty, slow_copy, finish=_nothing, switch=_switch_to_new(vols)))
        await entered.wait()  # paused: the copy of what was left runs
        held = asyncio.create_task(gate.run(vols.app_write(0, b"x" * 512), 0, 512))
        await asyncio.sleep(0)
        assert not held.done() and vols.new[:512] != b"x" * 512
        await switching
        await held
        assert vols.new[:512] == b"x" * 512 and vols.old[:512] != b"x" * 512

    asyncio.run(main())


def test_a_failed_copy_resumes_the_io_and_puts_the_grains_back():
    async def main() -> None:
        dirty = DirtyMap(2 * CHUNK)
        gate = Gate(dirty)

        async def broken(offset: int, length: int) -> None:
            raise OSError("read failed")

        with pytest.raises(OSError):
            await pause_and_switch(gate, dirty, broken, finish=_nothing, switch=_never)
        assert dirty.dirty_bytes == 2 * CHUNK  # nothing counted as copied
        assert await gate.run(asyncio.sleep(0, "ran")) == "ran"  # the I/O is not held

    asyncio.run(main())


class FakeDisk:
    """The NBD side of a disk; write_zeroes with FUA calls its own flush, as AppDisk's does."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.zeroing = asyncio.Event()

    async def read(self, offset: int, length: int) -> bytes:
        return bytes(length)

    async def write(self, offset: int, data, *, fua: bool) -> None:
        self.calls.append("write")

    async def flush(self) -> None:
        self.calls.append("flush")

    async def trim(self, offset: int, length: int) -> None:
        self.calls.append("trim")

    async def write_zeroes(self, offset: int, length: int, *, may_trim: bool, fua: bool, fast: bool = False) -> None:
        await self.zeroing.wait()
        if fua:
            await self.flush()


def test_the_gate_stands_before_one_disk_only_and_lets_a_request_s_own_calls_pass():
    async def main() -> None:
        disk, other = FakeDisk(), FakeDisk()
        gate = Gate(DirtyMap(CHUNK))
        while gate.dirty.take() is not None:
            pass
        gate.install(disk)
        assert all(name in vars(disk) for name in GATED) and not vars(other).keys() & set(GATED)
        await disk.write(GRAIN, b"x" * 512, fua=False)
        assert gate.dirty.take() == (GRAIN, GRAIN)  # the write marked its grain
        zeroing = asyncio.create_task(disk.write_zeroes(0, 4096, may_trim=False, fua=True))
        await asyncio.sleep(0)
        pausing = asyncio.create_task(gate.pause())  # waits for the zeroing in flight
        await asyncio.sleep(0)
        assert not pausing.done()
        disk.zeroing.set()  # its own flush passes the closed gate: no deadlock
        await asyncio.wait_for(pausing, 5)
        await zeroing
        assert disk.calls == ["write", "flush"]
        held = asyncio.create_task(disk.trim(0, 512))
        await asyncio.sleep(0)
        assert not held.done()  # paused: new requests wait
        gate.resume()
        await held
        Gate.remove(disk)
        assert not vars(disk).keys() & set(GATED)

    asyncio.run(main())


def test_a_switch_the_manager_did_not_answer_is_reported_again_until_it_does(caplog):
    """No answer (None) may mean committed or not: the host reports again, I/O still held,
    until the manager says which; a refusal (False) is final at once."""
    from difs.host.migrate import settle

    answers = [None, None, None, True]
    calls = []

    async def commit(migration):
        calls.append(migration)
        return answers.pop(0)

    with caplog.at_level("WARNING", logger="difs.host"):
        assert asyncio.run(settle(commit, "m", retry=0.001)) is True
    assert calls == ["m"] * 4
    assert sum("no answer from the manager to the switch" in r.getMessage()
               for r in caplog.records) == 1  # one line, not one per retry

    refused = [None, False, True]

    async def commit2(migration):
        return refused.pop(0)

    assert asyncio.run(settle(commit2, "m", retry=0.001)) is False
    assert refused == [True]
