"""The initiator's clocks: keepalive, command timeouts and ABORT TASK, decided in the core.

``InitiatorTimers`` says how long an initiator waits for its target; ``InitiatorWatch`` is the
mixin of :class:`~difs.iscsi.initiator.InitiatorConnection` that keeps them. The adapter only
arms one timer at ``get_timer()`` and calls ``handle_timer(now)``; the decisions are here:

* **keepalive** — a connection that has heard nothing from the target for ``nop_interval``
  seconds sends a NOP-Out; unanswered after ``nop_timeout`` (as any ping past its deadline)
  the target is dead: ``ConnectionDead`` + ``ConnectionClosed`` ("NOP-Out ping timeout");
* **command timeout** — a command unanswered after ``command_timeout`` seconds is aborted
  with ABORT TASK (``CommandTimeout``). Confirmed (FUNCTION COMPLETE): ``CommandAborted``
  with ``timed_out=True`` — it did not run, the connection works. Not answered within
  ``abort_timeout``, or answered without ending the task (TASK DOES NOT EXIST, REJECTED, …):
  the command's fate is unknown, so the connection cannot be trusted: ``ConnectionDead``.

The core *watches* every ``tick`` (a quarter of the shortest period, 50 ms .. 1 s): it notes
whether bytes arrived since the last look (``receive_data`` only raises a flag: no clock per
PDU), sends the keepalive when due, aborts the commands past their time (each at most once)
and checks the aborts in flight. Ping deadlines are exact. The watch runs in Full Feature
Phase only: once a logout is under way, its answer (or the adapter's logout timeout) settles
the connection's fate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .constants import TmfResponse
from .initiator_events import CommandTimeout, ConnectionDead
from .state import Input, State

if TYPE_CHECKING:
    from .initiator import InitiatorConnection


@dataclass(frozen=True, slots=True)
class InitiatorTimers:
    """How long an initiator waits for its target before giving up on a command or on the
    connection. ``nop_interval`` / ``command_timeout`` of ``None`` (or 0) turn that check off."""

    nop_interval: float | None = 5.0
    nop_timeout: float = 5.0
    command_timeout: float | None = 30.0
    abort_timeout: float = 5.0

    _POSITIVE: ClassVar[tuple[str, ...]] = ("nop_timeout", "abort_timeout")
    _OPTIONAL: ClassVar[tuple[str, ...]] = ("nop_interval", "command_timeout")

    def __post_init__(self) -> None:
        for name in self._POSITIVE:
            if not getattr(self, name) > 0:
                raise ValueError(f"{self._label(name)} must be a positive number of seconds")
        for name in self._OPTIONAL:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{self._label(name)} must be >= 0 seconds (0: off)")

    @staticmethod
    def _label(name: str) -> str:
        """How an error names the setting (a CLI names its option here)."""
        return name

    @property
    def tick(self) -> float | None:
        """How often the core looks: a quarter of the shortest timer, 50 ms .. 1 s
        (None: keepalive and command timeouts are both off, nothing to watch)."""
        periods = [p for p in (self.nop_interval, self.command_timeout) if p]
        if not periods:
            return None
        if self.command_timeout:
            periods.append(self.abort_timeout)
        return min(1.0, max(0.05, min(periods) / 4))


#: Nothing watched: no keepalive, no command timeout (the core's default).
NO_TIMERS = InitiatorTimers(nop_interval=None, command_timeout=None)


class InitiatorWatch:
    """Mixin of InitiatorConnection: ``get_timer`` / ``handle_timer`` and the decisions they
    drive (login deadline, ping deadlines, keepalive, command timeouts and their aborts)."""

    def _start_timers(self: InitiatorConnection, timers: InitiatorTimers, now: float) -> None:
        self.timers = timers
        tick = timers.tick
        self._next_watch: float | None = None if tick is None else now + tick
        self._heard = False  # bytes arrived since the last watch
        self._last_heard = now
        self._keepalive: int | None = None  # ITT of the keepalive ping
        self._aborting: dict[int, tuple[int, float]] = {}  # command ITT -> (TMF ITT, deadline)
        #: keepalive pings sent, commands aborted for not being answered in time
        self.keepalives = 0
        self.commands_timed_out = 0

    def get_timer(self: InitiatorConnection) -> float | None:
        """When ``handle_timer`` must be called next (None: never)."""
        if self._closed:
            return None
        if self._login_deadline is not None:
            return self._login_deadline
        when = self._next_watch
        if self._pings:
            first = min(self._pings.values())
            if when is None or first < when:
                return first
        return when

    def handle_timer(self: InitiatorConnection, now: float) -> None:
        self._now = now
        if self._closed:
            return
        if self._login_deadline is not None:
            if now >= self._login_deadline:
                self._machine.process(Input.TIMEOUT)
                self._terminate("login timeout")
            return
        if self._pings and min(self._pings.values()) <= now:
            self._dead("NOP-Out ping timeout: target did not answer")
            return
        if self._next_watch is not None and now >= self._next_watch:
            self._watch(now)

    # ------------------------------------------------------------------ the watch

    def _watch(self: InitiatorConnection, now: float) -> None:
        if self._machine.state is not State.FULL_FEATURE:
            self._next_watch = None  # a logout is under way: its answer settles the rest
            return
        timers = self.timers
        self._next_watch = now + timers.tick
        if self._heard:
            self._heard = False
            self._last_heard = now
        interval = timers.nop_interval
        if interval and self._keepalive not in self._pings and now - self._last_heard >= interval:
            self._keepalive = self.ping(timeout=timers.nop_timeout, now=now)
            self.keepalives += 1
        if timers.command_timeout:
            self._abort_overdue(now, now - timers.command_timeout)
            self._check_aborts(now)

    def _abort_overdue(self: InitiatorConnection, now: float, limit: float) -> None:
        """ABORT TASK for every command submitted at or before ``limit`` (once per command)."""
        aborting = self._aborting
        for command in self._commands.values():
            if command.issued > limit:
                break  # submit order: the rest are younger
            itt = command.itt
            if itt not in aborting:
                tmf = self.abort_task(itt)
                aborting[itt] = (tmf, now + self.timers.abort_timeout)
                self.commands_timed_out += 1
                self._events.append(CommandTimeout(itt, tmf, self.timers.command_timeout))

    def _check_aborts(self: InitiatorConnection, now: float) -> None:
        for itt, (_tmf, deadline) in list(self._aborting.items()):
            if itt not in self._commands:
                del self._aborting[itt]  # answered (or aborted) meanwhile
            elif deadline <= now:
                self._dead(f"ABORT TASK of command 0x{itt:x} not answered within "
                           f"{self.timers.abort_timeout:g}s")
                return

    def _abort_answered(self: InitiatorConnection, tmf: int, itt: int, response: int) -> None:
        """The target answered our timeout ABORT TASK (its CommandAborted, if any, is out)."""
        entry = self._aborting.get(itt)
        if entry is None or entry[0] != tmf:
            return
        del self._aborting[itt]
        if itt in self._commands:
            # Not aborted and not answered: the target does not know the task (or refused
            # the abort). Its fate is unknown, so this connection cannot be trusted.
            try:
                name = TmfResponse(response).name
            except ValueError:
                name = f"0x{response:02x}"
            self._dead(f"ABORT TASK of command 0x{itt:x} answered {name}", Input.FAULT)

    def _dead(self: InitiatorConnection, reason: str, cause: Input = Input.TIMEOUT) -> None:
        """Give up on the target: everything in flight is lost with the connection."""
        self._events.append(ConnectionDead(reason))
        self._machine.process(cause)
        self._terminate(reason)
