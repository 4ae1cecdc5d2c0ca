"""A block store that keeps T10 protection information (PI) with the data, crash-consistently.

A PI-formatted logical unit (:mod:`difs.scsi.protection`) stores, for every 512-byte
logical block, its 8-byte PI tuple (guard, application tag, reference tag).
:class:`PiStore` implements the core's :class:`~difs.scsi.store.PiBlockStore` with three
parts, following :mod:`difs.integrity.layout`:

``data``
    any :class:`~difs.scsi.store.BlockStore` holding the blocks exactly as an unprotected
    volume would (``NAME.img``: raw, 4 KiB aligned, sparse);
``pi``
    a second ``BlockStore`` holding 8 bytes per block at ``lba * 8``, **complemented**
    (``NAME.pi``): a hole, a punched range or a zeroed range reads back as
    FFFF_FFFF_FFFF_FFFFh, the SBC-4 PI of an unmapped / never-written block (application
    tag FFFFh: no check), so thin provisioning and UNMAP need no special case;
``log``
    an :class:`IntentLog` (``NAME.pilog``) of "blocks ``lba..`` are about to get tuples
    ``P``" records, appended *before* the data is written.

Every write is ``log.append`` -> ``data.pwrite`` -> ``pi.pwrite``; ``flush`` syncs data and
PI and empties the log; the log is also checkpointed that way once it holds
``checkpoint_bytes``.  :meth:`PiStore.recover` (run on open) replays the log with
:func:`difs.integrity.layout.reconcile`: per block, whichever tuple agrees with the data
found on disk wins, and a block matching neither (torn) gets a poisoned tuple that fails
the guard check on every read until rewritten.  So after ``kill -9`` data and PI of a
block never disagree, and no acknowledged write reads back with a PI error.

A write the store fails part-way (a full file system: ENOSPC after some pages landed; an
I/O error) must not leave data and PI disagreeing until the next restart: before the error
propagates, the PI of its range is re-aligned with the data found on disk, by the same
per-block rule as recovery (:meth:`PiStore._realign`).  A tuple it cannot store then is
harmless when the stored one is an escape (a never-written, thin PI page: reads are not
checked); otherwise the record is retried at every checkpoint and the intent log is kept
until it succeeds, so recovery at the next open does it at the latest.  An intent record
that cannot be appended is cut off the log again (:meth:`FileIntentLog.append`): a torn
record at the end would hide every later one from recovery.

Unmapping (``discard`` / ``write_zeroes``) escapes the PI range *first*, then the data: a
crash in between leaves the old data with an escape tuple (unchecked, but the UNMAP was
never acknowledged), never new zeros under the old guard.

Reads and writes through the plain :class:`BlockStore` methods are protected too, so every
command that only knows ``pread``/``pwrite`` (COMPARE AND WRITE, ORWRITE, EXTENDED
COPY, WRITE ATOMIC) gets SBC-4's protect-field-000b behaviour for free:

* ``pwrite`` *generates* PI (guard; application tag = ``app_tag`` or 0; reference tag =
  LBA for type 1, 0 for type 3);
* ``pread`` *checks* guard, reference tag (type 1) and application tag (when ``app_tag``
  is known) and raises :class:`~difs.integrity.PiCheckError` (ABORTED COMMAND 10h/0xh,
  INFORMATION = LBA), which :meth:`LogicalUnit.execute` turns into CHECK CONDITION.

PI-aware callers use :meth:`PiStore.pread_pi` / :meth:`PiStore.pwrite_pi` and
:meth:`PiStore.verify` with the checks their protect field asks for.  ``checked_blocks``,
``generated_blocks`` and ``failed`` (by check kind) count the PI work for metrics.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from difs.integrity import APP_TAG_ESCAPE, PI_SIZE, REF_TAG_ESCAPE, PiCheckError, generate, verify
from difs.integrity.layout import Reconciled, decode_intents, encode_intent, reconcile
from difs.scsi.store import BlockStore, MemoryStore, PiBlockStore

__all__ = ["FileIntentLog", "IntentLog", "PiStore", "Recovery", "complement"]

_INVERT = bytes(range(255, -1, -1))


def complement(buf) -> bytes:
    """Bitwise complement of every byte: PI as stored in the ``pi`` store, and back
    (:func:`difs.integrity.layout.to_stored` / ``from_stored``, in one C call)."""
    return bytes(buf).translate(_INVERT)

#: failed writes whose PI re-alignment is kept for retry (beyond: their blocks answer a
#: PI check failure until rewritten, never wrong data)
MAX_UNALIGNED = 1024

#: log size at which the store syncs data and PI and empties the log (bounds replay work:
#: 1 MiB of records covers 128 Ki blocks = 64 MiB of data to re-read after a crash)
CHECKPOINT_BYTES = 1 << 20


class IntentLog:
    """An in-memory intent log (tests; nothing survives the process)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def size(self) -> int:
        return len(self._buf)

    def append(self, record: bytes) -> None:
        self._buf += record

    def read_all(self) -> bytes:
        return bytes(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def close(self) -> None:
        pass


class FileIntentLog(IntentLog):
    """The intent log in a file, appended with one ``write`` per record."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND
                          | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._size = os.lseek(self.fd, 0, os.SEEK_END)

    @property
    def size(self) -> int:
        return self._size

    def append(self, record: bytes) -> None:
        """Append ``record`` whole, or (on an error, e.g. a full disk) not at all."""
        view = memoryview(record)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except BaseException:
            os.ftruncate(self.fd, self._size)  # no torn record in front of later ones
            raise
        self._size += len(record)

    def read_all(self) -> bytes:
        return os.pread(self.fd, self._size, 0) if self._size else b""

    def reset(self) -> None:
        if self._size:
            os.ftruncate(self.fd, 0)
            self._size = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`PiStore.recover` found in the intent log."""

    records: int = 0
    rolled_forward: int = 0  #: blocks whose new data had landed: new PI stored
    kept: int = 0  #: blocks whose data write never happened: old PI kept
    poisoned: tuple[int, ...] = ()  #: LBAs of torn blocks, stored with a failing guard


class PiStore(PiBlockStore):
    """Data + PI + intent log, presented as one byte-addressed store (see module doc)."""

    def __init__(self, data: BlockStore, pi: BlockStore, *, pi_type: int,
                 app_tag: int | None = None, log: IntentLog | None = None,
                 block_size: int = 512, checkpoint_bytes: int = CHECKPOINT_BYTES) -> None:
        if pi_type not in (1, 3):
            raise ValueError(f"PI type must be 1 or 3, got {pi_type!r}")
        if app_tag is not None and not 0 <= app_tag < 0xFFFF:
            raise ValueError("application tag must be 0..FFFEh (FFFFh is the escape)")
        nblocks = data.size // block_size
        if pi.size < nblocks * PI_SIZE:
            raise ValueError(f"PI store holds {pi.size} bytes, {nblocks * PI_SIZE} needed")
        self.data = data
        self.pi = pi
        self.log = log if log is not None else IntentLog()
        self.pi_type = pi_type
        #: expected application tag (checked when known); generated PI carries it (or 0)
        self.app_tag = app_tag
        self.block_size = block_size
        self.block_shift = block_size.bit_length() - 1
        self.size = data.size
        self.granularity = data.granularity
        self.atomic_write_max = data.atomic_write_max
        self.checkpoint_bytes = checkpoint_bytes
        self._lock = threading.Lock()
        self._seq = 0
        #: intents of failed writes whose PI could not be re-aligned yet: (lba, pi)
        self._unaligned: list[tuple[int, bytes]] = []
        # PI work, for metrics
        self.checked_blocks = 0
        self.generated_blocks = 0
        self.failed = {"guard": 0, "app": 0, "ref": 0}

    @classmethod
    def in_memory(cls, size: int, *, pi_type: int, app_tag: int | None = None,
                  block_size: int = 512, **kwargs) -> PiStore:
        """A PI store whose data and PI live in memory (tests, benchmarks)."""
        return cls(MemoryStore(size, **kwargs), MemoryStore(size // block_size * PI_SIZE),
                   pi_type=pi_type, app_tag=app_tag, block_size=block_size)

    # --- PI-aware interface ----------------------------------------------------------

    def pread_pi(self, offset: int, length: int) -> tuple[bytes | memoryview, bytes]:
        """Data and its (plain) PI tuples, unchecked."""
        shift = self.block_shift
        data = self.data.pread(offset, length)
        raw = self.pi.pread((offset >> shift) * PI_SIZE, (length >> shift) * PI_SIZE)
        return data, complement(raw)

    def pread_stored_pi(self, lba: int, n: int) -> bytes:
        """Only the PI tuples of ``n`` blocks from ``lba`` (plain, unchecked)."""
        return complement(self.pi.pread(lba * PI_SIZE, n * PI_SIZE))

    def verify(self, data, pi, lba: int, *, check_guard: bool = True, check_app: bool = True,
               check_ref: bool = True) -> None:
        """Check ``pi`` against ``data`` from ``lba``; counts the work; raises PiCheckError.

        The application tag is compared only when this store knows the expected tag."""
        n = len(pi) // PI_SIZE
        try:
            verify(data, pi, lba=lba, pi_type=self.pi_type, app_tag=self.app_tag,
                   check_guard=check_guard, check_app=check_app, check_ref=check_ref,
                   block_size=self.block_size)
        except PiCheckError as err:
            self.failed[err.kind] += 1
            raise
        finally:
            self.checked_blocks += n

    def generate(self, data, lba: int) -> bytes:
        """The PI this store generates for ``data`` written at ``lba`` (protect field 0)."""
        self.generated_blocks += len(data) >> self.block_shift
        return generate(data, lba=lba, pi_type=self.pi_type, app_tag=self.app_tag or 0,
                        block_size=self.block_size)

    def pwrite_pi(self, offset: int, data, pi) -> None:
        """Write ``data`` and its PI tuples ``pi`` (already checked as the caller wants)."""
        self._store_with_pi(offset, pi, self.data.pwrite, data)

    def write_zeroes_pi(self, offset: int, length: int, pi) -> None:
        """Zero the data range (kept allocated) and store ``pi`` for it."""
        self._store_with_pi(offset, pi, self.data.write_zeroes, length)

    def _store_with_pi(self, offset: int, pi, store_data, arg) -> None:
        """The intent-logged write of one range: log ``pi``, ``store_data(offset, arg)``, store
        the PI; on a failure (a full disk part-way) re-match the range's PI to the data on disk
        before the error goes up; checkpoint when the log is due."""
        lba = offset >> self.block_shift
        stored = complement(pi)
        with self._lock:
            self._log(lba, pi)
            try:
                store_data(offset, arg)
                self.pi.pwrite(lba * PI_SIZE, stored)
            except Exception:
                self._realign(lba, pi)
                raise
            if self.log.size >= self.checkpoint_bytes:
                self._checkpoint()

    def _log(self, lba: int, pi) -> None:
        self._seq += 1
        self.log.append(encode_intent(self._seq, lba, pi))

    def _checkpoint(self) -> None:
        pending, self._unaligned = self._unaligned, []
        for lba, pi in pending:
            self._realign(lba, pi)  # what fails again stays pending
        self.data.flush()
        self.pi.flush()
        if not self._unaligned:  # else the log keeps those intents for recovery
            self.log.reset()

    def _realign(self, lba: int, pi) -> None:
        """A write of ``pi``'s blocks from ``lba`` failed part-way (its intent is logged):
        store, per block, the PI that agrees with the data now on disk (see module doc).
        Never raises: what cannot be done now is kept pending."""
        try:
            result, stored = self._reconcile(lba, pi)
            self._store_realigned(lba, stored, result.pi)
        except Exception:
            if len(self._unaligned) < MAX_UNALIGNED:  # a PI file failing for good: bounded
                self._unaligned.append((lba, bytes(pi)))

    def _reconcile(self, lba: int, pi) -> tuple[Reconciled, bytes]:
        """Recovery's rule for one intent: (the tuples to keep, the tuples stored now)."""
        bs, n = self.block_size, len(pi) // PI_SIZE
        data = self.data.pread(lba * bs, n * bs)
        stored = complement(self.pi.pread(lba * PI_SIZE, n * PI_SIZE))
        return reconcile(data, stored, pi, pi_type=self.pi_type, block_size=bs), stored

    def _store_realigned(self, lba: int, stored: bytes, wanted: bytes) -> None:
        """Write the tuples that changed, one page (4 KiB of PI) at a time; a page that
        cannot be written (no space for it) is skipped when every tuple changed in it is
        stored as an escape now: an unchecked block reads correctly whatever its data."""
        base = lba * PI_SIZE
        step = 4096
        start = 0
        while start < len(wanted):
            end = min(len(wanted), (base + start) // step * step + step - base)
            if wanted[start:end] != stored[start:end]:
                try:
                    self.pi.pwrite(base + start, complement(wanted[start:end]))
                except OSError:
                    if not self._only_escapes_change(stored, wanted, start, end):
                        raise
            start = end

    def _only_escapes_change(self, stored: bytes, wanted: bytes, start: int, end: int) -> bool:
        for at in range(start, end, PI_SIZE):
            old = stored[at:at + PI_SIZE]
            if old != wanted[at:at + PI_SIZE] and not self._is_escape(old):
                return False
        return True

    def _is_escape(self, pi: bytes) -> bool:
        if int.from_bytes(pi[2:4], "big") != APP_TAG_ESCAPE:
            return False
        return self.pi_type != 3 or int.from_bytes(pi[4:8], "big") == REF_TAG_ESCAPE

    # --- BlockStore interface (protect field 000b semantics) --------------------------

    def pread(self, offset: int, length: int) -> bytes | memoryview:
        data, pi = self.pread_pi(offset, length)
        self.verify(data, pi, offset >> self.block_shift)
        return data

    def pwrite(self, offset: int, data) -> None:
        self.pwrite_pi(offset, data, self.generate(data, offset >> self.block_shift))

    def pwrite_atomic(self, offset: int, data) -> None:
        lba = offset >> self.block_shift
        pi = self.generate(data, lba)
        with self._lock:
            self._log(lba, pi)
            try:
                self.data.pwrite_atomic(offset, data)  # all or nothing, stable on return
                self.pi.pwrite(lba * PI_SIZE, complement(pi))
                self.pi.flush()
            except Exception:
                self._realign(lba, pi)
                raise

    def flush(self) -> None:
        with self._lock:
            self._checkpoint()

    def _unmap(self, offset: int, length: int, how: str) -> None:
        shift = self.block_shift
        with self._lock:
            # PI first (escape: any data accepted), then the data
            getattr(self.pi, how)((offset >> shift) * PI_SIZE, (length >> shift) * PI_SIZE)
            getattr(self.data, how)(offset, length)

    def discard(self, offset: int, length: int) -> None:
        """Deallocate: the blocks read back as zeros with escape PI (SBC-4 LBPRZ=1)."""
        if length > 0:
            self._unmap(offset, length, "discard")

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero in place, keep allocated; the PI becomes the escape value (as unmapped)."""
        if length > 0:
            self._unmap(offset, length, "write_zeroes")

    def map_status(self, offset: int, length: int) -> tuple[bool, int]:
        return self.data.map_status(offset, length)

    def close(self) -> None:
        self.data.close()
        self.pi.close()
        self.log.close()

    # --- crash recovery ----------------------------------------------------------------

    def recover(self) -> Recovery:
        """Replay the intent log (see module doc); call once after opening, before I/O."""
        raw = self.log.read_all()
        if not raw:
            return Recovery()
        records, _end = decode_intents(raw)
        nblocks = self.size >> self.block_shift
        rolled = kept = 0
        poisoned: set[int] = set()  # torn by the *last* record touching them
        for rec in records:
            n = rec.nblocks
            if rec.lba + n > nblocks:
                continue  # cannot be ours (the CRC matched a record for another geometry)
            result, stored = self._reconcile(rec.lba, rec.pi)
            if result.pi != stored:
                self.pi.pwrite(rec.lba * PI_SIZE, complement(result.pi))
            rolled += result.rolled_forward
            kept += result.kept
            # a later record for the same block decides (e.g. the second of two writes
            # whose data landed without its PI: torn against the first record, new
            # against the second)
            torn = {rec.lba + i for i in result.poisoned}
            poisoned = {b for b in poisoned if not rec.lba <= b < rec.lba + n} | torn
        self.pi.flush()
        self.log.reset()
        return Recovery(len(records), rolled, kept, tuple(sorted(poisoned)))
