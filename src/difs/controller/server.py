"""The controller's asyncio adapter: portals, connections, and the volumes behind them.

This module moves bytes and timers between sockets and the sans-I/O cores; it
makes no protocol decisions. Per connection: bytes in -> ``TargetConnection``
-> events; a ``ScsiTask`` event is executed by the volume's ``LogicalUnit`` and
the result handed back with ``complete_command``; whatever the core wants sent
goes out with one ``writelines``.

Every volume is its own iSCSI target (``IQN_PREFIX:CONTROLLER.VOLUME``, LUN 0),
so access control, CHAP and digest requirements are per volume.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from difs.controller.config import ControllerConfig, VolumeConfig
from difs.controller.volumes import VolumeDirectory, VolumeMeta
from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.events import (
    ConnectionClosed,
    ConnectionReinstated,
    DigestFailure,
    LoginComplete,
    LoginRejected,
    LogoutComplete,
    ProtocolViolation,
    ScsiTask,
    SessionReinstated,
    TaskManagementRequest,
)
from difs.iscsi.session import SessionTable
from difs.iscsi.target import TargetConnection
from difs.scsi.device import LogicalUnit, LuIdentity
from difs.scsi.filestore import FileStore
from difs.scsi.nexus import Nexus
from difs.scsi.target import ScsiTarget
from difs.util.logs import log_event
from difs.util.units import format_portal, parse_portal

log = logging.getLogger("difs.controller")

TMF_FUNCTION_COMPLETE = 0
TMF_NOT_SUPPORTED = 5
_TMF_ABORT_TASK, _TMF_ABORT_TASK_SET, _TMF_CLEAR_ACA, _TMF_CLEAR_TASK_SET = 1, 2, 3, 4
_TMF_LUN_RESET, _TMF_TARGET_WARM_RESET, _TMF_TARGET_COLD_RESET = 5, 6, 7


@dataclass
class Volume:
    """A served volume: its metadata, its SCSI target and its store."""

    meta: VolumeMeta
    config: VolumeConfig
    target_name: str
    store: FileStore
    scsi: ScsiTarget


@dataclass
class ControllerStats:
    connections: int = 0
    logins: int = 0
    protocol_errors: int = 0
    commands: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


class Controller:
    """All portals and volumes of one controller process."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.volumes: dict[str, Volume] = {}  # by target name
        self.sessions = SessionTable()
        self.stats = ControllerStats()
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[IscsiConnection] = set()
        self._portal: PortalConfig | None = None
        self._next_nexus_id = 0

    # -- setup ---------------------------------------------------------------

    def open_volumes(self) -> None:
        directory = VolumeDirectory(self.config.data_dir)
        for vc in self.config.volumes:
            meta = directory.ensure(vc.name, vc.size, read_only=vc.read_only, thin=vc.thin)
            target_name = self.config.target_name(vc.name)
            store = FileStore.open(directory.data_path(vc.name), size=meta.size)
            identity = LuIdentity.from_uuid(meta.uuid, device_name=target_name)
            lu = LogicalUnit(store=store, identity=identity, block_size=meta.block_size,
                             read_only=meta.read_only, thin=meta.thin)
            self.volumes[target_name] = Volume(meta, vc, target_name, store, ScsiTarget({0: lu}))

    def portal_config(self) -> PortalConfig:
        targets = {}
        for name, vol in self.volumes.items():
            vc = vol.config
            targets[name] = TargetConfig(
                name=name,
                alias=vc.name,
                allowed_initiators=frozenset(vc.allowed_initiators)
                if vc.allowed_initiators is not None else None,
                chap=ChapCredentials(vc.chap.user, vc.chap.secret) if vc.chap else None,
                mutual_chap=ChapCredentials(vc.mutual_chap.user, vc.mutual_chap.secret)
                if vc.mutual_chap else None,
                require_header_digest=vc.require_header_digest,
                require_data_digest=vc.require_data_digest,
            )
        return PortalConfig(addresses=list(self.config.portals), targets=targets,
                            nop_interval=self.config.nop_interval)

    async def start(self) -> None:
        if not self.volumes:
            self.open_volumes()
        self._portal = self.portal_config()
        loop = asyncio.get_running_loop()
        for portal in self.config.portals:
            host, port = parse_portal(portal)
            server = await loop.create_server(
                lambda: IscsiConnection(self), host, port, reuse_address=True)
            self._servers.append(server)
            log_event(log, "listening", portal=format_portal(host, port))

    def urls(self) -> list[str]:
        """One ``iscsi://HOST:PORT/IQN/LUN`` per volume and portal."""
        out = []
        for portal in self.config.portals:
            host, port = parse_portal(portal)
            for name in self.volumes:
                out.append(f"iscsi://{format_portal(host, port)}/{name}/0")
        return out

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        for vol in self.volumes.values():
            vol.store.flush()
            vol.store.close()

    # -- used by connections ------------------------------------------------------

    def new_nexus(self, initiator_port: str, target_name: str) -> Nexus:
        self._next_nexus_id += 1
        tpgt = self._portal.portal_group_tag if self._portal else 1
        return Nexus(initiator_port, f"{target_name},t,0x{tpgt:04x}", self._next_nexus_id)

    def connections_of(self, session: object, connection_ids: tuple[int, ...] | None = None
                       ) -> list[IscsiConnection]:
        return [c for c in self._connections if c.session is session
                and (connection_ids is None or c.connection_id in connection_ids)]


