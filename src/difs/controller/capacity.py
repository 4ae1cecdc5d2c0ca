"""What this controller can do in all, for QoS: calibrated once on its data directory.

The QoS scheduler paces the proportional share and the manager admits reservations
against a :class:`~difs.controller.qos.Capacity` (IOPS and bytes/s). It comes from, in
order: ``difs controller --capacity-iops N --capacity-bytes-per-second B`` (either alone
overrides that half), the file ``qos-capacity.json`` in the data directory (written by an
earlier calibration), or a calibration run now (then saved there, so later starts reuse it;
delete the file to measure again).

The calibration is a short measured run (about :data:`CALIBRATION_SECONDS` in all) on a
scratch file in the data directory, opened with ``O_DIRECT`` where the file system allows
it (page-aligned buffers; without it the page cache is measured, and writes are made
durable with ``fdatasync`` inside the timed run): 1 MiB sequential writes, 1 MiB sequential
reads, 4 KiB random reads, 4 KiB random writes, one after the other, one at a time (the
controller runs each command to completion, so queue depth 1 is what it gets). IOPS is the
rate of a 50/50 mix of the 4 KiB reads and writes (harmonic mean), bytes/s the same of the
sequential reads and writes. Each phase is logged as it ends.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from difs.controller.qos import Capacity
from difs.util.logs import log_event

log = logging.getLogger("difs.controller")

CAPACITY_FILE = "qos-capacity.json"
SCRATCH_FILE = ".qos-calibration.tmp"
CALIBRATION_SECONDS = 1.2
SCRATCH_BYTES = 64 << 20
SMALL = 4096
LARGE = 1 << 20


def resolve_capacity(data_dir: Path, *, iops: int | None = None,
                     bytes_per_second: int | None = None) -> tuple[Capacity, str]:
    """The controller's capacity and where it came from (``option``, ``saved``,
    ``calibrated``, or a mix such as ``option+saved``)."""
    if iops and bytes_per_second:
        return Capacity(iops, bytes_per_second), "option"
    measured = load_capacity(data_dir)
    source = "saved"
    if measured is None:
        measured = calibrate(data_dir)
        save_capacity(data_dir, measured)
        source = "calibrated"
    if iops or bytes_per_second:
        source = f"option+{source}"
    return Capacity(iops or measured.iops, bytes_per_second or measured.bytes_per_second), source


def load_capacity(data_dir: Path) -> Capacity | None:
    path = Path(data_dir) / CAPACITY_FILE
    try:
        doc = json.loads(path.read_text())
        capacity = Capacity(int(doc["iops"]), int(doc["bytes_per_second"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log_event(log, "qos capacity file unreadable: calibrating again", level=logging.WARNING,
                  path=str(path), problem=str(exc))
        return None
    if capacity.iops <= 0 or capacity.bytes_per_second <= 0:
        return None
    return capacity


def save_capacity(data_dir: Path, capacity: Capacity, **details: object) -> None:
    path = Path(data_dir) / CAPACITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"iops": capacity.iops,
                               "bytes_per_second": capacity.bytes_per_second,
                               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               **details}, indent=1) + "\n")
    os.replace(tmp, path)


def calibrate(data_dir: Path, *, seconds: float = CALIBRATION_SECONDS,
              clock: Callable[[], float] = time.perf_counter) -> Capacity:
    """Measure the data directory's IOPS and bytes/s (see the module doc)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = data_dir / SCRATCH_FILE
    fd, direct = _open_scratch(scratch)
    log_event(log, "qos calibration started", data_dir=str(data_dir), o_direct=direct,
              seconds=seconds)
    buffer = mmap.mmap(-1, LARGE)  # page-aligned, as O_DIRECT needs
    buffer.write(os.urandom(LARGE))
    quarter = seconds / 4
    try:
        written, seq_write = _sequential_write(fd, buffer, quarter, direct, clock)
        _progress("1 MiB sequential write", bytes_per_second=int(seq_write))
        seq_read = _sequential_read(fd, buffer, written, quarter, clock)
        _progress("1 MiB sequential read", bytes_per_second=int(seq_read))
        rand_read = _random(fd, buffer, written, quarter, clock, write=False, direct=direct)
        _progress("4 KiB random read", iops=int(rand_read))
        rand_write = _random(fd, buffer, written, quarter, clock, write=True, direct=direct)
        _progress("4 KiB random write", iops=int(rand_write))
    finally:
        os.close(fd)
        buffer.close()
        scratch.unlink(missing_ok=True)
    capacity = Capacity(max(1, int(_mix(rand_read, rand_write))),
                        max(1, int(_mix(seq_read, seq_write))))
    log_event(log, "qos calibration done", iops=capacity.iops,
              bytes_per_second=capacity.bytes_per_second, o_direct=direct)
    return capacity


def _progress(phase: str, **figures: int) -> None:
    log_event(log, "qos calibration", phase=phase, **figures)


def _mix(a: float, b: float) -> float:
    """The rate of a 50/50 mix of two rates (harmonic mean)."""
    return 2 / (1 / a + 1 / b) if a > 0 and b > 0 else 0.0


def _open_scratch(path: Path) -> tuple[int, bool]:
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct, 0o600), True
        except OSError:  # tmpfs and some others refuse O_DIRECT
            pass
    return os.open(path, flags, 0o600), False


def _sequential_write(fd: int, buffer: mmap.mmap, budget: float, direct: bool,
                      clock: Callable[[], float]) -> tuple[int, float]:
    start = clock()
    offset = 0
    while offset < SCRATCH_BYTES and (offset < 4 * LARGE or clock() - start < budget):
        offset += os.pwrite(fd, buffer, offset)
    if not direct:
        os.fdatasync(fd)
    return offset, offset / max(clock() - start, 1e-9)


def _sequential_read(fd: int, buffer: mmap.mmap, size: int, budget: float,
                     clock: Callable[[], float]) -> float:
    start = clock()
    done = offset = 0
    while done < 4 * LARGE or clock() - start < budget:
        n = os.preadv(fd, [buffer], offset)
        done += n
        offset = offset + n if offset + n < size else 0
    return done / max(clock() - start, 1e-9)


def _random(fd: int, buffer: mmap.mmap, size: int, budget: float,
            clock: Callable[[], float], *, write: bool, direct: bool) -> float:
    view = memoryview(buffer)[:SMALL]
    blocks = max(1, size // SMALL)
    pick = random.Random(0x5EED).randrange
    start = clock()
    count = 0
    while count < 64 or clock() - start < budget:
        offset = pick(blocks) * SMALL
        if write:
            os.pwrite(fd, view, offset)
        else:
            os.preadv(fd, [view], offset)
        count += 1
    if write and not direct:
        os.fdatasync(fd)
    elapsed = max(clock() - start, 1e-9)
    view.release()
    return count / elapsed
