"""The one block-command path (difs.scsi.rw), driven by the CDB layout table: every READ,
WRITE, WRITE AND VERIFY, VERIFY and WRITE SAME form decodes its LBA and length, refuses an
LBA out of range and a transfer length too long with the field pointer the layout names,
and treats its protect field by the unit's rules; plain and PI-formatted units agree."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difs.integrity import generate, interleave
from difs.sam import cdb as C
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus
from difs.storage.pistore import PiStore
from difs.scsi.commands import build_command_table, data_out_length
from difs.scsi.rw import HANDLERS
from difs.sam.sense import ILLEGAL_REQUEST, parse_sense
from difs.sam.status import CHECK_CONDITION, GOOD

BLOCKS = 64
MAX_BLOCKS = 16
BS = 512
NX = Nexus("iqn.2024-01.test:init,i,0x23d000000001", "iqn.2024-01.test:tgt,t,0x1", 1)

READS = [C.READ_6, C.READ_10, C.READ_12, C.READ_16]
WRITES = [C.WRITE_6, C.WRITE_10, C.WRITE_12, C.WRITE_16]
WRITE_VERIFIES = [C.WRITE_AND_VERIFY_10, C.WRITE_AND_VERIFY_12, C.WRITE_AND_VERIFY_16]
VERIFIES = [C.VERIFY_10, C.VERIFY_12, C.VERIFY_16]
WRITE_SAMES = [C.WRITE_SAME_10, C.WRITE_SAME_16]
RW_OPCODES = READS + WRITES + WRITE_VERIFIES + VERIFIES + WRITE_SAMES
UNITS = [0, 1, 3]  # no PI, PI type 1, PI type 3


def make_lu(pi_type: int = 0) -> LogicalUnit:
    if pi_type:
        store = PiStore.in_memory(BLOCKS * BS, pi_type=pi_type)
    else:
        store = MemoryStore(BLOCKS * BS)
    lu = LogicalUnit(store=store, identity=LuIdentity.from_uuid(uuid.UUID(int=5)),
                     provisioning="thin", max_transfer_bytes=MAX_BLOCKS * BS)
    lu.execute(bytes(6), None, NX)  # consume the power-on unit attention
    return lu


def cdb_for(op: int, lba: int, n: int, flags: int = 0) -> bytes:
    """A CDB written from the layout's offsets."""
    layout = C.LAYOUTS[op]
    cdb = bytearray(layout.size)
    cdb[0] = op
    if layout.size == 6:
        cdb[1:4] = (lba & 0x1FFFFF).to_bytes(3, "big")
    else:
        cdb[1] = flags
        cdb[layout.lba_at:layout.lba_at + layout.lba_size] = lba.to_bytes(layout.lba_size, "big")
    cdb[layout.length_at:layout.length_at + layout.length_size] = \
        n.to_bytes(layout.length_size, "big")
    return bytes(cdb)


def data_for(lu: LogicalUnit, op: int, lba: int, n: int, protect: int = 0,
             bytchk: int = 0) -> bytes | None:
    """The Data-Out a well-formed command of this kind carries (PI interleaved when the
    protect field makes it travel on a PI unit)."""
    if op in READS or (op in VERIFIES and bytchk == 0):
        return None
    blocks = 1 if op in WRITE_SAMES or bytchk == 3 else n
    data = bytes((lba + i) & 0xFF for i in range(blocks * BS))
    if lu.pi_type and 0 < protect < 6 and bytchk != 3:
        pi = generate(data, lba=lba, pi_type=lu.pi_type)
        return bytes(interleave(data, pi))
    return data


def run(lu: LogicalUnit, cdb: bytes, data=None):
    result = lu.execute(cdb, data, NX)
    # the result carries the transfer length the layout table's data-out rule gives
    assert result.transfer_length == data_out_length(lu, cdb), (cdb.hex(), result)
    return result


