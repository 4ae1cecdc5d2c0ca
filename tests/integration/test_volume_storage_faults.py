"""A real ``difs controller`` whose data directory is a small tmpfs that fills up.

A write that needs space the file system no longer has gets what a thin-provisioned array
answers - CHECK CONDITION, DATA PROTECT 27h/07h SPACE ALLOCATION FAILED WRITE PROTECT - for
that command only: the same session keeps reading what was acknowledged before (with PI
that still verifies on a PI volume), the controller logs it once per burst with the volume
name, and once space is freed the same write succeeds.  On a PI volume, a write whose data
landed in part before the disk ran out leaves no block failing its PI check.

A real EIO comes from a loop device whose backing file sits on a full tmpfs (device-mapper's
``error`` target is not available in this container): the block device accepts the write
into its page cache, and the FUA write's fdatasync reports EIO - MEDIUM ERROR 0Ch/00h
WRITE ERROR for that command, the session carrying on.  (A read EIO has no real source
here - a loop device reads a backing file's holes as zeros - so it is injected at the store
boundary in tests/unit/controller/test_adapter_store_faults.py.)

And a crash right after writes failed for lack of space: the controller restarts on the
still-full file system, replays its intent log, and every block's PI verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import controller, fill, free_port, need_tool, run, start_difs, tmpfs

from difs.controller.volumes import VolumeDirectory
from difs.host.connection import IscsiSession, SessionTimers
from difs.integrity import split, verify
from difs.iscsi.config import InitiatorConfig
from difs.sam.sense import DATA_PROTECT, parse_sense

pytestmark = pytest.mark.integration

QUIET = SessionTimers(nop_interval=None, command_timeout=10.0, login_timeout=5.0)
SPACE_FAILED = (DATA_PROTECT, 0x27, 0x07)
N = 64  # blocks per write: 32 KiB, 8 pages of the data file
FAR = 4096  # an LBA whose pages were never allocated
VOLUME_SIZE = 8 << 20


def rw16(op: int, lba: int, n: int, protect: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, protect << 5, lba, n, 0, 0)


async def session(ctl, volume: str, isid: int) -> IscsiSession:
    config = InitiatorConfig(initiator_name="iqn.2026-11.io.difs:test.full", isid=isid,
                             target_name=ctl.iqn(volume))
    s = await IscsiSession.connect(f"127.0.0.1:{ctl.port}", config, name=volume, timers=QUIET)
    await s.execute(0, bytes(6))  # the power-on unit attention
    return s


async def write(s: IscsiSession, lba: int, data: bytes):
    return await s.execute(0, rw16(0x8A, lba, len(data) // 512), data_out=data)


async def read(s: IscsiSession, lba: int, n: int, protect: int = 0) -> bytes:
    unit = 520 if protect else 512
    done = await s.execute(0, rw16(0x88, lba, n, protect), expected_in_length=n * unit)
    assert done.status == 0, bytes(done.sense).hex()
    return bytes(done.data)


async def full_disk_scenario(ctl, fs: Path, volume: str, isid: int, pi: bool) -> None:
    rng = random.Random(isid)
    s = await session(ctl, volume, isid)
    try:
        before = rng.randbytes(N * 512)
        assert (await write(s, 0, before)).status == 0
        fill(fs / "filler")
        new = rng.randbytes(N * 512)
        for _ in range(2):  # a burst: logged once
            done = await write(s, FAR, new)
            assert done.status == 2  # CHECK CONDITION
            assert parse_sense(done.sense) == SPACE_FAILED, bytes(done.sense).hex()
        # that command only: the session is up and returns what was acknowledged
        assert s.is_up
        assert (await s.execute(0, bytes(6))).status == 0
        assert await read(s, 0, N) == before
        assert await read(s, FAR, N) == bytes(N * 512)  # the failed write left nothing
        if pi:
            data, tuples = split(await read(s, 0, N, protect=1))
            verify(data, tuples, lba=0, pi_type=1)
            assert bytes(data) == before
        os.unlink(fs / "filler")  # space again: the same write succeeds
        assert (await write(s, FAR, new)).status == 0
        assert await read(s, FAR, N) == new
        assert await read(s, 0, N) == before
    finally:
        await s.logout()


async def partial_pi_write(ctl, fs: Path) -> None:
    """Overwrite 8 allocated pages and 8 new ones with 2 pages left: the data lands in the
    allocated pages (and perhaps one more), then ENOSPC."""
    rng = random.Random(7)
    s = await session(ctl, "pv", 0x023D00000103)
    try:
        lba = 2 * FAR
        assert (await write(s, lba, rng.randbytes(N * 512))).status == 0
        fill(fs / "filler", leave=2 * 4096)
        done = await write(s, lba, rng.randbytes(2 * N * 512))
        assert parse_sense(done.sense) == SPACE_FAILED, bytes(done.sense).hex()
        await read(s, lba, 2 * N)  # protect 000b: the controller checks every block's PI
        data, tuples = split(await read(s, lba, 2 * N, protect=1))
        verify(data, tuples, lba=lba, pi_type=1)  # and the host finds them agreeing
        os.unlink(fs / "filler")
    finally:
        await s.logout()


def test_full_disk_is_space_allocation_failed_for_that_command_only(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs:
        with controller(fs / "ctl", "--volume", "tv:64M", "--volume", "pv:64M:pi1") as ctl:
            asyncio.run(full_disk_scenario(ctl, fs, "tv", 0x023D00000101, pi=False))
            asyncio.run(full_disk_scenario(ctl, fs, "pv", 0x023D00000102, pi=True))
            asyncio.run(partial_pi_write(ctl, fs))
            log = ctl.proc.log_text()
        lines = [line for line in log.splitlines() if "volume out of space" in line]
        assert any("volume=tv" in line for line in lines), log[-3000:]
        assert any("volume=pv" in line for line in lines), log[-3000:]
        # rate-limited: the burst of two failures on each volume is one line
        assert sum("volume=tv" in line for line in lines) == 1, lines
        assert "ENOSPC" in lines[0] and "SPACE ALLOCATION FAILED WRITE PROTECT" in lines[0]
        print("\n".join(lines))


# --- a real EIO: the volume on a loop device whose backing file cannot grow ---------------


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    """A loop device over ``backing`` (root; skipped where the kernel offers none)."""
    made = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    dev = made.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


async def eio_scenario(ctl) -> None:
    rng = random.Random(11)
    s = await session(ctl, "ev", 0x023D00000104)
    try:
        before = rng.randbytes(N * 512)
        fua = rw16(0x8A, 0, N)[:1] + b"\x08" + rw16(0x8A, 0, N)[2:]  # WRITE(16) FUA=1
        assert (await s.execute(0, fua, data_out=before)).status == 0
        big = 4096  # blocks: 2 MiB, more than the tmpfs under the loop device holds
        for lba in (8192, 12288):  # a burst of two: one log line
            cdb = struct.pack(">BBQIBB", 0x8A, 0x08, lba, big, 0, 0)
            done = await s.execute(0, cdb, data_out=rng.randbytes(big * 512))
            assert done.status == 2
            assert parse_sense(done.sense) == (0x3, 0x0C, 0x00), bytes(done.sense).hex()
        assert s.is_up
        assert (await s.execute(0, bytes(6))).status == 0
        assert await read(s, 0, N) == before
    finally:
        await s.logout()


def test_eio_from_the_device_is_write_error_for_that_command_only(tmp_path: Path) -> None:
    """The loop device's backing file lives on a 1 MiB tmpfs: writing it back fails, and
    the block device reports EIO to the controller's fdatasync (a FUA write)."""
    with tmpfs(tmp_path / "fs", "1m") as fs:
        backing = fs / "backing"
        with open(backing, "wb") as f:
            f.truncate(VOLUME_SIZE)
        with loop_device(backing) as dev:
            data_dir = tmp_path / "ctl"
            directory = VolumeDirectory(data_dir)
            directory.ensure("ev", VOLUME_SIZE)
            image = directory.data_path("ev")
            image.unlink()
            image.symlink_to(dev)  # the volume's blocks are the loop device
            with controller(data_dir, "--volume", "ev") as ctl:
                asyncio.run(eio_scenario(ctl))
                log = ctl.proc.log_text()
    lines = [line for line in log.splitlines() if "volume I/O error" in line]
    assert len(lines) == 1, log[-3000:]
    assert "volume=ev" in lines[0] and "EIO" in lines[0] and "WRITE ERROR" in lines[0]


