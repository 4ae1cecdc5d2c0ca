"""What an application's disk does after one attempt of a SCSI command: the retry rules.

:func:`decide` is pure: given the outcome of one attempt and the command's attempts so far
(:class:`Attempts`, which it updates), it returns a :class:`Decision` — done, send again (on
any satisfying path, or on another one), give up on the path and send again, wait for a
path, or fail with EIO — with the log line to write and the disk's counters to add to.
``AppDisk._run`` (:mod:`difs.host.disk`) only awaits and carries decisions out.

The rules (one function per outcome):

========================  ============================================================
outcome                   decision
========================  ============================================================
no satisfying path        wait for one while ``path_wait`` lasts, then EIO naming the
                          unmet requirement and why the paths are down
timed out (aborted)       it did not run and the path works: send again, on any path,
                          up to 3 times, then EIO
path failed               the path is given up (the group reconnects it); send again
completed GOOD            done
UNIT ATTENTION            reported by the first command of a new session: send again
                          (up to 8 times)
BUSY, TASK SET FULL      the controller is momentarily full (its write buffer or a
                          QoS queue): send again after a short wait, doubling from
                          1 ms to 250 ms, while the waits add up to less than
                          ``path_wait``; then EIO
PI check failed (host's   retry once on another path (the same when it is the only
check, or the controller  one), then EIO naming the application, the LBA and the
ABORTED COMMAND 10h/xx)   check — never silently wrong data
other ABORTED COMMAND     e.g. 47h/05h, a Data-Out failed its digest (nothing was
                          stored): send again on another path, up to 3 times
anything else             EIO with the sense
========================  ============================================================

A re-send after a digest error or a PI check failure waits for its path's
:class:`ResendBudget` (at once while the path has tokens; then about ``rate`` a second),
and a path that exhausts its budget is *degraded*: selection prefers another satisfying
path. A path that drops right after its login logs in again ever more slowly
(:class:`ReconnectBackoff`).
"""

from __future__ import annotations

import enum
import errno
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from difs.policy.fast import describe_flags
from difs.sam.sense import (
    ABORTED_COMMAND,
    ASC_PI_CHECK,
    ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    DATA_PROTECT,
    PI_CHECK_BY_ASCQ,
    UNIT_ATTENTION,
)
from difs.sam.status import BUSY, CHECK_CONDITION, GOOD, TASK_SET_FULL, status_text

#: UNIT ATTENTIONs a command is sent again after (a new session's first command reports one).
MAX_UNIT_ATTENTIONS = 8
#: A command the controller aborted for not answering in time is sent again this many times.
MAX_TIMEOUTS = 3
#: A command answered ABORTED COMMAND (not a PI check) is sent again this many times.
MAX_ABORTED = 3
#: A PI check failure (host or controller) is retried this many times, then EIO.
MAX_PI_RETRIES = 1
#: The first and the longest wait before a command answered BUSY or TASK SET FULL goes again.
BUSY_FIRST_WAIT = 0.001
BUSY_MAX_WAIT = 0.25



# -- outcomes of one attempt ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoPath:
    """No path satisfying the requirement (``requires``: its flags) was available;
    ``remaining`` seconds are left of the I/O's ``path_wait``, ``down`` says why paths are
    down."""

    remaining: float
    requires: int
    down: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The command was not answered in time and the controller confirmed its abort."""

    reason: str


@dataclass(frozen=True, slots=True)
class PathBroke:
    """The path failed while the command was in flight."""

    reason: str


@dataclass(frozen=True, slots=True)
class Completed:
    """The controller answered: its status and, read from the sense data, the sense key,
    ASC/ASCQ, INFORMATION (None when absent) and the sense as one line of text."""

    status: int
    key: int = 0
    asc: int = 0
    ascq: int = 0
    information: int | None = None
    text: str = "no sense data"


@dataclass(frozen=True, slots=True)
class PiVerifyFailed:
    """The host's PI check of the data read failed (``check``: guard, app or ref)."""

    check: str
    lba: int | None
    detail: str


Outcome = NoPath | TimedOut | PathBroke | Completed | PiVerifyFailed


