"""A session is identified by initiator port *and* target port (RFC 7143 4.4.1).

One host uses the same initiator name and ISID (its channel number) towards
every target; logging in to a second target must not reinstate — and so kill —
its session with the first.
"""

from difs.iscsi.events import LoginComplete, SessionReinstated
from difs.iscsi.session import SessionTable

from .helpers import ConnectionPair, TargetConfig, initiator_config, portal_config

OTHER = "iqn.2024-01.org.difs:disk2"


def test_same_isid_to_two_targets_is_two_sessions() -> None:
    portal = portal_config(targets={
        "iqn.2024-01.org.difs:disk1": TargetConfig(name="iqn.2024-01.org.difs:disk1"),
        OTHER: TargetConfig(name=OTHER)})
    sessions = SessionTable()
    first = ConnectionPair(portal=portal, sessions=sessions)
    first.pump()
    second = ConnectionPair(portal=portal, sessions=sessions,
                            initiator=initiator_config(target_name=OTHER))
    second.pump()
    assert not second.events_of("target", SessionReinstated)
    assert not first.target.closed
    a = first.events_of("target", LoginComplete)[0].session
    b = second.events_of("target", LoginComplete)[0].session
    assert a.tsih != b.tsih and len(sessions) == 2
    # the same login to the first target again does reinstate
    third = ConnectionPair(portal=portal, sessions=sessions)
    third.pump()
    [event] = third.events_of("target", SessionReinstated)
    assert event.old_session is a
    assert not second.target.closed


def test_two_initiators_with_one_name_and_isid_do_not_reinstate_each_other_forever() -> None:
    """Issue 17 finding 5: two initiators using the same name and ISID reinstated each
    other's sessions 22,728 times in 7 s. A session still in use is reinstated at most
    three times in 10 s; the next login is answered 03/01 SERVICE UNAVAILABLE (retryable)
    and the holder keeps its session."""
    from difs.iscsi.events import LoginRejected
    from difs.iscsi.initiator_events import LoginFailed

    sessions = SessionTable()
    pairs = [ConnectionPair(sessions=sessions)]
    pairs[0].pump()
    for _ in range(3):  # each reinstates the one before
        pairs.append(ConnectionPair(sessions=sessions))
        pairs[-1].pump()
        assert pairs[-1].events_of("target", SessionReinstated) and pairs[-2].target.closed
    holder = pairs[-1]
    refused = ConnectionPair(sessions=sessions)
    refused.pump()
    [rejected] = refused.events_of("target", LoginRejected)
    assert (rejected.status_class, rejected.status_detail) == (3, 1)
    assert "is being used by two initiators" in rejected.reason
    [failed] = refused.events_of("initiator", LoginFailed)
    assert (failed.status_class, failed.status_detail) == (3, 1)
    assert not holder.target.closed and len(sessions) == 1


def test_a_session_no_longer_in_use_is_replaced_without_counting() -> None:
    """A host whose connection is gone logs in again as often as it needs: only the
    reinstatement of a session that still has a connection is throttled."""
    sessions = SessionTable()
    for _ in range(6):
        pair = ConnectionPair(sessions=sessions)
        pair.pump()
        assert pair.events_of("target", LoginComplete)
        pair.target.close()
        assert len(sessions) == 0
