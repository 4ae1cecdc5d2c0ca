"""MODE SENSE / MODE SELECT."""

import pytest
from scsi_cdbs import (assert_check, assert_good, mode_select6, mode_select10, mode_sense6,
                       mode_sense10, read16, write10)

from difs.sam.sense import DATA_PROTECT, ILLEGAL_REQUEST, UNIT_ATTENTION

BS = 512


def pages(data: bytes, start: int) -> dict[int, bytes]:
    out, pos = {}, start
    while pos < len(data):
        code, plen = data[pos] & 0x3F, data[pos + 1]
        out[code] = data[pos:pos + 2 + plen]
        pos += 2 + plen
    return out


def test_mode_sense6_all_pages_with_block_descriptor(fx):
    d = bytes(assert_good(fx.run(mode_sense6())).data)
    assert d[0] == len(d) - 1
    assert d[2] & 0x10           # DPOFUA
    assert not d[2] & 0x80       # not write protected
    assert d[3] == 8
    assert int.from_bytes(d[4:8], "big") == 4096
    assert int.from_bytes(d[9:12], "big") == BS
    ps = pages(d, 12)
    assert set(ps) == {0x08, 0x0A, 0x1C}
    assert ps[0x08][2] & 0x04    # WCE
    assert int.from_bytes(ps[0x0A][8:10], "big") == 0xFFFF


def test_mode_sense6_dbd_and_single_page(fx):
    d = bytes(assert_good(fx.run(mode_sense6(0x0A, dbd=1))).data)
    assert d[3] == 0
    assert list(pages(d, 4)) == [0x0A]


def test_mode_sense_allocation_length_truncates(fx):
    assert len(assert_good(fx.run(mode_sense6(alloc=4))).data) == 4
    assert len(assert_good(fx.run(mode_sense6(alloc=0))).data) == 0


def test_mode_sense10_long_lba_descriptor(fx):
    d = bytes(assert_good(fx.run(mode_sense10(llbaa=1))).data)
    assert int.from_bytes(d[0:2], "big") == len(d) - 2
    assert d[4] & 0x01 and int.from_bytes(d[6:8], "big") == 16
    assert int.from_bytes(d[8:16], "big") == 4096
    assert int.from_bytes(d[20:24], "big") == BS


def test_mode_sense_changeable_default_and_saved(fx):
    ch = pages(bytes(assert_good(fx.run(mode_sense6(pc=1, dbd=1))).data), 4)
    assert ch[0x08][2] == 0x04 and ch[0x0A][4] == 0x08 and ch[0x0A][2] == 0x04
    assert not any(ch[0x1C][2:])
    assert_good(fx.run(mode_sense6(pc=2)))
    assert_check(fx.run(mode_sense6(pc=3)), ILLEGAL_REQUEST, 0x39, 0x00)


def test_mode_sense_unknown_page_is_invalid(fx):
    assert_check(fx.run(mode_sense6(0x19)), ILLEGAL_REQUEST, 0x24)
    assert_check(fx.run(mode_sense6(0x08, subpage=1)), ILLEGAL_REQUEST, 0x24)


def current_page(fx, code: int) -> bytearray:
    d = bytes(assert_good(fx.run(mode_sense6(code, dbd=1))).data)
    return bytearray(pages(d, 4)[code])


def test_mode_select_turns_write_cache_off_and_on(fx):
    page = current_page(fx, 0x08)
    page[2] &= ~0x04
    param = bytes(4) + page
    assert_good(fx.run(mode_select6(len(param)), param))
    assert fx.lu.write_cache is False
    assert not current_page(fx, 0x08)[2] & 0x04
    page[2] |= 0x04
    param = bytes(8) + page
    assert_good(fx.run(mode_select10(len(param)), param))
    assert fx.lu.write_cache is True


def test_mode_select_change_raises_ua_on_other_nexus_only(fx):
    page = current_page(fx, 0x08)
    page[2] &= ~0x04
    param = bytes(4) + page
    assert_good(fx.run(mode_select6(len(param)), param))
    assert_check(fx.run(bytes(6), nexus=fx.n2), UNIT_ATTENTION, 0x2A, 0x01)
    assert_good(fx.run(bytes(6), nexus=fx.n1))


def test_software_write_protect(fx):
    page = current_page(fx, 0x0A)
    page[4] |= 0x08
    param = bytes(4) + page
    assert_good(fx.run(mode_select6(len(param)), param))
    d = bytes(assert_good(fx.run(mode_sense6())).data)
    assert d[2] & 0x80
    assert_check(fx.run(write10(0, 1), bytes(BS)), DATA_PROTECT, 0x27, 0x02)
    page[4] &= ~0x08
    param = bytes(4) + page
    assert_good(fx.run(mode_select6(len(param)), param))
    assert_good(fx.run(write10(0, 1), bytes(BS)))


def test_d_sense_switches_to_descriptor_format(fx):
    page = current_page(fx, 0x0A)
    page[2] |= 0x04
    param = bytes(4) + page
    assert_good(fx.run(mode_select6(len(param)), param))
    r = fx.run(read16(2**64 - 1, 1))
    assert r.sense[0] == 0x72 and r.sense[1] == ILLEGAL_REQUEST and r.sense[2] == 0x21


@pytest.mark.parametrize("mutate,asc", [
    (lambda p: p.__setitem__(3, p[3] ^ 0x10), 0x26),      # non-changeable QAM
    (lambda p: p.__setitem__(1, 0x0B), 0x26),             # wrong page length
    (lambda p: p.__setitem__(0, p[0] | 0x80), 0x26),      # PS set
])
def test_mode_select_rejects_invalid_pages(fx, mutate, asc):
    page = current_page(fx, 0x0A)
    mutate(page)
    param = bytes(4) + page[:12]
    sense = assert_check(fx.run(mode_select6(len(param)), param), ILLEGAL_REQUEST, asc)
    assert not sense[15] & 0x40  # C/D = parameter data


def test_mode_select_parameter_list_problems(fx):
    page = current_page(fx, 0x08)
    param = bytes(4) + page
    assert_check(fx.run(mode_select6(len(param) + 4), param), ILLEGAL_REQUEST, 0x1A)
    assert_check(fx.run(mode_select6(len(param), sp=1), param), ILLEGAL_REQUEST, 0x24)
    assert_check(fx.run(mode_select6(len(param), pf=0), param), ILLEGAL_REQUEST, 0x24)
    assert_good(fx.run(mode_select6(0)))
    unknown = bytes(4) + bytes((0x19, 0x02, 0, 0))
    assert_check(fx.run(mode_select6(len(unknown)), unknown), ILLEGAL_REQUEST, 0x26)


def test_mode_select_with_block_descriptor(fx):
    page = current_page(fx, 0x08)
    good_bd = (4096).to_bytes(4, "big") + b"\x00" + BS.to_bytes(3, "big")
    param = bytes((0, 0, 0, 8)) + good_bd + page
    assert_good(fx.run(mode_select6(len(param)), param))
    bad_bd = (4096).to_bytes(4, "big") + b"\x00" + (4096).to_bytes(3, "big")
    param = bytes((0, 0, 0, 8)) + bad_bd + page
    assert_check(fx.run(mode_select6(len(param)), param), ILLEGAL_REQUEST, 0x26)
