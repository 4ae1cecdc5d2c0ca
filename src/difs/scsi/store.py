"""Byte-addressed backing stores for a logical unit.

The SCSI device (:mod:`difs.scsi.device`) is pure: it turns CDBs into calls on a
:class:`BlockStore`, and all I/O lives in store implementations.  Offsets and lengths are in
bytes; the device only ever asks for ranges inside ``[0, size)``.

* :class:`MemoryStore` keeps everything in a ``bytearray`` (tests, benchmarks).
* :class:`PiBlockStore` is the interface of a store that keeps T10 protection information
  with the data; a logical unit over one is PI-formatted (:mod:`difs.scsi.protection`).

The stores that do real I/O live in :mod:`difs.storage`, outside this sans-I/O package:
``FileStore`` (``pread``/``pwrite``/``fdatasync`` and hole punching on a file descriptor)
and ``PiStore`` (a ``PiBlockStore`` made of two stores and an intent log).

``discard`` must make later reads of the range return zeros (the device advertises
LBPRZ=1 for thin logical units).  ``map_status`` reports which ranges are allocated, for
GET LBA STATUS; a store that cannot tell reports everything as mapped.

``pwrite_atomic`` (WRITE ATOMIC) writes a range all-or-nothing, also across a crash, and
makes it stable before returning; ``atomic_write_max`` is the largest range it accepts
(0: the store cannot, and the device does not offer WRITE ATOMIC).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

_ZERO_CHUNK = bytes(1 << 20)


class BlockStore(ABC):
    """A byte-addressed backing store of fixed ``size``."""

    size: int
    #: allocation unit: ``discard`` frees whole units and zeroes partial ones.
    granularity: int = 4096
    #: largest ``pwrite_atomic`` in bytes; 0 when atomic writes are not available.
    atomic_write_max: int = 0
    #: T10 protection type the store keeps PI for (0: none; see :class:`PiBlockStore`)
    pi_type: int = 0

    @abstractmethod
    def pread(self, offset: int, length: int) -> bytes | memoryview:
        """Return exactly ``length`` bytes starting at ``offset``."""

    @abstractmethod
    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` at ``offset``."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far stable (fdatasync)."""

    @abstractmethod
    def discard(self, offset: int, length: int) -> None:
        """Deallocate the range; reads of it return zeros afterwards."""

    def pwrite_atomic(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset`` all-or-nothing (even across a crash) and make it
        stable. Only called with ``0 < len(data) <= atomic_write_max``."""
        raise OSError(95, "atomic writes are not supported by this store")

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make the range read as zeros, keeping it allocated."""
        end = offset + length
        while offset < end:
            n = min(end - offset, len(_ZERO_CHUNK))
            self.pwrite(offset, memoryview(_ZERO_CHUNK)[:n])
            offset += n

    def map_status(self, offset: int, length: int) -> tuple[bool, int]:
        """Return (mapped, run_length): whether ``offset`` is allocated and for how many
        bytes (at most ``length``) that stays true."""
        return True, length

    def close(self) -> None:
        """Release resources (file descriptors)."""


class MemoryStore(BlockStore):
    """A store in memory with an allocation map at ``granularity`` resolution."""

    def __init__(self, size: int, *, granularity: int = 4096, allocated: bool = False,
                 atomic_write_max: int = 1 << 20) -> None:
        if size < 0 or granularity <= 0:
            raise ValueError("size must be >= 0 and granularity > 0")
        self.size = size
        self.granularity = granularity
        self.atomic_write_max = atomic_write_max
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        nchunks = -(-size // granularity)
        self._alloc = bytearray(b"\x01" * nchunks if allocated else nchunks)
        self.flushes = 0
        self.writes = 0

    def pread(self, offset: int, length: int) -> bytes:
        return self._view[offset:offset + length].tobytes()

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        n = len(data)
        self._view[offset:offset + n] = data
        self.writes += 1
        if n:
            g = self.granularity
            first, last = offset // g, (offset + n - 1) // g
            self._alloc[first:last + 1] = b"\x01" * (last - first + 1)

    def flush(self) -> None:
        self.flushes += 1

    def pwrite_atomic(self, offset: int, data: bytes | memoryview) -> None:
        # one slice assignment: nothing can observe a partial write in memory
        self.pwrite(offset, data)
        self.flush()

    def discard(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        end = offset + length
        self._view[offset:end] = bytes(length)
        g = self.granularity
        first = -(-offset // g)          # first chunk wholly inside the range
        last = end // g                  # one past the last whole chunk
        if end == self.size:
            last = len(self._alloc)
        if last > first:
            self._alloc[first:last] = bytes(last - first)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.pwrite(offset, bytes(length))

    def map_status(self, offset: int, length: int) -> tuple[bool, int]:
        g = self.granularity
        chunk = offset // g
        state = self._alloc[chunk]
        end = offset + length
        pos = (chunk + 1) * g
        while pos < end and self._alloc[pos // g] == state:
            pos += g
        return bool(state), min(pos, end) - offset


class PiBlockStore(BlockStore):
    """A store that keeps an 8-byte T10 PI tuple with every logical block (``pi_type`` 1 or
    3), as the PI commands of :mod:`difs.scsi.protection` use it.

    Its plain ``pread`` / ``pwrite`` behave like protect field 000b: ``pwrite`` generates
    PI, ``pread`` checks the stored PI and raises :class:`~difs.integrity.PiCheckError`.
    Offsets and lengths are whole blocks of ``block_size`` bytes; PI is passed plain (the
    wire form, :mod:`difs.integrity.pi`).  ``checked_blocks``, ``generated_blocks`` and
    ``failed`` (by check kind: guard, app, ref) count the PI work, for metrics.
    """

    #: expected application tag (checked when known); generated PI carries it (or 0)
    app_tag: int | None = None
    block_size: int = 512
    checked_blocks: int = 0
    generated_blocks: int = 0
    failed: dict[str, int]

    @abstractmethod
    def pread_pi(self, offset: int, length: int) -> tuple[bytes | memoryview, bytes]:
        """Data and its PI tuples, unchecked."""

    @abstractmethod
    def pread_stored_pi(self, lba: int, n: int) -> bytes:
        """Only the PI tuples of ``n`` blocks from ``lba``, unchecked."""

    @abstractmethod
    def verify(self, data, pi, lba: int, *, check_guard: bool = True, check_app: bool = True,
               check_ref: bool = True) -> None:
        """Check ``pi`` against ``data`` from ``lba`` (the application tag only when the
        store knows it); raises PiCheckError."""

    @abstractmethod
    def generate(self, data, lba: int) -> bytes:
        """The PI the store generates for ``data`` written at ``lba`` (protect field 000b)."""

    @abstractmethod
    def pwrite_pi(self, offset: int, data, pi) -> None:
        """Write ``data`` and its PI tuples ``pi`` (already checked as the caller wants)."""

    @abstractmethod
    def write_zeroes_pi(self, offset: int, length: int, pi) -> None:
        """Zero the data range (kept allocated) and store ``pi`` for it."""
