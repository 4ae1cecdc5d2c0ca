"""The asyncio side of a sans-I/O core's timer, shared by the iSCSI adapters.

A core says when it next needs the time (``get_timer()``) and is told it
(``handle_timer(now)``); the adapter keeps one ``TimerHandle`` that follows that deadline.
:class:`CoreTimer` is mixed into the controller's connection (``controller/server.py``) and
the host's (``host/connection.py``): each sets ``self.core`` (``None`` until the core
exists), ``self._loop`` and ``self._timer = None``, and has ``_pump()``, which moves the
core's output and events after the timer ran. A mixin, not an object, so arming the timer
costs no extra call on the per-I/O path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


class CoreTimer:
    core: Any
    _loop: asyncio.AbstractEventLoop
    _timer: asyncio.TimerHandle | None
    _pump: Callable[[], None]

    def _arm_timer(self) -> None:
        """Follow the core's next deadline (unchanged: keep the handle; none: cancel)."""
        when = self.core.get_timer() if self.core is not None else None
        timer = self._timer
        if timer is not None:
            try:
                if when is not None and timer.when() == when:
                    return
            except AttributeError:  # uvloop's call_at gives a plain Handle (no when()) for a
                pass  # deadline due within the millisecond: it runs at once, so re-arm it
            timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self._loop.time())
        self._pump()
