"""The CDB layout table (difs.sam.cdb): every row decodes what its offsets say, the
whole-CDB structs agree with it, and the data-out rule of each row."""

from __future__ import annotations

import struct

import pytest

from difs.sam import cdb as C

ROWS = [layout for layout in C.LAYOUTS if layout is not None]
BLOCK_ROWS = [layout for layout in ROWS if layout.fields is not None]
RW_OPCODES = [C.READ_6, C.WRITE_6, C.READ_10, C.WRITE_10, C.WRITE_AND_VERIFY_10, C.VERIFY_10,
              C.WRITE_SAME_10, C.READ_12, C.WRITE_12, C.WRITE_AND_VERIFY_12, C.VERIFY_12,
              C.READ_16, C.WRITE_16, C.WRITE_AND_VERIFY_16, C.VERIFY_16, C.WRITE_SAME_16]


def put(cdb: bytearray, at: int, size: int, value: int) -> None:
    cdb[at:at + size] = value.to_bytes(size, "big")


def build(layout: C.CdbLayout, *, flags: int = 0, lba: int = 0, n: int = 0,
          group: int = 0) -> bytes:
    """A CDB written field by field from the layout's offsets (not from its structs)."""
    cdb = bytearray(layout.size)
    cdb[0] = layout.opcode
    if layout.size > 6:
        cdb[1] = flags
    if layout.lba_at is not None:
        if layout.size == 6:
            cdb[1:4] = (lba & 0x1FFFFF).to_bytes(3, "big")
        else:
            put(cdb, layout.lba_at, layout.lba_size, lba)
    if layout.length_at is not None:
        put(cdb, layout.length_at, layout.length_size, n)
    if layout.group_at is not None:
        cdb[layout.group_at] = group
    return bytes(cdb)


def test_the_table_is_indexed_by_opcode_and_sizes_match_the_group_code():
    assert len(C.LAYOUTS) == 256
    for op, layout in enumerate(C.LAYOUTS):
        if layout is not None:
            assert layout.opcode == op
            assert layout.size == C.cdb_length(op), layout
            assert repr(layout) == f"CdbLayout({layout.name})"


def test_every_read_write_verify_write_same_opcode_has_a_row():
    for op in RW_OPCODES:
        layout = C.LAYOUTS[op]
        assert layout is not None and layout.fields is not None, hex(op)
        assert layout.lba_at is not None and layout.length_at is not None


@pytest.mark.parametrize("layout", BLOCK_ROWS, ids=lambda layout: layout.name)
def test_fields_decode_lba_and_length_where_the_offsets_say(layout):
    lba_max = (1 << 21) - 1 if layout.size == 6 else (1 << (8 * layout.lba_size)) - 1
    n_max = (1 << (8 * layout.length_size)) - 1
    for lba, n in ((0, 1), (1, 2), (0x12345, 0x7F), (lba_max, n_max), (lba_max >> 1, 1)):
        flags = 0xE0 | layout.fua if layout.size > 6 else 0
        got = layout.fields(build(layout, flags=flags, lba=lba, n=n, group=0x3F))
        assert got == (flags, lba, n), layout


def test_six_byte_length_zero_means_256_blocks():
    for op in (C.READ_6, C.WRITE_6):
        assert C.LAYOUTS[op].fields(build(C.LAYOUTS[op], lba=7, n=0)) == (0, 7, 256)


@pytest.mark.parametrize("layout", [r for r in BLOCK_ROWS if r.cdb is not None],
                         ids=lambda layout: layout.name)
def test_whole_cdb_structs_agree_with_the_offsets(layout):
    """What the host packs with RW10/RW12/RW16 is what the device server decodes."""
    if layout.size == 10:
        packed = layout.cdb.pack(layout.opcode, 0x20, 0x01020304, 0x15, 0x0506, 0)
    else:
        packed = layout.cdb.pack(layout.opcode, 0x20, 0x01020304, 0x0506, 0x15, 0)
    assert packed == build(layout, flags=0x20, lba=0x01020304, n=0x0506, group=0x15)
    assert layout.fields(packed) == (0x20, 0x01020304, 0x0506)


