"""PDU codec and framer: golden vectors, round trips, three ways of feeding bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.iscsi.constants import RESERVED_TAG, Opcode
from difs.iscsi.digest import crc32c, data_digest, header_digest
from difs.iscsi.errors import DataDigestError, FramingError, HeaderDigestError, PduRejected
from difs.iscsi.framer import PduFramer
from difs.iscsi.pdu import (
    PDU_TYPES,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    ReadyToTransfer,
    Reject,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    decode_lun,
    encode_lun,
    encode_pdu,
    pull_ahs,
    pull_pdu,
    push_ahs,
)


def test_crc32c_golden_vector():
    assert crc32c(b"123456789") == 0xE3069283


def test_digest_is_little_endian_and_covers_padding():
    assert header_digest(b"123456789") == (0xE3069283).to_bytes(4, "little")
    # data digest of 5 bytes == CRC of the 5 bytes plus 3 zero padding bytes
    assert data_digest(b"abcde") == crc32c(b"abcde\x00\x00\x00").to_bytes(4, "little")


GOLDEN_LOGIN = bytes.fromhex(
    "43"        # I=1, opcode 0x03
    "87"        # T=1, CSG=1 (operational), NSG=3 (full feature)
    "00" "00"   # version max / min
    "00"        # TotalAHSLength
    "00001d"    # DataSegmentLength 29
    "400001370000"  # ISID
    "0000"      # TSIH
    "00000001"  # ITT
    "0001" "0000"  # CID, reserved
    "0000000a"  # CmdSN
    "00000005"  # ExpStatSN
    + "00" * 16
) + b"InitiatorName=iqn.2024-01.x\x00\x00" + b"\x00" * 3


def test_golden_login_request_bytes():
    pdu = LoginRequest(isid=0x400001370000, tsih=0, itt=1, cid=1, cmdsn=10, expstatsn=5, csg=1,
                       nsg=3, transit=True, data=b"InitiatorName=iqn.2024-01.x\x00\x00")
    assert encode_pdu(pdu) == GOLDEN_LOGIN
    framer = PduFramer(8192)
    framer.feed(GOLDEN_LOGIN)
    framed = framer.next_pdu()
    assert framed.opcode == Opcode.LOGIN_REQUEST and framed.immediate
    assert pull_pdu(framed.header, framed.ahs, framed.data) == pdu


def test_lun_addressing():
    assert encode_lun(5) == 0x0005_0000_0000_0000
    assert decode_lun(encode_lun(5)) == 5
    assert encode_lun(300) == 0x412C_0000_0000_0000  # flat addressing
    assert decode_lun(encode_lun(300)) == 300
    odd = 0xC000_0000_0000_0001  # extended addressing: raw field kept
    assert decode_lun(odd) == odd


def test_extended_cdb_and_bidi_ahs_round_trip():
    cdb = bytes(range(32))
    pdu = ScsiCommand(itt=7, cdb=cdb, read=True, write=True, bidi_read_length=4096,
                      expected_length=512)
    raw = encode_pdu(pdu)
    framer = PduFramer(8192)
    framer.feed(raw)
    framed = framer.next_pdu()
    assert len(framed.ahs) == 20 + 8
    back = pull_pdu(framed.header, framed.ahs, framed.data)
    assert back.cdb == cdb and back.bidi_read_length == 4096


def test_ahs_length_out_of_bounds_rejected():
    bad = push_ahs(1, b"\x00" * 8)
    bad = b"\x00\x40" + bad[2:]  # claims 64 bytes of AHS
    with pytest.raises(PduRejected):
        pull_ahs(bad)
    with pytest.raises(PduRejected):
        pull_ahs(b"\x00\x00")


u32 = st.integers(0, 0xFFFFFFFF)
data = st.binary(max_size=64)

COVERED: set[type] = set()


def _builds(cls, **fields):
    COVERED.add(cls)
    return st.builds(cls, **fields)


PDU_STRATEGIES = [
    _builds(NopOut, itt=u32, ttt=u32, cmdsn=u32, expstatsn=u32, lun=st.integers(0, 255),
              immediate=st.booleans(), data=data),
    _builds(NopIn, itt=u32, ttt=u32, statsn=u32, expcmdsn=u32, maxcmdsn=u32,
              lun=st.integers(0, 0x3FFF), data=data),
    _builds(ScsiCommand, itt=u32, lun=st.integers(0, 0x3FFF),
              cdb=st.binary(min_size=16, max_size=40), expected_length=u32, cmdsn=u32,
              expstatsn=u32, read=st.booleans(), write=st.booleans(), final=st.booleans(),
              attr=st.integers(0, 4), immediate=st.booleans(),
              bidi_read_length=st.none() | u32, data=data),
    _builds(ScsiResponse, itt=u32, response=st.integers(0, 255), status=st.integers(0, 255),
              statsn=u32, expcmdsn=u32, maxcmdsn=u32, expdatasn=u32, residual=u32,
              overflow=st.booleans(), underflow=st.booleans(), bidi_residual=u32,
              bidi_overflow=st.booleans(), bidi_underflow=st.booleans(), snack_tag=u32,
              data=data),
    _builds(TaskMgmtRequest, function=st.integers(1, 8), itt=u32, lun=st.integers(0, 255),
              referenced_itt=u32, cmdsn=u32, expstatsn=u32, refcmdsn=u32, expdatasn=u32,
              immediate=st.booleans()),
    _builds(TaskMgmtResponse, response=st.integers(0, 255), itt=u32, statsn=u32,
              expcmdsn=u32, maxcmdsn=u32),
    _builds(DataOut, itt=u32, ttt=u32, lun=st.integers(0, 255), expstatsn=u32, datasn=u32,
              offset=u32, final=st.booleans(), data=data),
    _builds(DataIn, itt=u32, ttt=u32, lun=st.integers(0, 255), statsn=u32, expcmdsn=u32,
              maxcmdsn=u32, datasn=u32, offset=u32, residual=u32, final=st.booleans(),
              acknowledge=st.booleans(), has_status=st.booleans(), status=st.integers(0, 255),
              overflow=st.booleans(), underflow=st.booleans(), data=data),
    _builds(ReadyToTransfer, itt=u32, ttt=u32, lun=st.integers(0, 255), statsn=u32,
              expcmdsn=u32, maxcmdsn=u32, r2tsn=u32, offset=u32, desired_length=u32),
    _builds(AsyncMessage, event=st.integers(0, 255), vcode=st.integers(0, 255),
              lun=st.integers(0, 255), statsn=u32, expcmdsn=u32, maxcmdsn=u32,
              parameter1=st.integers(0, 0xFFFF), parameter2=st.integers(0, 0xFFFF),
              parameter3=st.integers(0, 0xFFFF), data=data),
    _builds(TextRequest, itt=u32, ttt=u32, cmdsn=u32, expstatsn=u32, final=st.booleans(),
              cont=st.booleans(), immediate=st.booleans(), data=data),
    _builds(TextResponse, itt=u32, ttt=u32, statsn=u32, expcmdsn=u32, maxcmdsn=u32,
              final=st.booleans(), cont=st.booleans(), data=data),
    _builds(LoginRequest, isid=st.integers(0, (1 << 48) - 1), tsih=st.integers(0, 0xFFFF),
              itt=u32, cid=st.integers(0, 0xFFFF), cmdsn=u32, expstatsn=u32,
              csg=st.integers(0, 3), nsg=st.integers(0, 3), transit=st.booleans(),
              cont=st.booleans(), version_max=st.integers(0, 255),
              version_min=st.integers(0, 255), data=data),
    _builds(LoginResponse, isid=st.integers(0, (1 << 48) - 1), tsih=st.integers(0, 0xFFFF),
              itt=u32, statsn=u32, expcmdsn=u32, maxcmdsn=u32, status_class=st.integers(0, 255),
              status_detail=st.integers(0, 255), csg=st.integers(0, 3), nsg=st.integers(0, 3),
              transit=st.booleans(), cont=st.booleans(), version_max=st.integers(0, 255),
              version_active=st.integers(0, 255), data=data),
    _builds(LogoutRequest, reason=st.integers(0, 2), itt=u32, cid=st.integers(0, 0xFFFF),
              cmdsn=u32, expstatsn=u32, immediate=st.booleans()),
    _builds(LogoutResponse, response=st.integers(0, 3), itt=u32, statsn=u32, expcmdsn=u32,
              maxcmdsn=u32, time2wait=st.integers(0, 3600), time2retain=st.integers(0, 3600)),
    _builds(SnackRequest, snack_type=st.integers(0, 3), lun=st.integers(0, 255), itt=u32,
              ttt=u32, expstatsn=u32, begrun=u32, runlength=u32),
    _builds(Reject, reason=st.integers(2, 12), statsn=u32, expcmdsn=u32, maxcmdsn=u32,
              datasn=u32, data=st.binary(min_size=48, max_size=48)),
]


def test_every_opcode_has_a_strategy():
    assert COVERED == set(PDU_TYPES.values())


@settings(max_examples=300, deadline=None)
@given(pdu=st.one_of(PDU_STRATEGIES), hd=st.booleans(), dd=st.booleans())
def test_round_trip_every_pdu(pdu, hd, dd):
    raw = encode_pdu(pdu, header_digest_on=hd, data_digest_on=dd)
    assert len(raw) % 4 == 0
    framer = PduFramer(1 << 16, header_digest=hd, data_digest=dd)
    framer.feed(raw)
    framed = framer.next_pdu()
    assert framer.next_pdu() is None and framer.buffered == 0
    back = pull_pdu(framed.header, framed.ahs, framed.data)
    if isinstance(pdu, ScsiCommand):
        pdu.cdb = pdu.cdb.ljust(16, b"\x00")
    assert back == pdu


def _three_pdus() -> list[bytes]:
    return [
        encode_pdu(NopOut(itt=1, data=b"ping!"), header_digest_on=True, data_digest_on=True),
        encode_pdu(ScsiCommand(itt=2, cdb=bytes(range(20)), write=True, data=b"x" * 1000),
                   header_digest_on=True, data_digest_on=True),
        encode_pdu(TextRequest(itt=3, data=b"SendTargets=All\x00"), header_digest_on=True,
                   data_digest_on=True),
    ]


def _frame_all(chunks):
    framer = PduFramer(8192, header_digest=True, data_digest=True)
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        while (pdu := framer.next_pdu()) is not None:
            out.append(pull_pdu(pdu.header, pdu.ahs, pdu.data))
    return out, framer


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_framer_three_ways(mode):
    pdus = _three_pdus()
    stream = b"".join(pdus)
    if mode == "whole":
        chunks = [stream]
    elif mode == "bytewise":
        chunks = [stream[i:i + 1] for i in range(len(stream))]
    else:  # each chunk ends with the first bytes of the next PDU
        chunks = [stream[:len(pdus[0]) + 5], stream[len(pdus[0]) + 5:-7], stream[-7:]]
    out, framer = _frame_all(chunks)
    assert [p.itt for p in out] == [1, 2, 3]
    assert out[0].data == b"ping!" and out[1].data == b"x" * 1000
    assert out[1].cdb == bytes(range(20))
    assert framer.buffered == 0


def test_framer_accepts_memoryview_and_bytearray_and_copies_them():
    raw = encode_pdu(NopOut(itt=9, data=b"hello"))
    buf = bytearray(raw)
    framer = PduFramer(8192)
    framer.feed(memoryview(buf))
    pdu = framer.next_pdu()
    buf[:] = b"\xff" * len(buf)  # adapter reuses its buffer
    assert bytes(pdu.data) == b"hello"


def test_framer_zero_copy_for_bytes():
    raw = encode_pdu(NopOut(itt=9, data=b"hello world!"))
    framer = PduFramer(8192)
    framer.feed(raw)
    pdu = framer.next_pdu()
    assert pdu.data.obj is raw


def test_framer_limit_enforced_from_header():
    raw = encode_pdu(NopOut(itt=9, data=b"a" * 600))
    framer = PduFramer(512)
    framer.feed(raw[:48])  # header alone is enough to refuse
    with pytest.raises(FramingError):
        framer.next_pdu()


def test_header_digest_mismatch():
    raw = bytearray(encode_pdu(NopOut(itt=9), header_digest_on=True))
    raw[20] ^= 1
    framer = PduFramer(8192, header_digest=True)
    framer.feed(bytes(raw))
    with pytest.raises(HeaderDigestError):
        framer.next_pdu()


def test_data_digest_mismatch_keeps_stream_in_sync():
    bad = bytearray(encode_pdu(NopOut(itt=9, data=b"abc"), data_digest_on=True))
    bad[50] ^= 1
    good = encode_pdu(NopOut(itt=10, data=b"def"), data_digest_on=True)
    framer = PduFramer(8192, data_digest=True)
    framer.feed(bytes(bad) + good)
    with pytest.raises(DataDigestError) as info:
        framer.next_pdu()
    assert info.value.pdu.header[16:20] == (9).to_bytes(4, "big")
    nxt = framer.next_pdu()
    assert bytes(nxt.data) == b"def"


def test_unknown_opcode_rejected():
    with pytest.raises(PduRejected):
        pull_pdu(bytes([0x1C]) + bytes(47))


def test_reserved_tag_constant():
    assert RESERVED_TAG == 0xFFFFFFFF
