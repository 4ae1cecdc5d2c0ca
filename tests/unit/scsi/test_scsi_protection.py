"""PI-formatted logical units (SBC-4 4.22): what is reported, and every RDPROTECT /
WRPROTECT / VRPROTECT value with the checks SBC-4 assigns, on type 1 and type 3."""

from __future__ import annotations

import struct
import uuid

import pytest
from scsi_cdbs import inquiry, rw10, rw12, rw16

from difs.integrity import PI_SIZE, generate, interleave, pack_tuple, split, unpack_tuple
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus
from difs.sam.sense import ABORTED_COMMAND, ILLEGAL_REQUEST, parse_sense
from difs.sam.status import CHECK_CONDITION, GOOD
from difs.storage.pistore import PiStore
from difs.scsi.commands import data_out_length

BLOCKS = 256
N1 = Nexus("iqn.2024-01.test:init,i,0x23d000000001", "iqn.2024-01.test:tgt,t,0x1", 1)
GUARD, APP, REF = (0x10, 0x01), (0x10, 0x02), (0x10, 0x03)
INVALID_FIELD_IN_CDB = (0x24, 0x00)


def make_lu(pi_type: int = 1, app_tag: int | None = None, **kw) -> LogicalUnit:
    if pi_type:
        store = PiStore.in_memory(BLOCKS * 512, pi_type=pi_type, app_tag=app_tag)
    else:
        store = MemoryStore(BLOCKS * 512)
    lu = LogicalUnit(store=store, identity=LuIdentity.from_uuid(uuid.UUID(int=7)), **kw)
    lu.execute(bytes(6), None, N1)  # consume the power-on unit attention
    return lu


def run(lu, cdb, data=None):
    return lu.execute(cdb, data, N1)


def sense_of(result):
    assert result.status == CHECK_CONDITION, result
    return parse_sense(bytes(result.sense))


def info_of(result) -> int | None:
    s = bytes(result.sense)
    return struct.unpack_from(">I", s, 3)[0] if s[0] & 0x80 else None


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed + i // 512) & 0xFF for i in range(n * 512))


def read(lu, lba, n, protect=0, size=10):
    op = {10: 0x28, 12: 0xA8, 16: 0x88}[size]
    make = {10: rw10, 12: rw12, 16: rw16}[size]
    return run(lu, make(op, lba, n, protect << 5))


def write(lu, lba, n, data, protect=0, size=10):
    op = {10: 0x2A, 12: 0xAA, 16: 0x8A}[size]
    make = {10: rw10, 12: rw12, 16: rw16}[size]
    return run(lu, make(op, lba, n, protect << 5), data)


def stored_pi(lu, lba, n) -> list[tuple[int, int, int]]:
    raw = lu.store.pread_stored_pi(lba, n)
    return [unpack_tuple(raw, i * 8) for i in range(n)]


def corrupt_data(lu, lba, byte=100):
    off = lba * 512 + byte
    buf = lu.store.data._buf
    buf[off] ^= 0x01


def set_stored_pi(lu, lba, guard=None, app=None, ref=None):
    g, a, r = stored_pi(lu, lba, 1)[0]
    from difs.integrity.layout import to_stored
    lu.store.pi.pwrite(lba * 8, to_stored(pack_tuple(
        g if guard is None else guard, a if app is None else app, r if ref is None else ref)))


# --- what a PI-formatted unit reports ---------------------------------------------------


@pytest.mark.parametrize("pi_type", [0, 1, 3])
def test_inquiry_protect_bit(pi_type):
    data = run(make_lu(pi_type), inquiry()).data
    assert data[5] & 0x01 == (1 if pi_type else 0)


@pytest.mark.parametrize("pi_type, p_type", [(1, 0), (3, 2)])
def test_read_capacity16_reports_prot_en_and_p_type(pi_type, p_type):
    cdb = bytes((0x9E, 0x10)) + bytes(8) + struct.pack(">I", 32) + bytes(2)
    data = run(make_lu(pi_type), cdb).data
    assert data[12] & 0x01 == 1  # PROT_EN
    assert (data[12] >> 1) & 0x07 == p_type
    assert data[13] >> 4 == 0  # P_I_EXPONENT
    assert struct.unpack_from(">I", data, 8)[0] == 512
    plain = run(make_lu(0), cdb).data
    assert plain[12] == 0


