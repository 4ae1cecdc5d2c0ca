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

Volumes without QoS parameters never come here (their ``Guard.qos`` is None). A policy
change reaches a volume's scheduler client when a connection next builds its guard (its next
command), and, while commands are queued, at least every :data:`REFRESH` seconds from the
timer: a queue held at an old limit (possibly a whole CmdSN window, so the initiator sends
nothing new) takes the new parameters, or runs at once when the volume has no QoS any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from difs.controller.qos import DEFAULT_MAX_QUEUE, Capacity, ClientInfo, QosClient, QosScheduler

if TYPE_CHECKING:
    from difs.controller.server import IscsiConnection


#: seconds between looks at the volumes' policies while commands are queued
REFRESH = 0.25


class QosGate:
    """One per controller: the scheduler, its timer, and who gets to run. ``policies``
    gives a volume's current :class:`ClientInfo` (None: no QoS)."""

    def __init__(self, capacity: Capacity | None = None, *,
                 max_queue: int = DEFAULT_MAX_QUEUE,
                 policies: Callable[[str], ClientInfo | None] | None = None) -> None:
        self.scheduler = QosScheduler(capacity, max_queue=max_queue)
        self._policies = policies
        self._refresh_at = 0.0
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

    def release(self, volume: str) -> None:
        """``volume`` has no QoS parameters now: run what it has queued."""
        if volume in self.scheduler.clients:
            loop = self._loop = self._loop or asyncio.get_running_loop()
            self.scheduler.release(volume, loop.time())
            self._run(loop.time())

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
        if wake is not None and self._policies is not None:
            wake = min(wake, max(now, self._refresh_at))  # look at policy changes
        if wake is not None and (self._timer is None or wake < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = self._loop.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # the loop may call a little early (its clock resolution): act at the planned time
        now = self._loop.time()
        now = now if now > self._timer_at else self._timer_at
        if self._policies is not None and now >= self._refresh_at:
            self._refresh_at = now + REFRESH
            self._refresh(now)
        self._run(now)

    def _refresh(self, now: float) -> None:
        scheduler = self.scheduler
        for name, client in list(scheduler.clients.items()):
            if client.queue:
                info = self._policies(name)
                if info is None:
                    scheduler.release(name, now)
                elif info != client.info:
                    scheduler.client(name, info, now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
