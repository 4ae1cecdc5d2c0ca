"""The disk's retry rules (``difs.host.recovery.decide``), without sockets: every branch, the
log lines they write (fields in order), the counters they add to, and that every run of
failures ends in EIO after a bounded number of attempts."""

from __future__ import annotations

import errno
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.host.recovery import (
    BUSY_MAX_WAIT,
    ReconnectBackoff,
    MAX_ABORTED,
    MAX_PI_RETRIES,
    MAX_TIMEOUTS,
    MAX_UNIT_ATTENTIONS,
    Action,
    Attempts,
    Completed,
    NoPath,
    PathBroke,
    PiVerifyFailed,
    Tally,
    TimedOut,
    decide,
)
from difs.policy.fast import DATA_DIGEST, HEADER_DIGEST

PATH = "ctl/ch0"
GOOD, CHECK, BUSY = 0x00, 0x02, 0x08
UNIT_ATTENTION, ILLEGAL_REQUEST, ABORTED = 0x06, 0x05, 0x0B


def attempts(**overrides) -> Attempts:
    values = dict(app="db", volume="iqn.x:db LUN 0", target="iqn.x:db", opcode=0x8A,
                  path_wait=2.5)
    values.update(overrides)
    return Attempts(**values)


def aborted(asc: int, ascq: int, information: int | None = None) -> Completed:
    return Completed(CHECK, ABORTED, asc, ascq, information,
                     f"sense key bh asc/ascq {asc:02x}h/{ascq:02x}h")


# -- no path ---------------------------------------------------------------------------


def test_no_path_waits_while_time_is_left() -> None:
    decision = decide(NoPath(0.5, DATA_DIGEST, "ch0 down: refused"), attempts())
    assert decision.action is Action.WAIT_FOR_PATH
    assert decision.tally is Tally.NONE and decision.log is None


@pytest.mark.parametrize("requires, down, need, tail", [
    (HEADER_DIGEST | DATA_DIGEST, "ch0, ch1 down: connection refused", "header digest, data digest",
     "; ch0, ch1 down: connection refused"),
    (0, "", "nothing", ""),
])
def test_no_path_after_the_wait_is_eio_naming_the_requirement(requires, down, need, tail) -> None:
    decision = decide(NoPath(0.0, requires, down), attempts())
    assert decision.action is Action.FAIL and decision.tally is Tally.FAILED
    assert decision.error == f"no available path satisfies db's policy ({need}){tail}"
    assert decision.log.event == "no satisfying path" and decision.log.level == logging.ERROR
    assert decision.log.fields == {"app": "db", "target": "iqn.x:db", "requires": need,
                                   "waited": 2.5, "paths": down}
    assert decide(NoPath(-1.0, requires, down), attempts()).action is Action.FAIL


# -- timeouts and broken paths ---------------------------------------------------------


def test_a_timed_out_command_is_sent_again_then_eio() -> None:
    history = attempts()
    for _ in range(MAX_TIMEOUTS):
        decision = decide(TimedOut("ch0: command 0x5 not answered"), history, PATH)
        assert decision.action is Action.RETRY and decision.tally is Tally.RESENT
        assert decision.log.event == "command aborted after a timeout, re-sending"
        assert decision.log.level == logging.WARNING
        assert list(decision.log.fields) == ["app", "path", "reason"]
    decision = decide(TimedOut("ch0: command 0x9 not answered"), history, PATH)
    assert decision.action is Action.FAIL and decision.tally is Tally.FAILED
    assert decision.error == "ch0: command 0x9 not answered"
    assert decision.log == ("command timed out", logging.ERROR,
                            {"app": "db", "path": PATH, "opcode": "8a", "tries": 4})


def test_a_broken_path_is_given_up_and_the_command_sent_again_every_time() -> None:
    history = attempts()
    for _ in range(20):
        decision = decide(PathBroke("ch0: connection reset"), history, PATH)
        assert decision.action is Action.PATH_DOWN and decision.tally is Tally.RESENT
        assert decision.log == ("path failed, re-sending", logging.WARNING,
                                {"app": "db", "path": PATH, "reason": "ch0: connection reset"})


# -- answers ---------------------------------------------------------------------------


def test_good_is_done() -> None:
    assert decide(Completed(GOOD), attempts(), PATH).action is Action.DONE


def test_unit_attentions_are_sent_again_quietly_then_fail() -> None:
    history = attempts()
    ua = Completed(CHECK, UNIT_ATTENTION, 0x29, 0x00, None, "sense key 6h asc/ascq 29h/00h")
    for _ in range(MAX_UNIT_ATTENTIONS):
        decision = decide(ua, history, PATH)
        assert decision.action is Action.RETRY
        assert decision.tally is Tally.NONE and decision.log is None
    decision = decide(ua, history, PATH)
    assert decision.action is Action.FAIL and decision.error == ua.text
    assert decision.log.event == "command failed"


