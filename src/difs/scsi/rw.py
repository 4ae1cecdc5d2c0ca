"""The one path of the block commands that move logical blocks (SBC-4): READ, WRITE,
WRITE AND VERIFY and VERIFY in their 6/10/12/16-byte forms, and WRITE SAME(10/16), on
plain and PI-formatted logical units alike.

Each handler is made from its row of the CDB layout table (:data:`difs.sam.cdb.LAYOUTS`):
one ``unpack_from`` yields (byte 1, LBA, transfer length), then one body per command
kind applies the protect field, the LBA range, the transfer length limit, write
protection and the Data-Out blocks before the store call.  The protect field selects a
rule from the unit's :class:`~difs.scsi.protection.ProtectRules` (the tables of
:mod:`difs.integrity.protect`): a unit without PI has only the plain rule of 000b, so any
other value is INVALID FIELD IN CDB (byte 1 bit 7) there; on a PI-formatted unit the rule
says which PI is checked, generated, stripped or sent (the PI steps are in
:mod:`difs.scsi.protection`, which also tabulates every value).

READ and WRITE are the hot path: the range and length checks are written out in them
rather than called, and a unit without PI goes straight to ``pread`` / ``pwrite``.

Data-Out shorter than the transfer length: the whole blocks received are used; a partial
block is ILLEGAL REQUEST 0Eh/03h; longer Data-Out is truncated.  Every result carries the
command's transfer length in bytes (``ScsiResult.transfer_length``, 0 for READ) for the
iSCSI layer's residuals; a failed command gets it from :func:`commands.data_out_length`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from difs.integrity import PI_SIZE
from difs.sam import cdb as C
from difs.sam.cdb import LAYOUTS, CdbLayout
from difs.scsi import protection as P
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult
from difs.sam.status import GOOD

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit

Handler = Callable[..., ScsiResult]
_EMPTY = b""
_CHUNK = 1 << 20


# --- shared pieces -----------------------------------------------------------------------


def data_out_blocks(lu: LogicalUnit, data_out, n: int, unit: int = 0
                    ) -> tuple[memoryview | bytes, int]:
    """(buffer, blocks) of the whole ``unit``-byte blocks of ``data_out`` a command of
    ``n`` blocks may use (``unit``: the block size, or block + PI when PI travels).

    Shorter Data-Out: the whole units received; a partial unit is ILLEGAL REQUEST 0Eh/03h.
    Longer Data-Out: truncated."""
    unit = unit or lu.block_size
    need = n * unit
    got = len(data_out) if data_out is not None else 0
    if got == need:
        return data_out, n
    if got > need:
        return memoryview(data_out)[:need], n
    if got % unit:
        raise S.invalid_field_in_command_iu()
    return (memoryview(data_out) if got else _EMPTY), got // unit


def first_difference(a, b) -> int:
    """Offset of the first byte where ``a`` and ``b`` differ (they must differ)."""
    a = memoryview(a).cast("B")
    b = memoryview(b).cast("B")
    lo, step = 0, 4096
    n = min(len(a), len(b))
    while lo < n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    for i in range(lo, min(lo + step, n)):
        if a[i] != b[i]:
            return i
    return n


def _out_of_range(lba: int) -> S.ScsiError:
    return S.lba_out_of_range(lba if lba <= 0xFFFFFFFF else None)


# --- READ --------------------------------------------------------------------------------


def read_command(layout: CdbLayout) -> Handler:
    """The handler of one READ form: its layout's decode, then the one read path."""
    fields = layout.fields
    length_at = layout.length_at

    def read(lu: LogicalUnit, cdb, data_out, nexus) -> ScsiResult:
        flags, lba, n = fields(cdb)
        rule = lu.read_rules[flags >> 5]
        if rule is None:
            raise S.invalid_field_in_cdb(1, 7)  # RDPROTECT: reserved, or the unit has no PI
        nb = lu.num_blocks
        if lba >= nb or lba + n > nb:
            raise _out_of_range(lba)
        if n > lu.max_transfer_blocks:
            raise S.invalid_field_in_cdb(length_at)
        if not n:
            return ScsiResult(GOOD)
        shift = lu.block_shift
        if lu.pi_type:
            return ScsiResult(GOOD, P.read_pi(lu, rule, lba, n))
        return ScsiResult(GOOD, lu.store.pread(lba << shift, n << shift))

    return _named(read, layout)


# --- WRITE / WRITE AND VERIFY --------------------------------------------------------------


