"""The adapters' core timer on uvloop, the loop the nodes run (difs.util.coretimer)."""

from __future__ import annotations

import uvloop

from difs.util.coretimer import CoreTimer


class Core:
    def __init__(self, deadline: float) -> None:
        self.deadline: float | None = deadline
        self.fired: list[float] = []

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = None


class Adapter(CoreTimer):
    def __init__(self, loop, core: Core) -> None:
        self._loop, self.core, self._timer = loop, core, None
        self.pumps = 0

    def _pump(self) -> None:
        self.pumps += 1


def test_a_deadline_already_due_can_be_re_armed_on_uvloop() -> None:
    """uvloop's call_at returns a plain Handle, without when(), for a deadline due within
    the millisecond; re-arming before it ran killed a host path under load (AttributeError
    out of data_received)."""
    loop = uvloop.new_event_loop()
    try:
        core = Core(loop.time() - 0.001)
        adapter = Adapter(loop, core)
        adapter._arm_timer()
        adapter._arm_timer()  # the core's deadline did not move: the pending handle is kept
        core.deadline = loop.time() - 0.0005
        adapter._arm_timer()  # it moved: the pending handle is replaced
        loop.run_until_complete(_yield())
        assert len(core.fired) == 1 and adapter.pumps == 1 and adapter._timer is None
    finally:
        loop.close()


async def _yield() -> None:
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)
