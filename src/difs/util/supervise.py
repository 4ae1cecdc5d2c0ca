"""Supervising child processes: a dead child is reported and restarted with backoff.

Two layers, like the protocol code:

* the **decision core** (pure: time and randomness come in as arguments) —
  :class:`RestartPolicy` says how long to wait, :class:`ChildTrack` keeps one child's
  bookkeeping (its :class:`ChildState`, restarts, consecutive quick exits) and turns an
  :class:`Exit` into a :class:`Restart` decision;
* the **process layer** — :class:`Supervisor` starts each :class:`ChildSpec` as a process
  (its own session, umask 077, output appended to a 0600 log), notices deaths, reports them
  (one line naming the child, its exit code or signal and how long it was up, then the tail
  of its log), restarts each with exactly the same arguments and environment when its
  backoff is over, writes a small JSON status file, and stops them all (SIGTERM, then
  SIGKILL of the process group after a grace period). On Linux each child also gets SIGTERM
  from the kernel when the supervisor dies without stopping them (``PR_SET_PDEATHSIG``: a
  ``kill -9`` of ``difs up`` leaves no orphan serving on its ports).

Backoff: exponential from ``base`` doubling to ``cap`` with equal jitter (each wait is drawn
between half the step and the step, so children that died together do not come back
together). A child that dies within ``stable_after`` seconds of its start counts as a quick
exit; ``crash_loop_after`` quick exits in a row make it *crash-looping* — still retried, at
most ``cap`` seconds apart, and shown as such. A child that stays up ``stable_after``
seconds starts again from nothing.

The supervisor is driven by its owner's loop (``check()`` every fraction of a second): it
has no thread of its own, so a stop request handled between two ``check()`` calls is never
mistaken for a child's death.
"""

from __future__ import annotations

import ctypes
import enum
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent thread ends


# -- the decision core (pure) ------------------------------------------------------------------


class ChildState(enum.StrEnum):
    RUNNING = "running"
    BACKING_OFF = "backing-off"  # died; restarted when its backoff is over
    CRASH_LOOP = "crash-loop"  # died quickly again and again; still restarted, at most cap apart
    STOPPED = "stopped"  # stopped by the supervisor's owner: never restarted


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 0.5
    cap: float = 30.0
    stable_after: float = 60.0
    crash_loop_after: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff must satisfy 0 < base <= cap, not {self.base}, {self.cap}")
        if self.crash_loop_after < 1:
            raise ValueError(f"crash_loop_after must be at least 1, not {self.crash_loop_after}")

    def delay(self, failures: int, rng: Callable[[], float]) -> float:
        """Seconds before restarting a child after its ``failures``-th quick exit in a row."""
        step = min(self.base * 2 ** min(failures - 1, 64), self.cap)
        return step / 2 + rng() * step / 2


@dataclass(frozen=True)
class Exit:
    """How a child ended: its exit code, the signal that killed it, or why it could not start."""

    code: int | None = None
    signal: int | None = None
    error: str | None = None  # it could not be started (the OSError's text)

    @classmethod
    def from_returncode(cls, returncode: int) -> Exit:
        return cls(signal=-returncode) if returncode < 0 else cls(code=returncode)

    def describe(self) -> str:
        if self.error is not None:
            return f"could not be started ({self.error})"
        if self.signal is not None:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exited with code {self.code}"

    def as_json(self) -> dict[str, int | str | None]:
        name = None
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
        return {"code": self.code, "signal": name, "error": self.error}


@dataclass(frozen=True)
class Restart:
    """What to do about a child that died: restart it after ``delay`` seconds."""

    delay: float
    restart_at: float
    failures: int  # quick exits in a row, this one included
    state: ChildState
    uptime: float | None  # how long it had been up (None: never started)