@pytest.mark.parametrize("pi_type, app_tag, byte4", [
    (1, None, 0b000_101), (1, 0x1234, 0b000_111), (3, None, 0b100_100), (3, 7, 0b100_110)])
def test_extended_inquiry_vpd_spt_and_checks(pi_type, app_tag, byte4):
    data = run(make_lu(pi_type, app_tag), inquiry(evpd=1, page=0x86)).data
    assert data[1] == 0x86
    assert data[4] == byte4
    assert run(make_lu(0), inquiry(evpd=1, page=0x86)).data[4] == 0


def test_control_mode_page_ato_set_and_not_changeable():
    lu = make_lu(1)
    sense10 = bytes((0x5A, 0x08, 0x0A, 0, 0, 0, 0, 0, 255, 0))
    page = run(lu, sense10).data[8:]
    assert page[0] == 0x0A and page[5] & 0x80
    changeable = run(lu, bytes((0x5A, 0x08, 0x4A, 0, 0, 0, 0, 0, 255, 0))).data[8:]
    assert changeable[5] & 0x80 == 0
    assert run(make_lu(0), sense10).data[8 + 5] & 0x80 == 0
    # MODE SELECT clearing ATO is refused (not changeable)
    new = bytearray(page[:12])
    new[5] &= 0x7F
    params = bytes(8) + bytes(new)
    sel = bytes((0x55, 0x10, 0, 0, 0, 0, 0, 0, len(params), 0))
    res = run(lu, sel, params)
    assert sense_of(res)[1:] == (0x26, 0x00)


# --- protect field 000b: PI generated on write, checked and stripped on read -------------


@pytest.mark.parametrize("pi_type, app_tag", [(1, None), (1, 0x4242), (3, None), (3, 9)])
def test_protect0_generates_pi_and_strips_it_on_read(pi_type, app_tag):
    lu = make_lu(pi_type, app_tag)
    data = pattern(8)
    assert write(lu, 10, 8, data).status == GOOD
    tuples = stored_pi(lu, 10, 8)
    assert tuples == [unpack_tuple(generate(data, lba=10, pi_type=pi_type,
                                            app_tag=app_tag or 0), i * 8) for i in range(8)]
    for i, (_, a, r) in enumerate(tuples):
        assert a == (app_tag or 0)
        assert r == (10 + i if pi_type == 1 else 0)
    res = read(lu, 10, 8)
    assert res.status == GOOD and bytes(res.data) == data
    assert lu.store.generated_blocks == 8 and lu.store.checked_blocks == 8


def test_unwritten_blocks_carry_escape_pi_and_read_as_zeros():
    lu = make_lu(1)
    res = read(lu, 0, 4, protect=1)
    assert res.status == GOOD
    data, pi = split(res.data)
    assert bytes(data) == bytes(2048)
    assert bytes(pi) == b"\xff" * 32


@pytest.mark.parametrize("size", [10, 12, 16])
def test_corruption_at_rest_is_detected_on_protect0_read(size):
    lu = make_lu(1)
    write(lu, 20, 4, pattern(4), size=size)
    corrupt_data(lu, 22)
    res = read(lu, 20, 4, size=size)
    assert sense_of(res) == (ABORTED_COMMAND, *GUARD)
    assert info_of(res) == 22
    assert res.data == b""
    assert lu.store.failed["guard"] == 1


def test_read6_and_compare_and_write_check_stored_pi():
    lu = make_lu(1)
    write(lu, 3, 2, pattern(2))
    corrupt_data(lu, 4)
    res = run(lu, bytes((0x08, 0, 0, 3, 2, 0)))
    assert sense_of(res) == (ABORTED_COMMAND, *GUARD) and info_of(res) == 4
    caw = bytes((0x89, 0)) + struct.pack(">Q", 3) + bytes(3) + bytes((2, 0, 0))
    res = run(lu, caw, pattern(2) + bytes(1024))
    assert sense_of(res) == (ABORTED_COMMAND, *GUARD)


