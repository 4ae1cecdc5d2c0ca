"""Per-volume QoS at the controller: an mClock-family scheduler, sans I/O.

The scheduler is pure: it is fed requests and the time (``submit(client, item, nbytes,
now)``, ``dispatch(now)``) and answers which items run now and when it wants to be woken
(``wakeup``). No clock, no asyncio, no logging: the controller's adapter
(:mod:`difs.controller.qos_gate`) owns the timer and runs what is dispatched.

Model (Gulati, Merchant, Varman: *mClock*, OSDI 2010). Every volume with a QoS policy is
a client with a :class:`ClientInfo`: a *reservation* (minimum), a *limit* (maximum), each
in IOPS and in bytes/s, and a *weight* (share of what is left). The head request of each
client carries three tags, all on the controller's clock:

* ``R`` (reservation): per dimension ``max(previous R + cost/rate, now - burst)``;
  a request is due for its reservation when every reserved dimension is due (the
  reservation guarantees up to ``reservation_iops`` IOPS *and* up to
  ``reservation_bytes_per_second``, whichever binds first, so reservations add up per
  dimension against the capacity);
* ``L`` (limit): per dimension ``max(previous L + cost/rate, now)``: no burst, so over
  any interval of t seconds a volume gets at most ``limit * t + 2`` I/Os (and bytes to
  match), even after the controller was held up (no catching up past the limit);
* ``P`` (proportional share): ``max(previous P + cost/weight, V)`` where ``V`` is the P tag
  of the last request dispatched by weight: a volume back from idle starts level with the
  busy ones (fair-queueing virtual time, no credit banked in this phase).

``dispatch(now)`` first serves, in R order, every head whose R and L have come
(*reservation phase*, not held back by the capacity), then, while the capacity allows, the
head with the smallest P among volumes under their limit (*weight phase*). R advances
with every dispatch of the volume, so the reservation is a floor: a volume whose weight
share already exceeds it gets no reservation-phase dispatches. P advances only on
weight-phase dispatches, so what a volume got by reservation does not cost it its place in
the weight phase (mClock's rule, done by not charging P instead of rewriting queued tags).

``now`` is when the request becomes its volume's head (its arrival, or the dispatch of the
one before it). Idle credit: ``now - burst`` bounds what an idle (or held up) volume banks
to ``burst`` seconds of its reservation; limits bank nothing; the weight phase banks
nothing.

Cost of an I/O: ``1 + bytes / size_unit`` I/O units with ``size_unit = capacity bytes/s /
capacity IOPS`` (64 KiB when the capacity is unknown): a zero-length command costs one unit,
a transfer of ``size_unit`` bytes two. It is the time the device is busy with the I/O in
units of one small I/O (a linear model like blk-iocost's): the weight phase charges it to P
(``cost / weight``), and the capacity pacing charges ``cost / capacity IOPS`` seconds of
device time, so large transfers use up their share in bytes and small ones in operations.
The reservation and limit tags charge each dimension its own way: 1 per I/O against the
IOPS rate, the bytes against the bytes/s rate.

Capacity: with a :class:`Capacity` the weight phase dispatches only while the device clock
``D`` (advanced by every dispatch's cost, reservation phase included, floored at ``now -
device_burst``) is not ahead of ``now``: reservations come first and weights share the rest.
Without one the weight phase is work-conserving and unpaced (weights then only order).

Cost per I/O: O(log n) in the number of volumes with queued requests (three binary heaps
of clients, lazily invalidated entries), O(1) per client.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Capacity", "ClientInfo", "QosClient", "QosScheduler", "RESERVATION", "WEIGHT"]

INF = float("inf")
RESERVATION = 0  #: dispatched because the volume's reservation was due
WEIGHT = 1  #: dispatched from the proportional share
DEFAULT_SIZE_UNIT = 64 * 1024
DEFAULT_BURST = 0.1  #: seconds of reservation an idle volume may bank
DEFAULT_DEVICE_BURST = 0.01  #: seconds of capacity an idle device may bank
DEFAULT_MAX_QUEUE = 1024  #: queued commands per volume; more are answered TASK SET FULL


@dataclass(frozen=True)
class Capacity:
    """What the controller can do in all: IOPS and bytes/s (calibrated or configured)."""

    iops: int
    bytes_per_second: int

    @property
    def size_unit(self) -> float:
        """Bytes whose transfer costs as much as one I/O."""
        return self.bytes_per_second / self.iops


@dataclass(frozen=True)
class ClientInfo:
    """A volume's QoS parameters; 0 means "not set" for reservations and limits."""

    reservation_iops: float = 0
    reservation_bytes_per_second: float = 0
    limit_iops: float = 0
    limit_bytes_per_second: float = 0
    weight: float = 1

    @classmethod
    def from_service(cls, qos: Any) -> ClientInfo | None:
        """From a policy's ``QosService`` (or its dict); None when it asks for no
        reservation, limit or weight (then the volume bypasses the scheduler)."""
        if qos is None:
            return None
        get = qos.get if isinstance(qos, dict) else lambda k: getattr(qos, k, None)
        values = {k: get(k) for k in ("reservation_iops", "reservation_bytes_per_second",
                                      "limit_iops", "limit_bytes_per_second", "weight")}
        if all(v is None for v in values.values()):
            return None
        return cls(**{k: v for k, v in values.items() if v is not None})


