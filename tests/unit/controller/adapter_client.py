"""An in-memory harness for the controller adapter: ``IscsiConnection`` objects get a fake
transport and difs' own sans-I/O initiator core (``InitiatorConnection``) plays the
initiator. No sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from difs.controller.config import ControllerConfig, VolumeConfig
from difs.controller.server import Controller, IscsiConnection
from difs.iscsi.config import ChapCredentials, InitiatorConfig
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_events import (
    CommandComplete,
    LoginFailed,
    LoginSucceeded,
    TaskManagementComplete,
)


def sense_code(done: CommandComplete) -> tuple[int, int, int]:
    s = bytes(done.sense)
    return s[2] & 0x0F, s[12], s[13]


class FakeTransport:
    """Collects what the adapter writes; close/abort end the connection soon after."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.out: list[bytes] = []
        self.closing = False
        self.protocol: IscsiConnection | None = None

    def get_extra_info(self, name: str, default=None):
        return self.peer if name == "peername" else default

    def writelines(self, chunks) -> None:
        self.out.extend(bytes(c) for c in chunks)

    def write(self, data) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close


class Client:
    """One initiator connection driven by difs' initiator core."""

    _ports = iter(range(40000, 50000))

    def __init__(self, ctl: Controller, name: str, *, isid: int = 0x400000000001,
                 volume: str = "vol", target_name: str | None = None, lun: int = 0,
                 digests: bool = False, chap: ChapCredentials | None = None,
                 mutual_chap: ChapCredentials | None = None) -> None:
        self.ctl = ctl
        self.lun = lun
        offer = ("CRC32C",) if digests else ("None",)
        self.core = InitiatorConnection(
            config=InitiatorConfig(initiator_name=name, isid=isid,
                                   target_name=target_name or ctl.config.target_name(volume),
                                   header_digest=offer, data_digest=offer, chap=chap,
                                   mutual_chap=mutual_chap), now=0.0)
        self.transport = FakeTransport(("127.0.0.1", next(self._ports)))
        self.conn = IscsiConnection(ctl)
        self.transport.protocol = self.conn
        self.conn.connection_made(self.transport)
        self.events: list[object] = []
        self.pump()
        assert any(isinstance(e, LoginSucceeded) for e in self.events), [
            getattr(e, "reason", e) for e in self.events if isinstance(e, LoginFailed)] or self.events

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            out = self.core.data_to_send()
            if out and not self.transport.closing:
                self.conn.data_received(b"".join(bytes(c) for c in out))
                moved = True
            if self.transport.out:
                data, self.transport.out = b"".join(self.transport.out), []
                self.core.receive_data(data)
                moved = True
            while (event := self.core.next_event()) is not None:
                self.events.append(event)

    def _wait(self, kind, itt):
        self.pump()
        for event in self.events:
            if isinstance(event, kind) and event.itt == itt:
                self.events.remove(event)
                return event
        raise AssertionError(f"no {kind.__name__} for ITT {itt:#x}: {self.events}")

    def command(self, cdb: bytes, data_out: bytes | None = None, expected_in: int = 0
                ) -> CommandComplete:
        itt = self.core.submit_command(self.lun, cdb, data_out=data_out,
                                       expected_in_length=expected_in)
        return self._wait(CommandComplete, itt)

    def tmf(self, function: int, *, referenced_itt: int | None = None) -> int:
        kwargs = {} if referenced_itt is None else {"referenced_itt": referenced_itt}
        itt = self.core.task_management(function, lun=0, **kwargs)
        return self._wait(TaskManagementComplete, itt).response

    def logout(self) -> None:
        self.core.logout()
        self.pump()

    def drop(self) -> None:
        """The TCP connection breaks (no logout)."""
        self.transport.close()


def make_controller(data_dir: Path, **volume) -> Controller:
    config = ControllerConfig(name="t", portals=["127.0.0.1:3260", "127.0.0.2:3260"],
                              data_dir=data_dir, nop_interval=None,
                              volumes=[VolumeConfig(name="vol", size=4 << 20, **volume)])
    ctl = Controller(config)
    ctl.open_volumes()
    ctl._portal = ctl.portal_config()
    return ctl


def run(coro):
    return asyncio.run(coro)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def lu_of(ctl: Controller):
    return next(iter(ctl.volumes.values())).scsi.luns[0]
