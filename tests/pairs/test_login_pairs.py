"""Login, discovery, logout and reinstatement between the two cores, in memory."""

from __future__ import annotations

import pytest

from difs.iscsi.config import ChapCredentials, TargetConfig
from difs.iscsi.events import (
    ConnectionClosed,
    LoginComplete,
    LoginRejected,
    LogoutComplete,
    SessionReinstated,
)
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_events import (
    CommandComplete,
    DiscoveryResult,
    LoginFailed,
    LoginSucceeded,
)
from difs.iscsi.state import State
from difs.iscsi.target_connection import TargetConnection

from .helpers import (
    INITIATOR,
    TARGET,
    ConnectionPair,
    initiator_config,
    portal_config,
    read10,
    write10,
)

CHAP = ChapCredentials("host1", "initiator-secret-123")
MUTUAL = ChapCredentials("disk1", "target-secret-4567")


def chap_target(**kw) -> TargetConfig:
    return TargetConfig(name=TARGET, chap=CHAP, **kw)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_plain_login_then_io(chunk):
    pair = ConnectionPair(chunk=chunk)
    pair.pump()
    [done] = pair.events_of("target", LoginComplete)
    session = done.session
    assert session.initiator_port == f"{INITIATOR},i,0x400001370000"
    assert session.tsih == 1 and session.params.auth_method == "None" \
        and not session.params.header_digest
    [ok] = pair.events_of("initiator", LoginSucceeded)
    assert ok.session.tsih == 1 and ok.session.target_portal_group_tag == 1
    assert ok.session.target_alias == "disk1"
    assert pair.target.state is State.FULL_FEATURE
    itt = pair.initiator.submit_command(0, write10(10, 2), data_out=b"x" * 1024)
    pair.pump()
    itt2 = pair.initiator.submit_command(0, read10(10, 2), expected_in_length=1024)
    pair.pump()
    completes = pair.events_of("initiator", CommandComplete)
    assert [c.itt for c in completes] == [itt, itt2]
    assert bytes(completes[1].data) == b"x" * 1024


def test_negotiated_values_follow_rfc_rules():
    pair = ConnectionPair(
        portal=portal_config(max_burst_length=65536, first_burst_length=16384,
                             initial_r2t=False, immediate_data=True, max_outstanding_r2t=4),
        initiator=initiator_config(max_burst_length=262144, first_burst_length=65536,
                                   initial_r2t=True, immediate_data=False,
                                   max_outstanding_r2t=2, max_recv_data_segment_length=4096))
    pair.pump()
    session = pair.events_of("target", LoginComplete)[0].session
    assert session.max_burst_length == 65536  # min
    assert session.first_burst_length == 16384  # min
    assert session.initial_r2t is True  # OR
    assert session.immediate_data is False  # AND
    assert session.max_outstanding_r2t == 2  # min
    assert pair.target.send_limit == 4096  # declarative, per direction
    isession = pair.events_of("initiator", LoginSucceeded)[0].session
    assert isession.params.max_burst_length == 65536
    assert isession.params.target_max_recv_data_segment_length == 262144


@pytest.mark.parametrize("algorithms", [(5,), (7, 5), (8,), (6,)])
def test_chap_one_way(algorithms):
    pair = ConnectionPair(portal=portal_config(targets={TARGET: chap_target()}),
                          initiator=initiator_config(chap=CHAP, chap_algorithms=algorithms))
    pair.pump()
    session = pair.events_of("target", LoginComplete)[0].session
    assert session.params.auth_method == "CHAP" and not session.params.mutual_chap
    assert session.params.chap_algorithm == algorithms[0]
    assert session.params.chap_user == "host1"
    assert not pair.sessions.issued_challenges  # nothing left outstanding


def test_mutual_chap_with_both_digests():
    pair = ConnectionPair(
        portal=portal_config(targets={TARGET: chap_target(
            mutual_chap=MUTUAL, require_header_digest=True, require_data_digest=True)}),
        initiator=initiator_config(chap=CHAP, mutual_chap=MUTUAL, chap_algorithms=(7,),
                                   header_digest=("CRC32C",), data_digest=("CRC32C",)),
        chunk=5)
    pair.pump()
    session = pair.events_of("target", LoginComplete)[0].session
    assert session.params.mutual_chap and session.params.header_digest \
        and session.params.data_digest
    assert session.params.chap_algorithm == 7
    isession = pair.events_of("initiator", LoginSucceeded)[0].session
    assert isession.params.mutual_chap and isession.params.header_digest \
        and isession.params.data_digest
    pair.initiator.submit_command(0, write10(0, 16), data_out=bytes(range(256)) * 32)
    pair.pump()
    pair.initiator.submit_command(0, read10(0, 16), expected_in_length=8192)
    pair.pump()
    completes = pair.events_of("initiator", CommandComplete)
    assert bytes(completes[-1].data) == bytes(range(256)) * 32
    # FFP PDUs on the wire carry digests: 48-byte BHS + 4-byte header digest
    last_response = pair.to_initiator[-1]
    assert len(last_response) == 48 + 4 + 8192 + 4