class QosClient:
    """One volume's queue, tags and counters (the counters are what metrics read)."""

    __slots__ = ("name", "info", "draining", "queue", "seq", "r_io", "r_b", "l_io", "l_b", "p",
                 "h_r", "h_l", "h_p", "h_rio", "h_rb", "h_lio", "h_lb",
                 "inv_r_io", "inv_r_b", "inv_l_io", "inv_l_b", "inv_w",
                 "dispatched", "delayed", "waited", "refused")

    def __init__(self, name: str, info: ClientInfo) -> None:
        self.name = name
        self.draining = False  # its volume lost its QoS parameters: run what is queued
        self.queue: deque[tuple[Any, int, float]] = deque()  # (item, bytes, arrival)
        self.seq = 0  # sequence number of the current head's heap entries (0: idle)
        self.r_io = self.r_b = self.l_io = self.l_b = -INF  # tags of the last dispatch
        self.p = -INF
        self.h_r = self.h_l = self.h_p = 0.0  # the head's tags
        self.h_rio = self.h_rb = self.h_lio = self.h_lb = -INF
        self.dispatched = [0, 0]  #: by phase: RESERVATION, WEIGHT
        self.delayed = 0  #: I/Os that waited in the queue
        self.waited = 0.0  #: seconds they waited, in all
        self.refused = 0  #: I/Os answered TASK SET FULL (queue full)
        self.set_info(info)

    def set_info(self, info: ClientInfo) -> None:
        self.info = info
        self.inv_r_io = 1.0 / info.reservation_iops if info.reservation_iops else 0.0
        self.inv_r_b = 1.0 / info.reservation_bytes_per_second \
            if info.reservation_bytes_per_second else 0.0
        self.inv_l_io = 1.0 / info.limit_iops if info.limit_iops else 0.0
        self.inv_l_b = 1.0 / info.limit_bytes_per_second if info.limit_bytes_per_second else 0.0
        self.inv_w = 1.0 / info.weight if info.weight else 1.0

    @property
    def depth(self) -> int:
        return len(self.queue)


