"""A tiny iSCSI target on loopback for the host's adapter tests: the real target core behind an
asyncio server, with knobs a real controller does not offer.

* ``hold`` — opcodes whose commands are delivered but never answered (``release()`` answers them);
  ``hold_next`` — hold only the next N commands of those opcodes;
* ``tmf_response`` — how ABORT TASK is answered (``None``: never answered);
* ``silence()`` — stop reading and answering, without closing (a partitioned network).

Commands are answered by the pair tests' ``FakeDisk`` (512-byte blocks, READ/WRITE(10) and (16)).
"""

from __future__ import annotations

import asyncio
import struct

from difs.iscsi.config import PortalConfig, TargetConfig
from difs.iscsi.constants import TmfFunction, TmfResponse
from difs.iscsi.events import ScsiTask, TaskManagementRequest
from difs.iscsi.session import SessionTable
from difs.iscsi.target_connection import TargetConnection

TARGET = "iqn.2026-11.io.difs:test.disk"
BLOCK = 512
BLOCKS = 2048


def read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TestTarget) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.core = TargetConnection(portal=owner.portal, sessions=owner.sessions,
                                     now=self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.silent = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.owner.connections.append(self)

    def data_received(self, data: bytes) -> None:
        if self.silent:
            return
        self.core.receive_data(data)
        self.pump()

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.core.close()

    def pump(self) -> None:
        owner = self.owner
        while (event := self.core.next_event()) is not None:
            if isinstance(event, ScsiTask):
                owner.seen.append(event)
                if event.cdb[0] in owner.hold and owner.hold_next != 0:
                    owner.hold_next -= 1
                    owner.held.append((self, event))
                else:
                    owner.execute(self.core, event)
            elif isinstance(event, TaskManagementRequest):
                owner.tmfs.append(event)
                if owner.tmf_response is not None:
                    if event.function == TmfFunction.ABORT_TASK:
                        owner.held = [(c, t) for c, t in owner.held
                                      if t is not event.referenced_task]
                    self.core.complete_task_management(event, response=owner.tmf_response)
        if self.silent:
            self.core.data_to_send()
            return
        out = self.core.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.writelines(out)
        when = self.core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.loop.time())
        self.pump()


class TestTarget:
    __test__ = False  # not a pytest class

    def __init__(self, *, command_window: int = 128, target: TargetConfig | None = None) -> None:
        self.portal = PortalConfig(addresses=["127.0.0.1:3260"], command_window=command_window,
                                   targets={TARGET: target or TargetConfig(name=TARGET)})
        self.sessions = SessionTable()
        self.blocks: dict[int, bytes] = {}
        self.connections: list[_Connection] = []
        self.seen: list[ScsiTask] = []
        self.held: list[tuple[_Connection, ScsiTask]] = []
        self.tmfs: list[TaskManagementRequest] = []
        self.hold: set[int] = set()
        self.hold_next = -1  # -1: every command of a held opcode
        self.tmf_response: int | None = TmfResponse.FUNCTION_COMPLETE
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    def execute(self, core: TargetConnection, task: ScsiTask) -> None:
        cdb = task.cdb
        if cdb[0] in (0x88, 0x8A):
            lba, count = struct.unpack_from(">QI", cdb, 2)
            if cdb[0] == 0x88:
                data = b"".join(self.blocks.get(lba + i, bytes(BLOCK)) for i in range(count))
                core.complete_command(task, status=0, data_in=data)
            else:
                data = bytes(task.data_out)
                for i in range(count):
                    self.blocks[lba + i] = data[i * BLOCK:(i + 1) * BLOCK]
                core.complete_command(task, status=0, transfer_length=count * BLOCK)
        elif cdb[0] == 0x9E:  # READ CAPACITY(16)
            core.complete_command(task, status=0,
                                  data_in=struct.pack(">QI", BLOCKS - 1, BLOCK) + bytes(20))
        else:
            core.complete_command(task, status=0)

    def release(self) -> None:
        """Answer every held command."""
        held, self.held = self.held, []
        for conn, task in held:
            self.execute(conn.core, task)
            conn.pump()

    def silence(self) -> None:
        """Every connection stops reading and answering, and stays open."""
        for conn in self.connections:
            conn.silent = True
            conn.transport.pause_reading()

    async def close(self) -> None:
        for conn in self.connections:
            conn.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
