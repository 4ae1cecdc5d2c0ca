"""TargetConnection fed hand-built login PDUs: statuses, stages, the state table."""

from __future__ import annotations

import pytest

from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.constants import LoginStatus
from difs.iscsi.errors import ConnectionFault
from difs.iscsi.events import ConnectionClosed, LoginComplete, LoginRejected
from difs.iscsi.framer import PduFramer
from difs.iscsi.pdu import LoginRequest, LoginResponse, NopOut, encode_pdu, pull_pdu
from difs.iscsi.session import SessionTable
from difs.iscsi.state import TARGET_TRANSITIONS, Input, State, StateMachine
from difs.iscsi.target_connection import TargetConnection
from difs.iscsi.text import encode_text, pull_text

TARGET = "iqn.2024-01.org.difs:t"
INITIATOR = "iqn.2024-01.org.difs:i"


def portal(**kw) -> PortalConfig:
    targets = kw.pop("targets", {TARGET: TargetConfig(name=TARGET)})
    return PortalConfig(addresses=["127.0.0.1:3260"], targets=targets, **kw)


def login(keys, *, csg=1, nsg=3, transit=True, cont=False, isid=0x1234, tsih=0, version_min=0,
          raw_text=None):
    data = raw_text if raw_text is not None else encode_text(keys)
    return encode_pdu(LoginRequest(isid=isid, tsih=tsih, itt=7, cid=1, cmdsn=20, expstatsn=100,
                                   csg=csg, nsg=nsg, transit=transit, cont=cont,
                                   version_min=version_min, data=data))


def responses(conn: TargetConnection) -> list[LoginResponse]:
    framer = PduFramer(1 << 20)
    framer.feed(b"".join(bytes(c) for c in conn.data_to_send()))
    out = []
    while (pdu := framer.next_pdu()) is not None:
        out.append(pull_pdu(pdu.header, pdu.ahs, pdu.data))
    return out


def events(conn: TargetConnection) -> list:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


NORMAL = [("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", TARGET)]


def status_of(conn) -> int:
    [response] = responses(conn)
    return (response.status_class << 8) | response.status_detail


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_operational_only_login(mode):
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    raw = login(NORMAL + [("MaxRecvDataSegmentLength", "65536"), ("ImmediateData", "Yes")])
    if mode == "whole":
        conn.receive_data(raw)
    elif mode == "bytewise":
        for i in range(len(raw)):
            conn.receive_data(raw[i:i + 1])
    else:  # a NOP-Out follows in the same chunk: it is the first Full Feature Phase PDU
        conn.receive_data(raw + encode_pdu(NopOut(itt=9, immediate=True, data=b"hi")))
    [response, *rest] = responses(conn)
    assert response.status_class == 0 and response.transit and response.nsg == 3
    assert response.tsih == 1 and response.itt == 7 and response.statsn == 100
    assert response.expcmdsn == 20
    keys = dict(pull_text(response.data))
    assert keys["TargetPortalGroupTag"] == "1" and keys["ImmediateData"] == "Yes"
    assert keys["MaxRecvDataSegmentLength"] == "262144"
    [complete] = events(conn)
    assert isinstance(complete, LoginComplete) and conn.state is State.FULL_FEATURE
    assert complete.session.exp_cmd_sn == 20
    if mode == "trailing":
        assert rest[0].data == b"hi" and rest[0].itt == 9 and rest[0].statsn == 101


@pytest.mark.parametrize("keys,status", [
    ([("SessionType", "Normal"), ("TargetName", TARGET)], LoginStatus.MISSING_PARAMETER),
    ([("InitiatorName", INITIATOR)], LoginStatus.MISSING_PARAMETER),
    ([("InitiatorName", INITIATOR), ("TargetName", "iqn.x:nope")], LoginStatus.NOT_FOUND),
    ([("InitiatorName", INITIATOR), ("SessionType", "Weird")],
     LoginStatus.SESSION_TYPE_NOT_SUPPORTED),
    (NORMAL + [("MaxBurstLength", "1"), ("MaxBurstLength", "2")], LoginStatus.INITIATOR_ERROR),
])
def test_login_refusals(keys, status):
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(keys))
    assert status_of(conn) == status
    evs = events(conn)
    assert isinstance(evs[0], LoginRejected) and isinstance(evs[-1], ConnectionClosed)
    assert conn.state is State.LOGIN_FAILED and conn.closed
    conn.receive_data(login(NORMAL))  # ignored after the failure
    assert conn.data_to_send() == []