# -- decisions ---------------------------------------------------------------------------


class Action(enum.Enum):
    DONE = "done"  # the result is the answer
    RETRY = "retry"  # send again on any satisfying path
    RETRY_ELSEWHERE = "retry elsewhere"  # send again, on another path when there is one
    PATH_DOWN = "path down"  # give the path up (the group reconnects it), send again
    WAIT_FOR_PATH = "wait for a path"  # wait (at most NoPath.remaining) and look again
    RETRY_LATER = "retry later"  # wait Decision.delay seconds, then send again on any path
    FAIL = "fail"  # an error to the application (Decision.app_errno, usually EIO); .error says why


class Tally(enum.Flag):
    """The disk's counters a decision adds one to."""

    NONE = 0
    RESENT = enum.auto()
    FAILED = enum.auto()
    ABORTED_RETRY = enum.auto()
    PI_ERROR = enum.auto()  # a PI check failed at the host
    PI_REJECTED = enum.auto()  # the controller reported a PI check failure


class LogLine(NamedTuple):
    event: str
    level: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    tally: Tally = Tally.NONE
    log: LogLine | None = None
    error: str | None = None  # FAIL: the message for the application
    app_errno: int = errno.EIO  # FAIL: the error the application gets (an NBD wire error)
    delay: float = 0.0  # RETRY_LATER: seconds to wait first


_DONE = Decision(Action.DONE)
_RETRY = Decision(Action.RETRY)
_WAIT = Decision(Action.WAIT_FOR_PATH)


class Attempts:
    """One command's attempts so far, and what its log lines name. Built on the first
    attempt that did not simply succeed; :func:`decide` counts into it."""

    __slots__ = ("app", "volume", "target", "opcode", "path_wait", "attentions", "timeouts",
                 "aborted", "pi_failures", "busy_waited")

    def __init__(self, *, app: str, volume: str, target: str, opcode: int,
                 path_wait: float) -> None:
        self.app = app
        self.volume = volume
        self.target = target
        self.opcode = f"{opcode:02x}"
        self.path_wait = path_wait
        self.attentions = 0
        self.timeouts = 0
        self.aborted = 0
        self.pi_failures = 0
        self.busy_waited = 0.0


def decide(outcome: Outcome, attempts: Attempts, path: str = "") -> Decision:
    """What to do after ``outcome`` of an attempt on ``path`` (its name; "" for NoPath)."""
    return _RULES[type(outcome)](outcome, attempts, path)


def _no_path(outcome: NoPath, a: Attempts, _path: str) -> Decision:
    if outcome.remaining > 0:
        return _WAIT
    need = ", ".join(describe_flags(outcome.requires)) or "nothing"
    down = outcome.down
    return Decision(
        Action.FAIL, Tally.FAILED,
        LogLine("no satisfying path", logging.ERROR,
                {"app": a.app, "target": a.target, "requires": need, "waited": a.path_wait,
                 "paths": down}),
        f"no available path satisfies {a.app}'s policy ({need})"
        + (f"; {down}" if down else ""))


def _timed_out(outcome: TimedOut, a: Attempts, path: str) -> Decision:
    """Aborted at the controller: it did not run and the path works; send it again."""
    a.timeouts += 1
    if a.timeouts > MAX_TIMEOUTS:
        return Decision(Action.FAIL, Tally.FAILED,
                        LogLine("command timed out", logging.ERROR,
                                {"app": a.app, "path": path, "opcode": a.opcode,
                                 "tries": a.timeouts}),
                        outcome.reason)
    return Decision(Action.RETRY, Tally.RESENT,
                    LogLine("command aborted after a timeout, re-sending", logging.WARNING,
                            {"app": a.app, "path": path, "reason": outcome.reason}))


def _path_broke(outcome: PathBroke, a: Attempts, path: str) -> Decision:
    return Decision(Action.PATH_DOWN, Tally.RESENT,
                    LogLine("path failed, re-sending", logging.WARNING,
                            {"app": a.app, "path": path, "reason": outcome.reason}))


