"""Run a controller until a signal: start portals, print the volume URLs, serve."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from difs.controller.config import ControllerConfig
from difs.controller.server import Controller
from difs.util.logs import log_event

log = logging.getLogger("difs.controller")


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: ControllerConfig, *, ready: asyncio.Event | None = None) -> None:
    controller = Controller(config)
    controller.open_volumes()
    await controller.start()
    for url in controller.urls():
        print(url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log_event(log, "stopping", connections=len(controller._connections))
    await controller.close()
    log_event(log, "stopped")


def run(config: ControllerConfig) -> None:
    install_uvloop()
    sys.stdout.reconfigure(line_buffering=True)
    asyncio.run(serve(config))
