"""The host's per-application limit: a token bucket in IOPS and bytes/s (pure).

An application whose policy sets ``qos.limit_iops`` and/or ``qos.limit_bytes_per_second``
never sends more than that into the network: before the host submits one of its I/Os it
asks :meth:`RateLimit.admit` with the time and the I/O's size, and sends it at the time
the answer names (at once when that is not later than now).

Each limit is a generic cell rate algorithm (a token bucket in virtual time): ``due`` is
when the bucket would be empty again if everything admitted so far had gone at the
limit's pace; an I/O may go at ``due - burst`` (``burst``: how far ahead of the pace a
burst may run, :data:`BURST_SECONDS`), and each admitted
I/O moves ``due`` on by its cost: ``1 / limit_iops`` seconds for an I/O,
``size / limit_bytes_per_second`` for its bytes. An I/O held back by one limit books its
time in the other too, so both hold at once. Over any window of ``T`` seconds at most
``limit * (T + burst)`` (plus one I/O) is admitted; an idle application banks no more
than ``burst`` of credit.

Admission books the I/O's slot: concurrent I/Os are answered in the order they asked,
each with its own time, and nobody has to ask twice.
"""

from __future__ import annotations

__all__ = ["BURST_SECONDS", "RateLimit"]

#: how far ahead of the limit's pace a burst may run (seconds of the limit)
BURST_SECONDS = 0.05


class RateLimit:
    """``limit_iops`` / ``limit_bytes_per_second``; ``None`` (or 0 for neither) means unlimited."""

    __slots__ = ("limit_iops", "limit_bytes_per_second", "_io_cost", "_byte_cost", "_burst",
                 "_io_due", "_byte_due")

    def __init__(self, *, limit_iops: int | None = None, limit_bytes_per_second: int | None = None,
                 burst_seconds: float = BURST_SECONDS) -> None:
        if limit_iops is not None and limit_iops <= 0:
            raise ValueError(f"limit_iops must be positive, not {limit_iops}")
        if limit_bytes_per_second is not None and limit_bytes_per_second <= 0:
            raise ValueError(f"limit_bytes_per_second must be positive, not {limit_bytes_per_second}")
        self.limit_iops = limit_iops
        self.limit_bytes_per_second = limit_bytes_per_second
        self._io_cost = 1.0 / limit_iops if limit_iops else 0.0
        self._byte_cost = 1.0 / limit_bytes_per_second if limit_bytes_per_second else 0.0
        self._burst = burst_seconds
        self._io_due = self._byte_due = float("-inf")

    def admit(self, now: float, size: int) -> float:
        """Book an I/O of ``size`` bytes asked at ``now``: the time it may go (<= now: go)."""
        at = now
        io_cost = self._io_cost
        byte_cost = size * self._byte_cost
        if io_cost:
            at = max(at, self._io_due - self._burst)
        if byte_cost:  # (however large the I/O: it goes when the bucket is empty, then pays)
            at = max(at, self._byte_due - self._burst)
        if io_cost:
            self._io_due = max(self._io_due, at) + io_cost
        if byte_cost:
            self._byte_due = max(self._byte_due, at) + byte_cost
        return at

    def __repr__(self) -> str:
        return f"RateLimit(limit_iops={self.limit_iops}, limit_bytes_per_second={self.limit_bytes_per_second})"