def test_aborted_command_is_sent_again_elsewhere_three_times() -> None:
    history = attempts()
    crc = aborted(0x47, 0x05)
    for attempt in range(1, MAX_ABORTED + 1):
        decision = decide(crc, history, PATH)
        assert decision.action is Action.RETRY_ELSEWHERE
        assert decision.tally == Tally.RESENT | Tally.ABORTED_RETRY
        assert decision.log == ("command aborted by the controller, re-sending",
                                logging.WARNING,
                                {"app": "db", "path": PATH, "opcode": "8a", "sense": crc.text,
                                 "attempt": attempt})
    decision = decide(crc, history, PATH)
    assert decision.action is Action.FAIL and decision.tally is Tally.FAILED
    assert decision.error == crc.text


@pytest.mark.parametrize("status, key, text", [
    (CHECK, ILLEGAL_REQUEST, "sense key 5h asc/ascq 24h/00h"),
    (CHECK, 0x07, "sense key 7h asc/ascq 74h/71h"),  # DATA PROTECT: a policy refusal
    (0x18, 0, "no sense data"),  # RESERVATION CONFLICT
])
def test_any_other_answer_is_eio_with_its_sense(status, key, text) -> None:
    decision = decide(Completed(status, key, 0x24, 0, None, text), attempts(), PATH)
    assert decision.action is Action.FAIL and decision.tally is Tally.FAILED
    assert decision.error == text
    assert decision.log == ("command failed", logging.WARNING,
                            {"app": "db", "path": PATH, "opcode": "8a",
                             "status": f"{status:02x}", "sense": text})


# -- T10 PI ----------------------------------------------------------------------------


PI_FIELDS = ["app", "volume", "lba", "check", "found_by", "path", "opcode", "action", "detail"]


@pytest.mark.parametrize("ascq, check", [(1, "guard"), (2, "app"), (3, "ref"), (7, "ascq 07h")])
def test_controller_pi_rejection_is_retried_once_elsewhere_then_eio(ascq, check) -> None:
    history = attempts()
    outcome = aborted(0x10, ascq, information=4660)
    first = decide(outcome, history, PATH)
    assert first.action is Action.RETRY_ELSEWHERE and first.tally is Tally.PI_REJECTED
    assert first.log.event == "PI check failed" and first.log.level == logging.WARNING
    assert list(first.log.fields) == PI_FIELDS
    assert first.log.fields["check"] == check and first.log.fields["lba"] == 4660
    assert first.log.fields["found_by"] == "controller"
    assert first.log.fields["action"] == "retrying on another path"
    assert first.log.fields["detail"] == outcome.text
    final = decide(outcome, history, PATH)
    assert final.action is Action.FAIL and final.tally == Tally.PI_REJECTED | Tally.FAILED
    assert final.log.level == logging.ERROR
    assert final.log.fields["action"] == "I/O error to the application"
    assert final.error == (f"db: T10 PI {check} check failed at LBA 4660 (controller), "
                           "after 2 tries")


def test_pi_rejection_does_not_spend_the_aborted_command_budget() -> None:
    history = attempts()
    for _ in range(MAX_ABORTED):
        decide(aborted(0x47, 0x05), history, PATH)
    assert decide(aborted(0x10, 0x01, 8), history, PATH).action is Action.RETRY_ELSEWHERE


def test_host_pi_failure_is_retried_once_elsewhere_then_eio() -> None:
    history = attempts(opcode=0x88)
    outcome = PiVerifyFailed("guard", 12, "guard check failed at LBA 12")
    first = decide(outcome, history, PATH)
    assert first.action is Action.RETRY_ELSEWHERE and first.tally is Tally.PI_ERROR
    assert first.log.fields == {"app": "db", "volume": "iqn.x:db LUN 0", "lba": 12,
                                "check": "guard", "found_by": "host", "path": PATH,
                                "opcode": "88", "action": "retrying on another path",
                                "detail": "guard check failed at LBA 12"}
    final = decide(outcome, history, PATH)
    assert final.action is Action.FAIL and final.tally == Tally.PI_ERROR | Tally.FAILED
    assert final.error == "db: T10 PI guard check failed at LBA 12 (host), after 2 tries"


def test_host_and_controller_pi_failures_share_one_budget() -> None:
    history = attempts()
    assert decide(PiVerifyFailed("ref", 3, "x"), history, PATH).action is Action.RETRY_ELSEWHERE
    final = decide(aborted(0x10, 0x03, 3), history, PATH)
    assert final.action is Action.FAIL
    assert final.error == "db: T10 PI ref check failed at LBA 3 (controller), after 2 tries"
    assert MAX_PI_RETRIES == 1


