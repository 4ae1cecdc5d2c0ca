"""In-memory pairing of InitiatorConnection and TargetConnection (no sockets), h11-style.

``ConnectionPair.pump()`` moves bytes both ways until nothing moves; target ScsiTask events are
answered by a tiny fake block device (``FakeDisk``) unless ``auto_complete`` is off. Bytes can be
delivered whole, one byte at a time, or in odd-sized chunks.
"""

from __future__ import annotations

import struct

from difs.iscsi.config import (
    ChapCredentials,
    InitiatorConfig,
    PortalConfig,
    TargetConfig,
)
from difs.iscsi.events import ScsiTask, TaskManagementRequest
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_timers import NO_TIMERS, InitiatorTimers
from difs.iscsi.session import SessionTable
from difs.iscsi.target_connection import TargetConnection

TARGET = "iqn.2024-01.org.difs:disk1"
INITIATOR = "iqn.2024-01.org.difs:host1"
BLOCK = 512


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


class FakeDisk:
    """A dict of 512-byte blocks answering READ(10)/WRITE(10); everything else is GOOD."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}
        self.log: list[ScsiTask] = []

    def execute(self, target: TargetConnection, task: ScsiTask) -> None:
        self.log.append(task)
        cdb = task.cdb
        if cdb[0] == 0x28:
            lba, count = struct.unpack_from(">IxH", cdb, 2)
            data = b"".join(self.blocks.get(lba + i, bytes(BLOCK)) for i in range(count))
            target.complete_command(task, status=0, data_in=data)
        elif cdb[0] == 0x2A:
            lba, count = struct.unpack_from(">IxH", cdb, 2)
            data = bytes(task.data_out)
            for i in range(count):
                self.blocks[lba + i] = data[i * BLOCK:(i + 1) * BLOCK]
            target.complete_command(task, status=0, transfer_length=count * BLOCK)
        else:
            target.complete_command(task, status=0)


def portal_config(**overrides) -> PortalConfig:
    targets = overrides.pop("targets", None) or {TARGET: TargetConfig(name=TARGET, alias="disk1")}
    defaults = dict(addresses=["127.0.0.1:3260"], targets=targets)
    defaults.update(overrides)
    return PortalConfig(**defaults)


def initiator_config(**overrides) -> InitiatorConfig:
    defaults = dict(initiator_name=INITIATOR, isid=0x400001370000, target_name=TARGET)
    defaults.update(overrides)
    return InitiatorConfig(**defaults)


class ConnectionPair:
    def __init__(self, *, portal: PortalConfig | None = None,
                 initiator: InitiatorConfig | None = None, sessions: SessionTable | None = None,
                 chunk: int | None = None, auto_complete: bool = True,
                 disk: FakeDisk | None = None, timers: InitiatorTimers = NO_TIMERS) -> None:
        self.portal = portal or portal_config()
        self.sessions = sessions if sessions is not None else SessionTable()
        self.now = 1000.0
        self.target = TargetConnection(portal=self.portal, sessions=self.sessions, now=self.now)
        self.initiator = InitiatorConnection(config=initiator or initiator_config(), now=self.now,
                                             timers=timers)
        self.chunk = chunk
        self.auto_complete = auto_complete
        self.disk = disk or FakeDisk()
        self.target_events: list = []
        self.initiator_events: list = []
        self.pending_tasks: list[ScsiTask] = []
        self.tmf_requests: list[TaskManagementRequest] = []
        self.to_target: list[bytes] = []  # raw bytes seen on the wire
        self.to_initiator: list[bytes] = []

    def _deliver(self, receiver, chunks) -> bool:
        data = b"".join(bytes(c) for c in chunks)
        if not data:
            return False
        if self.chunk is None:
            receiver.receive_data(data)
        else:
            for i in range(0, len(data), self.chunk):
                receiver.receive_data(data[i:i + self.chunk])
        return True

    def pump(self, rounds: int = 1000) -> None:
        for _ in range(rounds):
            moved = False
            out = self.initiator.data_to_send()
            if out:
                self.to_target.append(b"".join(bytes(c) for c in out))
                moved |= self._deliver(self.target, out)
            while (event := self.target.next_event()) is not None:
                self.target_events.append(event)
                if isinstance(event, ScsiTask):
                    if self.auto_complete:
                        self.disk.execute(self.target, event)
                    else:
                        self.pending_tasks.append(event)
                elif isinstance(event, TaskManagementRequest):
                    self.tmf_requests.append(event)
                moved = True
            out = self.target.data_to_send()
            if out:
                self.to_initiator.append(b"".join(bytes(c) for c in out))
                moved |= self._deliver(self.initiator, out)
            while (event := self.initiator.next_event()) is not None:
                self.initiator_events.append(event)
                moved = True
            if not moved:
                return
        raise AssertionError("pair did not settle")

    def events_of(self, side: str, kind: type) -> list:
        events = self.target_events if side == "target" else self.initiator_events
        return [e for e in events if isinstance(e, kind)]


__all__ = ["BLOCK", "ChapCredentials", "ConnectionPair", "FakeDisk", "INITIATOR", "TARGET",
           "TargetConfig", "initiator_config", "portal_config", "read10", "write10"]
