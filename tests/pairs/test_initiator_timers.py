"""Initiator timers between the two cores: a keepalive ping's deadline counts from *now*.

An adapter that pings an idle path (NOP-Out keepalive) long after the core last saw the clock
must not have the ping expire at once: ``ping(now=...)`` brings the time in.
"""

from __future__ import annotations

from difs.iscsi.events import ConnectionClosed
from difs.iscsi.initiator_events import PingComplete

from .helpers import ConnectionPair


def logged_in() -> ConnectionPair:
    pair = ConnectionPair()
    pair.pump()
    return pair


def test_ping_deadline_counts_from_the_time_given() -> None:
    pair = logged_in()
    later = pair.now + 100.0  # the path was idle; the core has not seen the clock since login
    itt = pair.initiator.ping(timeout=5.0, now=later)
    assert pair.initiator.get_timer() == later + 5.0
    pair.initiator.handle_timer(later + 1.0)  # not expired: the connection stays up
    assert not pair.initiator.closed
    pair.pump()
    [pong] = pair.events_of("initiator", PingComplete)
    assert pong.itt == itt and pair.initiator.get_timer() is None


def test_unanswered_ping_closes_after_its_timeout() -> None:
    pair = logged_in()
    later = pair.now + 100.0
    pair.initiator.ping(timeout=2.0, now=later)  # never delivered to the target
    pair.initiator.handle_timer(later + 1.9)
    assert not pair.initiator.closed
    pair.initiator.handle_timer(later + 2.0)
    closed = [e for e in iter(pair.initiator.next_event, None) if isinstance(e, ConnectionClosed)]
    assert pair.initiator.closed and "NOP-Out ping timeout" in closed[0].reason