def test_budgets_are_per_kind() -> None:
    history = attempts()
    ua = Completed(CHECK, UNIT_ATTENTION, 0x29, 0, None, "ua")
    for _ in range(MAX_TIMEOUTS):
        assert decide(TimedOut("t"), history, PATH).action is Action.RETRY
    for _ in range(MAX_UNIT_ATTENTIONS):
        assert decide(ua, history, PATH).action is Action.RETRY
    for _ in range(MAX_ABORTED):
        assert decide(aborted(0x47, 5), history, PATH).action is Action.RETRY_ELSEWHERE
    assert (history.timeouts, history.attentions, history.aborted) == (3, 8, 3)


# -- BUSY / TASK SET FULL -------------------------------------------------------------------


@pytest.mark.parametrize("status", [BUSY, 0x28])
def test_a_full_controller_is_waited_for_ever_longer_then_eio(status) -> None:
    history = attempts(path_wait=1.0)
    delays = []
    while True:
        decision = decide(Completed(status), history, PATH)
        if decision.action is Action.FAIL:
            break
        assert decision.action is Action.RETRY_LATER and decision.tally is Tally.NONE
        assert decision.log is None  # a busy controller is normal: no line per command
        delays.append(decision.delay)
    assert delays[:4] == [0.001, 0.001, 0.002, 0.004]
    assert max(delays) == BUSY_MAX_WAIT
    assert sum(delays) <= 1.0 < sum(delays) + BUSY_MAX_WAIT
    assert decision.tally is Tally.FAILED
    name = "BUSY (08h)" if status == BUSY else "TASK SET FULL (28h)"
    assert decision.error == f"db: the controller answered {name} for {sum(delays):.1f} s"
    assert decision.log.event == "controller stayed busy" and decision.log.level == logging.ERROR
    assert decision.app_errno == errno.EIO


def test_a_busy_answer_then_good_is_done() -> None:
    history = attempts()
    assert decide(Completed(BUSY), history, PATH).action is Action.RETRY_LATER
    assert decide(Completed(GOOD), history, PATH).action is Action.DONE


# -- every run of failures ends --------------------------------------------------------

failures = st.one_of(
    st.builds(TimedOut, st.just("t")),
    st.builds(Completed, st.just(CHECK), st.sampled_from([UNIT_ATTENTION, ABORTED]),
              st.sampled_from([0x10, 0x47, 0x29]), st.integers(0, 3)),
    st.builds(Completed, st.sampled_from([CHECK, BUSY]), st.integers(0, 15)),
    st.builds(PiVerifyFailed, st.sampled_from(["guard", "app", "ref"]), st.integers(0, 9),
              st.just("d")),
)

#: BUSY answers are re-sent while their waits (1 ms doubling to BUSY_MAX_WAIT) stay under
#: path_wait (2.5 s here): 9 doubling steps to 0.256 s, then 9 more of 0.25 s
BUSY_TRIES = 18
BOUND = MAX_TIMEOUTS + MAX_UNIT_ATTENTIONS + MAX_ABORTED + MAX_PI_RETRIES + BUSY_TRIES + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(failures, min_size=BOUND, max_size=BOUND))
def test_failures_end_in_eio_within_a_bounded_number_of_attempts(outcomes) -> None:
    history = attempts()
    for n, outcome in enumerate(outcomes, 1):
        decision = decide(outcome, history, PATH)
        assert decision.action is not Action.DONE
        if decision.action is Action.FAIL:
            assert decision.error and Tally.FAILED in decision.tally
            assert decision.log is not None
            break
        assert Tally.FAILED not in decision.tally
    else:
        raise AssertionError(f"still retrying after {n} failed attempts")


# -- ReconnectBackoff -----------------------------------------------------------------------


def test_login_failures_back_off_exponentially_with_jitter_up_to_the_cap():
    low = ReconnectBackoff(0.2, 5.0, rng=lambda: 0.0)
    assert [low.failed() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5]
    high = ReconnectBackoff(0.2, 5.0, rng=lambda: 0.999999)
    waits = [high.failed() for _ in range(7)]
    assert all(a < b for a, b in zip(waits[:5], waits[1:5]))
    assert max(waits) < 5.0 and waits[-1] == pytest.approx(5.0, rel=1e-5)


def test_a_path_that_drops_right_after_its_login_is_retried_ever_more_slowly():
    """Issue 17 finding 5: a path corrupting every PDU logged in ~225 times a second."""
    b = ReconnectBackoff(0.2, 5.0, stable_after=10.0, rng=lambda: 0.5)
    now, waits = 0.0, []
    for _ in range(8):
        b.up(now)
        now += 0.01  # broke at once
        wait = b.dropped(now)
        waits.append(wait)
        now += wait
    assert waits[0] > 0 and waits == sorted(waits) and waits[-1] == pytest.approx(3.75)
    assert len(waits) / now < 1.0  # fewer than one login a second once backed off


