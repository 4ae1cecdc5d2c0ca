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