def test_acl_refusal_2_2():
    targets = {TARGET: TargetConfig(name=TARGET, allowed_initiators=frozenset({"iqn.other"}))}
    conn = TargetConnection(portal=portal(targets=targets), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL))
    assert status_of(conn) == LoginStatus.AUTHORIZATION_FAILURE


def test_unsupported_version_and_unknown_tsih():
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL, version_min=1))
    assert status_of(conn) == LoginStatus.UNSUPPORTED_VERSION
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL, tsih=77))
    assert status_of(conn) == LoginStatus.SESSION_DOES_NOT_EXIST


def test_skipping_security_when_chap_required_is_2_1():
    targets = {TARGET: TargetConfig(name=TARGET, chap=ChapCredentials("u", "secret-secret"))}
    conn = TargetConnection(portal=portal(targets=targets), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL))
    assert status_of(conn) == LoginStatus.AUTHENTICATION_FAILURE


def test_security_stage_then_operational():
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL + [("AuthMethod", "CHAP,None")], csg=0, nsg=1))
    [response] = responses(conn)
    assert response.transit and response.csg == 0 and response.nsg == 1
    assert dict(pull_text(response.data))["AuthMethod"] == "None"
    assert conn.state is State.OPERATIONAL_NEGOTIATION
    # going back to the security stage is not in the table: initiator error
    conn.receive_data(login([("AuthMethod", "None")], csg=0, nsg=1))
    assert status_of(conn) == LoginStatus.INITIATOR_ERROR


def test_transit_refused_until_chap_done():
    targets = {TARGET: TargetConfig(name=TARGET, chap=ChapCredentials("u", "secret-secret"))}
    conn = TargetConnection(portal=portal(targets=targets), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL + [("AuthMethod", "CHAP")], csg=0, nsg=1))
    [response] = responses(conn)
    assert not response.transit and dict(pull_text(response.data))["AuthMethod"] == "CHAP"
    assert conn.state is State.SECURITY_NEGOTIATION


def test_continued_login_text():
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    text = encode_text(NORMAL + [("InitiatorAlias", "a" * 200)])
    conn.receive_data(login(None, raw_text=text[:50], transit=False, cont=True))
    [ack] = responses(conn)
    assert ack.status_class == 0 and not ack.transit and ack.data == b""
    conn.receive_data(login(None, raw_text=text[50:]))
    [final] = responses(conn)
    assert final.transit and final.nsg == 3
    assert isinstance(events(conn)[0], LoginComplete)


def test_non_login_pdu_during_login():
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(encode_pdu(NopOut(itt=1, immediate=True)))
    assert status_of(conn) == LoginStatus.INVALID_DURING_LOGIN


def test_login_pdu_in_full_feature_terminates():
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(NORMAL))
    responses(conn)
    events(conn)
    conn.receive_data(login(NORMAL))
    assert any(isinstance(e, ConnectionClosed) for e in events(conn))


def test_oversized_login_pdu_terminates():
    conn = TargetConnection(portal=portal(), sessions=SessionTable(), now=0.0)
    conn.receive_data(login(None, raw_text=b"A=" + b"x" * 9000 + b"\x00")[:48])
    assert any(isinstance(e, ConnectionClosed) for e in events(conn))


def test_state_table_missing_pair_is_terminal():
    machine = StateMachine(TARGET_TRANSITIONS, State.EXPECT_LOGIN_REQUEST)
    assert machine.process(Input.SECURITY_PDU) is State.SECURITY_NEGOTIATION
    assert machine.process(Input.TRANSIT_OPERATIONAL) is State.OPERATIONAL_NEGOTIATION
    with pytest.raises(ConnectionFault):
        machine.process(Input.SECURITY_PDU)
    assert machine.state is State.CLOSED and machine.terminal