def test_a_path_that_stayed_up_reconnects_at_once_and_forgets_its_history():
    b = ReconnectBackoff(0.2, 5.0, stable_after=10.0, rng=lambda: 0.0)
    for _ in range(5):
        b.failed()
    b.up(100.0)
    assert b.dropped(110.0) == 0.0  # up long enough: reconnect now
    assert b.failed() == 0.1  # and the steps start again from the base
    assert b.dropped(200.0) == 0.2  # dropped without having come up: a failure


@given(events=st.lists(st.tuples(st.booleans(), st.floats(0, 100)), max_size=60),
       r=st.floats(0, 0.999999))
@settings(max_examples=200, deadline=None)
def test_backoff_waits_stay_between_zero_and_the_cap(events, r):
    b, now = ReconnectBackoff(0.2, 5.0, rng=lambda: r), 0.0
    for came_up, lasted in events:
        if came_up:
            b.up(now)
            now += lasted
            wait = b.dropped(now)
        else:
            wait = b.failed()
        assert 0.0 <= wait <= 5.0
        now += wait


def test_backoff_refuses_nonsense():
    with pytest.raises(ValueError):
        ReconnectBackoff(0, 5)
    with pytest.raises(ValueError):
        ReconnectBackoff(6, 5)


# -- ResendBudget ----------------------------------------------------------------------------


def test_the_first_resends_go_at_once_then_about_rate_a_second():
    """Issue 17 finding 5: a corrupting path made the host re-send 7,000 commands a second.
    A transient error is re-sent at once; a flood is held to the budget's rate."""
    from difs.host.recovery import ResendBudget

    b = ResendBudget(rate=50.0, burst=10, hold=10.0, rng=lambda: 0.0)
    now = 0.0
    assert [b.fault(now) for _ in range(10)] == [0.0] * 10  # the burst: at once
    assert not b.degraded(now)
    # 1,000 faults in the same instant: each waits its turn, one token every 1/50 s
    waits = [b.fault(now) for _ in range(1000)]
    assert waits == sorted(waits) and waits[0] == pytest.approx(1 / 50)
    assert waits[-1] == pytest.approx(1000 / 50)  # 1,000 re-sends take 20 s, not 0.14
    assert b.degraded(now) and b.degraded(now + 10.0 - 1e-9) and not b.degraded(now + 10.0)


def test_a_budget_refills_and_a_quiet_path_is_no_longer_degraded():
    from difs.host.recovery import ResendBudget

    b = ResendBudget(rate=50.0, burst=10, hold=10.0, rng=lambda: 0.0)
    for _ in range(11):
        b.fault(0.0)
    assert b.degraded(1.0)
    assert b.fault(60.0) == 0.0  # refilled long since: at once again
    assert not b.degraded(60.0)


@given(times=st.lists(st.floats(0, 30), min_size=1, max_size=400), r=st.floats(0, 0.999999))
@settings(max_examples=100, deadline=None)
def test_resends_never_exceed_burst_plus_rate_times_time(times, r):
    """Whatever the faults, the re-sends released by any time t are at most burst + rate*t."""
    from difs.host.recovery import ResendBudget

    b = ResendBudget(rate=50.0, burst=10, hold=10.0, rng=lambda: r)
    released = sorted(t + b.fault(t) for t in sorted(times))
    for i, t in enumerate(released):
        assert i + 1 <= 10 + 50.0 * t + 1e-6


def test_resend_budget_refuses_nonsense():
    from difs.host.recovery import ResendBudget

    for bad in (dict(rate=0), dict(burst=0), dict(hold=-1)):
        with pytest.raises(ValueError):
            ResendBudget(**bad)


@pytest.mark.parametrize(("key", "asc", "ascq", "expected"), [
    (0x7, 0x27, 0x07, errno.ENOSPC),  # SPACE ALLOCATION FAILED WRITE PROTECT: the pool is full
    (0x7, 0x27, 0x00, errno.EPERM),  # WRITE PROTECTED
    (0x3, 0x0C, 0x00, errno.EIO),  # MEDIUM ERROR, WRITE ERROR
    (0x5, 0x24, 0x00, errno.EIO),
])
def test_a_failed_command_gives_the_application_the_error_that_says_why(key, asc, ascq,
                                                                         expected) -> None:
    decision = decide(Completed(CHECK, key, asc, ascq, None, "sense"), attempts(), PATH)
    assert decision.action is Action.FAIL
    assert decision.app_errno == expected