def test_wrong_chap_secret_refused_2_1():
    pair = ConnectionPair(
        portal=portal_config(targets={TARGET: chap_target()}),
        initiator=initiator_config(chap=ChapCredentials("host1", "not-the-secret!")))
    pair.pump()
    [rejected] = pair.events_of("target", LoginRejected)
    assert (rejected.status_class, rejected.status_detail) == (2, 1)
    [failed] = pair.events_of("initiator", LoginFailed)
    assert (failed.status_class, failed.status_detail) == (2, 1)
    assert pair.events_of("target", ConnectionClosed)
    assert pair.events_of("initiator", ConnectionClosed)
    assert len(pair.sessions) == 0


def test_target_requiring_chap_refuses_initiator_without_credentials():
    pair = ConnectionPair(portal=portal_config(targets={TARGET: chap_target()}))
    pair.pump()
    [failed] = pair.events_of("initiator", LoginFailed)
    assert (failed.status_class, failed.status_detail) == (2, 1)


def test_mutual_chap_with_wrong_target_secret_refused_by_initiator():
    pair = ConnectionPair(
        portal=portal_config(targets={TARGET: chap_target(mutual_chap=MUTUAL)}),
        initiator=initiator_config(chap=CHAP,
                                   mutual_chap=ChapCredentials("disk1", "some-other-secret")))
    pair.pump()
    [failed] = pair.events_of("initiator", LoginFailed)
    assert "mutual" in failed.reason


def test_required_data_digest_refused_with_clear_reason():
    pair = ConnectionPair(
        portal=portal_config(targets={TARGET: TargetConfig(name=TARGET,
                                                           require_data_digest=True)}),
        initiator=initiator_config(header_digest=("None", "CRC32C")))
    pair.pump()
    [rejected] = pair.events_of("target", LoginRejected)
    assert (rejected.status_class, rejected.status_detail) == (2, 0)
    assert "DataDigest=CRC32C" in rejected.reason
    assert pair.events_of("initiator", LoginFailed)


def test_unknown_target_2_3_and_acl_2_2():
    pair = ConnectionPair(initiator=initiator_config(target_name="iqn.2024-01.org.difs:nope"))
    pair.pump()
    assert pair.events_of("initiator", LoginFailed)[0].status_detail == 3
    acl = {TARGET: TargetConfig(name=TARGET, allowed_initiators=frozenset({"iqn.other"}))}
    pair = ConnectionPair(portal=portal_config(targets=acl))
    pair.pump()
    failed = pair.events_of("initiator", LoginFailed)[0]
    assert (failed.status_class, failed.status_detail) == (2, 2)


def _discovery_portal(**kw):
    targets = {
        TARGET: TargetConfig(name=TARGET),
        "iqn.2024-01.org.difs:secret": TargetConfig(
            name="iqn.2024-01.org.difs:secret", allowed_initiators=frozenset({"iqn.other"})),
    }
    for i in range(kw.pop("extra", 0)):
        name = f"iqn.2024-01.org.difs:extra-{i:04d}-" + "x" * 100
        targets[name] = TargetConfig(name=name)
    return portal_config(targets=targets, addresses=["127.0.0.1:3260", "[::1]:3260"], **kw)


def test_discovery_send_targets_filtered_by_acl():
    pair = ConnectionPair(portal=_discovery_portal(), initiator=initiator_config(
        target_name=None))
    pair.pump()
    session = pair.events_of("target", LoginComplete)[0].session
    assert session.session_type == "Discovery"
    pair.initiator.send_targets("All")
    pair.pump()
    [result] = pair.events_of("initiator", DiscoveryResult)
    assert result.targets == {TARGET: ["127.0.0.1:3260,1", "[::1]:3260,1"]}
    pair.initiator.send_targets(TARGET)
    pair.pump()
    assert pair.events_of("initiator", DiscoveryResult)[1].targets == {
        TARGET: ["127.0.0.1:3260,1", "[::1]:3260,1"]}
    # SCSI commands are not allowed in a discovery session
    pair.initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    pair.pump()
    assert not pair.target.closed


