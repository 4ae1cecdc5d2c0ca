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
2. **reports its evidence** (``PUT /controllers/{name}/evidence``): per session x volume,
   what the data path measured since the last report the manager accepted
   (:mod:`difs.controller.evidence`). The window's baseline advances only when the manager
   accepted the report, so a refused or lost report is added to the next one; a refusal
   (a manager without the endpoint, a 422, a 5xx) is logged, rate-limited, and the round
   goes on;
3. **syncs its volumes** from ``GET /controllers/{name}/volumes``: creates the
   volumes it does not have yet (sparse files; formatted with T10 PI of the type
   the policy's ``integrity.protection_information`` names), grows resized ones,
   mirrors each volume's policy, version, application (whose PI application tag
   the volume then expects) and allowed initiators into the volume's own
   metadata (so the controller can enforce without the manager), and moves each
   LUN into the view of the initiator it is bound to.

It advertises CRC32C digests, PI types 1 and 3 (service and container) and exclusive
access; no authentication method, because its protocol endpoint has no CHAP.

After each sync the manager's answer is persisted in the data directory
(:mod:`difs.controller.state`: atomically, 0600, checksummed). At start
(:meth:`ControllerManagerLink.first_round`) the controller asks the manager
first; only when it gets no answer does it serve from the persisted state and the
volumes' own metadata — volumes at the LUNs and in the views they had, each with
the policy it enforced — and says so in its log. A persisted state that is torn,
edited or another controller's is refused as a whole with a log line that says
why; the controller then serves nothing until the manager answers. When the
manager answers again its view wins: volumes are added, changed and retired as it
says, and the persisted state is rewritten. A volume stops being served only when
the manager no longer lists it, never because the manager is away.

The manager's client is synchronous, so calls run in a worker thread; I/O never
waits for the manager. Without the manager the controller keeps serving what it
has.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import TYPE_CHECKING, Any

from difs.controller.errors import StateError
from difs.controller.evidence import Baseline, build_report
from difs.controller.state import ServedState
from difs.nodelink.client import ManagerClient, ManagerError, ManagerUnreachable
from difs.nodelink.link import NodeLink
from difs.policy import Advertisement
from difs.util.logs import RateLimitedLog, log_event
from difs.util.units import parse_portal

if TYPE_CHECKING:
    from difs.controller.server import Controller

log = logging.getLogger("difs.controller")

CONTAINER = "default"


