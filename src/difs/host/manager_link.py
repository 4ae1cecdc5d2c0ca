"""The host's conversation with the manager (out of band, over its REST API).

Every ``interval`` seconds the host:

1. **advertises** what it can do (digests, CHAP, path selection) and the paths
   it has established with what each negotiated, renewing its lease;
2. **follows its bindings**: an application bound to this host is started
   (its volume's path group opened, its NBD export created); a new policy
   version is applied to the running application without restarting it; an
   application no longer bound is stopped;
3. **reports** per-application, per-path statistics for the last interval.

The manager's HTTP client is synchronous, so each call runs in a worker thread;
the I/O path never waits for the manager. When the manager is unreachable the
host keeps serving what it has and says so in its log once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from difs.host.agent import Host
from difs.nodelink.client import ManagerClient
from difs.nodelink.link import NodeLink
from difs.policy import Advertisement, PolicyServices, Requirement
from difs.policy.fast import AUTH, DATA_DIGEST, HEADER_DIGEST, MUTUAL_AUTH
from difs.util.logs import log_event
from difs.util.units import format_portal

log = logging.getLogger("difs.host")


#: the T10 PI types this host generates and verifies (difs.host.app_pi)
HOST_PI_TYPES = (1, 3)


class HostManagerLink(NodeLink):
    offline_behaviour = "serving the applications already running"

    def __init__(self, host: Host, client: ManagerClient, *, node: str,
                 interval: float = 5.0, lease: float = 30.0) -> None:
        super().__init__(client, node=node, log=log, interval=interval, lease=lease)
        self.host = host
        self._last_counts: dict[tuple[str, int], tuple[int, int]] = {}
        self._last_report = time.monotonic()

    # -- what the host says ---------------------------------------------------------

    def advertisement(self) -> Advertisement:
        paths = []
        for group in self.host.groups.values():
            for path in group.paths:
                if path.negotiated is None:
                    continue
                flags = path.negotiated.flags
                paths.append({
                    "controller": group.controller, "channel": path.channel,
                    "portal": group.portal, "up": path.is_available(),
                    "negotiated": {
                        "header_digest": bool(flags & HEADER_DIGEST),
                        "data_digest": bool(flags & DATA_DIGEST),
                        "authentication": "mutual_chap" if flags & MUTUAL_AUTH
                        else "chap" if flags & AUTH else "none",
                        # PI is end to end, not negotiated: this host generates and verifies
                        # it for the applications that need it, on any of its paths
                        "pi_types": list(HOST_PI_TYPES),
                    },
                })
        return Advertisement.model_validate({
            "kind": "host", "iqn": self.host.config.initiator_name,
            "services": {"integrity": {"header_digest": True, "data_digest": True,
                                       "pi_types": list(HOST_PI_TYPES)},
                         "security": {"authentication": ["chap", "mutual_chap"]},
                         "qos": {"limit": False}},
            "paths": paths, "lease_seconds": self.lease,
        })

    def stats_report(self) -> dict[str, Any]:
        now = time.monotonic()
        window = max(now - self._last_report, 0.001)
        self._last_report = now
        entries = []
        for app in self.host.apps.values():
            for channel, (ios, nbytes) in app.disk.per_path.items():
                key = (app.name, channel)
                last_ios, last_bytes = self._last_counts.get(key, (0, 0))
                self._last_counts[key] = (ios, nbytes)
                entries.append({"application": app.name, "controller": app.controller,
                                "channel": channel, "ios": ios - last_ios,
                                "bytes": nbytes - last_bytes})
        return {"window_seconds": window, "paths": entries}

    # -- following the bindings ------------------------------------------------------

    async def sync_bindings(self, bindings: list[dict[str, Any]]) -> None:
        wanted = {b["application"]: b for b in bindings}
        for name in [n for n in self.host.apps if n not in wanted]:
            await self.host.stop_app(name)
        for name, binding in wanted.items():
            services = binding.get("policy")
            requirement = Requirement.from_policy(
                PolicyServices.model_validate(services) if services else None)
            version = binding.get("policy_version", 0)
            running = self.host.apps.get(name)
            if running is not None:
                if running.policy_version != version:
                    self.host.update_policy(name, requirement=requirement,
                                            policy_name=f"v{version}", version=version)
                continue
            if not binding.get("volumes"):
                continue
            volume = binding["volumes"][0]
            portals = volume.get("portals") or []
            if not portals or not volume.get("target_iqn"):
                log_event(log, "binding without an endpoint", level=logging.WARNING, app=name,
                          controller=volume.get("controller"))
                continue
            portal = format_portal(portals[0]["address"], portals[0].get("port", 3260))
            try:
                await self.host.start_app(
                    name, controller=volume["controller"], portal=portal,
                    target=volume["target_iqn"], lun=volume["lun"], requirement=requirement,
                    policy_name=f"v{version}", policy_version=version)
            except Exception as exc:  # one application's failure must not stop the others
                log_event(log, "application start failed", level=logging.ERROR, app=name,
                          reason=str(exc))

    # -- the loop -------------------------------------------------------------------------

    async def exchange(self) -> None:
        await self.call(self.client.advertise, self.node, self.advertisement())
        await self.sync_bindings(await self.call(self.client.host_bindings, self.node))
        await self.call(self.client.report_stats, self.node, self.stats_report())
