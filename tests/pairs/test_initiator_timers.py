"""Initiator timers between the two cores: a keepalive ping's deadline counts from *now*;
the core's keepalive, command timeouts and ABORT TASK decisions (time passed in explicitly).

An adapter that pings an idle path (NOP-Out keepalive) long after the core last saw the clock
must not have the ping expire at once: ``ping(now=...)`` brings the time in.
"""

from __future__ import annotations

import pytest

from difs.iscsi.constants import TmfFunction, TmfResponse
from difs.iscsi.events import ConnectionClosed
from difs.iscsi.initiator_events import (
    CommandAborted,
    CommandComplete,
    CommandTimeout,
    ConnectionDead,
    PingComplete,
    TaskManagementComplete,
)
from difs.iscsi.initiator_timers import NO_TIMERS, InitiatorTimers

from .helpers import BLOCK, ConnectionPair, read10


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


# -- the core's clocks: keepalive, command timeout, ABORT TASK ----------------------------------
#
# The tests below drive the initiator as its adapter does: handle_timer(t) at each t the core
# asks for with get_timer(), moving bytes after each call. Time is passed in explicitly.

WATCH = InitiatorTimers(nop_interval=None, command_timeout=10.0, abort_timeout=4.0)
KEEPALIVE = InitiatorTimers(nop_interval=2.0, nop_timeout=1.0, command_timeout=None)


def watched(timers: InitiatorTimers, *, auto_complete: bool = False) -> ConnectionPair:
    pair = ConnectionPair(timers=timers, auto_complete=auto_complete)
    pair.pump()
    assert pair.initiator.state.name == "FULL_FEATURE"
    return pair


def advance(pair: ConnectionPair, until: float, *, deliver: bool = True) -> None:
    """Run the initiator's timers up to ``until``, as an adapter would; ``deliver=False``: the
    target hears nothing (a silent target: the initiator's bytes wait in its queue)."""
    initiator = pair.initiator
    while (when := initiator.get_timer()) is not None and when <= until:
        pair.now = max(pair.now, when)
        initiator.handle_timer(pair.now)
        assert initiator.get_timer() is None or initiator.get_timer() > pair.now
        if deliver:
            pair.pump()
        else:
            pair.initiator_events.extend(iter(initiator.next_event, None))
    pair.now = max(pair.now, until)


def read(pair: ConnectionPair, lba: int = 0) -> int:
    itt = pair.initiator.submit_command(0, read10(lba, 1), expected_in_length=BLOCK, now=pair.now)
    pair.pump()
    return itt


def test_timed_out_command_is_aborted_and_the_connection_stays_up() -> None:
    pair = watched(WATCH)
    start = pair.now
    itt = read(pair)
    [task] = pair.pending_tasks
    advance(pair, start + 9.5)
    assert not pair.tmf_requests and not pair.events_of("initiator", CommandTimeout)
    advance(pair, start + 11.0)  # 10 s, seen at the next watch (tick 1 s)
    [timeout] = pair.events_of("initiator", CommandTimeout)
    assert timeout.itt == itt and timeout.after == 10.0
    [request] = pair.tmf_requests
    assert request.function == TmfFunction.ABORT_TASK and request.referenced_task is task
    pair.target.complete_task_management(request, response=TmfResponse.FUNCTION_COMPLETE)
    pair.pump()
    assert pair.events_of("initiator", CommandAborted) == [CommandAborted(itt, timed_out=True)]
    assert pair.events_of("initiator", TaskManagementComplete)[0].itt == timeout.tmf_itt
    advance(pair, start + 30.0)  # the abort's deadline passes: nothing left to judge
    assert not pair.initiator.closed and pair.initiator.commands_timed_out == 1
    assert not pair.events_of("initiator", ConnectionDead)
    pair.auto_complete = True
    again = read(pair)
    [done] = pair.events_of("initiator", CommandComplete)
    assert done.itt == again and done.status == 0


def test_unanswered_abort_declares_the_connection_dead() -> None:
    pair = watched(WATCH)
    start = pair.now
    itt = read(pair)
    advance(pair, start + 10.0)
    [request] = pair.tmf_requests  # the target's adapter never answers it
    advance(pair, start + 13.9)
    assert not pair.initiator.closed
    advance(pair, start + 15.0)  # aborted at 10, 4 s to answer, seen at the watch after 14
    [dead] = pair.events_of("initiator", ConnectionDead)
    [closed] = pair.events_of("initiator", ConnectionClosed)
    assert dead.reason == closed.reason == (f"ABORT TASK of command 0x{itt:x} not answered "
                                            "within 4s")
    assert pair.initiator.closed and pair.initiator.get_timer() is None
    assert not pair.events_of("initiator", CommandAborted)