def write_command(layout: CdbLayout, *, verify: bool = False) -> Handler:
    """The handler of one WRITE form (FUA as the CDB says) or, with ``verify``, WRITE AND
    VERIFY: a write that reaches stable storage before it is verified against the medium
    (which then holds what was written)."""
    fields = layout.fields
    length_at = layout.length_at
    fua_bit = layout.fua

    def write(lu: LogicalUnit, cdb, data_out, nexus) -> ScsiResult:
        flags, lba, n = fields(cdb)
        rule = lu.write_rules[flags >> 5]
        if rule is None:
            raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT: reserved, or the unit has no PI
        if verify:
            if (flags & C.BYTCHK_MASK) >> C.BYTCHK_SHIFT > 1:
                raise S.invalid_field_in_cdb(1, 2)  # BYTCHK 10b/11b are reserved here
            fua = 1
        else:
            fua = flags & fua_bit
        nb = lu.num_blocks
        if lba >= nb or lba + n > nb:
            raise _out_of_range(lba)
        if n > lu.max_transfer_blocks:
            raise S.invalid_field_in_cdb(length_at)
        if lu._write_protect:
            lu.check_writable()
        if rule.transfers_pi:
            return _write_with_pi(lu, rule, lba, n, data_out, fua)
        shift = lu.block_shift
        length = n << shift
        if not n:
            return ScsiResult(GOOD)
        if data_out is None or len(data_out) != length:
            data_out, got = data_out_blocks(lu, data_out, n)
            if not got:
                return ScsiResult(GOOD, _EMPTY, _EMPTY, length)
        store = lu.store
        store.pwrite(lba << shift, data_out)
        if fua or not lu.write_cache:
            store.flush()
        return ScsiResult(GOOD, _EMPTY, _EMPTY, length)

    return _named(write, layout)


def _write_with_pi(lu: LogicalUnit, rule, lba: int, n: int, data_out, fua: int) -> ScsiResult:
    """WRITE with WRPROTECT 001b-101b: Data-Out is data+PI interleaved, whole units used."""
    unit = lu.block_size + PI_SIZE
    if n:
        buf, got = data_out_blocks(lu, data_out, n, unit)
        if got:
            P.write_pi(lu, rule, lba, buf, fua)
    return ScsiResult(GOOD, _EMPTY, _EMPTY, n * unit)


def write_and_verify_command(layout: CdbLayout) -> Handler:
    return write_command(layout, verify=True)


# --- VERIFY ------------------------------------------------------------------------------


def verify_blocks(lu: LogicalUnit, flags: int, lba: int, n: int, data_out) -> ScsiResult:
    """VERIFY after decoding: BYTCHK 00b checks the medium (a PI unit: the stored PI of the
    range, as VRPROTECT says), 01b compares with Data-Out, 11b compares one block of
    Data-Out with every block (VRPROTECT 000b only)."""
    vr = flags >> 5
    bytchk = (flags & C.BYTCHK_MASK) >> C.BYTCHK_SHIFT
    rules = lu.protect_rules
    rule = (rules.verify_bytchk if bytchk else rules.verify)[vr]
    if rule is None:
        raise S.invalid_field_in_cdb(1, 7)  # VRPROTECT
    if bytchk == 2:
        raise S.invalid_field_in_cdb(1, 2)
    if bytchk == 3 and vr:
        raise S.invalid_field_in_cdb(1, 7)  # one block compared with PI: not supported
    lu.check_range(lba, n)
    bs = lu.block_size
    unit = bs + PI_SIZE if rule.transfers_pi else bs
    length = n * unit if bytchk == 1 else bs if bytchk == 3 else 0
    if not n:
        return ScsiResult(GOOD, _EMPTY, _EMPTY, length)
    if bytchk == 0:
        if rule.checks_anything:
            P.check_stored(lu, rule, lba, n)
        return ScsiResult(GOOD)
    if bytchk == 1:
        if n > lu.max_transfer_blocks:
            raise S.invalid_field_in_cdb(1, 2)
        _compare(lu, rule, lba, n, data_out, unit)
    else:
        _compare_pattern(lu, rule, lba, n, data_out)
    return ScsiResult(GOOD, _EMPTY, _EMPTY, length)


