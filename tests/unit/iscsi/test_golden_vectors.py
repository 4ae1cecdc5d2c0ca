"""Golden PDUs captured from real libiscsi / QEMU sessions (tests/unit/vectors/iscsi).

Each vector decodes to the concrete fields it carried on the wire, re-encodes byte for byte
(the codec is canonical for all of them), goes through the framer whole, one byte at a time and
with trailing bytes, and the requests drive a ``TargetConnection`` to the very responses the
real controller sent: the CHAP login of iscsi-inq (its challenge replayed), the Discovery
session of iscsi-ls, and single exchanges (WRITE16, READ16, sense, TMF, NOP, logout, header
digests) on a connection whose sequence numbers continue where the captured session's were.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.constants import RESERVED_TAG, Opcode
from difs.iscsi.errors import HeaderDigestError
from difs.iscsi.events import (
    ConnectionClosed,
    LoginComplete,
    LogoutComplete,
    ScsiTask,
    TaskManagementRequest,
)
from difs.iscsi.framer import PduFramer
from difs.iscsi.pdu import (
    BasePdu,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    ReadyToTransfer,
    ScsiCommand,
    ScsiResponse,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    encode_pdu,
    pull_pdu,
)
from difs.iscsi.session import SessionTable
from difs.iscsi.state import State
from difs.iscsi.target_connection import TargetConnection
from difs.iscsi.text import pull_binary, pull_text

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "iscsi"
MANIFEST: dict[str, dict] = json.loads((VECTORS / "manifest.json").read_text())
NAMES = sorted(MANIFEST)

INITIATOR = b"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
PLAIN = "iqn.2026-11.io.difs:test.plain"
SECURE = "iqn.2026-11.io.difs:test.secure"
DIGEST = "iqn.2026-11.io.difs:test.digest"
#: the controller's portal during the capture (it appears in the SendTargets answer)
CAPTURE_PORTAL = "127.0.0.1:41895"
CHAP_ISID = 0x80267BDE0000  # libiscsi: ISID type 10b (random), qualifier 0

# ---------------------------------------------------------------------------------------------
# What each vector carries (values read off the wire, asserted field by field)
# ---------------------------------------------------------------------------------------------

LIBISCSI_OPERATIONAL = (
    b"HeaderDigest=None,CRC32C\x00" b"DataDigest=None\x00" b"InitialR2T=No\x00"
    b"ImmediateData=Yes\x00" b"MaxBurstLength=262144\x00" b"FirstBurstLength=262144\x00"
    b"DefaultTime2Wait=2\x00" b"DefaultTime2Retain=0\x00" b"MaxOutstandingR2T=1\x00"
    b"ErrorRecoveryLevel=0\x00" b"IFMarker=No\x00" b"OFMarker=No\x00" b"MaxConnections=1\x00"
    b"MaxRecvDataSegmentLength=262144\x00" b"DataPDUInOrder=Yes\x00"
    b"DataSequenceInOrder=Yes\x00")

EXPECTED: dict[str, BasePdu] = {
    # -- the CHAP login of iscsi-inq, in wire order
    "login_request_chap_security": LoginRequest(
        isid=CHAP_ISID, tsih=0, itt=0x432EB902, cid=0, cmdsn=0x7DB8A54F, expstatsn=1, csg=0,
        nsg=1, transit=True, cont=False, version_max=0, version_min=0,
        data=b"InitiatorName=" + INITIATOR + b"\x00" b"TargetName=" + SECURE.encode() + b"\x00"
             b"SessionType=Normal\x00" b"AuthMethod=CHAP,None\x00"),
    "login_response_chap_method": LoginResponse(
        isid=CHAP_ISID, tsih=0, itt=0x432EB902, statsn=1, expcmdsn=0x7DB8A54F,
        maxcmdsn=0x7DB8A5CE, status_class=0, status_detail=0, csg=0, nsg=0, transit=False,
        data=b"AuthMethod=CHAP\x00" b"TargetPortalGroupTag=1\x00"),
    "login_request_chap_a": LoginRequest(
        isid=CHAP_ISID, itt=0x432EB902, cmdsn=0x7DB8A54F, expstatsn=2, csg=0, nsg=1,
        transit=False, data=b"CHAP_A=5\x00"),
    "login_response_chap_challenge": LoginResponse(
        isid=CHAP_ISID, itt=0x432EB902, statsn=2, expcmdsn=0x7DB8A54F, maxcmdsn=0x7DB8A5CE,
        csg=0, nsg=0, transit=False,
        data=b"CHAP_A=5\x00" b"CHAP_I=97\x00" b"CHAP_C=0xc4ce6d831d047643f8927afec1bd3bb7\x00"),
    "login_request_chap_response": LoginRequest(
        isid=CHAP_ISID, itt=0x432EB902, cmdsn=0x7DB8A54F, expstatsn=3, csg=0, nsg=1,
        transit=True, data=b"CHAP_N=alice\x00" b"CHAP_R=0x8DE219822DF03A85917E09717E276B57\x00"),
    "login_response_chap_ok": LoginResponse(
        isid=CHAP_ISID, itt=0x432EB902, statsn=3, expcmdsn=0x7DB8A54F, maxcmdsn=0x7DB8A5CE,
        csg=0, nsg=1, transit=True, data=b""),
    "login_request_operational_digests": LoginRequest(
        isid=CHAP_ISID, itt=0x432EB902, cmdsn=0x7DB8A54F, expstatsn=4, csg=1, nsg=3,
        transit=True, data=LIBISCSI_OPERATIONAL),
    "login_response_final": LoginResponse(
        isid=CHAP_ISID, tsih=2, itt=0x432EB902, statsn=4, expcmdsn=0x7DB8A54F,
        maxcmdsn=0x7DB8A5CE, status_class=0, status_detail=0, csg=1, nsg=3, transit=True,
        data=b"HeaderDigest=None\x00" b"DataDigest=None\x00" b"InitialR2T=No\x00"
             b"ImmediateData=Yes\x00" b"MaxBurstLength=262144\x00" b"DefaultTime2Wait=2\x00"
             b"DefaultTime2Retain=0\x00" b"MaxOutstandingR2T=1\x00" b"ErrorRecoveryLevel=0\x00"
             b"IFMarker=No\x00" b"OFMarker=No\x00" b"MaxConnections=1\x00"
             b"DataPDUInOrder=Yes\x00" b"DataSequenceInOrder=Yes\x00"
             b"FirstBurstLength=262144\x00" b"TargetAlias=secure\x00"
             b"MaxRecvDataSegmentLength=262144\x00"),
    # -- iscsi-ls: Discovery
    "login_request_discovery": LoginRequest(
        isid=0x807BEAF50000, itt=0x12FF2CB8, cmdsn=0x10205C14, expstatsn=1, csg=1, nsg=3,
        transit=True,
        data=b"InitiatorName=" + INITIATOR + b"\x00" b"SessionType=Discovery\x00"
             b"HeaderDigest=None\x00"
             + LIBISCSI_OPERATIONAL.removeprefix(b"HeaderDigest=None,CRC32C\x00")),
    "login_response_discovery": LoginResponse(
        isid=0x807BEAF50000, tsih=1, itt=0x12FF2CB8, statsn=1, expcmdsn=0x10205C14,
        maxcmdsn=0x10205C93, csg=1, nsg=3, transit=True,
        data=b"HeaderDigest=None\x00" b"DataDigest=None\x00" b"InitialR2T=Irrelevant\x00"
             b"ImmediateData=Irrelevant\x00" b"MaxBurstLength=Irrelevant\x00"
             b"DefaultTime2Wait=2\x00" b"DefaultTime2Retain=0\x00"
             b"MaxOutstandingR2T=Irrelevant\x00" b"ErrorRecoveryLevel=0\x00" b"IFMarker=No\x00"
             b"OFMarker=No\x00" b"MaxConnections=Irrelevant\x00" b"DataPDUInOrder=Irrelevant\x00"
             b"DataSequenceInOrder=Irrelevant\x00" b"FirstBurstLength=Irrelevant\x00"
             b"MaxRecvDataSegmentLength=262144\x00"),
    "text_request_sendtargets": TextRequest(
        itt=0x12FF2CB9, ttt=RESERVED_TAG, cmdsn=0x10205C14, expstatsn=2, final=True, cont=False,
        lun=0, immediate=True, data=b"SendTargets=All\x00"),
    "text_response_sendtargets": TextResponse(
        itt=0x12FF2CB9, ttt=RESERVED_TAG, statsn=2, expcmdsn=0x10205C14, maxcmdsn=0x10205C93,
        final=True, cont=False,
        data=b"".join(b"TargetName=%s\x00TargetAddress=%s,1\x00" % (name.encode(),
                                                                    CAPTURE_PORTAL.encode())
                      for name in (DIGEST, PLAIN, SECURE))),
    # -- iscsi-perf: READ16 of one block
    "scsi_command_read16": ScsiCommand(
        itt=0x13E1FC28, lun=0, cdb=bytes.fromhex("88000000000000000000000000010000"),
        expected_length=512, cmdsn=0x7609BF0B, expstatsn=5, read=True, write=False, final=True,
        attr=1, immediate=False),
    "data_in_with_status": DataIn(
        itt=0x13E1FC28, ttt=RESERVED_TAG, lun=0, statsn=5, expcmdsn=0x7609BF0C,
        maxcmdsn=0x7609BF8B, datasn=0, offset=0, residual=0, final=True, acknowledge=False,
        has_status=True, status=0, data=bytes(512)),
    "nop_in_ping": NopIn(itt=RESERVED_TAG, ttt=1, statsn=7948, expcmdsn=0x7609DE12,
                         maxcmdsn=0x7609DE91, lun=0),
    "nop_out_reply": NopOut(itt=RESERVED_TAG, ttt=1, cmdsn=0x7609DE12, expstatsn=7948, lun=0,
                            immediate=True),
    # -- iscsi-test-cu
    "scsi_command_write16_immediate": ScsiCommand(
        itt=0x700A460A, lun=0, cdb=bytes.fromhex("8a000000000000000000000000010000"),
        expected_length=512, cmdsn=0x340F26B3, expstatsn=4, read=False, write=True, final=True,
        attr=1, data=b"\xa6" * 512),
    "scsi_response_write16": ScsiResponse(
        itt=0x700A460A, response=0, status=0, statsn=4, expcmdsn=0x340F26B4, maxcmdsn=0x340F2733),
    "scsi_command_read16_beyond_eol": ScsiCommand(
        itt=0x58DA1895, cdb=bytes.fromhex("88000000000000008000000000010000"),
        expected_length=512, cmdsn=0x5E505600, expstatsn=4, read=True),
    "scsi_response_sense": ScsiResponse(
        itt=0x58DA1895, response=0, status=2, statsn=4, expcmdsn=0x5E505601, maxcmdsn=0x5E505680,
        residual=512, underflow=True,
        data=bytes.fromhex("0012" "f00005000080000a00000000210000000000")),
    "tmf_request_abort_task": TaskMgmtRequest(
        function=1, itt=0x630D10EF, lun=0, referenced_itt=0x630D10EE, cmdsn=0x2BF4C5FA,
        expstatsn=4, refcmdsn=0x2BF4C5F9, expdatasn=0, immediate=True),
    "tmf_response_abort_task": TaskMgmtResponse(
        response=1, itt=0x630D10EF, statsn=5, expcmdsn=0x2BF4C5FA, maxcmdsn=0x2BF4C679),
    "tmf_request_lun_reset": TaskMgmtRequest(
        function=5, itt=0x509E52DD, lun=0, referenced_itt=RESERVED_TAG, cmdsn=0x576A76CB,
        expstatsn=5, refcmdsn=0, immediate=True),
    "tmf_response_lun_reset": TaskMgmtResponse(
        response=0, itt=0x509E52DD, statsn=5, expcmdsn=0x576A76CB, maxcmdsn=0x576A774A),
    # -- qemu-io: a 260 KiB write, 256 KiB of it immediate
    "r2t": ReadyToTransfer(itt=0x1030C9DB, ttt=1, lun=0, statsn=13, expcmdsn=0x4077CC25,
                           maxcmdsn=0x4077CCA3, r2tsn=0, offset=262144, desired_length=4096),
    "data_out": DataOut(itt=0x1030C9DB, ttt=1, lun=0, expstatsn=14, datasn=0, offset=262144,
                        final=True, data=b"\xa5" * 4096),
    # -- iscsi-readcapacity16: logout
    "logout_request": LogoutRequest(reason=0, itt=0x7C771706, cid=0, cmdsn=0x6559A1D1,
                                    expstatsn=5, immediate=True),
    "logout_response": LogoutResponse(response=0, itt=0x7C771706, statsn=5, expcmdsn=0x6559A1D1,
                                      maxcmdsn=0x6559A250, time2wait=2, time2retain=0),
    # -- iscsi-inq with HeaderDigest=CRC32C: TEST UNIT READY meets the power-on UNIT ATTENTION
    "scsi_command_header_digest": ScsiCommand(
        itt=0x0E214FF2, cdb=bytes(16), expected_length=0, cmdsn=0x31CC4A28, expstatsn=2,
        read=False, write=False),
    "scsi_response_header_digest": ScsiResponse(
        itt=0x0E214FF2, status=2, statsn=2, expcmdsn=0x31CC4A29, maxcmdsn=0x31CC4AA8,
        data=bytes.fromhex("0012" "700006000000000a00000000290000000000")),
}

#: bytes 0 and 1 of each BHS (opcode with the I bit, flags): read without the codec
FIRST_BYTES = {
    "login_request_chap_security": 0x4381, "login_response_chap_method": 0x2300,
    "login_request_chap_a": 0x4301, "login_response_chap_challenge": 0x2300,
    "login_request_chap_response": 0x4381, "login_response_chap_ok": 0x2381,
    "login_request_operational_digests": 0x4387, "login_response_final": 0x2387,
    "login_request_discovery": 0x4387, "login_response_discovery": 0x2387,
    "text_request_sendtargets": 0x4480, "text_response_sendtargets": 0x2480,
    "scsi_command_read16": 0x01C1, "data_in_with_status": 0x2581,
    "nop_in_ping": 0x2080, "nop_out_reply": 0x4080,
    "scsi_command_write16_immediate": 0x01A1, "scsi_response_write16": 0x2180,
    "scsi_command_read16_beyond_eol": 0x01C1, "scsi_response_sense": 0x2182,
    "tmf_request_abort_task": 0x4281, "tmf_response_abort_task": 0x2280,
    "tmf_request_lun_reset": 0x4285, "tmf_response_lun_reset": 0x2280,
    "r2t": 0x3180, "data_out": 0x0580, "logout_request": 0x4680, "logout_response": 0x2680,
    "scsi_command_header_digest": 0x0181, "scsi_response_header_digest": 0x2180,
}

CHAP_LOGIN = [("login_request_chap_security", "login_response_chap_method"),
              ("login_request_chap_a", "login_response_chap_challenge"),
              ("login_request_chap_response", "login_response_chap_ok"),
              ("login_request_operational_digests", "login_response_final")]


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.bin").read_bytes()


def digests(name: str) -> dict[str, bool]:
    meta = MANIFEST[name]
    return {"header_digest": meta["header_digest"], "data_digest": meta["data_digest"]}


def framer_for(name: str) -> PduFramer:
    return PduFramer(262144, **digests(name))


def decode(name: str) -> BasePdu:
    framer = framer_for(name)
    framer.feed(vector(name))
    framed = framer.next_pdu()
    assert framed is not None and framer.next_pdu() is None and framer.buffered == 0
    return pull_pdu(framed.header, framed.ahs, framed.data)


# ---------------------------------------------------------------------------------------------
# The vectors themselves
# ---------------------------------------------------------------------------------------------


def test_every_vector_is_described_and_checked():
    assert set(NAMES) == set(EXPECTED) == set(FIRST_BYTES)
    for name, meta in MANIFEST.items():
        raw = vector(name)
        assert len(raw) == meta["size"]
        assert raw[0] & 0x3F == meta["opcode"] == EXPECTED[name].opcode
        assert (meta["direction"] == "c2t") == (meta["opcode"] < 0x20)
    assert [n for n in NAMES if MANIFEST[n]["header_digest"]] == [
        "scsi_command_header_digest", "scsi_response_header_digest"]
    assert not any(MANIFEST[n]["data_digest"] for n in NAMES)  # libiscsi never offers them


@pytest.mark.parametrize("name", NAMES)
def test_vector_decodes_to_expected_fields(name):
    raw = vector(name)
    assert int.from_bytes(raw[:2], "big") == FIRST_BYTES[name]
    assert decode(name) == EXPECTED[name]


@pytest.mark.parametrize("name", NAMES)
def test_vector_reencodes_byte_identically(name):
    assert encode_pdu(decode(name), **{f"{k}_on": v for k, v in digests(name).items()}) \
        == vector(name)


def _framed(framer: PduFramer) -> list:
    out = []
    while (pdu := framer.next_pdu()) is not None:
        out.append(pdu)
    return out


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing", "twice"])
@pytest.mark.parametrize("name", NAMES)
def test_vector_through_the_framer(name, mode):
    raw = vector(name)
    expected = EXPECTED[name]
    framer = framer_for(name)
    if mode == "bytewise":
        pdus = []
        for i in range(len(raw)):
            framer.feed(raw[i:i + 1])
            got = _framed(framer)
            assert not got or i == len(raw) - 1
            pdus += got
    elif mode == "trailing":  # the start of the next PDU stays buffered
        framer.feed(raw + raw[:47])
        pdus = _framed(framer)
        assert framer.buffered == 47
    else:
        framer.feed(raw * (2 if mode == "twice" else 1))
        pdus = _framed(framer)
    assert len(pdus) == (2 if mode == "twice" else 1)
    for pdu in pdus:
        assert pdu.opcode == expected.opcode
        assert pdu.immediate == bool(raw[0] & 0x40)
        assert bytes(pdu.header) == raw[:48] and len(pdu.ahs) == 0
        assert bytes(pdu.data) == expected.data
    if mode != "trailing":
        assert framer.buffered == 0


def test_header_digest_vector_is_checked_by_the_framer():
    raw = bytearray(vector("scsi_command_header_digest"))
    assert len(raw) == 52
    raw[20] ^= 0x01  # one bit of the BHS flipped: the CRC32C no longer matches
    framer = framer_for("scsi_command_header_digest")
    framer.feed(bytes(raw))
    with pytest.raises(HeaderDigestError):
        framer.next_pdu()


def test_chap_response_is_md5_of_the_captured_challenge():
    challenge = dict(pull_text(EXPECTED["login_response_chap_challenge"].data))
    answer = dict(pull_text(EXPECTED["login_request_chap_response"].data))
    digest = hashlib.md5(bytes([int(challenge["CHAP_I"])]) + b"alice-secret-123"
                         + pull_binary(challenge["CHAP_C"])).digest()
    assert pull_binary(answer["CHAP_R"]) == digest


# ---------------------------------------------------------------------------------------------
# The requests drive the target core to the captured responses
# ---------------------------------------------------------------------------------------------


def controller_portal(**kw) -> PortalConfig:
    """The PortalConfig ``difs controller`` builds for the capture's configuration
    (CONTROLLER_TOML in tests/tools/capture_iscsi.py)."""
    targets = {
        PLAIN: TargetConfig(name=PLAIN, alias="plain"),
        SECURE: TargetConfig(name=SECURE, alias="secure",
                             chap=ChapCredentials("alice", "alice-secret-123")),
        DIGEST: TargetConfig(name=DIGEST, alias="digest", require_header_digest=True),
    }
    return PortalConfig(addresses=[CAPTURE_PORTAL], targets=targets, nop_interval=1.0, **kw)


def sent(conn: TargetConnection) -> bytes:
    return b"".join(bytes(chunk) for chunk in conn.data_to_send())


def events(conn: TargetConnection) -> list:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def replayed_challenge():
    """``random_bytes`` handing out the CHAP_I and CHAP_C the real controller drew."""
    keys = dict(pull_text(EXPECTED["login_response_chap_challenge"].data))
    draws = [bytes([int(keys["CHAP_I"])]), pull_binary(keys["CHAP_C"])]

    def random_bytes(n: int) -> bytes:
        value = draws.pop(0)
        assert len(value) == n
        return value
    return random_bytes


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_libiscsi_chap_login_gets_the_captured_responses(mode):
    conn = TargetConnection(portal=controller_portal(random_bytes=replayed_challenge()),
                            sessions=SessionTable(), now=0.0)
    for request, response in CHAP_LOGIN:
        raw = vector(request)
        if mode == "whole":
            conn.receive_data(raw)
        else:
            for i in range(len(raw)):
                conn.receive_data(raw[i:i + 1])
        got = sent(conn)
        want = vector(response)
        if response == "login_response_final":
            # the controller had served iscsi-ls first, so its TSIH was 2; ours is the first
            assert got[14:16] == b"\x00\x01" and want[14:16] == b"\x00\x02"
            got, want = got[:14] + got[16:], want[:14] + want[16:]
        assert got == want, response
    [complete] = events(conn)
    assert isinstance(complete, LoginComplete) and conn.state is State.FULL_FEATURE
    session = complete.session
    assert (session.params.auth_method, session.params.chap_user, session.params.chap_algorithm) == ("CHAP", "alice", 5)
    assert session.target_name == SECURE and session.isid == CHAP_ISID
    assert not session.params.header_digest and not session.params.data_digest
    assert session.first_burst_length == 262144 and session.max_outstanding_r2t == 1
    assert session.immediate_data and not session.initial_r2t


def test_libiscsi_chap_login_with_another_secret_is_refused():
    targets = controller_portal().targets
    targets[SECURE].chap = ChapCredentials("alice", "not-alice-secret")
    portal = controller_portal(random_bytes=replayed_challenge())
    portal.targets = targets
    conn = TargetConnection(portal=portal, sessions=SessionTable(), now=0.0)
    for request, _response in CHAP_LOGIN[:3]:
        conn.receive_data(vector(request))
    framer = PduFramer(8192)
    framer.feed(sent(conn))
    *_, refusal = [pull_pdu(p.header, p.ahs, p.data) for p in _framed(framer)]
    assert (refusal.status_class, refusal.status_detail) == (2, 1)
    assert conn.closed and conn.state is State.LOGIN_FAILED
    assert isinstance(events(conn)[-1], ConnectionClosed)


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_libiscsi_discovery_session_gets_the_captured_responses(mode):
    conn = TargetConnection(portal=controller_portal(), sessions=SessionTable(), now=0.0)
    login, text = vector("login_request_discovery"), vector("text_request_sendtargets")
    if mode == "whole":
        conn.receive_data(login)
        assert sent(conn) == vector("login_response_discovery")
        conn.receive_data(text)
    elif mode == "bytewise":
        for i in range(len(login + text)):
            conn.receive_data((login + text)[i:i + 1])
    else:  # the text request arrives in the same chunk as the login request
        conn.receive_data(login + text)
    want = vector("text_response_sendtargets")
    if mode != "whole":
        want = vector("login_response_discovery") + want
    assert sent(conn) == want
    [complete] = events(conn)
    assert isinstance(complete, LoginComplete) and complete.session.session_type == "Discovery"


def past_login(*, cmdsn: int, expstatsn: int, target: str = PLAIN,
               now: float = 0.0) -> TargetConnection:
    """A connection past a libiscsi login (its operational keys) whose CmdSN and StatSN continue
    where the captured session's were: the next command is ``cmdsn``, the next status
    ``expstatsn + 1``."""
    text = (b"InitiatorName=" + INITIATOR + b"\x00TargetName=" + target.encode()
            + b"\x00SessionType=Normal\x00" + LIBISCSI_OPERATIONAL)
    conn = TargetConnection(portal=controller_portal(), sessions=SessionTable(), now=now)
    conn.receive_data(encode_pdu(LoginRequest(isid=0x800000000000, itt=1, cmdsn=cmdsn,
                                              expstatsn=expstatsn, csg=1, nsg=3, transit=True,
                                              data=text)))
    [complete] = events(conn)
    assert isinstance(complete, LoginComplete), complete
    sent(conn)
    return conn


def continue_session(request: str, response: str, **kw) -> TargetConnection:
    pdu = EXPECTED[request]
    return past_login(cmdsn=pdu.cmdsn, expstatsn=EXPECTED[response].statsn - 1, **kw)


def test_write16_with_immediate_data_is_answered_as_captured():
    conn = continue_session("scsi_command_write16_immediate", "scsi_response_write16")
    conn.receive_data(vector("scsi_command_write16_immediate"))
    [task] = events(conn)
    assert isinstance(task, ScsiTask) and task.write and not task.read
    assert task.cdb[:16] == EXPECTED["scsi_command_write16_immediate"].cdb
    assert task.expected_length == 512 and bytes(task.data_out) == b"\xa6" * 512
    assert sent(conn) == b""  # all data was immediate: no R2T
    conn.complete_command(task, status=0)
    assert sent(conn) == vector("scsi_response_write16")


def test_read16_is_answered_with_the_captured_data_in():
    conn = continue_session("scsi_command_read16", "data_in_with_status")
    conn.receive_data(vector("scsi_command_read16"))
    [task] = events(conn)
    assert task.read and task.expected_length == 512 and task.lun == 0
    conn.complete_command(task, status=0, data_in=bytes(512))
    assert sent(conn) == vector("data_in_with_status")


def test_read16_beyond_the_end_is_answered_with_the_captured_sense():
    conn = continue_session("scsi_command_read16_beyond_eol", "scsi_response_sense")
    conn.receive_data(vector("scsi_command_read16_beyond_eol"))
    [task] = events(conn)
    sense = EXPECTED["scsi_response_sense"].data[2:]
    assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x05, 0x21, 0x00)
    conn.complete_command(task, status=2, sense=sense)
    assert sent(conn) == vector("scsi_response_sense")


def test_lun_reset_is_answered_as_captured():
    conn = continue_session("tmf_request_lun_reset", "tmf_response_lun_reset")
    conn.receive_data(vector("tmf_request_lun_reset"))
    [tmf] = events(conn)
    assert isinstance(tmf, TaskManagementRequest) and (tmf.function, tmf.lun) == (5, 0)
    conn.complete_task_management(tmf, response=0)
    assert sent(conn) == vector("tmf_response_lun_reset")


def test_abort_of_a_finished_task_is_answered_by_the_core_as_captured():
    conn = continue_session("tmf_request_abort_task", "tmf_response_abort_task")
    conn.receive_data(vector("tmf_request_abort_task"))
    assert events(conn) == []  # the referenced CmdSN is below the window: nothing to abort
    assert sent(conn) == vector("tmf_response_abort_task")


def test_keepalive_ping_and_answer_as_captured():
    conn = continue_session("nop_out_reply", "nop_in_ping")
    assert conn.get_timer() == 1.0  # nop_interval of the capture's controller
    conn.handle_timer(1.0)
    assert sent(conn) == vector("nop_in_ping")
    conn.receive_data(vector("nop_out_reply"))
    assert sent(conn) == b"" and events(conn) == []
    assert conn.get_timer() == 2.0  # answered: the next ping is due one interval later


def test_logout_is_answered_as_captured():
    conn = continue_session("logout_request", "logout_response")
    conn.receive_data(vector("logout_request"))
    assert sent(conn) == vector("logout_response")
    logout, closed = events(conn)
    assert isinstance(logout, LogoutComplete) and logout.reason == 0
    assert isinstance(closed, ConnectionClosed) and conn.state is State.LOGGED_OUT


def test_header_digest_session_is_answered_as_captured():
    conn = continue_session("scsi_command_header_digest", "scsi_response_header_digest",
                            target=DIGEST)
    assert conn.header_digest and not conn.data_digest
    conn.receive_data(vector("scsi_command_header_digest"))
    [task] = events(conn)
    assert task.cdb == bytes(16) and task.expected_length == 0
    conn.complete_command(task, status=2,
                          sense=EXPECTED["scsi_response_header_digest"].data[2:])
    assert sent(conn) == vector("scsi_response_header_digest")


def test_r2t_and_data_out_vectors_agree():
    r2t, data_out = EXPECTED["r2t"], EXPECTED["data_out"]
    assert (data_out.itt, data_out.ttt, data_out.offset) == (r2t.itt, r2t.ttt, r2t.offset)
    assert len(data_out.data) == r2t.desired_length and data_out.final
    assert r2t.offset == 262144  # the first burst went as immediate data
    assert Opcode(r2t.opcode) is Opcode.R2T
