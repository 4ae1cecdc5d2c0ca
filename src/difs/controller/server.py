"""The controller's asyncio adapter: portals, connections, and the volumes behind them.

This module moves bytes and timers between sockets and the sans-I/O cores; it
makes no protocol decisions. Per connection: bytes in -> ``TargetConnection``
-> events; a ``ScsiTask`` event is executed by the volume's ``LogicalUnit`` and
the result handed back with ``complete_command``; whatever the core wants sent
goes out with one ``writelines``.

Every volume is its own iSCSI target (``IQN_PREFIX:CONTROLLER.VOLUME``, LUN 0),
so access control, CHAP and digest requirements are per volume. All portals
belong to one portal group, so a volume reached through any portal is the same
SCSI target port and the same ``LogicalUnit`` object (one identity in VPD 83h,
one set of reservations and unit attentions): that is what multipath
initiators rely on.

What the SCSI core learns from the transport, and when:

* ``ScsiTarget.nexus_lost(nexus)`` once per Normal session, when its last
  connection ends (logout, connection loss, protocol failure) or when a new
  login reinstates it - at the reinstatement, before the new session runs a
  command, never again when the replaced connection finally closes;
* LOGICAL UNIT RESET -> ``LogicalUnit.reset``; TARGET WARM RESET ->
  ``ScsiTarget.reset()``; TARGET COLD RESET -> ``ScsiTarget.reset(cold=True)``
  and every connection to that target is closed after the response (RFC 7143
  11.5.1). Tasks of other sessions waiting for data are aborted too;
* write residuals: the SCSI transfer length of the CDB is handed to
  ``complete_command`` so the core reports overflow/underflow against EDTL.

Before a command reaches its logical unit it is judged against the volume's
policy and the session's negotiated services (:mod:`difs.controller.enforcement`:
one precomputed :class:`~difs.controller.enforcement.Guard` per session and
LUN); a refused command is answered CHECK CONDITION, DATA PROTECT 74h/71h,
counted and logged. Per session x volume counters (commands, bytes, PI work,
refusals, and the latency of each command from the arrival of the bytes that carried
its command PDU to its response queued, on ``time.monotonic_ns``), the services each
session's login settled with its CRC32C digest errors
(:class:`~difs.controller.enforcement.SessionFacts`: digests, authentication, the local
address:port it arrived on) and per connection CRC32C digest work are what ``difs
controller --metrics`` serves (:mod:`difs.controller.metrics`) and what a manager-driven
controller reports as evidence (:mod:`difs.controller.evidence`).

Bounds: at most ``max_connections`` open connections, ``max_connections_per_address`` from
one peer address (one more is closed at once, before the core is made); a connection that
has not logged in within ``login_timeout`` seconds is closed by its core; a peer that does
not read its answers stops being read (``pause_writing``), so it cannot make the controller
queue answers without bound. The lines a flood repeats (refused connections and logins,
connections closed before login, digest errors) are rate-limited.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from time import monotonic_ns

from difs.controller.config import (
    ConfigError,
    ControllerConfig,
    VolumeConfig,
    policy_pi_type,
    resolve_policy,
)
from difs.controller.endpoint import ProtocolEndpoint
from difs.controller.enforcement import (
    Enforcement,
    Guard,
    SessionFacts,
    describes_only,
    session_flags,
)
from difs.controller.qos_gate import QosGate
from difs.controller.volumes import VolumeDirectory, VolumeError, VolumeMeta
from difs.iscsi.config import ChapCredentials, PortalConfig, TargetConfig
from difs.iscsi.constants import TmfFunction, TmfResponse
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
from difs.iscsi.session import Session, SessionTable
from difs.iscsi.target_connection import TargetConnection
from difs.sam.sense import parse_sense, pi_check_kind
from difs.sam.status import CHECK_CONDITION, GOOD, TASK_SET_FULL
from difs.scsi.commands import data_out_length
from difs.scsi.device import LogicalUnit
from difs.scsi.nexus import Nexus
from difs.scsi.store import BlockStore
from difs.scsi.lun_map import ScsiTarget
from difs.util.coretimer import CoreTimer
from difs.util.logs import RateLimitedEvent, RateLimitedLog, log_event
from difs.util.units import format_portal, parse_portal

log = logging.getLogger("difs.controller")

#: the lines a flood of connections, logins or faults repeats: a few per 10 s, with a count
_refused = RateLimitedEvent(log, "connection refused: connection limit reached",
                            level=logging.WARNING, burst=3)
_not_logged_in = RateLimitedEvent(log, "connection closed before login", burst=3)
_flood = RateLimitedLog(log, burst=5)



@dataclass
class Volume:
    """A served volume: its metadata, its SCSI target and its store."""

    meta: VolumeMeta
    config: VolumeConfig
    target_name: str
    store: BlockStore
    scsi: ScsiTarget

    @property
    def lu(self) -> LogicalUnit:
        return self.scsi.luns[0]


@dataclass
class ControllerStats:
    connections: int = 0
    #: connections closed at once for a connection limit, by limit ("total", "address")
    refused: dict[str, int] = field(default_factory=dict)
    logins: int = 0
    #: logins refused, by status ("0201", "0301", ...)
    logins_refused: dict[str, int] = field(default_factory=dict)
    reinstatements: int = 0
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
        #: open connections by peer address
        self._per_address: dict[str, int] = {}
        self._portal: PortalConfig | None = None
        self._next_nexus_id = 0
        self.endpoint: ProtocolEndpoint | None = None
        # Normal sessions the SCSI layer knows, with their nexus and target
        self._nexuses: dict[Session, tuple[Nexus, ScsiTarget]] = {}
        self.enforcement = Enforcement()
        #: the QoS scheduler of the volumes whose policy has QoS parameters (qos_gate.py)
        self.qos = QosGate(policies=self._qos_of)
        #: CRC32C work of closed connections, by (target, initiator, channel, hd, dd)
        self.digest_history: dict[tuple, list[int]] = {}

    # -- setup ---------------------------------------------------------------

    def open_volumes(self) -> None:
        directory = VolumeDirectory(self.config.data_dir)
        for vc in self.config.volumes:
            policy = info = None
            if vc.policy is not None:
                try:
                    policy, info = resolve_policy(vc.policy)
                except ConfigError as exc:
                    raise VolumeError(f"volume {vc.name!r}: {exc}") from None
            pi_type = vc.pi_type
            needed = policy_pi_type(policy)
            if pi_type is not None and needed and pi_type != needed:
                raise VolumeError(f"volume {vc.name!r}: its policy requires PI type {needed}, "
                                  f"not pi{pi_type}")
            if pi_type is None and needed and not directory.meta_path(vc.name).exists():
                pi_type = needed  # created PI-formatted as its policy asks
            meta = directory.ensure(vc.name, vc.size, read_only=vc.read_only, thin=vc.thin,
                                    pi_type=pi_type, app_tag=vc.app_tag, policy=policy,
                                    policy_info=info)
            target_name = self.config.target_name(vc.name)
            lu, store = directory.open_unit(meta, device_name=target_name)
            self.volumes[target_name] = Volume(meta, vc, target_name, store, ScsiTarget({0: lu}))
            self.enforcement.register(lu, meta)

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
        if self.endpoint is not None:
            targets[self.endpoint.name] = self.endpoint.target_config()
        return PortalConfig(addresses=list(self.config.portals), targets=targets,
                            nop_interval=self.config.nop_interval,
                            login_timeout=self.config.login_timeout)

    def enable_endpoint(self) -> ProtocolEndpoint:
        """Manager mode: also serve the protocol endpoint target (see endpoint.py)."""
        self.endpoint = ProtocolEndpoint(name=f"{self.config.iqn_prefix}:{self.config.name}",
                                         directory=VolumeDirectory(self.config.data_dir),
                                         enforcement=self.enforcement)
        return self.endpoint

    def scsi_target_for(self, session: Session) -> ScsiTarget:
        """The LUNs a Normal session sees: its volume's, or its view of the endpoint."""
        if self.endpoint is not None and session.target_name == self.endpoint.name:
            return self.endpoint.view_for(session.initiator_name)
        return self.volumes[session.target_name].scsi

    async def start(self) -> None:
        if not self.volumes and self.config.volumes:
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
            try:
                vol.store.flush()
            except OSError as exc:  # a failing disk must not keep the others open
                log_event(log, "volume flush failed at shutdown", level=logging.ERROR,
                          volume=vol.config.name, error=str(exc))
            vol.store.close()
        if self.endpoint is not None:
            self.endpoint.close()
        self.qos.close()

    def _qos_of(self, volume: str):
        """A volume's current QoS parameters (None: none, or the volume is gone)."""
        lu = self.enforcement.luns.get(volume)
        policy = self.enforcement.policies.get(lu) if lu is not None else None
        return policy.qos if policy is not None else None

    # -- used by connections ------------------------------------------------------

    def new_nexus(self, initiator_port: str, target_name: str) -> Nexus:
        self._next_nexus_id += 1
        tpgt = self._portal.portal_group_tag if self._portal else 1
        # one portal group = one SCSI target port; its relative port id is the TPGT
        return Nexus(initiator_port, f"{target_name},t,0x{tpgt:04x}", self._next_nexus_id,
                     relative_port=tpgt)

    def session_started(self, session: Session, nexus: Nexus, scsi: ScsiTarget) -> None:
        self._nexuses[session] = (nexus, scsi)

    def session_ended(self, session: Session, *, why: str) -> None:
        """The I_T nexus of ``session`` is gone: tell the SCSI target (once)."""
        entry = self._nexuses.pop(session, None)
        if entry is None:
            return
        nexus, scsi = entry
        scsi.nexus_lost(nexus)
        log_event(log, "nexus lost", initiator_port=nexus.initiator_port,
                  target=session.target_name, reason=why)

    def retire_digest_work(self, conn: IscsiConnection) -> None:
        """Keep a closing connection's CRC32C work in the totals (metrics stay monotonic)."""
        if conn.core is None or conn.session is None:
            return
        count, covered = conn.core.digest_work
        if not count:
            return
        totals = self.digest_history.setdefault(conn.digest_key(), [0, 0])
        totals[0] += count
        totals[1] += covered

    def over_limit(self, address: str) -> tuple[str, int] | None:
        """Which connection limit one more connection from ``address`` would pass, if any:
        ("total", max_connections) or ("address", max_connections_per_address)."""
        config = self.config
        if len(self._connections) >= config.max_connections:
            return "total", config.max_connections
        if self._per_address.get(address, 0) >= config.max_connections_per_address:
            return "address", config.max_connections_per_address
        return None

    def connections_of(self, session: object, connection_ids: tuple[int, ...] | None = None
                       ) -> list[IscsiConnection]:
        return [c for c in self._connections if c.session is session
                and (connection_ids is None or c.connection_id in connection_ids)]


