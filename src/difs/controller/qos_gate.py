"""The asyncio side of the controller's QoS scheduler: the queue's timer and the runs.

A command to a volume whose policy has QoS parameters, once it has passed the policy
check, is handed to :meth:`QosGate.submit` instead of being run at once; the pure
:class:`~difs.controller.qos.QosScheduler` says which queued commands run now (usually the
one just submitted) and when to look again, and this gate keeps one ``loop.call_at`` timer
for that moment. A dispatched command runs on its own connection
(``IscsiConnection.run_scheduled``), whose answer is written at once. A command whose
volume queue is full is answered TASK SET FULL, like a write past the write-buffer cap.
Commands aborted while queued (ABORT TASK, resets, a lost connection) are dropped when
their turn comes: the core has marked them aborted and they never run.

Volumes without QoS parameters never come here (their ``Guard.qos`` is None).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from difs.controller.qos import DEFAULT_MAX_QUEUE, Capacity, ClientInfo, QosClient, QosScheduler

if TYPE_CHECKING:
    from difs.controller.server import IscsiConnection


class QosGate:
    """One per controller: the scheduler, its timer, and who gets to run."""

    def __init__(self, capacity: Capacity | None = None, *,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.scheduler = QosScheduler(capacity, max_queue=max_queue)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def capacity(self) -> Capacity | None:
        return self.scheduler.capacity

    def set_capacity(self, capacity: Capacity | None) -> None:
        self.scheduler.set_capacity(capacity)

    def client(self, volume: str, info: ClientInfo) -> QosClient:
        loop = self._loop or asyncio.get_running_loop()
        return self.scheduler.client(volume, info, loop.time())

    def submit(self, client: QosClient, conn: IscsiConnection, task: Any, guard: Any) -> bool:
        """Queue ``task``; run what is due. False: the volume's queue is full."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        scheduler = self.scheduler
        if scheduler.admit(client, task.expected_length, now):
            conn.run_scheduled(task, guard)  # nothing queued and its tags have come
            return True
        if not scheduler.submit(client, (conn, task, guard), task.expected_length, now):
            return False
        self._run(now, conn)
        return True

    def _run(self, now: float, caller: IscsiConnection | None = None) -> None:
        items = self.scheduler.dispatch(now)
        if items:
            others = None
            for conn, task, guard in items:
                conn.run_scheduled(task, guard)
                if conn is not caller:
                    if others is None:
                        others = {conn}
                    else:
                        others.add(conn)
            if others:
                for conn in others:
                    conn.flush()  # the caller's own answers go out when it is pumped
        wake = self.scheduler.wakeup
        if wake is not None and (self._timer is None or wake < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = self._loop.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # the loop may call a little early (its clock resolution): act at the planned time
        now = self._loop.time()
        self._run(now if now > self._timer_at else self._timer_at)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
