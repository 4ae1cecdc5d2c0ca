"""The host process: applications' disks over NBD, their I/O over policy-satisfying paths.

For each application the host keeps a :class:`~difs.host.pathgroup.PathGroup`
to the controller target holding its volume (one session per channel), an
:class:`~difs.host.disk.AppDisk` that tags and routes its I/O, and an NBD export
named after the application. Any NBD client is the application:
``qemu-img info nbd://127.0.0.1:10809/NAME``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from difs.host.disk import AppDisk
from difs.host.errors import HostError
from difs.host.pathgroup import CredentialBook, PathGroup
from difs.host.paths import DEFAULT_CHANNELS, ChannelSpec
from difs.host.selection import path_selector
from difs.host.connection import SessionTimers
from difs.nbd.backend import NbdBackendError
from difs.nbd.server import (
    DEFAULT_HANDSHAKE_IDLE,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    NbdServer,
)
from difs.policy.document import PolicyDocument
from difs.policy.fast import Requirement
from difs.policy.tiers import DEFAULT_TIERS
from difs.util.logs import log_event
from difs.util.units import format_portal, parse_portal

log = logging.getLogger("difs.host")

DEFAULT_INITIATOR = "iqn.2026-11.io.difs:host"


def parse_iscsi_url(url: str) -> tuple[str, str, int]:
    """``iscsi://HOST:PORT/IQN/LUN`` -> (portal, target, lun)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme != "iscsi" or not parts.hostname or len(path) != 2 or not path[1].isdigit():
        raise HostError(f"invalid volume URL {url!r}: write iscsi://HOST:PORT/TARGET-IQN/LUN")
    host = parts.hostname
    port = parts.port or 3260
    return format_portal(host, port), unquote(path[0]), int(path[1])


def resolve_policy(name: str | None) -> PolicyDocument:
    """A tier name (gold, silver, bronze) or the path of a policy document (JSON)."""
    if name is None:
        return DEFAULT_TIERS["bronze"]
    if name in DEFAULT_TIERS:
        return DEFAULT_TIERS[name]
    if name.endswith(".json"):
        import json
        from pathlib import Path

        from difs.policy.document import PolicyValidationError, validate_policy

        try:
            return validate_policy(json.loads(Path(name).read_text()))
        except (OSError, ValueError, RecursionError) as exc:  # too deep nesting: RecursionError
            detail = exc if isinstance(exc, (OSError, PolicyValidationError)) else f"not JSON: {exc}"
            raise HostError(f"policy file {name}: {detail}") from None
    raise HostError(f"unknown tier {name!r}; known: {', '.join(DEFAULT_TIERS)} "
                    "(or a policy document FILE.json)")


@dataclass
class Application:
    name: str
    controller: str
    target: str
    lun: int
    policy_name: str
    group: PathGroup | None = None
    disk: AppDisk | None = None
    policy_version: int = 0


@dataclass
class HostConfig:
    name: str = "host"
    initiator_name: str = DEFAULT_INITIATOR
    nbd_listen: str = "127.0.0.1:10809"
    nbd_unix: str | None = None
    #: NBD bounds: open connections, seconds to choose an export, seconds per handshake step
    nbd_max_connections: int = DEFAULT_MAX_CONNECTIONS
    nbd_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    nbd_handshake_idle: float = DEFAULT_HANDSHAKE_IDLE
    channels: tuple[ChannelSpec, ...] = DEFAULT_CHANNELS
    selector: str = "least-outstanding"
    path_wait: float = 30.0
    applications: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: manager URL, token and this host's node name (None: standalone)
    manager: str | None = None
    token: str | None = None
    node: str | None = None
    manager_interval: float = 5.0
    #: where the host keeps the last bindings it followed (None: var/host-NODE)
    state_dir: str | None = None
    #: HOST:PORT for the Prometheus metrics endpoint (None: no endpoint)
    metrics: str | None = None
    #: CHAP credentials per controller target (``default`` for all of them)
    credentials: CredentialBook = field(default_factory=CredentialBook)
    #: keepalive, command, abort and login timeouts of every path
    timers: SessionTimers = field(default_factory=SessionTimers)