def test_compare_and_write_protect0_generates_pi_and_rejects_wrprotect():
    lu = make_lu(1, app_tag=5)
    write(lu, 3, 1, pattern(1))
    caw = bytes((0x89, 0)) + struct.pack(">Q", 3) + bytes(3) + bytes((1, 0, 0))
    new = pattern(1, seed=9)
    assert run(lu, caw, pattern(1) + new).status == GOOD
    assert stored_pi(lu, 3, 1) == [unpack_tuple(generate(new, lba=3, pi_type=1, app_tag=5))]
    bad = bytearray(caw)
    bad[1] = 0x20
    assert sense_of(run(lu, bytes(bad), pattern(1) + new))[1:] == INVALID_FIELD_IN_CDB


# --- RDPROTECT ----------------------------------------------------------------------------

#: value -> (guard checked, app checked (when known), ref checked (type 1))
TABLE = {1: (True, True, True), 2: (False, True, True), 3: (False, False, False),
         4: (True, False, False), 5: (True, True, True)}


@pytest.mark.parametrize("protect", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [10, 12, 16])
def test_rdprotect_returns_interleaved_pi(protect, size):
    lu = make_lu(1, app_tag=0x77)
    data = pattern(3)
    write(lu, 5, 3, data)
    res = read(lu, 5, 3, protect=protect, size=size)
    assert res.status == GOOD and len(res.data) == 3 * 520
    got, pi = split(res.data)
    assert bytes(got) == data
    assert bytes(pi) == generate(data, lba=5, pi_type=1, app_tag=0x77)


