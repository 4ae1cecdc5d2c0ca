"""Keeping data and PI of a block in agreement at rest, across crashes.

Recommendation (for the controller's volume store)
---------------------------------------------------
Store each PI-formatted volume as **three files** and write them in a fixed order:

``data``
    The raw image, block *i* at offset ``i * 512``.  Unchanged from an unprotected volume:
    4 KiB-aligned I/O stays aligned (O_DIRECT possible), holes stay holes, ``qemu-img`` can
    read it, and the data path does not copy to interleave.
``pi``
    8 bytes per block at offset ``i * 8`` (16 MiB per GiB), stored **complemented**
    (:func:`to_stored` / :func:`from_stored`): a hole or a never-written page reads back as
    FFFF_FFFF_FFFF_FFFFh, the SBC-4 value of PI for unwritten (or unmapped) blocks, whose
    application tag FFFFh disables checking.  UNMAP punches a hole in both files.
``pi.log``
    An intent log: before touching ``data``, the write appends one record
    (:func:`encode_intent`: sequence number, LBA, block count, the new PI tuples, CRC32C).

A WRITE of *n* blocks at *lba* with tuples *P* (received and verified, or generated) is:

1. append ``encode_intent(seq, lba, P)`` to ``pi.log``;
2. ``pwrite(data, lba * 512)``;
3. ``pwrite(to_stored(P), lba * 8)`` on ``pi``;
4. for FUA / SYNCHRONIZE CACHE / NBD flush: ``fdatasync`` ``data`` and ``pi`` before the
   reply.  Once both are synced the log records up to then are dead: when no write is in
   flight (or every few tens of MiB of log, taking the volume's write lock) sync both and
   truncate the log.

On open, before serving I/O, replay the log: for every intact record, in order, read its
blocks and call :func:`reconcile` (pure), write back the PI it returns, ``fdatasync`` ``pi``,
truncate the log.  Per block, :func:`reconcile` keeps whatever *agrees*:

* data matches the logged tuple's guard  -> the write reached the data: store the new PI;
* data matches the stored tuple (or that   -> the data write never happened: keep the old PI;
  tuple is an escape, e.g. never written)
* data matches neither                    -> a torn block: store a *poisoned* tuple (the
  logged tags with the guard complemented), so every later read of the block fails the guard
  check (ABORTED COMMAND 10h/01h) until it is rewritten; never returned as good data.

Why this holds
--------------
* Process crash (``kill -9``): completed ``pwrite`` calls survive in the page cache; the one in
  progress may stop short at a **page** boundary (the kernel checks for fatal signals between
  pages).  A 512-byte block aligned in ``data`` never straddles a page, so each block holds
  entirely old or entirely new data.  Step 1 happens-before step 2, so any block whose data
  changed has its new tuple in an intact log record (a torn last record means step 2 never
  started).  After replay, data and PI agree for every block; acknowledged writes were fully
  done, so they read back with valid PI.  No ``fsync`` is needed for this case.
* Power loss: acknowledged writes that the application asked to be durable were
  ``fdatasync``-ed (step 4) with their PI: they agree.  Unflushed writes may land in any
  order; a block whose new data reached the disk without its PI or log record fails the guard
  check on read: detected, never silent.  Volumes that must not report errors for lost
  unflushed writes can ``fdatasync`` the log before step 2 (group commit across concurrent
  writes keeps the cost to one sync per batch) — then replay covers power loss too.
* Misdirected or corrupted writes at rest are caught on read by the guard and the type 1
  reference tag, as PI intends; the log adds no false acceptance (a block is accepted after a
  crash only if it matches one of two CRCs it could legitimately have).

Rejected alternatives
---------------------
* Interleaved 520-byte sectors in one file (:func:`difs.integrity.wire.interleave` produces
  that layout): one ``pwrite`` per command but **not atomic** — 4096 is not a multiple of 520,
  so 7 of every 8 sectors straddle a page and a crash can leave a block half old / half new
  or its PI from the other side of the tear; it also breaks 4 KiB alignment, O_DIRECT, holes
  and raw-image compatibility.  The guard would catch most tears, at 2**-16 miss odds each.
* 7 sectors of 520 bytes per 4 KiB page (page-atomic under ``kill -9``): 11% space overhead,
  unaligned I/O, still not atomic across power loss on 512-byte-sector devices.
* PI file written without a log (Linux dm-integrity's "direct" mode): a crash between the
  data and PI writes leaves mismatches reported as errors for writes that never completed;
  dm-integrity's "bitmap" mode recomputes tags of dirty regions after a crash, accepting
  whatever data is there — weaker than the two-candidate check above.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from crc32c import crc32c

from difs.integrity.crc import Buffer, as_byte_view, block_count, block_guards
from difs.integrity.pi import APP_TAG_ESCAPE, PI_DTYPE, PI_SIZE, REF_TAG_ESCAPE

__all__ = [
    "INTENT_HEADER",
    "IntentRecord",
    "Reconciled",
    "decode_intents",
    "encode_intent",
    "from_stored",
    "reconcile",
    "to_stored",
]

INTENT_MAGIC = b"DPIL"
#: magic, block count, sequence number, first LBA, CRC32C of everything else in the record
INTENT_HEADER = struct.Struct(">4sIQQI")


def to_stored(pi: Buffer) -> bytes:
    """PI tuples as written to the ``pi`` file: bitwise complement (holes read as FFh)."""
    return np.invert(np.frombuffer(as_byte_view(pi), dtype=np.uint8)).tobytes()


def from_stored(raw: Buffer) -> bytes:
    """PI tuples from bytes read from the ``pi`` file (inverse of :func:`to_stored`)."""
    return to_stored(raw)


@dataclass(frozen=True, slots=True)
class IntentRecord:
    seq: int
    lba: int
    pi: bytes

    @property
    def nblocks(self) -> int:
        return len(self.pi) // PI_SIZE


def encode_intent(seq: int, lba: int, pi: Buffer) -> bytes:
    """One intent-log record announcing that blocks ``lba..`` will get tuples ``pi``."""
    body = bytes(as_byte_view(pi))
    n = block_count(len(body), PI_SIZE)
    head = INTENT_HEADER.pack(INTENT_MAGIC, n, seq, lba, 0)[:-4]
    return head + struct.pack(">I", crc32c(body, crc32c(head))) + body


def decode_intents(log: Buffer) -> tuple[list[IntentRecord], int]:
    """Intact records from the start of ``log``, and the offset where they end.

    Decoding stops at the first record that is short, has a bad magic or a bad CRC: that is
    the torn tail of a crash (or the end of the log); everything after it is ignored.
    """
    mv = memoryview(as_byte_view(log))
    records: list[IntentRecord] = []
    off = 0
    hsize = INTENT_HEADER.size
    while off + hsize <= len(mv):
        magic, n, seq, lba, crc = INTENT_HEADER.unpack_from(mv, off)
        end = off + hsize + n * PI_SIZE
        if magic != INTENT_MAGIC or end > len(mv):
            break
        body = bytes(mv[off + hsize : end])
        if crc32c(body, crc32c(bytes(mv[off : off + hsize - 4]))) != crc:
            break
        records.append(IntentRecord(seq, lba, body))
        off = end
    return records, off


@dataclass(frozen=True, slots=True)
class Reconciled:
    """Outcome of :func:`reconcile` for one record's blocks."""

    pi: bytes  #: tuples to store now (plain, not complemented)
    rolled_forward: int  #: blocks whose data matched the logged tuple
    kept: int  #: blocks whose data matched the stored tuple only
    poisoned: tuple[int, ...]  #: indices of blocks matching neither (stored as failing)


