"""What each sector carries, and the model that judges what a read returned.

Every 512-byte sector the soak writes is self-describing::

    "DSK1" | application (16 bytes) | sector (8) | generation (8) | CRC-32 (4) | filler (472)

The generation is a per-application counter, one per write command (all sectors of one
write share it). The CRC covers everything but itself, so a sector read back is exactly
one of: all zeros (never written), **corrupt** (bad magic or CRC; or another application's
or another sector's content: misdirected; or a generation never written there: phantom),
or some generation ``g`` of this sector — and the model then tells current from stale.

The model (:class:`AppModel`) keeps, per sector, the generation of the last write

* **acked** — the server acknowledged it;
* **flushed** — acknowledged, then an NBD FLUSH was acknowledged *on the same connection*
  (a write acknowledged on a connection that was lost before its flush is in doubt: the
  next server instance never saw it, so its flush does not cover it).

A sector holding ``g`` is then judged (:meth:`AppModel.judge`):

* ``g < flushed`` — **lost, flushed**: data the application had made durable is gone
  (must never happen);
* ``flushed <= g < acked`` — **lost, unflushed**: an acknowledged write that was never
  flushed is gone (allowed after a crash, counted);
* ``g >= acked`` — **current** (``g > acked``: a write that failed or was in flight when
  the application gave up landed after all, which is allowed).

The unit is the 512-byte sector because that is the atomicity SCSI and NBD promise: an
interrupted multi-sector write may leave any mix of old and new sectors, each whole.
"""

from __future__ import annotations

import enum
import struct
import zlib
from array import array

SECTOR = 512
MAGIC = b"DSK1"
_HEAD = struct.Struct(">4s16sQQ")  # magic, application, sector, generation
_CRC = struct.Struct(">I")
_HEAD_LEN = _HEAD.size + _CRC.size  # 40
_FILL = struct.Struct(">Q")
_FILL_COUNT = (SECTOR - _HEAD_LEN) // _FILL.size  # 59 x 8 = 472
_ZERO = bytes(SECTOR)


class Verdict(enum.Enum):
    CURRENT = "current"
    LOST_UNFLUSHED = "lost-unflushed"
    LOST_FLUSHED = "lost-flushed"
    CORRUPT = "corrupt"


def app_tag(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > 16:
        raise ValueError(f"application name {name!r} is longer than 16 bytes")
    return raw.ljust(16, b"\0")


def make_sector(tag: bytes, sector: int, gen: int) -> bytes:
    head = _HEAD.pack(MAGIC, tag, sector, gen)
    fill = _FILL.pack((sector * 0x9E3779B97F4A7C15 ^ gen) & 0xFFFFFFFFFFFFFFFF) * _FILL_COUNT
    return head + _CRC.pack(zlib.crc32(fill, zlib.crc32(head))) + fill


def make_extent(tag: bytes, first: int, count: int, gen: int) -> bytes:
    return b"".join(make_sector(tag, s, gen) for s in range(first, first + count))


def read_sector(tag: bytes, sector: int, data: bytes | memoryview) -> int | None:
    """The generation ``data`` (one sector) holds: 0 for zeros, None when it is corrupt
    (bad magic or CRC) or misdirected (another application's or sector's content)."""
    if data == _ZERO:
        return 0
    magic, who, where, gen = _HEAD.unpack_from(data)
    (crc,) = _CRC.unpack_from(data, _HEAD.size)
    body = zlib.crc32(data[_HEAD_LEN:], zlib.crc32(data[:_HEAD.size]))
    if magic != MAGIC or crc != body or who != tag or where != sector or gen == 0:
        return None
    return gen


class AppModel:
    """What the driver knows about one application's volume (see the module docstring)."""

    def __init__(self, name: str, sectors: int) -> None:
        self.name = name
        self.tag = app_tag(name)
        self.sectors = sectors
        self.acked = array("Q", bytes(8 * sectors))
        self.flushed = array("Q", bytes(8 * sectors))
        #: every write ever issued: generation -> (first sector, count)
        self.writes: dict[int, tuple[int, int]] = {}
        #: writes acknowledged on the current connection since its last flush
        self._unflushed: list[int] = []
        self._gen = 0

    def begin_write(self, first: int, count: int) -> tuple[int, bytes]:
        """A new generation for a write of ``count`` sectors at ``first``, and its data."""
        self._gen += 1
        self.writes[self._gen] = (first, count)
        return self._gen, make_extent(self.tag, first, count, self._gen)

    def write_acked(self, gen: int) -> None:
        first, count = self.writes[gen]
        acked = self.acked
        for s in range(first, first + count):
            if gen > acked[s]:
                acked[s] = gen
        self._unflushed.append(gen)

    def flush_acked(self) -> int:
        """Every write acknowledged on this connection is now durable; how many were."""
        flushed = self.flushed
        for gen in self._unflushed:
            first, count = self.writes[gen]
            for s in range(first, first + count):
                if gen > flushed[s]:
                    flushed[s] = gen
        done, self._unflushed = len(self._unflushed), []
        return done

    def connection_lost(self) -> int:
        """The connection is gone: its unflushed writes stay in doubt; how many there were."""
        lost, self._unflushed = len(self._unflushed), []
        return lost

    def judge(self, sector: int, data: bytes | memoryview) -> Verdict:
        gen = read_sector(self.tag, sector, data)
        if gen is None:
            return Verdict.CORRUPT
        if gen:
            where = self.writes.get(gen)
            if where is None or not where[0] <= sector < where[0] + where[1]:
                return Verdict.CORRUPT  # a generation never written here: phantom
        if gen < self.flushed[sector]:
            return Verdict.LOST_FLUSHED
        if gen < self.acked[sector]:
            return Verdict.LOST_UNFLUSHED
        return Verdict.CURRENT

    def judge_extent(self, first: int, data: bytes) -> dict[Verdict, list[int]]:
        """Sectors of ``data`` (read at ``first``) that are not current, by verdict."""
        bad: dict[Verdict, list[int]] = {}
        view = memoryview(data)
        for i in range(len(data) // SECTOR):
            verdict = self.judge(first + i, view[i * SECTOR:(i + 1) * SECTOR])
            if verdict is not Verdict.CURRENT:
                bad.setdefault(verdict, []).append(first + i)
        return bad
