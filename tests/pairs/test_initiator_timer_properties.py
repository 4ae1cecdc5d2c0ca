"""Property tests over the initiator's clocks, against the target core in memory.

Hypothesis draws the timers and a sequence of steps — submit a command, let time pass (the
initiator's timers run as an adapter runs them: ``handle_timer`` at each ``get_timer``), move
the bytes, have the target's adapter answer a task or a task management request (any answer)
— and the invariants hold after every step:

* ``get_timer()`` after ``handle_timer(now)`` is never in the past;
* a command is aborted (``CommandTimeout``) at most once, never before its time, and no
  command waits past ``command_timeout`` + one tick without being aborted;
* the target sees at most one ABORT TASK per command;
* every command ends at most once (complete, aborted or rejected), ``timed_out`` only after a
  ``CommandTimeout``; when the connection survives and the target answers everything, every
  command has ended exactly once;
* ``ConnectionDead`` is followed by ``ConnectionClosed`` with the same reason.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from difs.iscsi.constants import TmfResponse
from difs.iscsi.events import ConnectionClosed, TaskManagementRequest
from difs.iscsi.initiator_events import (
    CommandAborted,
    CommandComplete,
    CommandRejected,
    CommandTimeout,
    ConnectionDead,
)
from difs.iscsi.initiator_timers import InitiatorTimers

from .helpers import BLOCK, ConnectionPair, read10

RESPONSES = [TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST,
             TmfResponse.REJECTED]

timers = st.builds(
    InitiatorTimers,
    nop_interval=st.sampled_from([None, 0.0, 1.0, 2.5]),
    nop_timeout=st.sampled_from([0.5, 2.0]),
    command_timeout=st.sampled_from([None, 1.0, 3.0]),
    abort_timeout=st.sampled_from([0.5, 2.0]),
)

steps = st.lists(st.one_of(
    st.tuples(st.just("submit")),
    st.tuples(st.just("advance"), st.integers(0, 120).map(lambda n: n * 0.05)),
    st.tuples(st.just("pump")),
    st.tuples(st.just("complete"), st.integers(0, 7)),
    st.tuples(st.just("tmf"), st.integers(0, 7), st.sampled_from(RESPONSES)),
), max_size=60)


class Run:
    """One drawn scenario and the bookkeeping its invariants need."""

    def __init__(self, timers: InitiatorTimers) -> None:
        self.timers = timers
        self.pair = ConnectionPair(timers=timers, auto_complete=False)
        self.pair.pump()
        self.start = self.pair.now
        self.submitted: dict[int, float] = {}
        self.ended: Counter[int] = Counter()
        self.timed_out: Counter[int] = Counter()
        self.seen = 0

    @property
    def initiator(self):
        return self.pair.initiator

    def step(self, step: tuple) -> None:
        pair = self.pair
        kind = step[0]
        if kind == "submit":
            itt = self.initiator.submit_command(0, read10(0, 1), expected_in_length=BLOCK,
                                                now=pair.now)
            self.submitted[itt] = pair.now
        elif kind == "advance":
            self.advance(pair.now + step[1])
        elif kind == "pump":
            pair.pump()
        elif kind == "complete" and pair.pending_tasks:
            task = pair.pending_tasks.pop(step[1] % len(pair.pending_tasks))
            pair.disk.execute(pair.target, task)  # ignored by the core if aborted meanwhile
        elif kind == "tmf" and pair.tmf_requests:
            request = pair.tmf_requests.pop(step[1] % len(pair.tmf_requests))
            pair.target.complete_task_management(request, response=step[2])
        self.look()

    def advance(self, until: float, *, deliver: bool = False) -> None:
        """Run the initiator's timers up to ``until``; ``deliver``: move the bytes after each
        call (else they wait for a "pump" step: a target slow to answer)."""
        pair, initiator = self.pair, self.initiator
        while (when := initiator.get_timer()) is not None and when <= until:
            pair.now = max(pair.now, when)
            initiator.handle_timer(pair.now)
            after = initiator.get_timer()
            assert after is None or after > pair.now
            if deliver:
                pair.pump()
            else:
                pair.initiator_events.extend(iter(initiator.next_event, None))
            self.look()
        pair.now = max(pair.now, until)
        self.check_nothing_overdue()

    def look(self) -> None:
        events = self.pair.initiator_events
        for event in events[self.seen:]:
            kind = type(event)
            if kind is CommandTimeout:
                assert self.timed_out[event.itt] == 0, "aborted twice"
                assert self.pair.now - self.submitted[event.itt] >= self.timers.command_timeout
                self.timed_out[event.itt] += 1
            elif kind in (CommandComplete, CommandAborted, CommandRejected):
                self.ended[event.itt] += 1
                assert self.ended[event.itt] == 1, "ended twice"
                if kind is CommandAborted:
                    assert event.timed_out and self.timed_out[event.itt] == 1
        self.seen = len(events)
        aborts = Counter(e.referenced_itt for e in self.pair.target_events
                         if isinstance(e, TaskManagementRequest))
        assert all(n == 1 for n in aborts.values())
        assert self.initiator.commands_timed_out == sum(self.timed_out.values())

    def check_nothing_overdue(self) -> None:
        timers = self.timers
        if self.initiator.closed or not timers.command_timeout:
            return
        now = self.pair.now
        for itt, issued in self.submitted.items():
            if not self.ended[itt] and not self.timed_out[itt]:
                assert now - issued < timers.command_timeout + timers.tick + 1e-9

    def settle(self) -> None:
        """The target answers everything: every command ends, exactly once."""
        pair = self.pair
        for _ in range(100):
            pair.pump()
            if not (pair.pending_tasks or pair.tmf_requests):
                break
            while pair.pending_tasks:
                pair.disk.execute(pair.target, pair.pending_tasks.pop(0))
            while pair.tmf_requests:
                pair.target.complete_task_management(
                    pair.tmf_requests.pop(0), response=TmfResponse.FUNCTION_COMPLETE)
        self.look()
        if not self.initiator.closed:
            assert self.initiator.outstanding == 0
            assert all(self.ended[itt] == 1 for itt in self.submitted)

    def check_deaths(self) -> None:
        events = self.pair.initiator_events
        for i, event in enumerate(events):
            if isinstance(event, ConnectionDead):
                after = events[i + 1]
                assert isinstance(after, ConnectionClosed) and after.reason == event.reason


@settings(max_examples=300, deadline=None)
@given(timers=timers, steps=steps)
def test_initiator_timer_invariants(timers: InitiatorTimers, steps: list[tuple]) -> None:
    run = Run(timers)
    for step in steps:
        if run.initiator.closed:
            break
        run.step(step)
    run.settle()
    run.check_deaths()


@settings(max_examples=100, deadline=None)
@given(timers=timers, gaps=st.lists(st.integers(1, 60).map(lambda n: n * 0.05), max_size=40))
def test_a_target_that_answers_keeps_the_connection(timers: InitiatorTimers,
                                                    gaps: list[float]) -> None:
    """A target that answers at once (commands, pings, aborts) is never declared dead."""
    run = Run(timers)
    pair = run.pair
    pair.auto_complete = True
    for gap in gaps:
        itt = run.initiator.submit_command(0, read10(0, 1), expected_in_length=BLOCK,
                                           now=pair.now)
        run.submitted[itt] = pair.now
        pair.pump()
        run.advance(pair.now + gap, deliver=True)
        run.look()
    assert not run.initiator.closed
    assert not any(isinstance(e, ConnectionDead) for e in pair.initiator_events)
    assert all(run.ended[itt] == 1 for itt in run.submitted)
