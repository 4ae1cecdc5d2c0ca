"""Which node leases have run out, judged on the manager's monotonic clock, never on wall times.

A node's lease is ``lease_seconds`` from its last renewal. The database keeps the wall times of
that renewal (``last_advertised_at``, ``lease_expires_at``) for people and for the record; the
decision "has this lease run out" is taken here, in memory, on ``clock.monotonic()``:

* a renewal this manager answered is recorded with the monotonic time it was answered at
  (:meth:`LeaseBook.renewed`);
* a node the book does not know yet — every node after a manager restart, or one renewed
  through another manager sharing the database — is
  taken as renewed when the book first sees it alive in the database (:meth:`LeaseBook.overdue`):
  every lease gets one whole period of grace rather than being judged from wall times written
  by another process, possibly before a clock step. The node's ``advertisements`` counter is the
  renewal token: when it differs from the one the book holds, the node renewed meanwhile;
* while the database is down nodes cannot renew: when it is back, every known lease is moved
  later by the time it was down (:meth:`LeaseBook.extend`).

So a wall clock set an hour forward expires nothing early, a wall clock set back keeps nothing
alive longer, and a node that really stopped advertising is expired at most one lease period
(plus the sweep's resync interval) after it was last heard of, or after the manager could first
have heard of it.

The book is pure bookkeeping (no database, no clock of its own): the sweep
(``api/deps.sweep``) reads the alive nodes only when :meth:`due` says a deadline may have
passed or a resync is due, and expires what :meth:`overdue` returns.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Lease:
    token: int  # the node's advertisements counter at that renewal
    seconds: float
    renewed_at: float  # monotonic

    @property
    def deadline(self) -> float:
        return self.renewed_at + self.seconds


class LeaseBook:
    """The renewals this manager knows of, on its monotonic clock (thread-safe)."""

    def __init__(self, *, resync_seconds: float) -> None:
        #: how often the alive nodes are read even when no known deadline passed: renewals
        #: through another manager on the same database are learned at most this late
        self.resync_seconds = resync_seconds
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}
        self._next_due = -math.inf  # read the database at the first sweep

    def renewed(self, node: str, *, token: int, seconds: float, at: float) -> None:
        """``node`` renewed its lease for ``seconds`` at monotonic time ``at`` (its counter is ``token``)."""
        lease = _Lease(token, seconds, at)
        with self._lock:
            self._leases[node] = lease
            self._next_due = min(self._next_due, lease.deadline)

    def due(self, at: float) -> bool:
        """Whether a lease may have run out by ``at`` (or a resync is due): read the alive nodes."""
        with self._lock:
            return at >= self._next_due

    def overdue(self, alive: Iterable[tuple[str, int, float]], at: float) -> dict[str, int]:
        """Of the alive nodes ``(name, token, lease_seconds)``, those whose lease ran out by ``at``
        (name -> the token they were judged at). A node first seen, or seen with another token,
        counts as renewed at ``at``."""
        with self._lock:
            book: dict[str, _Lease] = {}
            out: dict[str, int] = {}
            next_due = at + self.resync_seconds
            for name, token, seconds in alive:
                lease = self._leases.get(name)
                if lease is None or lease.token != token:
                    lease = _Lease(token, seconds, at)
                book[name] = lease
                if at >= lease.deadline:
                    out[name] = token
                else:
                    next_due = min(next_due, lease.deadline)
            self._leases = book
            self._next_due = next_due
            return out

    def extend(self, seconds: float) -> None:
        """Move every known lease's deadline ``seconds`` later: the time the manager could not hear
        its nodes (its database was down, so their renewals failed) does not count against them.
        An extension, not a fresh period, so a flapping database cannot keep a dead node alive."""
        with self._lock:
            self._leases = {
                name: _Lease(lease.token, lease.seconds, lease.renewed_at + seconds)
                for name, lease in self._leases.items()
            }
            self._next_due = -math.inf
