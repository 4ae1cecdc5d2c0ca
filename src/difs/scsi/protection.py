"""Protection information (SBC-4 4.22) on a PI-formatted logical unit: the protect-field
rules of a unit and the PI steps of the block commands (where PI comes from, whether it
travels, what is checked).

A logical unit is PI-formatted when its store is a :class:`~difs.scsi.store.PiBlockStore`
(``lu.pi_type`` 1 or 3, 512-byte blocks + 8 bytes of PI each).  It then reports
INQUIRY PROTECT=1, READ CAPACITY(16) PROT_EN=1 / P_TYPE = type - 1 / P_I_EXPONENT=0,
Extended INQUIRY VPD (86h) SPT (000b type 1, 100b type 3), GRD_CHK=1, APP_CHK=1 when the
volume has an expected application tag, REF_CHK=1 for type 1, and ATO=1 in the Control
mode page (the application client owns the application tag: the device server stores it
as received and never changes it).  The commands below run the one block-command path of
:mod:`difs.scsi.rw` (plain and PI units alike), which takes the protect field's rule from
the unit's :class:`ProtectRules` and calls the PI steps here on a PI-formatted unit;
everything else reaches the store through ``pread``/``pwrite``, which check / generate PI
like protect field 000b (see :mod:`difs.storage.pistore`).

What each protect value does is :mod:`difs.integrity.protect`'s table (the checks Linux
LIO applies too).  In short, on this logical unit:

=========================  ==============================================================
command                    protect field
=========================  ==============================================================
READ(10/12/16)             000b: stored PI checked (guard, app tag if known, ref tag for
                           type 1), data returned without PI.  001b-101b: the checks of
                           the table, Data-In is data+PI interleaved (520 bytes a block).
WRITE(10/12/16),           000b: PI generated (application tag = the volume's tag, or 0;
WRITE AND VERIFY(10/12/16)  reference tag = LBA for type 1, 0 for type 3).  001b-101b:
                           Data-Out is data+PI interleaved, the received PI is checked as
                           the table says and stored as received.
VERIFY(10/12/16)           BYTCHK=0: the stored PI of the range is checked (VRPROTECT
                           table).  BYTCHK=1: VRPROTECT=000b checks the stored PI, then
                           compares data; 001b-101b receives data+PI, checks the received
                           PI, then compares the data (INFORMATION = offset of the first
                           differing byte in the Data-Out buffer).  BYTCHK=11b with
                           VRPROTECT != 000b is not supported: INVALID FIELD IN CDB.
WRITE SAME(10/16)          000b: the block's PI is generated for every LBA.  001b-101b:
                           Data-Out is one block + its PI; the PI is checked against the
                           first LBA, then every block gets the same guard and application
                           tag and, for type 1, reference tag = received tag + i.  NDOB=1
                           with WRPROTECT != 000b: INVALID FIELD IN CDB.  UNMAP=1: the
                           blocks are unmapped (zeros, PI FFFF_FFFF_FFFF_FFFFh, LBPRZ=1).
COMPARE AND WRITE, ORWRITE,  000b only (read checked, PI generated); any other value is
WRITE ATOMIC(16)           INVALID FIELD IN CDB (not supported).
READ(6)/WRITE(6)           no protect field: as 000b.
=========================  ==============================================================

Reserved values (110b, 111b) are INVALID FIELD IN CDB, field pointer byte 1 bit 7.  Check
failures are ABORTED COMMAND 10h/01h (guard), 10h/02h (application tag), 10h/03h
(reference tag) with the first failing LBA in INFORMATION; nothing is written when a
received tuple fails, and no data is returned when a stored one does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.integrity import (
    PI_SIZE,
    InvalidProtectField,
    ProtectRule,
    crc16_t10dif,
    interleave,
    rdprotect_rule,
    repeated_pi,
    split,
    unpack_tuple,
    vrprotect_rule,
    wrprotect_rule,
)

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.store import PiBlockStore as PiStore

_CHUNK = 1 << 20


class ProtectRules:
    """The :class:`ProtectRule` of every protect value (index = field value) on a unit of
    protection ``pi_type``; None where the value is INVALID FIELD IN CDB: the reserved
    values 6 and 7, and on a unit without PI (``pi_type`` 0) every value but 000b."""

    __slots__ = ("read", "verify", "verify_bytchk", "write")

    def __init__(self, pi_type: int) -> None:
        def table(make, **kw) -> list[ProtectRule | None]:
            rules: list[ProtectRule | None] = []
            for value in range(8):
                try:
                    rules.append(make(value, pi_type=pi_type, **kw))
                except InvalidProtectField:
                    rules.append(None)
            return rules

        self.read = table(rdprotect_rule)
        self.write = table(wrprotect_rule)
        self.verify = table(vrprotect_rule, bytchk=0)
        self.verify_bytchk = table(vrprotect_rule, bytchk=1)


def check(store: PiStore, rule: ProtectRule, data, pi, lba: int) -> None:
    """The checks ``rule`` asks of ``pi`` (stored or received) against ``data``."""
    if rule.check_guard or rule.check_app or rule.check_ref:
        store.verify(data, pi, lba, check_guard=rule.check_guard, check_app=rule.check_app,
                     check_ref=rule.check_ref)


# --- reading the medium -------------------------------------------------------------------


def read_pi(lu: LogicalUnit, rule: ProtectRule, lba: int, n: int):
    """READ on a PI unit: the stored PI checked as RDPROTECT says, the data returned with
    its PI interleaved (001b-101b) or without it (000b)."""
    store = lu.store
    shift = lu.block_shift
    data, pi = store.pread_pi(lba << shift, n << shift)
    check(store, rule, data, pi, lba)
    if rule.transfers_pi:
        return interleave(data, pi, block_size=lu.block_size)
    return data


def read_checked(lu: LogicalUnit, rule: ProtectRule, lba: int, n: int):
    """The data of ``n`` blocks; on a PI unit their stored PI is checked first when the
    rule checks stored PI (VERIFY with VRPROTECT 000b, not with received PI)."""
    shift = lu.block_shift
    if not lu.pi_type:
        return lu.store.pread(lba << shift, n << shift)
    data, pi = lu.store.pread_pi(lba << shift, n << shift)
    if rule.checks_stored_pi:
        check(lu.store, rule, data, pi, lba)
    return data


def check_stored(lu: LogicalUnit, rule: ProtectRule, lba: int, n: int) -> None:
    """VERIFY BYTCHK=0 on a PI unit: the stored PI of every block, 1 MiB at a time."""
    store = lu.store
    shift = lu.block_shift
    step = max(1, _CHUNK >> shift)
    for done in range(0, n, step):
        k = min(step, n - done)
        data, pi = store.pread_pi((lba + done) << shift, k << shift)
        check(store, rule, data, pi, lba + done)


def split_checked(lu: LogicalUnit, rule: ProtectRule, buf, lba: int):
    """The data of interleaved data+PI ``buf``, its received PI checked as the rule says."""
    data, pi = split(buf, block_size=lu.block_size)
    check(lu.store, rule, data, pi, lba)
    return data


# --- writing ------------------------------------------------------------------------------


def write_pi(lu: LogicalUnit, rule: ProtectRule, lba: int, buf, fua: int) -> None:
    """WRITE with WRPROTECT 001b-101b: the PI of the interleaved Data-Out ``buf`` (whole
    units) checked as the rule says, then data and PI stored as received."""
    store = lu.store
    data, pi = split(buf, block_size=lu.block_size)
    check(store, rule, data, pi, lba)
    store.pwrite_pi(lba << lu.block_shift, data, pi)
    if fua or not lu.write_cache:
        store.flush()


def write_same_pi(lu: LogicalUnit, rule: ProtectRule, lba: int, n: int, block: bytes,
                  data_out, unmap: bool) -> None:
    """WRITE SAME on a PI unit: 001b-101b checks the received tuple against the first LBA
    (also with UNMAP=1), then every block gets its guard and application tag and, for
    type 1, reference tag = received tag + i; 000b generates the block's PI for every LBA.
    UNMAP=1 unmaps the range (zeros, escape PI)."""
    store: PiStore = lu.store
    bs = lu.block_size
    offset = lba * bs
    if rule.transfers_pi:
        pi0 = bytes(data_out[bs:bs + PI_SIZE])
        check(store, rule, block, pi0, lba)
        guard, app, ref = unpack_tuple(pi0)
    elif not unmap:
        guard = crc16_t10dif(block)
        app = store.app_tag or 0
        ref = lba & 0xFFFFFFFF if store.pi_type != 3 else 0
        store.generated_blocks += n
    if unmap:
        lu.deallocate(offset, n * bs)
        return
    increment = store.pi_type != 3
    zero = not any(block)
    per_chunk = max(1, _CHUNK // bs)
    chunk = b"" if zero else block * min(per_chunk, n)
    for done in range(0, n, per_chunk):
        k = min(per_chunk, n - done)
        pi = repeated_pi(guard, app, ref + done if increment else ref, k, increment=increment)
        if zero:
            store.write_zeroes_pi(offset + done * bs, k * bs, pi)
        else:
            store.pwrite_pi(offset + done * bs,
                            chunk if k * bs == len(chunk) else chunk[:k * bs], pi)