class Host:
    """Applications, the path groups they share, and the NBD server in front of them.

    Path groups are per controller target and shared: every application whose
    volume is a LUN of that target uses the same channels, each choosing among
    them by its own policy.
    """

    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.apps: dict[str, Application] = {}
        #: applications given at start that could not start: name -> why (the others run)
        self.failed: dict[str, str] = {}
        self.groups: dict[tuple[str, str], PathGroup] = {}
        #: applications opening their disk now, per path group (a group is closed only
        #: when no application uses it and none is starting on it)
        self._opening: dict[tuple[str, str], int] = {}
        self.nbd = NbdServer(max_connections=config.nbd_max_connections,
                             handshake_timeout=config.nbd_handshake_timeout or None,
                             handshake_idle=config.nbd_handshake_idle or None)
        self.nbd_address: tuple[str, int] | None = None

    async def start(self) -> None:
        host, port = parse_portal(self.config.nbd_listen, default_port=10809)
        self.nbd_address = await self.nbd.start_tcp(host, port)
        if self.config.nbd_unix:
            await self.nbd.start_unix(self.config.nbd_unix)
        for name, url, policy_name in self.config.applications:
            portal, target, lun = parse_iscsi_url(url)
            policy = resolve_policy(policy_name)
            try:
                await self.start_app(name, controller=portal, portal=portal, target=target,
                                     lun=lun, requirement=Requirement.from_policy(policy.services),
                                     policy_name=policy.name)
            except NbdBackendError as exc:
                # one application that cannot start does not take the healthy ones with it
                self.failed[name] = exc.message
                log_event(log, "application not started", level=logging.ERROR, app=name,
                          reason=exc.message)
        if self.failed and not self.apps and not self.config.manager:
            raise HostError("; ".join(f"application {name}: {why}"
                                      for name, why in self.failed.items()))

    async def group_for(self, *, controller: str, portal: str, target: str) -> PathGroup:
        key = (portal, target)
        group = self.groups.get(key)
        if group is None:
            secrets = self.config.credentials.for_target(portal=portal, target=target)
            group = PathGroup(controller=controller, portal=portal, target=target,
                              initiator_name=self.config.initiator_name,
                              channels=self.config.channels,
                              chap=secrets.chap if secrets else None,
                              mutual_chap=secrets.mutual if secrets else None,
                              timers=self.config.timers)
            self.groups[key] = group
            await group.start()
        return group

    async def start_app(self, name: str, *, controller: str, portal: str, target: str, lun: int,
                        requirement: Requirement, policy_name: str,
                        policy_version: int = 0) -> Application:
        if name in self.apps:
            raise HostError(f"application {name!r} is already running")
        key = (portal, target)
        self._opening[key] = self._opening.get(key, 0) + 1
        try:
            group = await self.group_for(controller=controller, portal=portal, target=target)
            disk = AppDisk(app=name, group=group, requirement=requirement, lun=lun,
                           selector=path_selector(self.config.selector),
                           path_wait=self.config.path_wait)
            await disk.open()  # refuses a volume that cannot honour the policy (e.g. no PI)
            group.lun_pi[lun] = disk.capacity.pi_type  # what the unit is formatted with
        except BaseException:
            self._opening[key] -= 1
            group = self.groups.get(key)
            if group is not None and not self._in_use(group):
                self.groups.pop(key, None)
                await group.close()
            raise
        self._opening[key] -= 1
        if name in self.apps:  # started meanwhile by someone else
            if not self._in_use(group):
                self.groups.pop(key, None)
                await group.close()
            raise HostError(f"application {name!r} is already running")
        app = Application(name, controller, target, lun, policy_name, group, disk, policy_version)
        self.apps[name] = app
        self.nbd.add_export(name, disk)
        log_event(log, "application started", app=name, policy=policy_name, target=target,
                  lun=lun, service_class=requirement.service_class, size=disk.size,
                  pi=(f"type{disk.protection.pi_type}/tag:{disk.protection.app_tag:04x}"
                      if disk.protection is not None else "none"),
                  paths=" ".join(f"ch{p.channel}:{p.state.value}" for p in group.paths))
        return app

    def update_policy(self, name: str, *, requirement: Requirement, policy_name: str,
                      version: int) -> None:
        """Apply a new policy to a running application: later I/O follows it."""
        app = self.apps[name]
        app.disk.set_requirement(requirement)
        app.policy_name, app.policy_version = policy_name, version
        log_event(log, "policy updated", app=name, policy=policy_name, version=version,
                  service_class=requirement.service_class)

    def _in_use(self, group: PathGroup) -> bool:
        return (any(a.group is group for a in self.apps.values())
                or self._opening.get((group.portal, group.target), 0) > 0)

    async def stop_app(self, name: str) -> None:
        app = self.apps.pop(name)
        self.nbd.remove_export(name)
        log_event(log, "application stopped", app=name)
        if not self._in_use(app.group):
            self.groups.pop((app.group.portal, app.group.target), None)
            await app.group.close()

    def export_url(self, name: str) -> str:
        host, port = self.nbd_address
        return f"nbd://{format_portal(host, port)}/{name}"

    async def close(self) -> None:
        await self.nbd.close()
        for name in list(self.apps):
            await self.stop_app(name)


async def serve(config: HostConfig) -> None:
    host = Host(config)
    await host.start()
    for name in host.apps:
        print(host.export_url(name), flush=True)
    if config.metrics:
        from difs.host.metrics import serve_metrics

        addr, port = serve_metrics(host, config.metrics)
        log_event(log, "metrics", url=f"http://{format_portal(addr, port)}/metrics")
    link = None
    if config.manager:
        from pathlib import Path

        from difs.host.manager_link import HostManagerLink
        from difs.host.state import BindingStore, default_state_dir
        from difs.nodelink.client import ManagerClient

        node = config.node or config.name
        link = HostManagerLink(host, ManagerClient(config.manager, token=config.token),
                               node=node, interval=config.manager_interval,
                               store=BindingStore(Path(config.state_dir) if config.state_dir
                                                  else default_state_dir(node),
                                                  manager=config.manager, node=node))
        link.start()
        host_addr, port = host.nbd_address
        print(f"nbd://{format_portal(host_addr, port)}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if link is not None:
        await link.close()
    await host.close()
    log_event(log, "stopped")