class IscsiConnection(asyncio.Protocol):
    """One TCP connection: moves bytes and timers, dispatches the core's events."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.transport: asyncio.Transport | None = None
        self.core: TargetConnection | None = None
        self.session = None
        self.connection_id: int | None = None
        self.nexus: Nexus | None = None
        self.scsi: ScsiTarget | None = None
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = format_portal(peer[0], peer[1]) if peer else "?"
        self.core = TargetConnection(portal=self.controller._portal, sessions=self.controller.sessions,
                                     now=self._loop.time())
        self.controller._connections.add(self)
        self.controller.stats.connections += 1
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.controller._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.core is not None:
            self.core.close()
            self._drain_events()
        log_event(log, "connection closed", peer=self.peer,
                  initiator=getattr(self.session, "initiator_name", None),
                  reason=str(exc) if exc else "peer closed")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # event dispatch ------------------------------------------------------------

    def _pump(self) -> None:
        self._drain_events()
        out = self.core.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)
        self._arm_timer()

    def _drain_events(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            if type(event) is ScsiTask:
                self._execute(event)
            else:
                self._handle(event)

    def _execute(self, task: ScsiTask) -> None:
        result = self.scsi.execute(task.lun, task.cdb, task.data_out, self.nexus)
        self.core.complete_command(task, status=result.status, data_in=result.data,
                                   sense=result.sense)

    def _handle(self, event: object) -> None:
        if isinstance(event, LoginComplete):
            self._login_complete(event)
        elif isinstance(event, TaskManagementRequest):
            self.core.complete_task_management(event, response=self._task_management(event))
        elif isinstance(event, SessionReinstated):
            for conn in self.controller.connections_of(event.old_session, event.old_connection_ids):
                if conn is not self:
                    log_event(log, "session reinstated", initiator=event.old_session.initiator_name,
                              old_peer=conn.peer, new_peer=self.peer)
                    conn.abort()
        elif isinstance(event, ConnectionReinstated):
            for conn in self.controller.connections_of(event.session, (event.old_connection_id,)):
                if conn is not self:
                    conn.abort()
        elif isinstance(event, LoginRejected):
            log_event(log, "login refused", level=logging.WARNING, peer=self.peer,
                      initiator=event.initiator_name, target=event.target_name,
                      reason=event.reason,
                      status=f"{event.status_class:02x}{event.status_detail:02x}")
        elif isinstance(event, ProtocolViolation):
            self.controller.stats.protocol_errors += 1
            log_event(log, "protocol violation", level=logging.WARNING, peer=self.peer,
                      initiator=getattr(self.session, "initiator_name", None), reason=event.reason)
        elif isinstance(event, DigestFailure):
            log_event(log, "digest error", level=logging.WARNING, peer=self.peer, kind=event.kind,
                      initiator=getattr(self.session, "initiator_name", None))
        elif isinstance(event, LogoutComplete):
            log_event(log, "logout", peer=self.peer, initiator=event.session.initiator_name)
        elif isinstance(event, ConnectionClosed):
            out = self.core.data_to_send()
            if self.transport is not None:
                if out:
                    self.transport.writelines(out)
                self.transport.close()

    def _login_complete(self, event: LoginComplete) -> None:
        session = event.session
        self.session = session
        self.connection_id = event.connection_id
        self.controller.stats.logins += 1
        fields = dict(peer=self.peer, initiator=session.initiator_name,
                      session_type=session.session_type, tsih=session.tsih)
        if session.session_type == "Normal":
            volume = self.controller.volumes[session.target_name]
            self.scsi = volume.scsi
            self.nexus = self.controller.new_nexus(session.initiator_port, session.target_name)
            fields.update(target=session.target_name, header_digest=session.header_digest,
                          data_digest=session.data_digest, auth=session.auth_method)
        log_event(log, "login", **fields)

    def _task_management(self, event: TaskManagementRequest) -> int:
        # Commands run to completion synchronously: nothing is ever executing
        # when a task management request arrives, so the aborts complete at once
        # (the core has already dropped tasks still waiting for data or CmdSN).
        function = event.function
        if function in (_TMF_ABORT_TASK, _TMF_ABORT_TASK_SET, _TMF_CLEAR_TASK_SET, _TMF_CLEAR_ACA):
            return TMF_FUNCTION_COMPLETE
        if function == _TMF_LUN_RESET:
            lu = self.scsi.luns.get(event.lun) if self.scsi else None
            if lu is not None:
                lu.reset(nexus=self.nexus)
            return TMF_FUNCTION_COMPLETE
        if function == _TMF_TARGET_WARM_RESET:
            if self.scsi is not None:
                for lu in self.scsi.luns.values():
                    lu.reset(nexus=None)
            return TMF_FUNCTION_COMPLETE
        return TMF_NOT_SUPPORTED

    # timers ------------------------------------------------------------------

    def _arm_timer(self) -> None:
        when = self.core.get_timer()
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self._loop.time())
        self._pump()
