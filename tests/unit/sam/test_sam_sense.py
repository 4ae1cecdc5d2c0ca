"""Sense data build and parse (difs.sam.sense): golden vectors, round trips, hostile input.

The golden vectors were checked against an independent decoder (sg3_utils' sg_decode_sense)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from difs.sam import sense as S
from difs.sam.sense import (
    ABORTED_COMMAND,
    ASC_GUARD_CHECK_FAILED,
    ASC_INVALID_FIELD_IN_CDB,
    ASC_LU_ACCESS_NOT_AUTHORIZED,
    ASC_POWER_ON_RESET_OR_BDR,
    ASC_PROTOCOL_SERVICE_CRC_ERROR,
    ASC_REF_TAG_CHECK_FAILED,
    DATA_PROTECT,
    ILLEGAL_REQUEST,
    UNIT_ATTENTION,
    FieldPointer,
    build_sense,
    is_unit_attention,
    parse_sense,
    pi_check_kind,
    sense_field_pointer,
    sense_information,
    sense_text,
)

# --- golden vectors ----------------------------------------------------------------------
# fixed: code, 0, key, INFORMATION(4) | additional length, CSI(4) | ASC ASCQ FRU | SKS(3)
# descriptor: code key ASC ASCQ 0 0 0 length | descriptors (type, length, ...)

GOLDEN = [
    # ABORTED COMMAND, LOGICAL BLOCK GUARD CHECK FAILED at LBA 1234h (VALID set)
    (dict(key=ABORTED_COMMAND, asc_ascq=ASC_GUARD_CHECK_FAILED, information=0x1234),
     "f0000b00001234 0a000000 001001 00000000"),
    # DATA PROTECT, LOGICAL UNIT ACCESS NOT AUTHORIZED (the controller's policy refusal)
    (dict(key=DATA_PROTECT, asc_ascq=ASC_LU_ACCESS_NOT_AUTHORIZED),
     "70000700000000 0a000000 007471 00000000"),
    (dict(key=DATA_PROTECT, asc_ascq=ASC_LU_ACCESS_NOT_AUTHORIZED, descriptor=True),
     "7207747100000000"),
    # UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED
    (dict(key=UNIT_ATTENTION, asc_ascq=ASC_POWER_ON_RESET_OR_BDR),
     "70000600000000 0a000000 002900 00000000"),
    # ABORTED COMMAND, REFERENCE TAG CHECK FAILED, 64-bit INFORMATION (descriptor 00h)
    (dict(key=ABORTED_COMMAND, asc_ascq=ASC_REF_TAG_CHECK_FAILED, information=2**40 + 5,
          descriptor=True),
     "720b10030000000c 000a8000 0000010000000005"),
    # ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer byte 1 bit 7 (SKSV C/D BPV)
    (dict(key=ILLEGAL_REQUEST, asc_ascq=ASC_INVALID_FIELD_IN_CDB, field_byte=1, field_bit=7),
     "70000500000000 0a000000 002400 00 cf0001"),
    (dict(key=ILLEGAL_REQUEST, asc_ascq=ASC_INVALID_FIELD_IN_CDB, field_byte=1, field_bit=7,
          descriptor=True),
     "7205240000000008 0206 0000 cf0001 00"),
    # ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (a Data-Out failed its digest)
    (dict(key=ABORTED_COMMAND, asc_ascq=ASC_PROTOCOL_SERVICE_CRC_ERROR),
     "70000b00000000 0a000000 004705 00000000"),
]


def _build(spec: dict) -> bytes:
    spec = dict(spec)
    key, (asc, ascq) = spec.pop("key"), spec.pop("asc_ascq")
    return build_sense(key, asc, ascq, **spec)


@pytest.mark.parametrize("spec,wire", GOLDEN)
def test_golden_vectors_build_and_parse(spec: dict, wire: str) -> None:
    sense = bytes.fromhex(wire)
    assert _build(spec) == sense
    assert parse_sense(sense) == (spec["key"], *spec["asc_ascq"])
    assert sense_information(sense) == spec.get("information")
    pointer = sense_field_pointer(sense)
    if "field_byte" in spec:
        assert pointer == FieldPointer(spec["field_byte"], spec.get("field_bit"), True)
    else:
        assert pointer is None


def test_golden_vectors_read_from_memoryview_and_bytearray() -> None:
    for spec, wire in GOLDEN:
        for view in (bytearray.fromhex(wire), memoryview(bytes.fromhex(wire))):
            assert parse_sense(view) == (spec["key"], *spec["asc_ascq"])
            assert sense_information(view) == spec.get("information")


# --- moved from tests/unit/scsi/test_scsi_sense.py (the builder lives here now) ----------


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


def test_descriptor_sense_and_parse():
    s = S.build_sense(S.MEDIUM_ERROR, 0x11, 0x00, information=1 << 40, descriptor=True)
    assert s[0] == 0x72 and S.parse_sense(s) == (S.MEDIUM_ERROR, 0x11, 0x00)
    assert s[8] == 0x00 and s[9] == 0x0A and s[10] & 0x80
    assert int.from_bytes(s[12:20], "big") == 1 << 40
    assert S.parse_sense(S.build_sense(S.UNIT_ATTENTION, 0x29, 0x07)) == (6, 0x29, 7)


# --- what the readers ask -----------------------------------------------------------------


def test_field_pointer_in_parameter_data_and_without_bit() -> None:
    s = build_sense(ILLEGAL_REQUEST, 0x26, 0x00, field_byte=300, in_cdb=False)
    assert sense_field_pointer(s) == FieldPointer(300, None, False)
    d = build_sense(ILLEGAL_REQUEST, 0x26, 0x00, field_byte=300, in_cdb=False, descriptor=True)
    assert sense_field_pointer(d) == FieldPointer(300, None, False)


def test_information_too_large_for_fixed_format_is_not_valid() -> None:
    s = build_sense(ABORTED_COMMAND, *ASC_GUARD_CHECK_FAILED, information=1 << 32)
    assert s[0] == 0x70 and sense_information(s) is None


def test_deferred_errors_are_read_like_current_ones() -> None:
    fixed = bytearray(build_sense(ABORTED_COMMAND, *ASC_GUARD_CHECK_FAILED, information=9))
    fixed[0] = 0x80 | 0x71
    assert parse_sense(fixed) == (ABORTED_COMMAND, 0x10, 0x01)
    assert sense_information(fixed) == 9
    desc = bytearray(build_sense(UNIT_ATTENTION, 0x29, 0x00, descriptor=True))
    desc[0] = 0x73
    assert is_unit_attention(desc)


def test_unit_attention() -> None:
    assert is_unit_attention(build_sense(UNIT_ATTENTION, *ASC_POWER_ON_RESET_OR_BDR))
    assert is_unit_attention(build_sense(UNIT_ATTENTION, 0x2A, 0x09, descriptor=True))
    assert not is_unit_attention(build_sense(ABORTED_COMMAND, 0x47, 0x05))
    assert not is_unit_attention(b"")


def test_pi_check_kind() -> None:
    assert pi_check_kind(ABORTED_COMMAND, 0x10, 0x01) == "guard"
    assert pi_check_kind(ABORTED_COMMAND, 0x10, 0x02) == "app"
    assert pi_check_kind(ABORTED_COMMAND, 0x10, 0x03) == "ref"
    assert pi_check_kind(ABORTED_COMMAND, 0x10, 0x04) is None
    assert pi_check_kind(ABORTED_COMMAND, 0x47, 0x05) is None
    assert pi_check_kind(ILLEGAL_REQUEST, 0x10, 0x01) is None
    assert S.PI_CHECK_ASC == {"guard": (0x10, 0x01), "app": (0x10, 0x02), "ref": (0x10, 0x03)}


def test_sense_text_for_logs() -> None:
    s = build_sense(ABORTED_COMMAND, *ASC_GUARD_CHECK_FAILED, information=0x1234)
    assert sense_text(s) == ("sense key bh (ABORTED COMMAND) asc/ascq 10h/01h "
                             "(LOGICAL BLOCK GUARD CHECK FAILED), information 4660")
    d = build_sense(DATA_PROTECT, *ASC_LU_ACCESS_NOT_AUTHORIZED, descriptor=True)
    assert sense_text(d) == ("sense key 7h (DATA PROTECT) asc/ascq 74h/71h "
                             "(LOGICAL UNIT ACCESS NOT AUTHORIZED)")
    assert sense_text(build_sense(ABORTED_COMMAND, 0x4B, 0x01)) == \
        "sense key bh (ABORTED COMMAND) asc/ascq 4bh/01h"
    assert sense_text(b"") == "no sense data"
    assert sense_text(b"\x00\x01\x02") == "unrecognized sense data 000102"


# --- hostile input: defined values, never an exception ------------------------------------


@pytest.mark.parametrize("sense,fields", [
    (b"", (0, 0, 0)),
    (b"\x70", (0, 0, 0)),
    (b"\x70\x00", (0, 0, 0)),
    (b"\x70\x00\x06", (UNIT_ATTENTION, 0, 0)),          # cut before its ASC
    (b"\x70\x00\x0b\x00\x00\x00\x00\x0a\x00\x00\x00\x00\x10", (ABORTED_COMMAND, 0, 0)),
    (b"\x72\x06\x29", (0, 0, 0)),                       # descriptor cut before its ASCQ
    (b"\x72\x06\x29\x00", (UNIT_ATTENTION, 0x29, 0x00)),
    (b"\x00" * 18, (0, 0, 0)),                          # response code 00h: not sense
    (b"\x7f" + b"\xff" * 17, (0, 0, 0)),                # vendor-specific format
])
def test_truncated_or_foreign_sense_reads_as_defined_defaults(sense: bytes,
                                                             fields: tuple) -> None:
    assert parse_sense(sense) == fields
    assert sense_information(sense) is None
    assert sense_field_pointer(sense) is None
    assert isinstance(sense_text(sense), str)


def test_descriptor_list_overrunning_its_length_is_not_read() -> None:
    good = build_sense(ABORTED_COMMAND, *ASC_REF_TAG_CHECK_FAILED, information=7, descriptor=True)
    assert sense_information(good[:-1]) is None                 # INFORMATION cut short
    lying = bytearray(good)
    lying[7] = 4                                                # additional length too small
    assert sense_information(lying) is None
    looping = bytes((0x72, 0x0B, 0x10, 0x03, 0, 0, 0, 6, 0x80, 0x00, 0x81, 0x00, 0x82, 0x00))
    assert sense_information(looping) is None                   # zero-length descriptors


@given(st.binary(max_size=64))
def test_any_bytes_parse_to_defined_values(data: bytes) -> None:
    key, asc, ascq = parse_sense(data)
    assert 0 <= key <= 0x0F and 0 <= asc <= 0xFF and 0 <= ascq <= 0xFF
    info = sense_information(data)
    assert info is None or 0 <= info < 1 << 64
    pointer = sense_field_pointer(data)
    assert pointer is None or 0 <= pointer.byte <= 0xFFFF
    assert is_unit_attention(data) == (key == UNIT_ATTENTION)
    assert sense_text(data)


# --- round trip -----------------------------------------------------------------------------


@given(key=st.integers(0, 0x0F), asc=st.integers(0, 0xFF), ascq=st.integers(0, 0xFF),
       information=st.none() | st.integers(0, 2**64 - 1),
       field_byte=st.none() | st.integers(0, 0xFFFF), field_bit=st.none() | st.integers(0, 7),
       in_cdb=st.booleans(), descriptor=st.booleans())
def test_build_parse_round_trip(key, asc, ascq, information, field_byte, field_bit, in_cdb,
                                descriptor) -> None:
    if not descriptor and information is not None and information > 0xFFFFFFFF:
        information = information & 0xFFFFFFFF
    sense = build_sense(key, asc, ascq, information=information, field_byte=field_byte,
                        field_bit=field_bit, in_cdb=in_cdb, descriptor=descriptor)
    assert sense[0] == (0x72 if descriptor else 0x70 | (0x80 if information is not None else 0))
    assert parse_sense(sense) == (key, asc, ascq)
    assert sense_information(sense) == information
    expected = None if field_byte is None else FieldPointer(field_byte, field_bit, in_cdb)
    assert sense_field_pointer(sense) == expected
    assert is_unit_attention(sense) == (key == UNIT_ATTENTION)
