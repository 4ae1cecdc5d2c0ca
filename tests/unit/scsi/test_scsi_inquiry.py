"""INQUIRY standard data and VPD pages."""

import pytest
from scsi_cdbs import assert_check, assert_good, inquiry

from difs.sam.sense import ILLEGAL_REQUEST

from conftest import VOLUME_UUID


def test_standard_inquiry_fields(fx):
    d = bytes(assert_good(fx.run(inquiry(255))).data)
    assert len(d) == 96
    assert d[0] == 0x00                  # qualifier 0, direct access
    assert d[2] == 0x06                  # SPC-4
    assert d[3] & 0x0F == 2 and d[3] & 0x10  # response format 2, HISUP
    assert d[4] == len(d) - 5
    assert d[7] & 0x02                   # CMDQUE
    assert d[8:16] == b"DIFS    "
    assert d[16:32] == b"difs volume     "
    descriptors = {int.from_bytes(d[58 + 2 * i:60 + 2 * i], "big") for i in range(8)}
    assert {0x0460, 0x04C0} <= descriptors
    assert all(c == 0 or 0x20 <= c <= 0x7E for c in d[8:36])


@pytest.mark.parametrize("alloc", [0, 1, 5, 36, 95, 511, 512])
def test_allocation_length_truncates(fx, alloc):
    d = assert_good(fx.run(inquiry(alloc))).data
    assert len(d) == min(alloc, 96)


def test_page_code_without_evpd_is_invalid(fx):
    sense = assert_check(fx.run(inquiry(255, 0, 1)), ILLEGAL_REQUEST, 0x24)
    assert int.from_bytes(sense[16:18], "big") == 2


def test_unsupported_vpd_page_is_invalid(fx):
    assert_check(fx.run(inquiry(255, 1, 0x87)), ILLEGAL_REQUEST, 0x24)


def vpd(fx, page, alloc=1024):
    d = bytes(assert_good(fx.run(inquiry(alloc, 1, page))).data)
    assert d[1] == page
    assert int.from_bytes(d[2:4], "big") == len(d) - 4
    return d


def test_supported_pages_are_all_readable(fx):
    d = vpd(fx, 0x00)
    pages = list(d[4:])
    assert pages == sorted(pages)
    assert {0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1} <= set(pages)
    assert 0xB2 not in pages  # fully provisioned
    for p in pages:
        vpd(fx, p)


def test_serial_number_page(fx):
    assert vpd(fx, 0x80)[4:] == VOLUME_UUID.hex.encode()


def iter_designators(page: bytes):
    pos = 4
    while pos < len(page):
        length = page[pos + 3]
        yield page[pos:pos + 4 + length]
        pos += 4 + length


def test_device_identification_has_stable_naa_from_uuid(fx):
    page = vpd(fx, 0x83)
    desigs = list(iter_designators(page))
    naa = desigs[0]
    assert naa[0] & 0x0F == 1 and naa[1] == 0x03 and naa[3] == 16
    assert naa[4] >> 4 == 6
    assert naa[4:] == fx.lu.identity.naa
    # the NAA is a pure function of the uuid
    from difs.scsi import LuIdentity
    assert LuIdentity.from_uuid(VOLUME_UUID).naa == naa[4:]
    t10 = desigs[1]
    assert t10[1] & 0x0F == 1 and t10[4:12] == b"DIFS    "
    assoc_port = [d for d in desigs if (d[1] >> 4) & 3 == 1]
    assert any(d[1] & 0x0F == 4 for d in assoc_port)          # relative target port
    names = [d[4:].rstrip(b"\x00") for d in desigs if d[1] & 0x0F == 8]
    assert b"iqn.2024-01.test:tgt,t,0x1" in names
    assert b"iqn.2024-01.test:tgt" in names


def test_block_limits(fx):
    d = vpd(fx, 0xB0)
    assert d[3] == 0x3C
    assert d[4] & 0x01 == 0                  # WSNZ=0: WRITE SAME 0 blocks is supported
    assert int.from_bytes(d[6:8], "big") == 8    # 4 KiB optimal transfer granularity
    assert int.from_bytes(d[8:12], "big") == fx.lu.max_transfer_blocks
    assert int.from_bytes(d[20:24], "big") == 0  # no UNMAP when fully provisioned
    # WRITE ATOMIC: maximum atomic transfer length, no alignment/granularity/boundaries
    atomic = int.from_bytes(d[44:48], "big")
    assert 256 <= atomic <= int.from_bytes(d[8:12], "big")
    assert d[48:64] == bytes(16)


def test_block_device_characteristics_non_rotating(fx):
    d = vpd(fx, 0xB1)
    assert int.from_bytes(d[4:6], "big") == 1


def test_thin_lu_logical_block_provisioning(make_fx):
    f = make_fx(thin=True)
    d = vpd(f, 0xB2)
    assert d[5] & 0x80 and d[5] & 0x40 and d[5] & 0x20  # LBPU LBPWS LBPWS10
    assert d[5] & 0x04                                  # LBPRZ
    assert d[6] & 0x07 == 2                             # thin
    bl = vpd(f, 0xB0)
    assert int.from_bytes(bl[20:24], "big") > 0
    assert int.from_bytes(bl[24:28], "big") > 0


def test_inquiry_does_not_consume_unit_attention(make_fx):
    from difs.scsi import Nexus
    f = make_fx()
    fresh = Nexus("iqn.x,i,0x1", "iqn.t,t,0x1")
    assert_good(f.lu.execute(inquiry(), None, fresh))
    assert_check(f.lu.execute(bytes(6), None, fresh), 0x6, 0x29, 0x00)
