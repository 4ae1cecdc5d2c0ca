"""Run a controller until a signal: start portals, print the volume URLs, serve."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from difs.controller.config import ControllerConfig
from difs.controller.server import Controller
from difs.util.logs import log_event
from difs.util.units import format_portal, parse_portal

log = logging.getLogger("difs.controller")


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: ControllerConfig, *, ready: asyncio.Event | None = None,
                manager: str | None = None, token: str | None = None,
                interval: float = 5.0) -> None:
    controller = Controller(config)
    controller.open_volumes()
    if manager or config.capacity_iops or config.capacity_bytes_per_second or any(
            policy.qos is not None for policy in controller.enforcement.policies.values()):
        await set_capacity(controller)
    link = None
    if manager:
        from difs.controller.manager_link import ControllerManagerLink
        from difs.nodelink.client import ManagerClient

        controller.enable_endpoint()
        link = ControllerManagerLink(controller, ManagerClient(manager, token=token),
                                     node=config.name, interval=interval)
        await link.first_round()  # the LUNs are in place before the portals listen
    await controller.start()
    if config.metrics:
        from difs.controller.metrics import serve_metrics

        addr, port = serve_metrics(controller, config.metrics)
        url = f"http://{format_portal(addr, port)}/metrics"
        log_event(log, "metrics", url=url)
        print(f"metrics {url}", flush=True)
    for url in controller.urls():
        print(url, flush=True)
    if link is not None:
        host, port = parse_portal(config.portals[0])
        print(f"iscsi://{format_portal(host, port)}/{controller.endpoint.name}", flush=True)
        link.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    if link is not None:
        await link.close()
    log_event(log, "stopping", connections=len(controller._connections))
    await controller.close()
    log_event(log, "stopped")


async def set_capacity(controller: Controller) -> None:
    """Give the QoS scheduler the controller's capacity (option, saved or calibrated now);
    a calibration that fails leaves QoS without one (reservations are then not offered)."""
    from difs.controller.capacity import resolve_capacity

    config = controller.config
    try:
        capacity, source = await asyncio.to_thread(
            resolve_capacity, config.data_dir, iops=config.capacity_iops,
            bytes_per_second=config.capacity_bytes_per_second)
    except OSError as exc:
        log_event(log, "qos calibration failed: no capacity, reservations not offered",
                  level=logging.WARNING, data_dir=str(config.data_dir), error=str(exc))
        return
    controller.qos.set_capacity(capacity)
    log_event(log, "qos capacity", iops=capacity.iops,
              bytes_per_second=capacity.bytes_per_second, source=source)


def run(config: ControllerConfig, **manager: object) -> None:
    install_uvloop()
    sys.stdout.reconfigure(line_buffering=True)
    asyncio.run(serve(config, **manager))
