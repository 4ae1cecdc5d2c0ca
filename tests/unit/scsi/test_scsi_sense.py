"""Sense data encoding."""

from difs.scsi import sense as S


def test_fixed_sense_layout_with_information_and_field_pointer():
    s = S.build_sense(S.ILLEGAL_REQUEST, 0x24, 0x00, information=0x01020304, field_byte=7,
                      field_bit=3)
    assert len(s) == 18
    assert s[0] == 0xF0                      # VALID | 70h
    assert s[2] == S.ILLEGAL_REQUEST
    assert s[3:7] == b"\x01\x02\x03\x04"
    assert s[7] == 10
    assert (s[12], s[13]) == (0x24, 0x00)
    assert s[15] == 0x80 | 0x40 | 0x08 | 3   # SKSV C/D BPV bit 3
    assert s[16:18] == b"\x00\x07"


def test_fixed_sense_without_information_and_large_information():
    assert S.build_sense(S.MISCOMPARE, 0x1D, 0)[0] == 0x70
    assert S.build_sense(S.MISCOMPARE, 0x1D, 0, information=1 << 40)[0] == 0x70
    s = S.invalid_field_in_parameter_list(5).sense()
    assert s[15] == 0x80 and s[17] == 5      # C/D=0: parameter data


def test_descriptor_sense_and_parse():
    s = S.build_sense(S.MEDIUM_ERROR, 0x11, 0x00, information=1 << 40, descriptor=True)
    assert s[0] == 0x72 and S.parse_sense(s) == (S.MEDIUM_ERROR, 0x11, 0x00)
    assert s[8] == 0x00 and s[9] == 0x0A and s[10] & 0x80
    assert int.from_bytes(s[12:20], "big") == 1 << 40
    assert S.parse_sense(S.build_sense(S.UNIT_ATTENTION, 0x29, 0x07)) == (6, 0x29, 7)


def test_reservation_conflict_has_status_and_no_sense():
    from difs.scsi.result import ScsiResult
    r = ScsiResult.from_error(S.ReservationConflict())
    assert r.status == S.RESERVATION_CONFLICT and r.sense == b""