# --- a crash after a full disk --------------------------------------------------------------


class Restartable:
    """``difs controller`` on a fixed data directory and port, killed with SIGKILL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc = None

    def start(self) -> None:
        self.proc = start_difs("controller", "--portal", f"127.0.0.1:{self.port}",
                               "--data-dir", str(self.data_dir), "--name", "test",
                               "--volume", "pv:64M:pi1")
        self.proc.wait_for_lines(1, "iscsi://")

    def iqn(self, volume: str) -> str:
        return f"iqn.2026-11.io.difs:test.{volume}"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGKILL)


async def before_the_crash(ctl, fs: Path) -> tuple[bytes, bytes]:
    rng = random.Random(21)
    s = await session(ctl, "pv", 0x023D00000105)
    a, c = rng.randbytes(N * 512), rng.randbytes(N * 512)
    assert (await write(s, 0, a)).status == 0
    assert (await write(s, FAR, c)).status == 0
    fill(fs / "filler", leave=2 * 4096)
    for lba, n in ((FAR, 2 * N), (3 * FAR, N)):  # in part, and not at all
        done = await write(s, lba, rng.randbytes(n * 512))
        assert parse_sense(done.sense) == SPACE_FAILED, bytes(done.sense).hex()
    s.abort()
    return a, c


async def after_the_crash(ctl, fs: Path, a: bytes) -> None:
    s = await session(ctl, "pv", 0x023D00000106)
    try:
        data, tuples = split(await read(s, 0, N, protect=1))
        verify(data, tuples, lba=0, pi_type=1)
        assert bytes(data) == a  # acknowledged before the disk filled: intact
        for lba in (FAR, 3 * FAR):  # the failed writes' blocks: old or new, PI agreeing
            await read(s, lba, 2 * N)
            data, tuples = split(await read(s, lba, 2 * N, protect=1))
            verify(data, tuples, lba=lba, pi_type=1)
        os.unlink(fs / "filler")
        fresh = random.Random(22).randbytes(N * 512)
        assert (await write(s, 3 * FAR, fresh)).status == 0
        assert await read(s, 3 * FAR, N) == fresh
    finally:
        await s.logout()


@pytest.mark.slow
def test_pi_volume_after_a_full_disk_and_a_crash(tmp_path: Path) -> None:
    """kill -9 right after writes failed for lack of space; the controller restarts on the
    still-full file system, replays its intent log, and every block's PI verifies."""
    with tmpfs(tmp_path / "fs", "4m") as fs:
        ctl = Restartable(fs / "ctl")
        try:
            ctl.start()
            a, _c = asyncio.run(before_the_crash(ctl, fs))
            ctl.kill()
            ctl.start()
            asyncio.run(after_the_crash(ctl, fs, a))
            log = ctl.proc.log_text()
            assert "torn blocks" not in log, log[-3000:]
        finally:
            ctl.kill()


