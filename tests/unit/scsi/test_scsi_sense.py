"""The SCSI device's errors and the sense they build (build and parse: tests/unit/sam)."""

from difs.sam.status import RESERVATION_CONFLICT
from difs.scsi import sense as S


def test_invalid_field_in_parameter_list_points_at_parameter_data():
    s = S.invalid_field_in_parameter_list(5).sense()
    assert s[15] == 0x80 and s[17] == 5      # C/D=0: parameter data


def test_reservation_conflict_has_status_and_no_sense():
    from difs.scsi.result import ScsiResult
    r = ScsiResult.from_error(S.ReservationConflict())
    assert r.status == RESERVATION_CONFLICT and r.sense == b""


def test_errors_carry_their_wire_code_in_both_formats():
    from difs.sam.sense import (ILLEGAL_REQUEST, FieldPointer, parse_sense, sense_field_pointer,
                                sense_information)
    err = S.invalid_field_in_cdb(1, 7)
    for descriptor in (False, True):
        s = err.sense(descriptor=descriptor)
        assert parse_sense(s) == (ILLEGAL_REQUEST, 0x24, 0x00)
        assert sense_field_pointer(s) == FieldPointer(1, 7, True)
        assert sense_information(S.lba_out_of_range(5).sense(descriptor=descriptor)) == 5