def sense_of(result) -> tuple[int, int, int]:
    assert result.status == CHECK_CONDITION, result
    return parse_sense(bytes(result.sense))


def field_pointer(result) -> tuple[int, int | None]:
    """(byte, bit or None) of a fixed-format sense's SENSE KEY SPECIFIC field pointer."""
    s = bytes(result.sense)
    assert s[15] & 0xC0 == 0xC0, s.hex()  # SKSV, C/D (in the CDB)
    return struct.unpack_from(">H", s, 16)[0], (s[15] & 0x07) if s[15] & 0x08 else None


def information(result) -> int | None:
    s = bytes(result.sense)
    return struct.unpack_from(">I", s, 3)[0] if s[0] & 0x80 else None


# --- the table -----------------------------------------------------------------------------


def test_one_handler_per_opcode_for_plain_and_pi_units():
    assert set(HANDLERS) == set(RW_OPCODES)
    for pi_type in UNITS:
        lu = make_lu(pi_type)
        for op in RW_OPCODES:
            assert lu.command_group(op).handler is HANDLERS[op], (pi_type, hex(op))


@pytest.mark.parametrize("op", RW_OPCODES + [C.ORWRITE_16, C.COMPARE_AND_WRITE,
                                             C.WRITE_ATOMIC_16, C.PRE_FETCH_10, C.PRE_FETCH_16,
                                             C.SYNCHRONIZE_CACHE_10, C.SYNCHRONIZE_CACHE_16],
                         ids=hex)
def test_layouts_and_cdb_usage_masks_agree(op):
    """The layout table (field positions) and the command table's usage data (which bits
    a CDB may set, also what REPORT SUPPORTED OPERATION CODES returns) tell one story."""
    layout = C.LAYOUTS[op]
    lu = make_lu(1)
    lu.max_atomic_blocks = 8  # WRITE ATOMIC(16) is in the table when the store offers it
    usage = build_command_table(lu)[op].usage
    assert len(usage) == layout.size
    if layout.size == 6:
        assert usage[1] == 0x1F and usage[2:4] == b"\xff\xff"
    else:
        assert usage[layout.lba_at:layout.lba_at + layout.lba_size] == b"\xff" * layout.lba_size
        assert bool(usage[1] & C.PROTECT_MASK == C.PROTECT_MASK) == (layout.protect is not None)
        assert bool(usage[1] & C.DPO) == bool(layout.dpo)
        if layout.fua:
            assert usage[1] & C.FUA
        elif layout.data_out != C.ONE_BLOCK:  # WRITE SAME's bit 3 is UNMAP
            assert not usage[1] & C.FUA
    at, size = layout.length_at, layout.length_size
    assert usage[at:at + size] == b"\xff" * size
    if layout.group_at is not None:
        assert usage[layout.group_at] == 0x3F


@pytest.mark.parametrize("op", RW_OPCODES, ids=hex)
@pytest.mark.parametrize("pi_type", UNITS)
def test_lba_and_length_decode(op, pi_type):
    """Write a pattern through the command's form, read it back through READ(16)."""
    lu = make_lu(pi_type)
    lba, n = 37, 5
    if op in READS or op in VERIFIES:
        run(lu, cdb_for(C.WRITE_16, lba, n), data_for(lu, C.WRITE_16, lba, n))
        result = run(lu, cdb_for(op, lba, n, 0x02 if op in VERIFIES else 0),
                     data_for(lu, op, lba, n, bytchk=1))
        assert result.status == GOOD, result
        if op in READS:
            assert bytes(result.data) == data_for(lu, C.WRITE_16, lba, n)
        return
    result = run(lu, cdb_for(op, lba, n), data_for(lu, op, lba, n))
    assert result.status == GOOD, result
    back = bytes(run(lu, cdb_for(C.READ_16, lba, n + 1)).data)
    written = data_for(lu, op, lba, n)
    expected = written * n if op in WRITE_SAMES else written
    assert back[:n * BS] == expected
    assert back[n * BS:] == bytes(BS)  # one block past the transfer length: untouched