@pytest.mark.parametrize("response", [TmfResponse.TASK_DOES_NOT_EXIST, TmfResponse.REJECTED])
def test_abort_answered_without_ending_the_task_declares_the_connection_dead(response) -> None:
    pair = watched(WATCH)
    itt = read(pair)
    advance(pair, pair.now + 10.0)
    [request] = pair.tmf_requests
    pair.target.complete_task_management(request, response=response)
    pair.pump()
    [dead] = pair.events_of("initiator", ConnectionDead)
    assert dead.reason == f"ABORT TASK of command 0x{itt:x} answered {response.name}"
    assert pair.initiator.closed
    [closed] = pair.events_of("initiator", ConnectionClosed)
    assert closed.reason == dead.reason


def test_answer_that_overtakes_the_abort_ends_the_command_once() -> None:
    pair = watched(WATCH)
    start = pair.now
    itt = read(pair)
    [task] = pair.pending_tasks
    advance(pair, start + 10.0)
    [request] = pair.tmf_requests
    pair.disk.execute(pair.target, task)  # the answer was already on its way
    pair.pump()
    pair.target.complete_task_management(request, response=TmfResponse.FUNCTION_COMPLETE)
    pair.pump()
    [done] = pair.events_of("initiator", CommandComplete)
    assert done.itt == itt and not pair.events_of("initiator", CommandAborted)
    advance(pair, start + 30.0)
    assert not pair.initiator.closed and len(pair.tmf_requests) == 1


def test_a_task_is_aborted_once_however_long_the_target_takes() -> None:
    pair = watched(InitiatorTimers(nop_interval=None, command_timeout=1.0, abort_timeout=50.0))
    start = pair.now
    first, second = read(pair, 1), read(pair, 2)
    advance(pair, start + 40.0)
    assert sorted(r.referenced_itt for r in pair.tmf_requests) == [first, second]
    assert [e.itt for e in pair.events_of("initiator", CommandTimeout)] == [first, second]


def test_younger_commands_wait_their_own_time() -> None:
    pair = watched(WATCH)
    start = pair.now
    old = read(pair)
    pair.now = start + 5.0
    young = read(pair)
    advance(pair, start + 11.0)
    assert [e.itt for e in pair.events_of("initiator", CommandTimeout)] == [old]
    pair.target.complete_task_management(pair.tmf_requests[0],
                                         response=TmfResponse.FUNCTION_COMPLETE)
    advance(pair, start + 16.0)
    assert [e.itt for e in pair.events_of("initiator", CommandTimeout)] == [old, young]


def test_idle_connection_sends_keepalives_and_stays_up() -> None:
    pair = watched(KEEPALIVE)
    start = pair.now
    advance(pair, start + 1.9)
    assert pair.initiator.keepalives == 0
    advance(pair, start + 10.0)
    assert pair.initiator.keepalives >= 3
    assert len(pair.events_of("initiator", PingComplete)) == pair.initiator.keepalives
    assert not pair.initiator.closed


def test_traffic_keeps_the_keepalive_quiet() -> None:
    pair = watched(KEEPALIVE, auto_complete=True)
    start = pair.now
    for step in range(1, 21):  # a command every 0.5 s: never 2 s of silence
        advance(pair, start + step * 0.5)
        read(pair)
    assert pair.initiator.keepalives == 0 and not pair.initiator.closed


def test_unanswered_keepalive_declares_the_connection_dead() -> None:
    pair = watched(KEEPALIVE)
    start = pair.now
    # login bytes were last heard at the first watch (+0.5 s); 2 s of silence later the
    # keepalive leaves, and the target is silent
    advance(pair, start + 2.5, deliver=False)
    assert pair.initiator.keepalives == 1 and not pair.initiator.closed
    advance(pair, start + 3.4, deliver=False)
    assert not pair.initiator.closed
    advance(pair, start + 3.5, deliver=False)
    [dead] = pair.events_of("initiator", ConnectionDead)
    [closed] = pair.events_of("initiator", ConnectionClosed)
    assert dead.reason == closed.reason == "NOP-Out ping timeout: target did not answer"
    assert pair.initiator.keepalives == 1


def test_a_logout_under_way_stops_the_watch() -> None:
    pair = watched(InitiatorTimers(nop_interval=2.0, command_timeout=10.0))
    start = pair.now
    read(pair)
    pair.initiator.logout()  # never delivered: the logout's own timeout is the adapter's
    advance(pair, start + 60.0, deliver=False)
    assert not pair.events_of("initiator", CommandTimeout) and pair.initiator.keepalives == 0
    assert not pair.initiator.closed and pair.initiator.get_timer() is None


def test_without_timers_nothing_is_watched() -> None:
    pair = watched(NO_TIMERS)
    read(pair)
    assert pair.initiator.get_timer() is None
    pair.initiator.handle_timer(pair.now + 3600.0)
    assert not pair.initiator.closed and not pair.tmf_requests