class ChildTrack:
    """One child's restart bookkeeping. ``now`` is a monotonic clock reading;
    ``rng`` returns a float in [0, 1) (``random.random``; fixed in tests)."""

    __slots__ = ("policy", "state", "restarts", "failures", "started_at", "restart_at",
                 "last_exit", "exited_at", "_rng")

    def __init__(self, policy: RestartPolicy, rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rng = rng
        self.state = ChildState.STOPPED
        self.restarts = 0  # times restarted after a death
        self.failures = 0  # quick exits in a row
        self.started_at: float | None = None
        self.restart_at: float | None = None
        self.last_exit: Exit | None = None
        self.exited_at: float | None = None

    def started(self, now: float) -> None:
        if self.state in (ChildState.BACKING_OFF, ChildState.CRASH_LOOP):
            self.restarts += 1
        self.state = ChildState.RUNNING
        self.started_at, self.restart_at = now, None

    def settled(self, now: float) -> bool:
        """Forget past quick exits once the child has stayed up ``stable_after`` seconds
        (True when that changed something)."""
        if (self.state is ChildState.RUNNING and self.failures and self.started_at is not None
                and now - self.started_at >= self.policy.stable_after):
            self.failures = 0
            return True
        return False

    def exited(self, now: float, how: Exit) -> Restart:
        """The child died at ``now``: when to restart it, and what state it is in meanwhile."""
        uptime = None if self.started_at is None else now - self.started_at
        self.settled(now)
        self.failures += 1
        delay = self.policy.delay(self.failures, self._rng)
        self.state = (ChildState.CRASH_LOOP if self.failures >= self.policy.crash_loop_after
                      else ChildState.BACKING_OFF)
        self.restart_at, self.last_exit, self.exited_at = now + delay, how, now
        self.started_at = None
        return Restart(delay, now + delay, self.failures, self.state, uptime)

    def due(self, now: float) -> bool:
        """Is it time to restart this child?"""
        return self.restart_at is not None and now >= self.restart_at

    def stopped(self) -> None:
        self.state, self.restart_at, self.started_at = ChildState.STOPPED, None, None


# -- the process layer ------------------------------------------------------------------------


@dataclass
class ChildSpec:
    """How to start a child — kept as is, so every restart is identical to the first start."""

    name: str
    argv: Sequence[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Child:
    spec: ChildSpec
    track: ChildTrack
    popen: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log(self) -> Path:
        return self.spec.log

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.returncode is None else None


class Supervisor:
    """Starts, watches, restarts and stops child processes (see the module docstring).

    ``say`` gets one message per event (a death with its log tail, a restart); the status
    file (``status_file``, JSON, 0600, replaced atomically) holds every child's pid, state,
    restarts and last exit.
    """

    def __init__(self, *, status_file: Path, say: Callable[[str], None],
                 policy: RestartPolicy = RestartPolicy(), rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic, tail_lines: int = 10) -> None:
        self.status_file, self.say, self.policy = status_file, say, policy
        self._rng, self._clock, self._tail_lines = rng, clock, tail_lines
        self.children: list[Child] = []
        self.state = "running"

    def start(self, spec: ChildSpec) -> Child:
        child = Child(spec, ChildTrack(self.policy, self._rng))
        self.children.append(child)
        self._spawn(child)
        return child

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def check(self) -> None:
        """Reap the children that died (report, schedule their restart) and restart those whose
        backoff is over. Call it often; it does nothing once ``stop()`` began."""
        if self.state != "running":
            return
        now, changed = self._clock(), False
        for child in self.children:
            if child.popen is not None and child.popen.poll() is not None:
                self._died(child, now)
                changed = True
            elif child.popen is None and child.track.due(now):
                self._restart(child, now)
            else:
                changed |= child.track.settled(now)
        if changed:
            self.write_status()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every running child (last started first), SIGKILL its process group after
        ``grace`` seconds; none is restarted from here on."""
        self.state = "stopping"
        self.write_status()
        running = [c for c in reversed(self.children) if c.pid is not None]
        for child in running:
            child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(child.popen.pid)
                child.popen.wait(5)
        for child in self.children:
            child.track.stopped()
        self.state = "stopped"
        self.write_status()

    # -- internals ---------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        fd = os.open(spec.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a log from an older run keeps its mode through O_CREAT
            child.popen = subprocess.Popen(
                list(spec.argv), stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **spec.env}, start_new_session=True, umask=0o077,
                preexec_fn=_die_with(os.getpid()))
        finally:
            os.close(fd)
        child.track.started(self._clock())
        self.write_status()

    def _restart(self, child: Child, now: float) -> None:
        try:
            self._spawn(child)
        except OSError as exc:  # no descriptors, no memory, a full disk: try again later
            decision = child.track.exited(now, Exit(error=str(exc)))
            self.say(f"{child.name} {child.track.last_exit.describe()}; trying again in "
                     f"{decision.delay:.1f}s")
            self.write_status()
            return
        self.say(f"{child.name} restarted (pid {child.popen.pid}, restart "
                 f"{child.track.restarts})")

    def _died(self, child: Child, now: float) -> None:
        how = Exit.from_returncode(child.popen.returncode)
        pid, child.popen = child.popen.pid, None
        decision = child.track.exited(now, how)
        up = "" if decision.uptime is None else f" after {decision.uptime:.1f}s up"
        loop = (f"; crash-looping ({decision.failures} quick exits in a row)"
                if decision.state is ChildState.CRASH_LOOP else "")
        tail = log_tail(child.log, self._tail_lines)
        self.say(f"{child.name} (pid {pid}) {how.describe()}{up}{loop}; restarting it in "
                 f"{decision.delay:.1f}s; its log {child.log} ends:"
                 + "".join(f"\n    {line}" for line in tail))

    def status(self) -> dict:
        now, wall = self._clock(), time.time()

        def at(mono: float | None) -> float | None:
            return None if mono is None else round(wall + mono - now, 3)

        return {"pid": os.getpid(), "state": self.state, "updated_at": round(wall, 3),
                "children": {c.name: {
                    "pid": c.pid, "state": str(c.track.state), "restarts": c.track.restarts,
                    "quick_exits": c.track.failures, "started_at": at(c.track.started_at),
                    "next_restart_at": at(c.track.restart_at),
                    "last_exit": None if c.track.last_exit is None else {
                        **c.track.last_exit.as_json(), "at": at(c.track.exited_at)},
                    "log": str(c.log)} for c in self.children}}

    def write_status(self) -> None:
        """Replace the status file (a failure to write it is said, never fatal: the children
        matter more than their report)."""
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(fd, 0o600)  # a stale .tmp keeps its old mode through O_CREAT
                json.dump(self.status(), f, indent=1)
                f.write("\n")
            os.replace(tmp, self.status_file)
        except OSError as exc:
            self.say(f"could not write {self.status_file}: {exc}")


def log_tail(path: Path, lines: int, *, window: int = 16384) -> list[str]:
    """The last ``lines`` lines of a log (reading at most its last ``window`` bytes)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - window))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _die_with(parent: int) -> Callable[[], None] | None:
    """What a child runs between fork and exec so that it ends with its supervisor: Linux's
    ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, then a check that the parent did not die before
    that took effect. None (nothing to run) where prctl does not exist."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return in_child