@pytest.mark.parametrize("op", RW_OPCODES, ids=hex)
@pytest.mark.parametrize("pi_type", UNITS)
def test_out_of_range_lba_is_lba_out_of_range(op, pi_type):
    lu = make_lu(pi_type)
    for lba, n in ((BLOCKS, 1), (BLOCKS - 1, 2), (0x1FFFFF, 1)):
        result = run(lu, cdb_for(op, lba, n), data_for(lu, op, lba, n))
        assert sense_of(result) == (ILLEGAL_REQUEST, 0x21, 0x00), (hex(op), lba, n)
        assert information(result) == lba
    if C.LAYOUTS[op].lba_size == 8:  # an LBA past 32 bits does not fit INFORMATION
        result = run(lu, cdb_for(op, 1 << 40, 1), data_for(lu, op, 0, 1))
        assert sense_of(result) == (ILLEGAL_REQUEST, 0x21, 0x00)
        assert information(result) is None


@pytest.mark.parametrize("op", RW_OPCODES, ids=hex)
@pytest.mark.parametrize("pi_type", UNITS)
def test_transfer_length_too_long_points_at_the_length_field(op, pi_type):
    lu = make_lu(pi_type)
    layout = C.LAYOUTS[op]
    if op in WRITE_SAMES:
        n = lu.max_write_same_blocks + 1
        if n >= 1 << (8 * layout.length_size):
            return  # WRITE SAME(10) cannot say more than the limit
    else:
        n = MAX_BLOCKS + 1
    if op in VERIFIES:
        # BYTCHK=0 reads nothing: no limit; BYTCHK=1 points at BYTCHK (as before)
        assert run(lu, cdb_for(op, 0, n)).status == GOOD
        result = run(lu, cdb_for(op, 0, n, 0x02), data_for(lu, op, 0, n, bytchk=1))
        assert sense_of(result) == (ILLEGAL_REQUEST, 0x24, 0x00)
        assert field_pointer(result) == (1, 2)
        return
    result = run(lu, cdb_for(op, 0, n), data_for(lu, op, 0, min(n, MAX_BLOCKS + 1)))
    assert sense_of(result) == (ILLEGAL_REQUEST, 0x24, 0x00), hex(op)
    assert field_pointer(result) == (layout.length_at, None)


@pytest.mark.parametrize("op", [op for op in RW_OPCODES if C.LAYOUTS[op].protect], ids=hex)
@pytest.mark.parametrize("pi_type", UNITS)
@pytest.mark.parametrize("protect", range(8))
def test_protect_field_with_and_without_pi(op, pi_type, protect):
    """000b is plain data everywhere; 001b-101b needs a PI-formatted unit (then PI travels
    with the data); 110b/111b are reserved: INVALID FIELD IN CDB, byte 1 bit 7."""
    lu = make_lu(pi_type)
    lba, n = 8, 3
    if op in READS or op in VERIFIES:  # something with valid PI to read or compare with
        run(lu, cdb_for(C.WRITE_16, lba, n), data_for(lu, C.WRITE_16, lba, n))
    bytchk = 1 if op in VERIFIES else 0
    flags = protect << 5 | bytchk << 1
    result = run(lu, cdb_for(op, lba, n, flags), data_for(lu, op, lba, n, protect, bytchk))
    valid = protect == 0 or (pi_type and protect < 6)
    if not valid:
        assert sense_of(result) == (ILLEGAL_REQUEST, 0x24, 0x00)
        assert field_pointer(result) == (1, 7)
        return
    assert result.status == GOOD, result
    travels = pi_type and protect != 0
    if op in READS:
        assert len(result.data) == n * (BS + 8 if travels else BS)
    elif op in WRITE_SAMES:
        assert result.transfer_length == (BS + 8 if travels else BS)
    else:
        assert result.transfer_length == n * (BS + 8 if travels else BS)