# --- through the host: the application is told the disk is full, not just "I/O error" -------


def test_full_controller_disk_is_enospc_to_the_application_through_the_host(tmp_path) -> None:
    """qemu-io over the host's NBD export: a write the controller cannot allocate space for
    fails with "No space left on device" (ENOSPC, from DATA PROTECT 27h/07h), the data written
    before reads back, and the next write succeeds once space is freed."""
    need_tool("qemu-io")
    with tmpfs(tmp_path / "fs", "4m") as fs:
        with controller(fs / "ctl", "--volume", "tv:64M") as ctl:
            nbd_port = free_port()
            host = start_difs("host", "--nbd", f"127.0.0.1:{nbd_port}",
                              "--app", f"a={ctl.url('tv')}", "--nop-interval", "1")
            try:
                [nbd] = host.wait_for_lines(1, "nbd://")

                def io(cmd: str):
                    return run(["qemu-io", "-f", "raw", "-t", "none", "-c", cmd, nbd],
                               check=False)

                assert "error" not in io("write -P 0x5a 0 64k").stdout
                fill(fs / "filler")
                full = io("write -P 0x6b 32M 64k")
                out = full.stdout + full.stderr
                assert "No space left on device" in out, out
                assert "Pattern verification failed" not in io("read -P 0x5a 0 64k").stdout
                os.unlink(fs / "filler")
                again = io("write -P 0x6b 32M 64k")
                assert "error" not in (again.stdout + again.stderr).lower(), again.stdout
                assert "verification" not in io("read -P 0x6b 32M 64k").stdout
            finally:
                host.stop()
