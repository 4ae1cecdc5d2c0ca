"""Unit attention conditions: power on, resets, nexus loss, REQUEST SENSE."""

from scsi_cdbs import assert_check, assert_good, inquiry, read10, report_luns, request_sense

from difs.sam.sense import UNIT_ATTENTION
from difs.scsi import Nexus


def fresh(i: int) -> Nexus:
    return Nexus(f"iqn.2024-01.test:ua{i},i,0x1", "iqn.t,t,0x1", 10 + i)


def test_power_on_ua_is_reported_once_per_nexus(make_fx):
    f = make_fx()
    a, b = fresh(1), fresh(2)
    assert_check(f.lu.execute(read10(0, 1), None, a), UNIT_ATTENTION, 0x29, 0x00)
    assert_good(f.lu.execute(read10(0, 1), None, a))
    assert_check(f.lu.execute(bytes(6), None, b), UNIT_ATTENTION, 0x29, 0x00)
    assert_good(f.lu.execute(bytes(6), None, b))


def test_inquiry_and_report_luns_do_not_report_ua(make_fx):
    f = make_fx()
    a = fresh(3)
    assert_good(f.lu.execute(inquiry(), None, a))
    assert_good(f.lu.execute(report_luns(), None, a))
    assert_check(f.lu.execute(bytes(6), None, a), UNIT_ATTENTION, 0x29)


def test_request_sense_returns_and_clears_ua(make_fx):
    f = make_fx()
    a = fresh(4)
    d = assert_good(f.lu.execute(request_sense(), None, a)).data
    assert d[0] == 0x70 and d[2] == UNIT_ATTENTION and d[12:14] == b"\x29\x00"
    d = assert_good(f.lu.execute(request_sense(), None, a)).data
    assert d[2] == 0 and d[12] == 0
    assert_good(f.lu.execute(bytes(6), None, a))


def test_request_sense_descriptor_format(fx):
    d = assert_good(fx.run(request_sense(desc=1))).data
    assert d[0] == 0x72 and d[1] == 0


def test_lun_reset_establishes_29_03_for_every_nexus(fx):
    fx.lu.reset(nexus=fx.n1)
    assert_check(fx.run(bytes(6), nexus=fx.n1), UNIT_ATTENTION, 0x29, 0x03)
    assert_check(fx.run(bytes(6), nexus=fx.n2), UNIT_ATTENTION, 0x29, 0x03)
    assert_good(fx.run(bytes(6), nexus=fx.n1))


def test_reset_supersedes_older_unit_attentions(fx):
    fx.lu.set_mode(write_cache=False, by=fx.n1)   # 2Ah/01h queued for n2
    fx.lu.reset()
    assert fx.lu.pending_unit_attentions(fx.n2) == [(0x29, 0x03)]


def test_nexus_loss_then_relogin_reports_29_07(fx):
    fx.lu.nexus_lost(fx.n1)
    again = Nexus(fx.n1.initiator_port, fx.n1.target_port, 99)
    assert again == fx.n1
    assert_check(fx.run(bytes(6), nexus=again), UNIT_ATTENTION, 0x29, 0x07)
    assert_good(fx.run(bytes(6), nexus=again))


def test_target_reset_and_capacity_change(fx):
    fx.target.reset()
    assert_check(fx.run(bytes(6)), UNIT_ATTENTION, 0x29, 0x00)
    fx.lu.capacity_changed()
    assert_check(fx.run(bytes(6)), UNIT_ATTENTION, 0x2A, 0x09)
    fx.target.reset(cold=True)
    assert_check(fx.run(bytes(6)), UNIT_ATTENTION, 0x29, 0x00)
