"""Time for the manager, injected: the system clocks in production, a manual one in tests.

A clock gives two readings:

* ``clock()`` — the wall time (an aware ``datetime``): what the manager records and shows
  (event times, ``last_advertised_at``, ``lease_expires_at``, statistics windows);
* ``clock.monotonic()`` — seconds on a clock that never jumps: what lease expiry is judged on
  (``difs.manager.leases``), so that setting the wall clock forward does not expire every
  lease and setting it back does not keep dead nodes alive.

Nothing in the manager calls ``datetime.now`` or ``time.monotonic`` directly, so tests move
time (``advance``) or step the wall clock alone (``jump``) instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's wall clock (UTC) and its monotonic clock."""

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


system_clock = SystemClock()


class ManualClock:
    """A clock that moves only when told to (thread-safe)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> datetime:
        """Time passes: both readings move ``seconds`` forward."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
            return self._now

    def jump(self, seconds: float) -> datetime:
        """The wall clock is set ``seconds`` forward (or back, when negative); no time passes."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