class ControllerManagerLink(NodeLink):
    offline_behaviour = "serving what the manager last placed here"

    def __init__(self, controller: Controller, client: ManagerClient, *, node: str,
                 interval: float = 5.0, lease: float = 30.0) -> None:
        super().__init__(client, node=node, log=log, interval=interval, lease=lease)
        self.controller = controller
        self.state = ServedState(controller.config.data_dir, controller=node)
        self.synced = False  # the manager's view has been applied
        #: the counters of the last evidence report the manager accepted
        self.baseline = Baseline(taken_at=time.monotonic())
        #: evidence trouble repeats every round while it lasts: a line a minute, with a count
        self._evidence_log = RateLimitedLog(log, interval=60.0)

    def advertisement(self) -> Advertisement:
        cfg = self.controller.config
        usage = shutil.disk_usage(cfg.data_dir)
        portals = []
        for portal in cfg.advertise_portals or cfg.portals:
            host, port = parse_portal(portal)
            portals.append({"address": host, "port": port})
        return Advertisement.model_validate({
            "kind": "controller", "iqn": self.endpoint.name,
            "services": {"integrity": {"header_digest": True, "data_digest": True,
                                       "pi_types": [1, 3]},
                         # the protocol endpoint the manager places volumes on logs
                         # initiators in without CHAP (the manager hands out no secrets), so
                         # this controller cannot honour an authentication policy: say so
                         "security": {"authentication": []},
                         "isolation": {"exclusive": True},
                         "qos": self._qos_capability()},
            "portals": portals,
            "containers": [{"name": CONTAINER, "capacity_bytes": usage.free + self._allocated(),
                            "pi_types": [1, 3]}],
            "lease_seconds": self.lease,
        })

    def _qos_capability(self) -> dict[str, Any]:
        """The scheduler enforces limits and weights always; it can promise reservations
        only against a known capacity (difs.controller.capacity)."""
        capacity = self.controller.qos.capacity
        if capacity is None:
            return {"limit": True, "weight": True}
        return {"reservation": True, "limit": True, "weight": True,
                "max_iops": capacity.iops, "max_bytes_per_second": capacity.bytes_per_second}

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
                    policy_version=v.get("policy_version", 0), allowed_initiators=initiators,
                    application=v.get("application"), app_tag=v.get("app_tag"))
                if len(initiators) > 1:
                    log_event(log, "volume bound to several initiators; serving the first",
                              level=logging.WARNING, volume=name, initiators=initiators)
                endpoint.place(meta, lun=v["lun"], initiator=initiators[0] if initiators else None)
            except Exception as exc:  # one volume's trouble must not stop the others
                log_event(log, "volume sync failed", level=logging.ERROR, volume=name,
                          reason=str(exc))

    async def report_evidence(self) -> None:
        """Send the evidence of the window since the last accepted report; adopt its
        baseline only when the manager accepted it. Never raises (the round goes on)."""
        enforcement = self.controller.enforcement
        try:
            built = build_report(list(enforcement.stats.values()), self.baseline,
                                 applications=enforcement.applications(),
                                 now=time.monotonic())
            if built.unreportable:
                self._evidence_log("evidence left out: outside the report's limits",
                                   logging.WARNING, entries=[" ".join(map(str, k[:3]))
                                                             for k in built.unreportable[:5]])
            await self.call(self.client.report_controller_evidence, self.node, built.report)
        except (ManagerError, ManagerUnreachable) as exc:
            self._evidence_log("evidence report not accepted; its counts go into the next one",
                               logging.WARNING, status=getattr(exc, "status", None),
                               reason=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - evidence must not cost the volume sync
            self._evidence_log("evidence report failed; its counts go into the next one",
                               logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            return
        self.baseline = built.baseline

    async def exchange(self) -> None:
        await self.call(self.client.advertise, self.node, self.advertisement())
        await self.report_evidence()
        volumes = await self.call(self.client.controller_volumes, self.node)
        await self.sync_volumes(volumes)
        self.synced = True
        try:
            if await self.call(self.state.save, volumes):
                log_event(log, "served state saved", path=str(self.state.path),
                          volumes=len(volumes))
        except OSError as exc:
            log_event(log, "cannot save the served state; a restart without the manager "
                      "would serve the last saved one", level=logging.ERROR,
                      path=str(self.state.path), reason=str(exc))

    async def first_round(self) -> None:
        """The round at start: the manager's view, or else the persisted one."""
        await self.tick()
        if not self.synced:
            await self.restore()

    async def restore(self) -> None:
        """Serve the persisted state (the manager did not answer)."""
        path = str(self.state.path)
        try:
            volumes = await asyncio.to_thread(self.state.load)
        except StateError as exc:
            log_event(log, "persisted state refused; serving nothing until the manager answers",
                      level=logging.ERROR, path=path, reason=str(exc))
            return
        if volumes is None:
            log_event(log, "no persisted state; serving nothing until the manager answers",
                      level=logging.WARNING, path=path)
            return
        directory = self.endpoint.directory
        present = [v for v in volumes if directory.meta_path(v["name"]).exists()]
        missing = [v["name"] for v in volumes if v not in present]
        if missing:
            log_event(log, "volumes of the persisted state missing on disk; not served",
                      level=logging.ERROR, volumes=missing)
        log_event(log, "no answer from the manager at start; serving from the persisted "
                  "state and the volumes' own metadata", level=logging.WARNING, path=path,
                  volumes=[v["name"] for v in present])
        await self.sync_volumes(present)