# --- plain and PI units agree (protect field 000b) -------------------------------------------

SIZES = {10: (C.READ_10, C.WRITE_10, C.WRITE_AND_VERIFY_10, C.VERIFY_10, C.WRITE_SAME_10),
         12: (C.READ_12, C.WRITE_12, C.WRITE_AND_VERIFY_12, C.VERIFY_12, C.WRITE_SAME_16),
         16: (C.READ_16, C.WRITE_16, C.WRITE_AND_VERIFY_16, C.VERIFY_16, C.WRITE_SAME_16)}

commands = st.tuples(
    st.sampled_from(["read", "write", "write_verify", "verify", "write_same"]),
    st.sampled_from([6, 10, 12, 16]),
    st.integers(0, BLOCKS + 2),                          # LBA (a few past the end)
    st.integers(0, MAX_BLOCKS + 2),                      # blocks (a few past the limit)
    st.sampled_from([0, C.FUA, C.DPO, 0x02, 0x04, 0x06]),  # byte-1 bits, protect 000b
    st.integers(0, 3),                                   # data-out: exact, short, long, none
    st.integers(0, 255),                                 # data pattern
)


def command_cdb(kind: str, size: int, lba: int, n: int, flags: int) -> tuple[int, bytes]:
    if size == 6:
        op = {"read": C.READ_6, "write": C.WRITE_6}.get(kind, C.READ_6)
        return op, cdb_for(op, lba, n)
    ops = dict(zip(("read", "write", "write_verify", "verify", "write_same"), SIZES[size]))
    op = ops[kind]
    if op in WRITE_SAMES:
        flags &= C.WS_UNMAP  # UNMAP (0x08 = FUA's bit) or nothing
    elif op not in VERIFIES and op not in WRITE_VERIFIES:
        flags &= ~C.BYTCHK_MASK
    return op, cdb_for(op, lba, n, flags)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, min_size=1, max_size=12))
def test_plain_and_pi_units_answer_alike(sequence):
    """With protect field 000b, a PI unit generates PI on write and checks and strips it on
    read: every command gets the same status, sense, data and transfer length as on a unit
    without PI."""
    units = [make_lu(pi_type) for pi_type in UNITS]
    for kind, size, lba, n, flags, shape, seed in sequence:
        op, cdb = command_cdb(kind, size, lba, n, flags)
        blocks = 1 if op in WRITE_SAMES or (op in VERIFIES and flags & 0x06 == 0x06) else n
        data = bytes((seed + i // 7) & 0xFF for i in range(blocks * BS))
        data = (data, data[:len(data) // 2], data + bytes(BS), None)[shape]
        answers = []
        for lu in units:
            r = run(lu, cdb, data)
            answers.append((r.status, bytes(r.sense), bytes(r.data), r.transfer_length))
        assert answers[1] == answers[0] and answers[2] == answers[0], (op, cdb.hex(), answers)
    for lu in units[1:]:  # and they hold the same blocks
        assert bytes(run(lu, cdb_for(C.READ_16, 0, MAX_BLOCKS)).data) == \
            bytes(run(units[0], cdb_for(C.READ_16, 0, MAX_BLOCKS)).data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(RW_OPCODES), rest=st.binary(min_size=15, max_size=15),
       data=st.one_of(st.none(), st.binary(max_size=2 * (BS + 8))), pi_type=st.sampled_from(UNITS))
def test_any_cdb_carries_the_transfer_length_of_the_table(op, rest, data, pi_type):
    """Whatever the CDB says and however it ends (GOOD, INVALID FIELD, PI check failure,
    miscompare), the result's transfer length is the layout table's data-out rule."""
    run(LUS[pi_type], bytes((op,)) + rest, data)


LUS = {pi_type: make_lu(pi_type) for pi_type in UNITS}
