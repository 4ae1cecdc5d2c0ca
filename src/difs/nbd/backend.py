"""What serves the bytes of one NBD export: the backend interface and two local backends.

The NBD server (``server.py``) calls one :class:`NbdBackend` per export. The host plugs its
iSCSI-backed volume in here; :class:`MemoryBackend` and :class:`FileBackend` serve tests, the
standalone ``python -m difs.nbd`` and benchmarks.

Contract:

* requests reach the backend already validated (in range, aligned to ``block_size`` except at
  the end of the export, non-empty, at most the advertised maximum for reads and writes);
* calls may run concurrently (pipelined clients); a backend that needs ordering serialises
  itself;
* a failure of one request is ``raise NbdBackendError(errno.EIO, "why")`` — the client gets that
  error for that request only. Any other exception is logged and answered with EIO;
* ``fua=True`` means: do not return before the data is on stable storage; ``flush()`` means:
  everything already acknowledged is on stable storage when it returns.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
from abc import ABC, abstractmethod

from difs.nbd.constants import STATE_HOLE, STATE_ZERO
from difs.nbd.errors import NbdBackendError


class NbdBackend(ABC):
    """One export (an application's disk). Subclasses set ``size`` and override the I/O."""

    size: int
    #: minimum block size advertised (requests are aligned to it)
    block_size: int = 512
    #: preferred block size advertised
    preferred_block_size: int = 4096
    read_only: bool = False
    can_flush: bool = True
    can_fua: bool = True
    can_trim: bool = True
    can_zero: bool = True
    #: write_zeroes is much faster than writing zeroes (NBD_CMD_FLAG_FAST_ZERO is honoured)
    can_fast_zero: bool = False
    #: flush/FUA on one connection is visible on all (no per-connection cache)
    can_multi_conn: bool = False
    #: shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION
    description: str = ""

    @abstractmethod
    async def read(self, offset: int, length: int) -> bytes | bytearray | memoryview:
        """Exactly ``length`` bytes at ``offset``."""

    @abstractmethod
    async def write(self, offset: int, data: memoryview, *, fua: bool) -> None:
        """Store ``data`` at ``offset``."""

    async def flush(self) -> None:
        """Make every acknowledged write stable."""

    async def trim(self, offset: int, length: int) -> None:
        """The range is no longer needed (a hint: doing nothing is correct)."""

    async def write_zeroes(
        self, offset: int, length: int, *, may_trim: bool, fua: bool, fast: bool = False
    ) -> None:
        """Make the range read as zeroes (by default: write zero buffers).

        ``fast=True`` (NBD_CMD_FLAG_FAST_ZERO, only passed when ``can_fast_zero``) asks to fail
        with ``NbdBackendError(errno.ENOTSUP)`` rather than fall back to a slow write."""
        if fast:
            raise NbdBackendError(errno.ENOTSUP, "no fast zeroing")
        chunk = bytes(min(length, 1 << 20))
        end = offset + length
        while offset < end:
            n = min(len(chunk), end - offset)
            await self.write(offset, memoryview(chunk)[:n], fua=False)
            offset += n
        if fua:
            await self.flush()

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """``base:allocation`` extents (length, NBD_STATE_* flags) from ``offset``; they may
        cover less than ``length``. Default: all allocated data."""
        return [(length, 0)]

    async def close(self) -> None:
        """Release resources when the export is removed or the server closes."""


class MemoryBackend(NbdBackend):
    """An export held in a ``bytearray``. Shared by all connections, so multi-conn safe."""

    can_fast_zero = True
    can_multi_conn = True

    def __init__(
        self,
        size: int,
        *,
        block_size: int = 512,
        preferred_block_size: int = 4096,
        read_only: bool = False,
        description: str = "",
        data: bytes | None = None,
    ) -> None:
        self.size = size
        self.block_size = block_size
        self.preferred_block_size = preferred_block_size
        self.read_only = read_only
        self.description = description
        self.buffer = bytearray(size)
        if data is not None:
            self.buffer[: len(data)] = data[:size]
        self._mv = memoryview(self.buffer)
        self.flushes = 0

    async def read(self, offset: int, length: int) -> bytes:
        return self._mv[offset : offset + length].tobytes()

    async def write(self, offset: int, data: memoryview, *, fua: bool) -> None:
        self._mv[offset : offset + len(data)] = data

    async def flush(self) -> None:
        self.flushes += 1

    async def trim(self, offset: int, length: int) -> None:
        self._mv[offset : offset + length] = bytes(length)

    async def write_zeroes(
        self, offset: int, length: int, *, may_trim: bool, fua: bool, fast: bool = False
    ) -> None:
        self._mv[offset : offset + length] = bytes(length)


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10


def _load_fallocate():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_fallocate = _load_fallocate()


class FileBackend(NbdBackend):
    """An export backed by a local file or block device (``os.pread``/``os.pwrite``).

    Reads and writes run inline (page cache); ``fsync`` runs in a worker thread. Trim and
    zeroing punch holes when the filesystem supports it; block status reports holes through
    ``SEEK_DATA``/``SEEK_HOLE``. One file descriptor is shared by all connections and
    ``fsync`` covers them all, so multi-conn is safe."""

    can_multi_conn = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        block_size: int = 512,
        preferred_block_size: int = 4096,
        description: str = "",
    ) -> None:
        self.path = os.fspath(path)
        self.read_only = read_only
        self.block_size = block_size
        self.preferred_block_size = preferred_block_size
        self.description = description
        self.fd = os.open(self.path, os.O_RDONLY if read_only else os.O_RDWR)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self.can_fast_zero = _fallocate is not None

    async def read(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            raise NbdBackendError(exc.errno or errno.EIO, str(exc)) from None
        if len(data) != length:
            raise NbdBackendError(errno.EIO, "short read")
        return data

    async def write(self, offset: int, data: memoryview, *, fua: bool) -> None:
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(self.fd, data[done:], offset + done)
        except OSError as exc:
            raise NbdBackendError(exc.errno or errno.EIO, str(exc)) from None
        if fua:
            await self.flush()

    async def flush(self) -> None:
        try:
            await asyncio.to_thread(os.fsync, self.fd)
        except OSError as exc:
            raise NbdBackendError(exc.errno or errno.EIO, str(exc)) from None

    def _try_fallocate(self, mode: int, offset: int, length: int) -> bool:
        if _fallocate is None:
            return False
        return _fallocate(self.fd, mode, offset, length) == 0

    async def trim(self, offset: int, length: int) -> None:
        self._try_fallocate(_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)

    async def write_zeroes(
        self, offset: int, length: int, *, may_trim: bool, fua: bool, fast: bool = False
    ) -> None:
        mode = (
            _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE if may_trim else _FALLOC_FL_ZERO_RANGE
        )
        if self._try_fallocate(mode, offset, length):
            if fua:
                await self.flush()
            return
        await super().write_zeroes(offset, length, may_trim=may_trim, fua=fua, fast=fast)

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        end = offset + length
        extents: list[tuple[int, int]] = []
        pos = offset
        try:
            while pos < end:
                try:
                    data = os.lseek(self.fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: only a hole up to the end
                        raise
                    data = end
                if data > pos:
                    extents.append((min(data, end) - pos, STATE_HOLE | STATE_ZERO))
                    pos = min(data, end)
                    continue
                hole = os.lseek(self.fd, pos, os.SEEK_HOLE)
                extents.append((min(hole, end) - pos, 0))
                pos = min(hole, end)
        except OSError:
            return [(length, 0)]
        return extents

    async def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
