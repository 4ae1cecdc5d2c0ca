"""The controller's conversation with the manager (out of band, over its REST API).

In manager mode the controller serves one **protocol endpoint** target,
``IQN_PREFIX:NAME`` (the name it advertises), whose logical units are the
volumes the manager placed on it, each at the LUN the manager assigned. Each
host initiator sees only the LUNs bound to it (per-initiator LUN views: an
unbound volume is visible to nobody), which is the isolation the design asks
of the controller.

Every ``interval`` seconds the controller:

1. **advertises** its capabilities, portals and storage container (capacity
   from the data directory's file system), renewing its lease;
2. **syncs its volumes** from ``GET /controllers/{name}/volumes``: creates the
   volumes it does not have yet (sparse files), grows resized ones, mirrors each
   volume's policy, version and allowed initiators into the volume's own
   metadata (so the controller can enforce without the manager), and moves each
   LUN into the view of the initiator it is bound to.

The manager's client is synchronous, so calls run in a worker thread; I/O never
waits for the manager. Without the manager the controller keeps serving what it
has, from the volumes' own metadata.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import TYPE_CHECKING, Any

from difs.manager.client import ManagerClient, ManagerError, ManagerUnreachable
from difs.policy import Advertisement
from difs.util.logs import log_event
from difs.util.units import parse_portal

if TYPE_CHECKING:
    from difs.controller.server import Controller

log = logging.getLogger("difs.controller")

CONTAINER = "default"


class ControllerManagerLink:
    def __init__(self, controller: Controller, client: ManagerClient, *, node: str,
                 interval: float = 5.0, lease: float = 30.0) -> None:
        self.controller = controller
        self.client = client
        self.node = node
        self.interval = interval
        self.lease = lease
        self._unreachable = False
        self._task: asyncio.Task | None = None

    def advertisement(self) -> Advertisement:
        cfg = self.controller.config
        usage = shutil.disk_usage(cfg.data_dir)
        portals = []
        for portal in cfg.portals:
            host, port = parse_portal(portal)
            portals.append({"address": host, "port": port})
        return Advertisement.model_validate({
            "kind": "controller", "iqn": self.endpoint.name,
            "services": {"integrity": {"header_digest": True, "data_digest": True},
                         "security": {"authentication": ["chap", "mutual_chap"]},
                         "isolation": {"exclusive": True}},
            "portals": portals,
            "containers": [{"name": CONTAINER, "capacity_bytes": usage.free + self._allocated()}],
            "lease_seconds": self.lease,
        })

    def _allocated(self) -> int:
        return sum(v.meta.size for v in self.endpoint.volumes.values())

    @property
    def endpoint(self):
        return self.controller.endpoint

    async def sync_volumes(self, volumes: list[dict[str, Any]]) -> None:
        endpoint = self.endpoint
        wanted = {v["name"]: v for v in volumes}
        for name in [n for n in endpoint.volumes if n not in wanted]:
            endpoint.retire(name)
        for name, v in wanted.items():
            initiators = v.get("allowed_initiators") or []
            try:
                meta = await asyncio.to_thread(
                    endpoint.prepare, name=name, size=v["size_bytes"], policy=v.get("policy"),
                    policy_version=v.get("policy_version", 0), allowed_initiators=initiators)
                if len(initiators) > 1:
                    log_event(log, "volume bound to several initiators; serving the first",
                              level=logging.WARNING, volume=name, initiators=initiators)
                endpoint.place(meta, lun=v["lun"], initiator=initiators[0] if initiators else None)
            except Exception as exc:  # one volume's trouble must not stop the others
                log_event(log, "volume sync failed", level=logging.ERROR, volume=name,
                          reason=str(exc))

    async def tick(self) -> None:
        try:
            await asyncio.to_thread(self.client.advertise, self.node, self.advertisement())
            volumes = await asyncio.to_thread(self.client.controller_volumes, self.node)
            await self.sync_volumes(volumes)
        except ManagerUnreachable as exc:
            if not self._unreachable:
                log_event(log, "manager unreachable; serving from local metadata",
                          level=logging.WARNING, reason=str(exc))
            self._unreachable = True
            return
        except ManagerError as exc:
            log_event(log, "manager refused a request", level=logging.WARNING, status=exc.status,
                      reason=str(exc))
            return
        if self._unreachable:
            log_event(log, "manager reachable again")
            self._unreachable = False

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