class IscsiConnection(CoreTimer, asyncio.Protocol):
    """One TCP connection: moves bytes and timers, dispatches the core's events."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.transport: asyncio.Transport | None = None
        self.core: TargetConnection | None = None
        self.session = None
        self.connection_id: int | None = None
        self.nexus: Nexus | None = None
        self.scsi: ScsiTarget | None = None
        self.session_flags = 0
        self._guards: dict[int, Guard] = {}
        self.facts: SessionFacts | None = None  # what this session's login settled
        self.peer = "?"
        self.address = "?"
        self.interface: str | None = None  # the local address:port the connection arrived on
        self._closed_why: str | None = None  # why the core closed the connection
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = format_portal(peer[0], peer[1]) if peer else "?"
        controller = self.controller
        self.address = peer[0] if peer else "?"
        local = transport.get_extra_info("sockname")
        self.interface = format_portal(local[0], local[1]) if local else None
        over = controller.over_limit(self.address)
        if over is not None:
            limit, value = over
            controller.stats.refused[limit] = controller.stats.refused.get(limit, 0) + 1
            _refused(peer=self.peer, limit=limit, max=value)
            transport.abort()
            return
        controller._per_address[self.address] = controller._per_address.get(self.address, 0) + 1
        self.core = TargetConnection(portal=controller._portal, sessions=controller.sessions,
                                     now=self._loop.time())
        controller._connections.add(self)
        controller.stats.connections += 1
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data, arrived_ns=monotonic_ns())
        self._pump()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.core is None:
            return  # refused at once: never counted, nothing to release
        controller = self.controller
        controller._connections.discard(self)
        left = controller._per_address.get(self.address, 1) - 1
        if left:
            controller._per_address[self.address] = left
        else:
            controller._per_address.pop(self.address, None)
        if self._timer is not None:
            self._timer.cancel()
        self.core.close()
        self._drain_events()
        controller.retire_digest_work(self)
        reason = str(exc) if exc else (self._closed_why or "peer closed")
        if self.session is None:
            _not_logged_in(peer=self.peer, reason=reason)
        else:
            log_event(log, "connection closed", peer=self.peer,
                      initiator=self.session.initiator_name, reason=reason)
        self._check_session_end("connection lost")

    def pause_writing(self) -> None:
        # The peer does not read its answers: stop reading its requests until it does, so
        # the answers queued here stay bounded (by the transport's high-water mark plus what
        # one read's commands produce, within the CmdSN window).
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _check_session_end(self, why: str) -> None:
        """Once the core has dropped this connection from its session, a session left
        without connections is over (ERL 0: no connection recovery)."""
        session = self.session
        if session is not None and not session.connections:
            self.controller.session_ended(session, why=why)

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

    def digest_key(self) -> tuple[str, str, int, bool, bool]:
        s = self.session
        return (s.target_name or "", s.initiator_name, s.isid & 0xFFFF,
                s.params.header_digest, s.params.data_digest)

    def _execute(self, task: ScsiTask) -> None:
        scsi = self.scsi
        lun = task.lun
        lu = scsi.luns.get(lun)
        if lu is None:  # no such LUN, or it left this session's view: forget its guard
            self._guards.pop(lun, None)
            guard = None
        else:
            guard = self._guards.get(lun)
            if (guard is None or guard.lu is not lu
                    or guard.policy is not self.controller.enforcement.policies.get(lu)):
                guard = self._new_guard(lun, lu)
        if guard is None:  # no such LUN (or a logical unit without a policy record)
            result = scsi.execute(lun, task.cdb, task.data_out, self.nexus)
            self.core.complete_command(
                task, status=result.status, data_in=result.data, sense=result.sense,
                transfer_length=result.transfer_length if task.write else None)
            return
        cdb = task.cdb
        stats = guard.stats
        stats.commands += 1
        reason = guard.check(cdb)
        if reason is not None:
            self.controller.enforcement.rejected(guard, reason, cdb)
            self.core.complete_command(
                task, status=CHECK_CONDITION, data_in=b"", sense=guard.sense[lu.d_sense],
                transfer_length=data_out_length(lu, cdb) if task.write else None)
            stats.latency.record(monotonic_ns() - task.arrived)
            return
        if guard.qos is not None and not describes_only(cdb):
            if not self.controller.qos.submit(guard.qos, self, task, guard):
                self.core.complete_command(task, status=TASK_SET_FULL)  # its queue is full
            return
        self._run(task, guard)

    def run_scheduled(self, task: ScsiTask, guard: Guard) -> None:
        """The QoS scheduler's turn for ``task`` (unless it was aborted while queued)."""
        if task.state == ScsiTask.DELIVERED and self.core is not None:
            self._run(task, guard)

    def flush(self) -> None:
        out = self.core.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _run(self, task: ScsiTask, guard: Guard) -> None:
        """Run a command that passed its volume's policy, count it, answer it."""
        lu = guard.lu
        cdb = task.cdb
        stats = guard.stats
        if lu.pi_type:
            store = lu.store
            checked, generated = store.checked_blocks, store.generated_blocks
            result = lu.execute(cdb, task.data_out, self.nexus)
            stats.pi_checked += store.checked_blocks - checked
            stats.pi_generated += store.generated_blocks - generated
        else:
            result = lu.execute(cdb, task.data_out, self.nexus)
        if task.write:
            stats.write_bytes += len(task.data_out)
            transfer_length = result.transfer_length
        else:
            transfer_length = None
        if result.data and not describes_only(cdb):  # volume data, not what describes it
            stats.read_bytes += len(result.data)
        if result.status != GOOD and result.sense:
            self._command_failed(guard, result.sense, cdb)
        self.core.complete_command(task, status=result.status, data_in=result.data,
                                   sense=result.sense, transfer_length=transfer_length)
        stats.latency.record(monotonic_ns() - task.arrived)

    def _new_guard(self, lun: int, lu: LogicalUnit) -> Guard | None:
        guard = self.controller.enforcement.guard(lu, self.session, self.session_flags,
                                                  self.interface)
        if guard is None:
            self._guards.pop(lun, None)
        else:
            self._guards[lun] = guard
            self.facts = guard.stats.session  # the kept record
            policy = guard.policy
            if policy.qos is not None:
                guard.qos = self.controller.qos.client(policy.volume, policy.qos)
            else:
                self.controller.qos.release(policy.volume)
        return guard

    def _command_failed(self, guard: Guard, sense, cdb) -> None:
        """Count PI check failures (ABORTED COMMAND 10h/01h-03h) of a session x volume; a
        wrong application tag is a policy violation too (reason ``app_tag``)."""
        kind = pi_check_kind(*parse_sense(sense))
        if kind is None:
            return
        guard.stats.pi_failed[kind] += 1
        if kind == "app":
            self.controller.enforcement.rejected(guard, "app_tag", cdb)

    def _handle(self, event: object) -> None:
        if isinstance(event, LoginComplete):
            self._login_complete(event)
        elif isinstance(event, TaskManagementRequest):
            self._task_management(event)
        elif isinstance(event, SessionReinstated):
            # Same I_T nexus, new session: the old one's nexus is lost now, before the
            # new session runs anything (its connections' later close must not repeat it).
            self.controller.session_ended(event.old_session, why="session reinstated")
            for conn in self.controller.connections_of(event.old_session, event.old_connection_ids):
                if conn is not self:
                    self.controller.stats.reinstatements += 1
                    _flood("session reinstated", initiator=event.old_session.initiator_name,
                           old_peer=conn.peer, new_peer=self.peer)
                    conn.abort()
        elif isinstance(event, ConnectionReinstated):
            for conn in self.controller.connections_of(event.session, (event.old_connection_id,)):
                if conn is not self:
                    conn.abort()
        elif isinstance(event, LoginRejected):
            status = f"{event.status_class:02x}{event.status_detail:02x}"
            refused = self.controller.stats.logins_refused
            refused[status] = refused.get(status, 0) + 1
            _flood("login refused", logging.WARNING, peer=self.peer,
                   initiator=event.initiator_name, target=event.target_name,
                   reason=event.reason, status=status)
        elif isinstance(event, ProtocolViolation):
            self.controller.stats.protocol_errors += 1
            _flood("protocol violation", logging.WARNING, peer=self.peer,
                   initiator=getattr(self.session, "initiator_name", None), reason=event.reason)
        elif isinstance(event, DigestFailure):
            if self.facts is not None:
                self.facts = self.controller.enforcement.keep(self.facts)
                self.facts.digest_errors += 1
            _flood("digest error", logging.WARNING, peer=self.peer, kind=event.kind,
                   initiator=getattr(self.session, "initiator_name", None))
        elif isinstance(event, LogoutComplete):
            log_event(log, "logout", peer=self.peer, initiator=event.session.initiator_name)
            self._check_session_end("logout")
        elif isinstance(event, ConnectionClosed):
            self._closed_why = event.reason
            out = self.core.data_to_send()
            if self.transport is not None:
                if out:
                    self.transport.writelines(out)
                self.transport.close()
            self._check_session_end(event.reason)

    def _login_complete(self, event: LoginComplete) -> None:
        session = event.session
        self.session = session
        self.connection_id = event.connection_id
        self.controller.stats.logins += 1
        fields = dict(peer=self.peer, initiator=session.initiator_name,
                      session_type=session.session_type, tsih=session.tsih)
        if session.session_type == "Normal":
            self.scsi = self.controller.scsi_target_for(session)
            self.nexus = self.controller.new_nexus(session.initiator_port, session.target_name)
            self.controller.session_started(session, self.nexus, self.scsi)
            self.session_flags = session_flags(session)
            self._guards.clear()
            facts = self.facts = self.controller.enforcement.facts_for(session, self.interface)
            fields.update(target=session.target_name, channel=facts.channel,
                          header_digest=facts.header_digest, data_digest=facts.data_digest,
                          auth=session.params.auth_method, mutual=session.params.mutual_chap,
                          interface=facts.interface)
        log_event(log, "login", **fields)

    # task management -------------------------------------------------------------

    def _task_management(self, event: TaskManagementRequest) -> None:
        """Commands run to completion synchronously, so nothing is executing when a task
        management request arrives: aborts complete at once (the core has already dropped
        tasks still waiting for data or CmdSN order)."""
        function = event.function
        scsi = self.scsi
        response = TmfResponse.FUNCTION_COMPLETE
        if scsi is None:
            response = TmfResponse.REJECTED
        elif function == TmfFunction.ABORT_TASK:
            task = event.referenced_task
            if task is not None and task.state != ScsiTask.DELIVERED:
                # it ran (and was answered) before this request was handled
                response = TmfResponse.TASK_DOES_NOT_EXIST
        elif function in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET,
                          TmfFunction.CLEAR_ACA):
            pass
        elif function == TmfFunction.LOGICAL_UNIT_RESET:
            lu = scsi.luns.get(event.lun)
            if lu is None:
                response = TmfResponse.LUN_DOES_NOT_EXIST
            else:
                self._abort_other_sessions(lun=event.lun)
                lu.reset(nexus=self.nexus)
                log_event(log, "logical unit reset", initiator=self.session.initiator_name,
                          target=self.session.target_name, lun=event.lun)
        elif function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            cold = function == TmfFunction.TARGET_COLD_RESET
            self._abort_other_sessions(lun=None)
            scsi.reset(cold=cold)
            log_event(log, "target reset", initiator=self.session.initiator_name,
                      target=self.session.target_name, kind="cold" if cold else "warm")
        else:
            response = TmfResponse.NOT_SUPPORTED
        self.core.complete_task_management(event, response=response)
        if response == TmfResponse.FUNCTION_COMPLETE and function == TmfFunction.TARGET_COLD_RESET:
            self._close_target_connections()

    def _peers_on_target(self) -> list[IscsiConnection]:
        """Connections of other sessions to the same SCSI target as this one."""
        return [c for c in list(self.controller._connections)
                if c.scsi is self.scsi and c.session is not self.session and c.core is not None]

    def _abort_other_sessions(self, *, lun: int | None) -> None:
        for conn in self._peers_on_target():
            if conn.core.abort_tasks(lun=lun):
                conn._pump()

    def _close_target_connections(self) -> None:
        """TARGET COLD RESET: close every connection to this target, this one last (after
        its Task Management Response is written)."""
        for conn in list(self.controller._connections):
            if conn.scsi is self.scsi and conn is not self and conn.transport is not None:
                conn.transport.close()
        if self.transport is not None:
            out = self.core.data_to_send()
            if out:
                self.transport.writelines(out)
            self.transport.close()