class QosScheduler:
    """The scheduler of one controller: clients by volume name, three heaps of heads."""

    def __init__(self, capacity: Capacity | None = None, *, burst: float = DEFAULT_BURST,
                 device_burst: float = DEFAULT_DEVICE_BURST,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.clients: dict[str, QosClient] = {}
        self.burst = burst
        self.device_burst = device_burst
        self.max_queue = max_queue
        self.vt = 0.0  # virtual time: P of the last weight-phase dispatch
        self.dt = -INF  # device clock: when the capacity used so far is paid for
        self._seq = 0
        self._queued = 0  # requests queued, all clients
        self._r: list[tuple[float, int, QosClient]] = []  # by max(R, L): reservation due
        self._l: list[tuple[float, int, QosClient]] = []  # by L: waiting for the limit
        self._p: list[tuple[float, int, QosClient]] = []  # by P: under the limit
        self.set_capacity(capacity)

    def set_capacity(self, capacity: Capacity | None) -> None:
        self.capacity = capacity
        self.size_unit = capacity.size_unit if capacity else DEFAULT_SIZE_UNIT
        self._unit = 1.0 / self.size_unit
        self._device_cost = 1.0 / capacity.iops if capacity else 0.0

    # -- clients -----------------------------------------------------------------

    def client(self, name: str, info: ClientInfo, now: float | None = None) -> QosClient:
        """The client of volume ``name``, created or given new parameters (which apply
        from its head request on, retagged at ``now``: a change mid-stream keeps its queue
        and tags)."""
        client = self.clients.get(name)
        if client is None:
            client = self.clients[name] = QosClient(name, info)
        elif client.info != info or client.draining:
            client.set_info(info)
            client.draining = False
            if client.queue:
                self._head(client, client.queue[0][2] if now is None else now)
        return client

    def release(self, name: str, now: float) -> None:
        """Volume ``name`` has no QoS parameters any more: what it has queued runs at the
        next :meth:`dispatch`, whatever its old tags said."""
        client = self.clients.get(name)
        if client is not None and not client.draining:
            client.draining = True
            if client.queue:
                self._head(client, now)

    # -- requests ----------------------------------------------------------------

    def admit(self, client: QosClient, nbytes: int, now: float) -> bool:
        """The fast path: True when a request of ``nbytes`` may run now without queueing
        (nothing is queued anywhere and its tags have come); it is then counted as
        dispatched. False: :meth:`submit` it."""
        if self._queued:
            return False
        self._tag(client, nbytes, now)
        if client.h_l > now:
            return False
        if client.h_r <= now:
            phase = RESERVATION
        elif self.dt <= now:
            phase = WEIGHT
        else:
            return False
        self._commit(client, nbytes, now, phase)
        return True

    def submit(self, client: QosClient, item: Any, nbytes: int, now: float) -> bool:
        """Queue ``item`` (``nbytes`` of data) for ``client``; False when its queue is
        full (the caller answers TASK SET FULL). Call :meth:`dispatch` after."""
        queue = client.queue
        if len(queue) >= self.max_queue:
            client.refused += 1
            return False
        queue.append((item, nbytes, now))
        self._queued += 1
        if len(queue) == 1:
            self._head(client, now)
        return True

    def dispatch(self, now: float) -> list[Any]:
        """The items to run now, in order."""
        out: list[Any] = []
        r, l, p = self._r, self._l, self._p
        pop, push = heapq.heappop, heapq.heappush
        while True:
            while r and r[0][1] != r[0][2].seq:
                pop(r)
            if r and r[0][0] <= now:
                out.append(self._take(r[0][2], now, RESERVATION))
                continue
            while l and l[0][0] <= now:
                _key, seq, client = pop(l)
                if seq == client.seq:
                    push(p, (client.h_p, seq, client))
            while p and p[0][1] != p[0][2].seq:
                pop(p)
            if p and self.dt <= now:
                out.append(self._take(p[0][2], now, WEIGHT))
                continue
            return out

    @property
    def wakeup(self) -> float | None:
        """When :meth:`dispatch` will have something to do (None: nothing is queued)."""
        r, l, p = self._r, self._l, self._p
        while l and l[0][1] != l[0][2].seq:
            heapq.heappop(l)
        times = []
        if r:
            times.append(r[0][0])
        if l:
            times.append(l[0][0])
        if p:
            times.append(self.dt)
        return min(times) if times else None

    @property
    def queued(self) -> int:
        return self._queued

    # -- tags --------------------------------------------------------------------

    def _head(self, c: QosClient, now: float) -> None:
        """Tag the head request of ``c`` (it became the head at ``now``), enter it in the
        heaps."""
        self._tag(c, c.queue[0][1], now)
        reservation, limit = c.h_r, c.h_l
        self._seq += 1
        seq = c.seq = self._seq
        if reservation != INF:
            heapq.heappush(self._r, (reservation if reservation > limit else limit, seq, c))
        if limit == -INF:
            heapq.heappush(self._p, (c.h_p, seq, c))
        else:
            heapq.heappush(self._l, (limit, seq, c))

    def _tag(self, c: QosClient, nbytes: int, now: float) -> None:
        """The tags of a request of ``nbytes`` that becomes ``c``'s head at ``now``."""
        if c.draining:
            c.h_r = c.h_l = -INF
            c.h_p = self.vt
            return
        if c.inv_r_io or c.inv_r_b:
            floor = now - self.burst
            rio = max(c.r_io + c.inv_r_io, floor) if c.inv_r_io else -INF
            rb = max(c.r_b + nbytes * c.inv_r_b, floor) if c.inv_r_b else -INF
            c.h_rio, c.h_rb = rio, rb
            c.h_r = rio if rio > rb else rb
        else:
            c.h_r = INF
        if c.inv_l_io or c.inv_l_b:
            lio = max(c.l_io + c.inv_l_io, now) if c.inv_l_io else -INF
            lb = max(c.l_b + nbytes * c.inv_l_b, now) if c.inv_l_b else -INF
            c.h_lio, c.h_lb = lio, lb
            c.h_l = lio if lio > lb else lb
        else:
            c.h_l = -INF
        prop = c.p + (1.0 + nbytes * self._unit) * c.inv_w
        c.h_p = prop if prop > self.vt else self.vt

    def _take(self, c: QosClient, now: float, phase: int) -> Any:
        """Dispatch the head of ``c``: commit its tags, count, tag the next one."""
        item, nbytes, arrival = c.queue.popleft()
        self._queued -= 1
        self._commit(c, nbytes, now, phase)
        if now > arrival:
            c.delayed += 1
            c.waited += now - arrival
        if c.queue:
            self._head(c, now)
        else:
            c.seq = 0
        return item

    def _commit(self, c: QosClient, nbytes: int, now: float, phase: int) -> None:
        """The head's tags become the client's; the device clock advances; count it."""
        if c.inv_r_io:
            c.r_io = c.h_rio
        if c.inv_r_b:
            c.r_b = c.h_rb
        if c.inv_l_io:
            c.l_io = c.h_lio
        if c.inv_l_b:
            c.l_b = c.h_lb
        if phase == WEIGHT:
            c.p = c.h_p
            if c.h_p > self.vt:
                self.vt = c.h_p
        if self._device_cost:
            floor = now - self.device_burst
            self.dt = (self.dt if self.dt > floor else floor) \
                + (1.0 + nbytes * self._unit) * self._device_cost
        c.dispatched[phase] += 1