def _compare(lu: LogicalUnit, rule, lba: int, n: int, data_out, unit: int) -> None:
    """BYTCHK 01b: the Data-Out blocks against the medium (MISCOMPARE at the first
    differing byte of the Data-Out buffer)."""
    buf, n = data_out_blocks(lu, data_out, n, unit)
    if not n:
        return
    bs = lu.block_size
    if rule.transfers_pi:
        expected = P.split_checked(lu, rule, buf, lba)
    else:
        expected = buf
    actual = P.read_checked(lu, rule, lba, n)
    if actual != expected:
        off = first_difference(expected, actual)
        if unit != bs:
            off = (off // bs) * unit + off % bs
        raise S.miscompare(off)


def _compare_pattern(lu: LogicalUnit, rule, lba: int, n: int, data_out) -> None:
    """BYTCHK 11b: one block of Data-Out against every block of the range, 1 MiB at a
    time (MISCOMPARE: offset in the block, or in the first block's run)."""
    pattern, got = data_out_blocks(lu, data_out, 1)
    if not got:
        raise S.invalid_field_in_command_iu()
    pattern = bytes(pattern)
    bs = lu.block_size
    shift = lu.block_shift
    step = max(1, _CHUNK >> shift)
    for done in range(0, n, step):
        k = min(step, n - done)
        actual = P.read_checked(lu, rule, lba + done, k)
        if actual != pattern * k:
            off = first_difference(pattern * k, actual)
            raise S.miscompare((off % bs) if done + off // bs else off)


def verify_command(layout: CdbLayout) -> Handler:
    fields = layout.fields

    def verify(lu: LogicalUnit, cdb, data_out, nexus) -> ScsiResult:
        flags, lba, n = fields(cdb)
        return verify_blocks(lu, flags, lba, n, data_out)

    return _named(verify, layout)


# --- WRITE SAME --------------------------------------------------------------------------


def write_same_range(lu: LogicalUnit, flags: int, lba: int, n: int, nb_byte: int
                     ) -> tuple[int, bool]:
    """The checks of every WRITE SAME: returns (blocks, unmap).

    Zero blocks means from LBA to the last LBA (WSNZ=0, SBC-4 5.50); ANCHOR is refused
    (anchored LBAs are not supported); UNMAP needs logical block provisioning."""
    if n == 0:
        if lba >= lu.num_blocks:
            raise _out_of_range(lba)
        n = lu.num_blocks - lba
    if n > lu.max_write_same_blocks:
        raise S.invalid_field_in_cdb(nb_byte)
    lu.check_range(lba, n)
    lu.check_writable()
    unmap = bool(flags & C.WS_UNMAP)
    if flags & C.WS_ANCHOR:
        raise S.invalid_field_in_cdb(1, 4)
    if unmap and not lu.lbpme:
        raise S.invalid_field_in_cdb(1, 3)
    return n, unmap


def write_same_blocks(lu: LogicalUnit, flags: int, lba: int, n: int, data_out, ndob: bool,
                      nb_byte: int) -> ScsiResult:
    """WRITE SAME after decoding (see :mod:`difs.scsi.provisioning` for UNMAP=1).

    Without UNMAP a zero block keeps the range allocated (``write_zeroes``) and any other
    block is written 1 MiB at a time; on a PI unit every block gets its PI (generated, or
    the received tuple replicated: see :func:`protection.write_same_pi`)."""
    wr = flags >> 5
    rule = lu.write_rules[wr]
    if rule is None or (ndob and wr):
        raise S.invalid_field_in_cdb(1, 7)  # WRPROTECT (NDOB=1 leaves no PI to receive)
    n, unmap = write_same_range(lu, flags, lba, n, nb_byte)
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
    offset, length = lba * bs, n * bs
    store = lu.store
    if lu.pi_type:
        P.write_same_pi(lu, rule, lba, n, block, data_out, unmap)
    elif unmap:
        # UNMAP=1 unmaps whatever the data-out holds (LBPRZ: the blocks read back as
        # zeros), as Linux LIO does and libiscsi's WriteSame*.UnmapUntilEnd expects
        lu.deallocate(offset, length)
    elif not any(block):
        store.write_zeroes(offset, length)
    else:
        per_chunk = max(1, _CHUNK // bs)
        chunk = block * min(per_chunk, n)
        for done in range(0, n, per_chunk):
            k = min(per_chunk, n - done)
            store.pwrite(offset + done * bs, chunk if k * bs == len(chunk) else chunk[:k * bs])
    if not lu.write_cache:
        store.flush()
    return ScsiResult(GOOD, _EMPTY, _EMPTY, 0 if ndob else unit)


def write_same_command(layout: CdbLayout) -> Handler:
    fields = layout.fields
    length_at = layout.length_at
    ndob_bit = layout.ndob

    def write_same(lu: LogicalUnit, cdb, data_out, nexus) -> ScsiResult:
        flags, lba, n = fields(cdb)
        return write_same_blocks(lu, flags & ~ndob_bit, lba, n, data_out,
                                 bool(flags & ndob_bit), length_at)

    return _named(write_same, layout)


# --- the table ----------------------------------------------------------------------------


def _named(handler: Handler, layout: CdbLayout) -> Handler:
    handler.__name__ = handler.__qualname__ = \
        layout.name.lower().replace(" ", "_").replace("(", "").replace(")", "")
    return handler


_MAKERS: dict[int, Callable[[CdbLayout], Handler]] = {
    C.READ_6: read_command, C.READ_10: read_command, C.READ_12: read_command,
    C.READ_16: read_command,
    C.WRITE_6: write_command, C.WRITE_10: write_command, C.WRITE_12: write_command,
    C.WRITE_16: write_command,
    C.WRITE_AND_VERIFY_10: write_and_verify_command,
    C.WRITE_AND_VERIFY_12: write_and_verify_command,
    C.WRITE_AND_VERIFY_16: write_and_verify_command,
    C.VERIFY_10: verify_command, C.VERIFY_12: verify_command, C.VERIFY_16: verify_command,
    C.WRITE_SAME_10: write_same_command, C.WRITE_SAME_16: write_same_command,
}

#: operation code -> handler; every result of these carries its transfer length
HANDLERS: dict[int, Handler] = {op: make(LAYOUTS[op]) for op, make in _MAKERS.items()}