def test_host_commands_use_the_sixteen_byte_layouts():
    for op in (C.READ_16, C.WRITE_16, C.SYNCHRONIZE_CACHE_16, C.WRITE_SAME_16):
        assert C.LAYOUTS[op].cdb is C.RW16
    assert C.LAYOUTS[C.WRITE_16].fua == C.FUA
    assert C.LAYOUTS[C.WRITE_SAME_16].fua == 0 and C.LAYOUTS[C.WRITE_SAME_16].ndob == C.WS_NDOB


# --- data-out rules ------------------------------------------------------------------------

BS = 512


def length(op: int, *, flags: int = 0, n: int = 8, pi: bool = False, bs: int = BS) -> int:
    return C.data_out_length(build(C.LAYOUTS[op], flags=flags, n=n), bs, pi_formatted=pi)


@pytest.mark.parametrize("op", [C.WRITE_10, C.WRITE_12, C.WRITE_16, C.WRITE_AND_VERIFY_10,
                                C.WRITE_AND_VERIFY_12, C.WRITE_AND_VERIFY_16])
def test_blocks_rule_and_pi_growth(op):
    assert length(op) == 8 * BS
    assert length(op, bs=4096) == 8 * 4096
    for protect in range(8):
        travels = 0 < protect < 6
        assert length(op, flags=protect << 5) == 8 * BS  # no PI on the unit: never grows
        assert length(op, flags=protect << 5, pi=True) == 8 * (BS + 8 if travels else BS)


@pytest.mark.parametrize("op", [C.VERIFY_10, C.VERIFY_12, C.VERIFY_16])
def test_bytchk_rule(op):
    assert length(op) == 0
    assert length(op, flags=0x02) == 8 * BS
    assert length(op, flags=0x04) == 0
    assert length(op, flags=0x06) == BS
    assert length(op, flags=0x22, pi=True) == 8 * (BS + 8)
    assert length(op, flags=0x26, pi=True) == BS  # one block: never with PI
    assert length(op, flags=0x20, pi=True) == 0


def test_one_block_rule_of_write_same():
    assert length(C.WRITE_SAME_10) == BS
    assert length(C.WRITE_SAME_10, flags=0x20, pi=True) == BS + 8
    assert length(C.WRITE_SAME_16, flags=C.WS_NDOB) == 0
    assert length(C.WRITE_SAME_16, flags=0x20 | C.WS_NDOB, pi=True) == 0
    assert length(C.WRITE_SAME_16, flags=0x20) == BS


def test_other_rules():
    assert length(C.WRITE_6, n=0) == 256 * BS
    assert length(C.WRITE_6, n=3, pi=True) == 3 * BS
    assert length(C.COMPARE_AND_WRITE, n=3, flags=0x20, pi=True) == 6 * BS
    assert length(C.ORWRITE_16, n=3, flags=0x20, pi=True) == 3 * BS
    assert length(C.WRITE_ATOMIC_16, n=3) == 3 * BS
    for op in (C.READ_10, C.READ_16, C.PRE_FETCH_10, C.SYNCHRONIZE_CACHE_16):
        assert length(op, flags=0x20, pi=True) == 0
    assert C.data_out_length(bytes((C.MODE_SELECT_6, 0x10, 0, 0, 24, 0)), BS) == 24
    assert C.data_out_length(struct.pack(">BxxxxxxHx", C.UNMAP, 24), BS) == 24
    assert C.data_out_length(struct.pack(">BxxxxIB", C.PERSISTENT_RESERVE_OUT, 24, 0),
                             BS) == 24
    assert C.data_out_length(bytes(6), BS) == 0  # TEST UNIT READY: no row


def test_short_cdbs_raise_for_the_caller_to_map():
    for cdb in (bytes((C.WRITE_10, 0, 0)), bytes((C.MODE_SELECT_10, 0)), bytes((C.WRITE_6,))):
        with pytest.raises((IndexError, struct.error)):
            C.data_out_length(cdb, BS)