def _completed(outcome: Completed, a: Attempts, path: str) -> Decision:
    status = outcome.status
    if status == GOOD:
        return _DONE
    if status in (BUSY, TASK_SET_FULL):
        return _busy(outcome, a, path)
    if status == CHECK_CONDITION:
        key = outcome.key
        if key == UNIT_ATTENTION and a.attentions < MAX_UNIT_ATTENTIONS:
            # A new session's first command reports power-on/reset: the condition is
            # cleared by reporting it; send the command again.
            a.attentions += 1
            return _RETRY
        if key == ABORTED_COMMAND and outcome.asc == ASC_PI_CHECK:
            ascq = outcome.ascq
            return _pi_failed(a, path, PI_CHECK_BY_ASCQ.get(ascq, f"ascq {ascq:02x}h"),
                              outcome.information, "controller", outcome.text,
                              Tally.PI_REJECTED)
        if key == ABORTED_COMMAND and a.aborted < MAX_ABORTED:
            # e.g. 47h/05h: a Data-Out failed its digest; nothing was stored
            a.aborted += 1
            return Decision(Action.RETRY_ELSEWHERE, Tally.RESENT | Tally.ABORTED_RETRY,
                            LogLine("command aborted by the controller, re-sending",
                                    logging.WARNING,
                                    {"app": a.app, "path": path, "opcode": a.opcode,
                                     "sense": outcome.text, "attempt": a.aborted}))
    return Decision(Action.FAIL, Tally.FAILED,
                    LogLine("command failed", logging.WARNING,
                            {"app": a.app, "path": path, "opcode": a.opcode,
                             "status": f"{status:02x}", "sense": outcome.text}),
                    outcome.text, _app_errno(outcome))


def _busy(outcome: Completed, a: Attempts, path: str) -> Decision:
    """The controller is momentarily full: wait a little longer each time, then send again;
    EIO once the waits would add up to ``path_wait``."""
    waited = a.busy_waited
    delay = min(BUSY_MAX_WAIT, max(BUSY_FIRST_WAIT, waited))  # doubles the total each time
    if waited + delay > a.path_wait:
        return Decision(Action.FAIL, Tally.FAILED,
                        LogLine("controller stayed busy", logging.ERROR,
                                {"app": a.app, "path": path, "opcode": a.opcode,
                                 "status": status_text(outcome.status),
                                 "waited": round(waited, 3)}),
                        f"{a.app}: the controller answered {status_text(outcome.status)} for "
                        f"{waited:.1f} s")
    a.busy_waited = waited + delay
    return Decision(Action.RETRY_LATER, Tally.NONE, None, delay=delay)


def _app_errno(outcome: Completed) -> int:
    """The error a failed command gives the application: ENOSPC when the controller ran out
    of space (DATA PROTECT 27h/07h, what a thin-provisioned array answers), EPERM for any other
    write protection, EIO for everything else."""
    if outcome.status == CHECK_CONDITION and outcome.key == DATA_PROTECT:
        if (outcome.asc, outcome.ascq) == ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT:
            return errno.ENOSPC
        return errno.EPERM
    return errno.EIO


def _pi_verify_failed(outcome: PiVerifyFailed, a: Attempts, path: str) -> Decision:
    return _pi_failed(a, path, outcome.check, outcome.lba, "host", outcome.detail,
                      Tally.PI_ERROR)


def _pi_failed(a: Attempts, path: str, check: str, lba: int | None, found_by: str,
               detail: str, tally: Tally) -> Decision:
    """Retry a PI check failure on another path, EIO once it has been retried enough."""
    a.pi_failures += 1
    final = a.pi_failures > MAX_PI_RETRIES
    line = LogLine("PI check failed", logging.ERROR if final else logging.WARNING,
                   {"app": a.app, "volume": a.volume, "lba": lba, "check": check,
                    "found_by": found_by, "path": path, "opcode": a.opcode,
                    "action": "I/O error to the application" if final
                    else "retrying on another path",
                    "detail": detail})
    if final:
        return Decision(Action.FAIL, tally | Tally.FAILED, line,
                        f"{a.app}: T10 PI {check} check failed at LBA {lba} ({found_by}), "
                        f"after {a.pi_failures} tries")
    return Decision(Action.RETRY_ELSEWHERE, tally, line)