def reconcile(data: Buffer, stored_pi: Buffer, logged_pi: Buffer, *, pi_type: int,
              block_size: int = 512) -> Reconciled:
    """Choose, per block, the PI that agrees with the data found after a crash.

    ``data``: the blocks as read now; ``stored_pi``: their tuples as read now from the ``pi``
    file (already :func:`from_stored`); ``logged_pi``: the tuples of the intent record.
    A stored tuple that is an escape (e.g. the all-ones PI of a never-written block) agrees
    with any data: it is kept when the data does not match the logged tuple.
    """
    guards = block_guards(data, block_size=block_size)
    n = guards.shape[0]
    stored = np.frombuffer(as_byte_view(stored_pi), dtype=PI_DTYPE)
    logged = np.frombuffer(as_byte_view(logged_pi), dtype=PI_DTYPE)
    if stored.shape[0] != n or logged.shape[0] != n:
        raise ValueError(f"{n} blocks need {n} stored and {n} logged PI tuples")
    new_ok = logged["guard"] == guards
    escaped = stored["app"] == APP_TAG_ESCAPE
    if pi_type == 3:
        escaped &= stored["ref"] == REF_TAG_ESCAPE
    old_ok = ((stored["guard"] == guards) | escaped) & ~new_ok
    torn = ~(new_ok | old_ok)
    out = stored.copy()  # keeps PI_DTYPE's big-endian fields (np.where would not)
    out[new_ok] = logged[new_ok]
    if torn.any():
        out["guard"][torn] = np.invert(guards[torn])
        out["app"][torn] = logged["app"][torn]
        out["ref"][torn] = logged["ref"][torn]
    return Reconciled(
        pi=out.tobytes(),
        rolled_forward=int(new_ok.sum()),
        kept=int(old_ok.sum()),
        poisoned=tuple(int(i) for i in np.flatnonzero(torn)),
    )
