"""Fuzz invariant (h11 style): whatever bytes arrive, the target core answers with Rejects,
login errors or a ConnectionClosed event — no exception ever escapes to the adapter."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from fuzzing import edits, mutate
from hypothesis import strategies as st

from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.events import (
    ConnectionClosed,
    DigestFailure,
    LoginComplete,
    LoginRejected,
    LogoutComplete,
    ProtocolViolation,
    ScsiTask,
    TaskManagementRequest,
)
from difs.iscsi.pdu import (
    DataOut,
    LoginRequest,
    LogoutRequest,
    NopOut,
    ScsiCommand,
    SnackRequest,
    TaskMgmtRequest,
    TextRequest,
    encode_pdu,
)
from difs.iscsi.session import SessionTable
from difs.iscsi.target_connection import TargetConnection
from difs.iscsi.text import encode_text

TARGET = "iqn.2024-01.org.difs:t"
ALLOWED = (ScsiTask, LoginComplete, LoginRejected, ConnectionClosed, ProtocolViolation,
           DigestFailure, TaskManagementRequest, LogoutComplete)


def portal(chap: bool) -> PortalConfig:
    creds = ChapCredentials("u", "secret-secret") if chap else None
    return PortalConfig(addresses=["127.0.0.1:3260"],
                        targets={TARGET: TargetConfig(name=TARGET, chap=creds)},
                        first_burst_length=4096, max_burst_length=8192,
                        max_recv_data_segment_length=8192)


LOGIN = encode_pdu(LoginRequest(isid=1, itt=1, cmdsn=1, csg=1, nsg=3, transit=True,
                                data=encode_text([("InitiatorName", "iqn.x:i"),
                                                  ("InitialR2T", "No"),
                                                  ("TargetName", TARGET)])))


def valid_ffp_pdus(cmdsn: int = 1) -> list[bytes]:
    return [
        encode_pdu(ScsiCommand(itt=1, cdb=b"\x28" + bytes(15), read=True, expected_length=512,
                               cmdsn=cmdsn)),
        encode_pdu(ScsiCommand(itt=2, cdb=b"\x2a" + bytes(15), write=True, final=False,
                               expected_length=16384, cmdsn=cmdsn + 1, data=bytes(1024))),
        encode_pdu(DataOut(itt=2, offset=1024, final=True, data=bytes(3072))),
        encode_pdu(DataOut(itt=2, ttt=1, offset=4096, final=False, data=bytes(4096))),
        encode_pdu(NopOut(itt=3, cmdsn=cmdsn + 2, immediate=True, data=b"ping")),
        encode_pdu(TextRequest(itt=4, cmdsn=cmdsn + 2, data=b"SendTargets=All\x00")),
        encode_pdu(TaskMgmtRequest(function=1, itt=5, referenced_itt=1, cmdsn=cmdsn + 2)),
        encode_pdu(TaskMgmtRequest(function=5, itt=6, lun=0, cmdsn=cmdsn + 2)),
        encode_pdu(SnackRequest(itt=1)),
        encode_pdu(LogoutRequest(itt=7, cmdsn=cmdsn + 2, immediate=True)),
    ]


def drive(conn: TargetConnection, chunks: list[bytes]) -> list:
    seen = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not None:
            assert isinstance(event, ALLOWED), event
            seen.append(event)
            if isinstance(event, ScsiTask):
                conn.complete_command(event, status=0, data_in=bytes(100))
            elif isinstance(event, TaskManagementRequest):
                conn.complete_task_management(event, response=0)
        conn.data_to_send()
    closes = [e for e in seen if isinstance(e, ConnectionClosed)]
    assert len(closes) <= 1
    if conn.closed:
        assert closes or conn.state.name in ("LOGGED_OUT",)
    return seen






@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), chap=st.booleans())
def test_random_bytes_during_login(data, chap):
    drive(TargetConnection(portal=portal(chap), sessions=SessionTable(), now=0.0), [data])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=edits, chap=st.booleans(), split=st.integers(1, 97))
def test_mutated_login(edits, chap, split):
    raw = mutate(LOGIN, edits)
    chunks = [raw[i:i + split] for i in range(0, len(raw), split)]
    drive(TargetConnection(portal=portal(chap), sessions=SessionTable(), now=0.0), chunks)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice=st.lists(st.integers(0, 9), min_size=1, max_size=8), edits=edits,
       noise=st.binary(max_size=80), split=st.integers(1, 200))
def test_mutated_full_feature_pdus(choice, edits, noise, split):
    conn = TargetConnection(portal=portal(False), sessions=SessionTable(), now=0.0)
    drive(conn, [LOGIN])
    pdus = valid_ffp_pdus()
    raw = mutate(b"".join(pdus[i] for i in choice), edits) + noise
    drive(conn, [raw[i:i + split] for i in range(0, len(raw), split)])
    conn.handle_timer(1e9)
    conn.close()