_RULES: dict[type, Any] = {
    NoPath: _no_path,
    TimedOut: _timed_out,
    PathBroke: _path_broke,
    Completed: _completed,
    PiVerifyFailed: _pi_verify_failed,
}


# -- when a path logs in again ----------------------------------------------------------------


class ReconnectBackoff:
    """When a path logs in again after its login failed or its connection dropped (pure).

    Exponential from ``base`` to ``cap`` seconds with equal jitter (each wait is drawn between
    half the step and the step, so paths that broke together do not log in together). A path
    that drops less than ``stable_after`` seconds after it came up counts as a failure: a path
    that logs in and breaks at once (a link corrupting every PDU, a target that drops the
    session) is retried ever more slowly, not hundreds of times a second. A path that stayed
    up that long starts again from nothing: its first reconnect is immediate.
    ``rng`` returns a float in [0, 1) (``random.random``; fixed in tests).
    """

    __slots__ = ("base", "cap", "stable_after", "_step", "_up_at", "_rng")

    def __init__(self, base: float, cap: float, *, stable_after: float = 10.0,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff must satisfy 0 < base <= cap, not {base}, {cap}")
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self._step = base
        self._up_at: float | None = None
        self._rng = rng

    def failed(self) -> float:
        """A login failed: seconds to wait before the next one."""
        step = self._step
        self._step = min(step * 2, self.cap)
        return step / 2 + self._rng() * step / 2

    def up(self, now: float) -> None:
        """The path logged in at ``now``."""
        self._up_at = now

    def dropped(self, now: float) -> float:
        """The path's connection ended at ``now``: seconds to wait before logging in again."""
        up_at, self._up_at = self._up_at, None
        if up_at is not None and now - up_at >= self.stable_after:
            self._step = self.base
            return 0.0
        return self.failed()


# -- when a command is sent again after a fault on its path -----------------------------------


class ResendBudget:
    """How soon a command is sent again after a fault its path caused, and whether that path
    is *degraded* (pure; one per path).

    A fault is a digest error (ABORTED COMMAND 47h/05h, or the connection dropped for a
    header digest), or a PI check that failed. Each re-send after one takes a token from
    the path's bucket: ``burst`` tokens, refilled at ``rate`` a second. With a token the
    command goes again at once — a transient single-bit error costs nothing. Without one it
    waits its turn for the next token, plus up to half a token's interval of jitter (the
    commands that failed together do not come back together): however often a path
    corrupts, the re-sends it causes stay under about ``rate`` a second, not thousands.
    Every command's own attempts stay bounded by :func:`decide`, so a path that corrupts
    everything ends in EIO, never in wrong data.

    A path that runs out of tokens is degraded for ``hold`` seconds from its last fault:
    path selection prefers another *satisfying* path meanwhile (never a weaker one), and
    uses the degraded one only when it is the only one that satisfies.
    ``rng`` returns a float in [0, 1) (``random.random``; fixed in tests).
    """

    __slots__ = ("rate", "burst", "hold", "_tokens", "_at", "_degraded_until", "_rng")

    def __init__(self, *, rate: float = 50.0, burst: int = 10, hold: float = 10.0,
                 rng: Callable[[], float] = random.random) -> None:
        if rate <= 0 or burst < 1 or hold < 0:
            raise ValueError(f"resend budget needs rate > 0, burst >= 1, hold >= 0, not "
                             f"{rate}, {burst}, {hold}")
        self.rate, self.burst, self.hold = rate, burst, hold
        self._tokens = float(burst)
        self._at = float("-inf")
        self._degraded_until = float("-inf")
        self._rng = rng

    def fault(self, now: float) -> float:
        """A command failed on this path at ``now``: seconds it waits before it is sent
        again (0: at once)."""
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens = tokens - 1  # below 0: taken from the future, in turn
        if tokens >= 1:
            return 0.0
        self._degraded_until = now + self.hold
        return (1 - tokens) / self.rate + self._rng() * 0.5 / self.rate

    def degraded(self, now: float) -> bool:
        return now < self._degraded_until

    def degraded_until(self) -> float:
        return self._degraded_until