@pytest.mark.parametrize("protect", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("damage", ["guard", "app", "ref"])
def test_rdprotect_checks_per_sbc4(protect, damage):
    lu = make_lu(1, app_tag=0x77)
    write(lu, 5, 3, pattern(3))
    if damage == "guard":
        corrupt_data(lu, 6)
    elif damage == "app":
        set_stored_pi(lu, 6, app=0x78)
    else:
        set_stored_pi(lu, 6, ref=1234)
    checks = dict(zip(("guard", "app", "ref"), TABLE.get(protect, (True, True, True))))
    res = read(lu, 5, 3, protect=protect)
    if checks[damage]:
        assert sense_of(res) == (ABORTED_COMMAND, *{"guard": GUARD, "app": APP, "ref": REF}[damage])
        assert info_of(res) == 6
    else:
        assert res.status == GOOD


def test_app_tag_not_checked_when_volume_has_none():
    lu = make_lu(1, app_tag=None)
    write(lu, 0, 1, pattern(1))
    set_stored_pi(lu, 0, app=0x1111)
    assert read(lu, 0, 1, protect=1).status == GOOD
    assert read(lu, 0, 1).status == GOOD


def test_type3_never_checks_the_reference_tag_and_escape_needs_both_tags():
    lu = make_lu(3)
    write(lu, 0, 2, pattern(2))
    set_stored_pi(lu, 0, ref=0xDEAD)
    assert read(lu, 0, 2, protect=1).status == GOOD
    # app tag FFFFh alone is not a type 3 escape: the guard is still checked
    set_stored_pi(lu, 1, app=0xFFFF)
    corrupt_data(lu, 1)
    assert sense_of(read(lu, 0, 2)) == (ABORTED_COMMAND, *GUARD)
    set_stored_pi(lu, 1, ref=0xFFFFFFFF)
    assert read(lu, 0, 2).status == GOOD


def test_type1_app_escape_disables_checks_of_that_block():
    lu = make_lu(1, app_tag=3)
    write(lu, 0, 1, pattern(1))
    set_stored_pi(lu, 0, app=0xFFFF)
    corrupt_data(lu, 0)
    assert read(lu, 0, 1).status == GOOD


@pytest.mark.parametrize("op", ["read", "write", "verify", "write_same"])
@pytest.mark.parametrize("value", [6, 7])
def test_reserved_protect_values_are_invalid_field_in_cdb(op, value):
    lu = make_lu(1)
    cdb = {"read": rw10(0x28, 0, 1, value << 5), "write": rw10(0x2A, 0, 1, value << 5),
           "verify": rw10(0x2F, 0, 1, value << 5),
           "write_same": rw10(0x41, 0, 1, value << 5)}[op]
    res = run(lu, cdb, bytes(520))
    assert sense_of(res) == (ILLEGAL_REQUEST, *INVALID_FIELD_IN_CDB)
    s = bytes(res.sense)
    assert s[15] & 0xCF == 0xCF and struct.unpack_from(">H", s, 16)[0] == 1  # byte 1 bit 7


@pytest.mark.parametrize("value", range(1, 8))
def test_unprotected_unit_rejects_every_non_zero_protect_value(value):
    lu = make_lu(0)
    assert sense_of(read(lu, 0, 1, protect=value))[1:] == INVALID_FIELD_IN_CDB
    assert sense_of(write(lu, 0, 1, bytes(512), protect=value))[1:] == INVALID_FIELD_IN_CDB


# --- WRPROTECT ------------------------------------------------------------------------------


@pytest.mark.parametrize("protect", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [10, 12, 16])
def test_wrprotect_stores_received_pi(protect, size):
    lu = make_lu(1, app_tag=0x99)
    data = pattern(4, seed=3)
    pi = generate(data, lba=40, pi_type=1, app_tag=0x99)
    assert write(lu, 40, 4, interleave(data, pi), protect=protect, size=size).status == GOOD
    assert bytes(lu.store.pread_stored_pi(40, 4)) == pi
    assert bytes(read(lu, 40, 4).data) == data
    assert lu.store.generated_blocks == 0


@pytest.mark.parametrize("protect", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("damage", ["guard", "app", "ref"])
def test_wrprotect_checks_received_pi_per_sbc4(protect, damage):
    lu = make_lu(1, app_tag=0x99)
    data = pattern(4, seed=3)
    tuples = [list(unpack_tuple(generate(data, lba=40, pi_type=1, app_tag=0x99), i * 8))
              for i in range(4)]
    field = {"guard": 0, "app": 1, "ref": 2}[damage]
    tuples[2][field] ^= 0x0100
    pi = b"".join(pack_tuple(*t) for t in tuples)
    res = write(lu, 40, 4, interleave(data, pi), protect=protect)
    if TABLE[protect][field]:
        assert sense_of(res) == (ABORTED_COMMAND, *{"guard": GUARD, "app": APP, "ref": REF}[damage])
        assert info_of(res) == 42
        assert bytes(lu.store.data.pread(40 * 512, 2048)) == bytes(2048)  # nothing written
    else:
        assert res.status == GOOD
        assert bytes(lu.store.pread_stored_pi(40, 4)) == pi  # stored as received


def test_wrong_application_tag_from_the_client_is_refused_with_10h_02h():
    lu = make_lu(1, app_tag=0x0A0A)
    data = pattern(2)
    res = write(lu, 0, 2, interleave(data, generate(data, lba=0, pi_type=1, app_tag=0x0B0B)),
                protect=1)
    assert sense_of(res) == (ABORTED_COMMAND, *APP) and info_of(res) == 0


def test_write_and_verify_with_wrprotect():
    lu = make_lu(1)
    data = pattern(2)
    pi = generate(data, lba=7, pi_type=1)
    cdb = rw16(0x8E, 7, 2, 1 << 5)
    assert run(lu, cdb, interleave(data, pi)).status == GOOD
    assert bytes(lu.store.pread_stored_pi(7, 2)) == pi
    bad = bytearray(interleave(data, pi))
    bad[3] ^= 1
    assert sense_of(run(lu, cdb, bytes(bad))) == (ABORTED_COMMAND, *GUARD)


def test_transfer_lengths_grow_by_eight_bytes_per_block_when_pi_travels():
    lu = make_lu(1)
    assert data_out_length(lu, rw10(0x2A, 0, 8)) == 8 * 512
    assert data_out_length(lu, rw10(0x2A, 0, 8, 1 << 5)) == 8 * 520
    assert data_out_length(lu, rw12(0xAA, 0, 8, 5 << 5)) == 8 * 520
    assert data_out_length(lu, rw16(0x8E, 0, 8, 3 << 5)) == 8 * 520
    assert data_out_length(lu, rw16(0x8F, 0, 8, (1 << 5) | 0x02)) == 8 * 520
    assert data_out_length(lu, rw16(0x8F, 0, 8, 1 << 5)) == 0  # BYTCHK 0
    assert data_out_length(lu, rw10(0x41, 0, 8, 1 << 5)) == 520
    assert data_out_length(lu, rw16(0x93, 0, 8, (1 << 5) | 0x01)) == 0  # NDOB
    assert data_out_length(make_lu(0), rw10(0x2A, 0, 8, 1 << 5)) == 8 * 512


def test_short_interleaved_data_out():
    lu = make_lu(1)
    data = pattern(4)
    wire = bytes(interleave(data, generate(data, lba=0, pi_type=1)))
    assert write(lu, 0, 4, wire[:2 * 520], protect=1).status == GOOD  # whole units: used
    assert bytes(read(lu, 0, 2).data) == data[:1024]
    res = write(lu, 0, 4, wire[:2 * 520 + 512], protect=1)  # ends inside a unit
    assert sense_of(res) == (ILLEGAL_REQUEST, 0x0E, 0x03)


# --- VRPROTECT ------------------------------------------------------------------------------


@pytest.mark.parametrize("protect", [0, 1, 2, 3, 4, 5])
def test_verify_bytchk0_checks_stored_pi(protect):
    lu = make_lu(1)
    write(lu, 0, 8, pattern(8))
    assert run(lu, rw10(0x2F, 0, 8, protect << 5)).status == GOOD
    corrupt_data(lu, 5)
    res = run(lu, rw10(0x2F, 0, 8, protect << 5))
    if TABLE.get(protect, (True,))[0]:
        assert sense_of(res) == (ABORTED_COMMAND, *GUARD) and info_of(res) == 5
    else:
        assert res.status == GOOD


def test_verify_bytchk1_with_vrprotect_checks_received_pi_then_compares():
    lu = make_lu(1)
    data = pattern(4)
    write(lu, 0, 4, data)
    pi = generate(data, lba=0, pi_type=1)
    cdb = rw16(0x8F, 0, 4, (1 << 5) | 0x02)
    assert run(lu, cdb, interleave(data, pi)).status == GOOD
    other = bytearray(data)
    other[1024 + 3] ^= 0xFF  # block 2, byte 3
    res = run(lu, cdb, interleave(bytes(other), generate(bytes(other), lba=0, pi_type=1)))
    assert sense_of(res) == (0x0E, 0x1D, 0x00)
    assert info_of(res) == 2 * 520 + 3  # offset in the interleaved Data-Out buffer
    bad_pi = bytearray(pi)
    bad_pi[8 * 1 + 5] ^= 1  # ref tag of block 1
    assert sense_of(run(lu, cdb, interleave(data, bytes(bad_pi)))) == (ABORTED_COMMAND, *REF)


def test_verify_bytchk1_protect0_checks_stored_pi_and_bytchk3_with_pi_is_refused():
    lu = make_lu(1)
    data = pattern(2)
    write(lu, 0, 2, data)
    corrupt_data(lu, 1)
    res = run(lu, rw10(0x2F, 0, 2, 0x02), data)
    assert sense_of(res) == (ABORTED_COMMAND, *GUARD)
    assert sense_of(run(lu, rw10(0x2F, 0, 2, (1 << 5) | 0x06), bytes(520)))[1:] == \
        INVALID_FIELD_IN_CDB


# --- WRITE SAME and UNMAP -------------------------------------------------------------------


def test_write_same_protect0_generates_per_block_pi():
    lu = make_lu(1, app_tag=4)
    block = pattern(1)
    assert run(lu, rw16(0x93, 100, 5), block).status == GOOD
    assert bytes(lu.store.pread_stored_pi(100, 5)) == generate(block * 5, lba=100, pi_type=1,
                                                               app_tag=4)
    assert run(lu, rw10(0x41, 110, 3), bytes(512)).status == GOOD  # zeros
    assert bytes(lu.store.pread_stored_pi(110, 3)) == generate(bytes(1536), lba=110,
                                                               pi_type=1, app_tag=4)
    assert read(lu, 100, 13).status == GOOD


@pytest.mark.parametrize("pi_type", [1, 3])
def test_write_same_with_wrprotect_replicates_received_pi(pi_type):
    lu = make_lu(pi_type)
    block = pattern(1)
    pi0 = generate(block, lba=30, pi_type=pi_type, app_tag=0x55,
                   **({"ref_tag": 0xABC} if pi_type == 3 else {}))
    assert run(lu, rw16(0x93, 30, 4, 1 << 5), block + pi0).status == GOOD
    tuples = stored_pi(lu, 30, 4)
    refs = [t[2] for t in tuples]
    assert refs == ([30, 31, 32, 33] if pi_type == 1 else [0xABC] * 4)
    assert {t[1] for t in tuples} == {0x55}
    assert read(lu, 30, 4).status == GOOD
    if pi_type == 1:
        wrong = generate(block, lba=31, pi_type=1)  # reference tag of the wrong LBA
        assert sense_of(run(lu, rw16(0x93, 30, 4, 1 << 5), block + wrong)) == \
            (ABORTED_COMMAND, *REF)
    ndob = rw16(0x93, 30, 4, (1 << 5) | 0x01)
    assert sense_of(run(lu, ndob))[1:] == INVALID_FIELD_IN_CDB


def test_unmap_gives_escape_pi_and_zeros():
    lu = make_lu(1, thin=True)
    write(lu, 0, 8, pattern(8))
    params = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", 2, 3)
    assert run(lu, bytes((0x42, 0, 0, 0, 0, 0, 0, 0, len(params), 0)), params).status == GOOD
    res = read(lu, 0, 8, protect=1)
    data, pi = split(res.data)
    assert bytes(data[1024:2560]) == bytes(1536)
    assert bytes(pi[16:40]) == b"\xff" * 24
    assert read(lu, 0, 8).status == GOOD
    # WRITE SAME with UNMAP does the same
    assert run(lu, rw16(0x93, 6, 2, 0x08), bytes(512)).status == GOOD
    assert bytes(lu.store.pread_stored_pi(6, 2)) == b"\xff" * 16


def test_resource_provisioned_unmap_also_escapes_pi():
    lu = make_lu(1, provisioning="resource")
    write(lu, 0, 2, pattern(2))
    params = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", 0, 2)
    assert run(lu, bytes((0x42, 0, 0, 0, 0, 0, 0, 0, len(params), 0)), params).status == GOOD
    assert bytes(lu.store.pread_stored_pi(0, 2)) == b"\xff" * 16
    assert bytes(read(lu, 0, 2).data) == bytes(1024)


def test_descriptor_sense_carries_the_failing_lba():
    lu = make_lu(1)
    lu.set_mode(d_sense=True, by=N1)
    write(lu, 0xAB, 1, pattern(1))
    corrupt_data(lu, 0xAB)
    res = read(lu, 0xAB, 1, size=16)
    s = bytes(res.sense)
    assert s[0] == 0x72 and (s[1], s[2], s[3]) == (ABORTED_COMMAND, *GUARD)
    assert s[8] == 0x00 and s[10] & 0x80 and int.from_bytes(s[12:20], "big") == 0xAB


def test_write_atomic_protect0_generates_pi():
    lu = make_lu(1)
    data = pattern(2)
    cdb = bytes((0x9C, 0)) + struct.pack(">Q", 9) + bytes(2) + struct.pack(">H", 2) + bytes(2)
    assert run(lu, cdb, data).status == GOOD
    assert bytes(lu.store.pread_stored_pi(9, 2)) == generate(data, lba=9, pi_type=1)
    bad = bytearray(cdb)
    bad[1] = 0x20
    assert sense_of(run(lu, bytes(bad), data))[1:] == INVALID_FIELD_IN_CDB


def test_pi_store_needs_room_for_every_tuple():
    with pytest.raises(ValueError):
        PiStore(MemoryStore(4096), MemoryStore(8 * 4), pi_type=1)
    with pytest.raises(ValueError):
        PiStore.in_memory(4096, pi_type=2)
    with pytest.raises(ValueError):
        PiStore.in_memory(4096, pi_type=1, app_tag=0xFFFF)
    assert PI_SIZE == 8
