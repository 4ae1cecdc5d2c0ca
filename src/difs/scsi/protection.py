"""Protection information (SBC-4 4.22) on a PI-formatted logical unit: the block commands
whose protect field decides where PI comes from, whether it travels, and what is checked.

A logical unit is PI-formatted when its store is a :class:`~difs.scsi.store.PiBlockStore`
(``lu.pi_type`` 1 or 3, 512-byte blocks + 8 bytes of PI each).  It then reports
INQUIRY PROTECT=1, READ CAPACITY(16) PROT_EN=1 / P_TYPE = type - 1 / P_I_EXPONENT=0,
Extended INQUIRY VPD (86h) SPT (000b type 1, 100b type 3), GRD_CHK=1, APP_CHK=1 when the
volume has an expected application tag, REF_CHK=1 for type 1, and ATO=1 in the Control
mode page (the application client owns the application tag: the device server stores it
as received and never changes it).  The command table (:mod:`difs.scsi.commands`) routes
the commands below here; everything else reaches the store through ``pread``/``pwrite``,
which check / generate PI like protect field 000b (see :mod:`difs.storage.pistore`).

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
from difs.sam.status import GOOD
from difs.scsi import cdb as C
from difs.scsi import sense as S
from difs.scsi.cdb import RW10, RW12, RW16
from difs.scsi.provisioning import write_same_range
from difs.scsi.result import ScsiResult
from difs.scsi.sbc import data_out_blocks, first_difference

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus
    from difs.scsi.store import PiBlockStore as PiStore

_RW10_unpack = RW10.unpack_from
_RW12_unpack = RW12.unpack_from
_RW16_unpack = RW16.unpack_from
_CHUNK = 1 << 20


class PiRules:
    """The :class:`ProtectRule` of every protect value for one protection type (index =
    field value; None for the reserved values 6 and 7)."""

    __slots__ = ("read", "verify", "verify_bytchk", "write")

    def __init__(self, pi_type: int) -> None:
        def table(make, **kw) -> list[ProtectRule | None]:
            return [make(v, pi_type=pi_type, **kw) if v < 6 else None for v in range(8)]

        self.read = table(rdprotect_rule)
        self.write = table(wrprotect_rule)
        self.verify = table(vrprotect_rule, bytchk=0)
        self.verify_bytchk = table(vrprotect_rule, bytchk=1)


def _check(store: PiStore, rule: ProtectRule, data, pi, lba: int) -> None:
    if rule.check_guard or rule.check_app or rule.check_ref:
        store.verify(data, pi, lba, check_guard=rule.check_guard, check_app=rule.check_app,
                     check_ref=rule.check_ref)


def pi_data_out(lu: LogicalUnit, data_out, n: int) -> tuple[memoryview | bytes, int]:
    """(buffer, blocks) of interleaved data+PI Data-Out, like :func:`sbc.data_out_blocks`
    with 520-byte units: short data-out uses the whole units received, a partial unit is
    ILLEGAL REQUEST 0Eh/03h, longer data-out is truncated."""
    unit = lu.block_size + PI_SIZE
    need = n * unit
    got = len(data_out) if data_out is not None else 0
    if got == need:
        return data_out, n
    if got > need:
        return memoryview(data_out)[:need], n
    if got % unit:
        raise S.invalid_field_in_command_iu()
    return (memoryview(data_out) if got else b""), got // unit


# --- READ -------------------------------------------------------------------------------


def _read(lu: LogicalUnit, flags: int, lba: int, n: int, tl_byte: int) -> ScsiResult:
    rule = lu.pi_rules.read[flags >> 5]
    if rule is None:
        raise S.invalid_field_in_cdb(1, 7)
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(tl_byte)
    if not n:
        return ScsiResult(GOOD)
    store = lu.store
    shift = lu.block_shift
    data, pi = store.pread_pi(lba << shift, n << shift)
    _check(store, rule, data, pi, lba)
    if rule.transfers_pi:
        return ScsiResult(GOOD, interleave(data, pi, block_size=lu.block_size))
    return ScsiResult(GOOD, data)


def read10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    return _read(lu, flags, lba, n, 7)


def read12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    return _read(lu, flags, lba, n, 6)


def read16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    return _read(lu, flags, lba, n, 10)


# --- WRITE / WRITE AND VERIFY -------------------------------------------------------------


def _write(lu: LogicalUnit, flags: int, lba: int, n: int, data_out, tl_byte: int,
           fua: int) -> ScsiResult:
    rule = lu.pi_rules.write[flags >> 5]
    if rule is None:
        raise S.invalid_field_in_cdb(1, 7)
    nb = lu.num_blocks
    if lba >= nb or lba + n > nb:
        raise S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)
    if n > lu.max_transfer_blocks:
        raise S.invalid_field_in_cdb(tl_byte)
    if lu._write_protect:
        lu.check_writable()
    if not n:
        return ScsiResult(GOOD)
    store = lu.store
    shift = lu.block_shift
    if rule.transfers_pi:
        buf, n = pi_data_out(lu, data_out, n)
        if not n:
            return ScsiResult(GOOD)
        data, pi = split(buf, block_size=lu.block_size)
        _check(store, rule, data, pi, lba)
        store.pwrite_pi(lba << shift, data, pi)
    else:
        if data_out is None or len(data_out) != n << shift:
            data_out, n = data_out_blocks(lu, data_out, n)
            if not n:
                return ScsiResult(GOOD)
        store.pwrite(lba << shift, data_out)
    if fua or not lu.write_cache:
        store.flush()
    return ScsiResult(GOOD)


def write10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    return _write(lu, flags, lba, n, data_out, 7, flags & 0x08)


def write12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    return _write(lu, flags, lba, n, data_out, 6, flags & 0x08)


def write16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    return _write(lu, flags, lba, n, data_out, 10, flags & 0x08)


def _write_and_verify(lu: LogicalUnit, flags: int, lba: int, n: int, data_out,
                      tl_byte: int) -> ScsiResult:
    if (flags >> 1) & 0x03 > 1:
        raise S.invalid_field_in_cdb(1, 2)  # BYTCHK 10b/11b are reserved here
    return _write(lu, flags, lba, n, data_out, tl_byte, 1)


def write_verify10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    return _write_and_verify(lu, flags, lba, n, data_out, 7)


def write_verify12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    return _write_and_verify(lu, flags, lba, n, data_out, 6)


def write_verify16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    return _write_and_verify(lu, flags, lba, n, data_out, 10)


# --- VERIFY -------------------------------------------------------------------------------


def _verify(lu: LogicalUnit, flags: int, lba: int, n: int, data_out) -> ScsiResult:
    vr = flags >> 5
    bytchk = (flags >> 1) & 0x03
    if bytchk == 2:
        raise S.invalid_field_in_cdb(1, 2)
    rule = (lu.pi_rules.verify_bytchk if bytchk else lu.pi_rules.verify)[vr]
    if rule is None or (bytchk == 3 and vr):
        raise S.invalid_field_in_cdb(1, 7)
    lu.check_range(lba, n)
    if not n:
        return ScsiResult(GOOD)
    store = lu.store
    shift = lu.block_shift
    bs = lu.block_size
    if bytchk == 0:
        # medium verification: the stored PI of every block, 1 MiB at a time
        if rule.check_guard or rule.check_app or rule.check_ref:
            step = max(1, _CHUNK >> shift)
            for done in range(0, n, step):
                k = min(step, n - done)
                data, pi = store.pread_pi((lba + done) << shift, k << shift)
                _check(store, rule, data, pi, lba + done)
        return ScsiResult(GOOD)
    if bytchk == 1:
        if n > lu.max_transfer_blocks:
            raise S.invalid_field_in_cdb(1, 2)
        if rule.transfers_pi:
            buf, n = pi_data_out(lu, data_out, n)
            if not n:
                return ScsiResult(GOOD)
            expected, pi = split(buf, block_size=bs)
            _check(store, rule, expected, pi, lba)
            actual, _ = store.pread_pi(lba << shift, n << shift)
        else:
            expected, n = data_out_blocks(lu, data_out, n)
            if not n:
                return ScsiResult(GOOD)
            actual, pi = store.pread_pi(lba << shift, n << shift)
            _check(store, rule, actual, pi, lba)
        if actual != expected:
            off = first_difference(expected, actual)
            if rule.transfers_pi:
                off = (off // bs) * (bs + PI_SIZE) + off % bs
            raise S.miscompare(off)
        return ScsiResult(GOOD)
    # BYTCHK 11b, VRPROTECT 000b: one block of data-out compared with every block
    pattern, got = data_out_blocks(lu, data_out, 1)
    if not got:
        raise S.invalid_field_in_command_iu()
    pattern = bytes(pattern)
    step = max(1, _CHUNK >> shift)
    for done in range(0, n, step):
        k = min(step, n - done)
        actual, pi = store.pread_pi((lba + done) << shift, k << shift)
        _check(store, rule, actual, pi, lba + done)
        if actual != pattern * k:
            off = first_difference(pattern * k, actual)
            raise S.miscompare((off % bs) if done + off // bs else off)
    return ScsiResult(GOOD)


def verify10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = _RW10_unpack(cdb)
    return _verify(lu, flags, lba, n, data_out)


def verify12(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW12_unpack(cdb)
    return _verify(lu, flags, lba, n, data_out)


def verify16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = _RW16_unpack(cdb)
    return _verify(lu, flags, lba, n, data_out)


# --- WRITE SAME -------------------------------------------------------------------------


def _write_same(lu: LogicalUnit, flags: int, lba: int, n: int, data_out, ndob: bool,
                nb_byte: int) -> ScsiResult:
    wr = flags >> 5
    rule = lu.pi_rules.write[wr]
    if rule is None or (ndob and wr):
        raise S.invalid_field_in_cdb(1, 7)
    n, unmap = write_same_range(lu, flags, lba, n, nb_byte)
    store: PiStore = lu.store
    bs = lu.block_size
    unit = bs + PI_SIZE if rule.transfers_pi else bs
    if ndob:
        if data_out:
            raise S.invalid_field_in_command_iu()
        block = bytes(bs)
    else:
        if data_out is None or len(data_out) != unit:
            raise S.invalid_field_in_command_iu()
        block = bytes(data_out[:bs])
    if rule.transfers_pi:
        pi0 = bytes(data_out[bs:unit])
        _check(store, rule, block, pi0, lba)
        guard, app, ref = unpack_tuple(pi0)
    else:
        guard = crc16_t10dif(block)
        app = store.app_tag or 0
        ref = lba & 0xFFFFFFFF if store.pi_type != 3 else 0
    offset = lba * bs
    if unmap:
        lu.deallocate(offset, n * bs)
    else:
        if not rule.transfers_pi:
            store.generated_blocks += n
        increment = store.pi_type != 3
        zero = not any(block)
        per_chunk = max(1, _CHUNK // bs)
        chunk = b"" if zero else block * min(per_chunk, n)
        for done in range(0, n, per_chunk):
            k = min(per_chunk, n - done)
            pi = repeated_pi(guard, app, ref + done if increment else ref, k,
                             increment=increment)
            if zero:
                store.write_zeroes_pi(offset + done * bs, k * bs, pi)
            else:
                store.pwrite_pi(offset + done * bs,
                                chunk if k * bs == len(chunk) else chunk[:k * bs], pi)
    if not lu.write_cache:
        store.flush()
    return ScsiResult(GOOD)


def write_same10(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, _, n, _ = RW10.unpack_from(cdb)
    return _write_same(lu, flags, lba, n, data_out, False, 7)


def write_same16(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    _, flags, lba, n, _, _ = RW16.unpack_from(cdb)
    return _write_same(lu, flags & 0xFE, lba, n, data_out, bool(flags & 0x01), 10)


#: opcode -> handler, installed in a PI-formatted logical unit's command table
HANDLERS = {
    C.READ_10: read10, C.READ_12: read12, C.READ_16: read16,
    C.WRITE_10: write10, C.WRITE_12: write12, C.WRITE_16: write16,
    C.WRITE_AND_VERIFY_10: write_verify10, C.WRITE_AND_VERIFY_12: write_verify12,
    C.WRITE_AND_VERIFY_16: write_verify16,
    C.VERIFY_10: verify10, C.VERIFY_12: verify12, C.VERIFY_16: verify16,
    C.WRITE_SAME_10: write_same10, C.WRITE_SAME_16: write_same16,
}


def protected_unit(lu: LogicalUnit, protect: int) -> int:
    """Bytes per logical block of Data-Out for a protect field value on ``lu``."""
    if lu.pi_type and 0 < protect < 6:
        return lu.block_size + PI_SIZE
    return lu.block_size
