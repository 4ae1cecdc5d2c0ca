"""The supervisor's decision core: when a dead child is restarted, and what state it is in."""

from __future__ import annotations

import random
import signal

import pytest

from difs.util.supervise import ChildState, ChildTrack, Exit, RestartPolicy

POLICY = RestartPolicy(base=0.5, cap=30.0, stable_after=60.0, crash_loop_after=5)


def test_backoff_doubles_from_base_to_cap_with_equal_jitter() -> None:
    steps = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [POLICY.delay(n, lambda: 0.0) for n in range(1, 10)] == [s / 2 for s in steps]
    assert [POLICY.delay(n, lambda: 1.0) for n in range(1, 10)] == steps
    assert POLICY.delay(10_000, lambda: 0.999) <= 30.0  # no overflow after a long crash loop
    rng = random.Random(7).random
    for n, step in enumerate(steps, 1):
        drawn = [POLICY.delay(n, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in drawn)
        assert max(drawn) - min(drawn) > step / 4  # spread, not a fixed delay


@pytest.mark.parametrize("kw", [dict(base=0.0), dict(base=5.0, cap=1.0), dict(crash_loop_after=0)])
def test_a_policy_that_cannot_work_is_refused(kw) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kw)


def test_a_child_that_dies_is_restarted_after_its_backoff_and_counted() -> None:
    track = ChildTrack(POLICY, rng=lambda: 1.0)
    track.started(100.0)
    assert track.state is ChildState.RUNNING and track.restarts == 0
    decision = track.exited(112.0, Exit(signal=signal.SIGKILL))
    assert decision.delay == 0.5 and decision.restart_at == 112.5 and decision.uptime == 12.0
    assert decision.state is ChildState.BACKING_OFF and track.last_exit == Exit(signal=9)
    assert not track.due(112.4) and track.due(112.5)
    track.started(112.5)
    assert track.state is ChildState.RUNNING and track.restarts == 1 and track.restart_at is None


def test_quick_exits_in_a_row_back_off_further_and_become_a_crash_loop_still_retried() -> None:
    track = ChildTrack(POLICY, rng=lambda: 1.0)
    now, delays, states = 0.0, [], []
    for _ in range(9):
        track.started(now)
        now += 1.0  # dies a second after each start
        decision = track.exited(now, Exit(code=1))
        delays.append(decision.delay)
        states.append(decision.state)
        now = decision.restart_at
        assert track.due(now)  # never given up on
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert states == [ChildState.BACKING_OFF] * 4 + [ChildState.CRASH_LOOP] * 5
    assert track.restarts == 8 and track.failures == 9


def test_a_child_that_stayed_up_long_enough_starts_again_from_the_first_step() -> None:
    track = ChildTrack(POLICY, rng=lambda: 1.0)
    now = 0.0
    for _ in range(6):
        track.started(now)
        now = track.exited(now + 1.0, Exit(code=1)).restart_at
    assert track.state is ChildState.CRASH_LOOP
    track.started(now)
    assert not track.settled(now + 59.0) and track.failures == 6
    assert track.settled(now + 60.0) and track.failures == 0
    assert not track.settled(now + 61.0)  # reported once
    decision = track.exited(now + 70.0, Exit(code=0))
    assert decision.delay == 0.5 and decision.state is ChildState.BACKING_OFF


def test_a_stable_run_resets_the_backoff_even_when_nobody_looked_in_between() -> None:
    track = ChildTrack(POLICY, rng=lambda: 1.0)
    track.started(0.0)
    track.started(track.exited(1.0, Exit(code=1)).restart_at)
    assert track.exited(500.0, Exit(code=1)).delay == 0.5


def test_a_stopped_child_is_never_due() -> None:
    track = ChildTrack(POLICY, rng=lambda: 0.0)
    track.started(0.0)
    track.exited(1.0, Exit(code=1))
    track.stopped()
    assert track.state is ChildState.STOPPED and not track.due(1e9)


@pytest.mark.parametrize("returncode,text,as_json", [
    (0, "exited with code 0", {"code": 0, "signal": None}),
    (3, "exited with code 3", {"code": 3, "signal": None}),
    (-9, "killed by SIGKILL", {"code": None, "signal": "SIGKILL"}),
    (-15, "killed by SIGTERM", {"code": None, "signal": "SIGTERM"}),
    (-200, "killed by signal 200", {"code": None, "signal": "200"}),
])
def test_how_a_child_ended_is_told_by_exit_code_or_signal(returncode, text, as_json) -> None:
    how = Exit.from_returncode(returncode)
    assert how.describe() == text and how.as_json() == {**as_json, "error": None}


def test_a_child_that_could_not_be_started_says_why() -> None:
    how = Exit(error="[Errno 24] Too many open files")
    assert how.describe() == "could not be started ([Errno 24] Too many open files)"
    assert how.as_json() == {"code": None, "signal": None, "error": "[Errno 24] Too many open files"}