def test_discovery_long_answer_uses_continuation():
    pair = ConnectionPair(portal=_discovery_portal(extra=200),
                          initiator=initiator_config(target_name=None,
                                                     max_recv_data_segment_length=1024))
    pair.pump()
    pair.initiator.send_targets("All")
    pair.pump()
    [result] = pair.events_of("initiator", DiscoveryResult)
    assert len(result.targets) == 201
    # the answer came in many Text Responses, each within the initiator's 1024-byte limit
    assert len(pair.to_initiator) > 20


def test_discovery_with_chap():
    portal = _discovery_portal(discovery_auth=CHAP)
    pair = ConnectionPair(portal=portal, initiator=initiator_config(target_name=None))
    pair.pump()
    assert pair.events_of("initiator", LoginFailed)
    pair = ConnectionPair(portal=portal, initiator=initiator_config(target_name=None, chap=CHAP))
    pair.pump()
    assert pair.events_of("target", LoginComplete)[0].session.params.auth_method == "CHAP"


def test_logout_closes_session():
    pair = ConnectionPair()
    pair.pump()
    assert len(pair.sessions) == 1
    pair.initiator.logout()
    pair.pump()
    [logout] = pair.events_of("target", LogoutComplete)
    assert logout.reason == 0
    assert pair.events_of("target", ConnectionClosed)[0].reason == "logout"
    assert pair.events_of("initiator", LogoutComplete)
    assert pair.target.state is State.LOGGED_OUT and pair.initiator.state is State.LOGGED_OUT
    assert len(pair.sessions) == 0


def test_session_reinstatement_drops_old_connection():
    first = ConnectionPair(auto_complete=False)
    first.pump()
    old_session = first.events_of("target", LoginComplete)[0].session
    first.initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    first.pump()
    [task] = first.pending_tasks
    second = ConnectionPair(sessions=first.sessions)
    second.pump()
    [reinstated] = second.events_of("target", SessionReinstated)
    assert reinstated.old_session is old_session
    assert reinstated.old_connection_ids == (first.target.connection_id,)
    new_session = second.events_of("target", LoginComplete)[0].session
    assert new_session.tsih != old_session.tsih
    assert first.sessions.by_key(INITIATOR, 0x400001370000, 1, new_session.target_name) is new_session
    assert first.target.closed
    # a late completion on the dropped connection is ignored, nothing is sent
    first.target.complete_command(task, status=0, data_in=bytes(512))
    assert first.target.data_to_send() == []


def test_login_timeout():
    pair = ConnectionPair()
    # the initiator never sends anything
    target = TargetConnection(portal=pair.portal, sessions=pair.sessions, now=0.0)
    assert target.get_timer() == pair.portal.login_timeout
    target.handle_timer(pair.portal.login_timeout)
    assert isinstance(target.next_event(), ConnectionClosed)


def test_initiator_api_requires_full_feature():
    from difs.iscsi.errors import LocalProtocolError

    initiator = InitiatorConnection(config=initiator_config(), now=0.0)
    with pytest.raises(LocalProtocolError):
        initiator.submit_command(0, read10(0, 1), expected_in_length=512)


def test_continued_text_request_both_ways():
    from difs.iscsi.initiator_events import TextResult

    pair = ConnectionPair(portal=portal_config(max_recv_data_segment_length=512))
    pair.pump()
    pairs = [(f"X-org.difs.key{i}", "v" * 40) for i in range(40)]  # ~2.3 KB of request
    itt = pair.initiator.text_request(pairs)
    pair.pump()
    [result] = pair.events_of("initiator", TextResult)
    assert result.itt == itt
    assert result.pairs == [(k, "NotUnderstood") for k, _ in pairs]
    assert not pair.target.closed and not pair.initiator.closed


def test_connection_reinstatement_and_too_many_connections():
    from difs.iscsi.events import ConnectionReinstated

    first = ConnectionPair()
    first.pump()
    session = first.events_of("target", LoginComplete)[0].session
    # same TSIH, same CID: the old connection is replaced
    second = ConnectionPair(sessions=first.sessions,
                            initiator=initiator_config(tsih=session.tsih, cid=0))
    second.pump()
    [reinstated] = second.events_of("target", ConnectionReinstated)
    assert reinstated.session is session
    assert reinstated.old_connection_id == first.target.connection_id
    assert second.events_of("target", LoginComplete)[0].session is session
    assert first.target.closed and session.connections[0] is second.target
    second.initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    second.pump()
    assert second.events_of("initiator", CommandComplete)
    # another CID on a MaxConnections=1 session: 2/6
    third = ConnectionPair(sessions=first.sessions,
                           initiator=initiator_config(tsih=session.tsih, cid=5))
    third.pump()
    failed = third.events_of("initiator", LoginFailed)[0]
    assert (failed.status_class, failed.status_detail) == (2, 6)
