"""The host keeps applications' I/O going when a controller stops answering on one path.

A proxy between host and controller *stalls* a channel: it stops forwarding without
closing, as a partitioned network does. The host notices — by NOP-Out keepalive, or by a
command timeout whose ABORT TASK goes unanswered too — drops that path, re-sends what was in
flight on the other satisfying path, and when the channel answers again logs in with the same
ISID, so the controller reinstates the session (the old connection is gone). A stream of
writes runs through all of it; every acknowledged write reads back intact.

The last test proves pipelining end to end against the real controller: many commands in
flight on one path, 1 MiB writes carried as immediate/unsolicited data up to FirstBurstLength
and Data-Out answering R2Ts for the rest.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from proxy import IscsiProxy
from support import controller, free_port, start_difs

from difs.host.disk import AppDisk
from difs.host.pathgroup import PathGroup
from difs.host.paths import ChannelSpec
from difs.host.connection import SessionTimers
from difs.iscsi.constants import Opcode
from difs.nbd import constants as nbd
from difs.nbd.client import NbdClient
from difs.policy.fast import Requirement

pytestmark = pytest.mark.integration

CHUNK = 128 << 10
CHUNKS = 192  # 24 MiB of a 32 MiB volume


class WriteStream(threading.Thread):
    """Writes random CHUNK-sized blocks at increasing offsets through NBD, ``depth`` at a time,
    paced so that the stream lasts a few seconds; records what was acknowledged."""

    def __init__(self, port: int, export: str, *, depth: int = 8, pace: float = 0.015) -> None:
        super().__init__(daemon=True)
        self.port, self.export, self.depth, self.pace = port, export, depth, pace
        self.acked: dict[int, bytes] = {}
        self.errors: list[str] = []
        self.progress = 0

    def run(self) -> None:
        try:
            client = NbdClient.open_tcp("127.0.0.1", self.port, self.export, structured=False)
            client.sock.settimeout(60)
            pending: dict[int, tuple[int, bytes]] = {}
            sent = 0
            while sent < CHUNKS or pending:
                while sent < CHUNKS and len(pending) < self.depth:
                    data = os.urandom(CHUNK)
                    handle = client.send_request(nbd.CMD_WRITE, sent * CHUNK, CHUNK, data=data)
                    pending[handle] = (sent * CHUNK, data)
                    sent += 1
                    time.sleep(self.pace)
                reply = client.recv_reply()
                offset, data = pending.pop(reply.handle)
                if reply.error:
                    self.errors.append(f"write at {offset}: NBD error {reply.error}")
                else:
                    self.acked[offset] = data
                    self.progress += 1
            client.flush()
            client.disconnect()
            client.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))


def read_back(port: int, export: str, acked: dict[int, bytes]) -> list[int]:
    """Offsets whose data does not read back as acknowledged."""
    client = NbdClient.open_tcp("127.0.0.1", port, export, structured=False)
    try:
        return [offset for offset, data in sorted(acked.items())
                if client.read(offset, len(data)) != data]
    finally:
        client.close()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def path_ups(log: str, channel: int) -> int:
    return sum(1 for line in log.splitlines() if "path up" in line and f"channel={channel} " in line)


@pytest.fixture
def stalled_cluster(tmp_path: Path, request):
    """controller(app1) <- proxy <- host(app1: silver over two digest channels)."""
    timers = request.param
    with controller(tmp_path / "ctl", "--volume", "app1:32M") as ctl:
        proxy = IscsiProxy((ctl.host, ctl.port))
        nbd_port = free_port()
        host = start_difs("host", "--nbd", f"127.0.0.1:{nbd_port}",
                          "--app", f"app1=iscsi://{proxy.portal}/{ctl.iqn('app1')}/0",
                          "--policy", "app1=silver", "--channels", "digests,digests",
                          "--path-wait", "10", "--login-timeout", "1.5", *timers)
        try:
            host.wait_for_lines(1, "nbd://")
            yield ctl, proxy, host, nbd_port
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]
            proxy.close()


KEEPALIVE = ["--nop-interval", "0.5", "--nop-timeout", "1", "--command-timeout", "0"]
COMMAND_TIMEOUT = ["--nop-interval", "0", "--command-timeout", "1", "--abort-timeout", "1"]


def stall_mid_stream(proxy: IscsiProxy, port: int) -> WriteStream:
    stream = WriteStream(port, "app1")
    stream.start()
    wait_for(lambda: stream.progress >= 20 or stream.errors, 20, "the stream to start")
    assert proxy.stall(0) == 1  # channel 0 stops answering, its connection stays open
    stream.join(60)
    assert not stream.is_alive(), "the write stream hung"
    assert not stream.errors, stream.errors
    assert len(stream.acked) == CHUNKS
    return stream


@pytest.mark.parametrize("stalled_cluster", [KEEPALIVE], indirect=True)
def test_keepalive_drops_a_silent_path_and_reinstates_it(stalled_cluster) -> None:
    ctl, proxy, host, port = stalled_cluster
    stream = stall_mid_stream(proxy, port)
    log = host.log_text()
    assert "NOP-Out ping timeout" in log, log[-3000:]
    resent = [line for line in log.splitlines() if "path failed, re-sending" in line]
    assert any("/ch0" in line for line in resent), log[-3000:]
    assert read_back(port, "app1", stream.acked) == []
    # the channel answers again: the host logs in with the same ISID and the controller
    # reinstates the session, closing the connection the partition left hanging
    ups = path_ups(host.log_text(), 0)
    proxy.resume(0)
    wait_for(lambda: path_ups(host.log_text(), 0) > ups, 15, "channel 0 to come back")
    wait_for(lambda: "session reinstated" in ctl.proc.log_text(), 5, "session reinstatement")
    # the I_T nexus of channel 0 (ISID qualifier 0) ended by reinstatement, not by a timeout
    assert any("nexus lost" in line and ",i,0x023d00000000 " in line
               and 'reason="session reinstated"' in line
               for line in ctl.proc.log_text().splitlines()), ctl.proc.log_text()[-3000:]


@pytest.mark.parametrize("stalled_cluster", [COMMAND_TIMEOUT], indirect=True)
def test_command_timeout_aborts_then_drops_the_path_and_resends(stalled_cluster) -> None:
    _, proxy, host, port = stalled_cluster
    stream = stall_mid_stream(proxy, port)
    log = host.log_text()
    assert "command timed out, aborting" in log, log[-3000:]
    assert "path dropped" in log and "ABORT TASK of command" in log, log[-3000:]
    assert "NOP-Out" not in log  # keepalive was off: the command timeout found it
    resent = [line for line in log.splitlines() if "path failed, re-sending" in line]
    assert any("/ch0" in line for line in resent), log[-3000:]
    assert read_back(port, "app1", stream.acked) == []


def test_pipelining_immediate_data_and_r2t_end_to_end(tmp_path: Path) -> None:
    with controller(tmp_path / "ctl", "--volume", "v:48M") as ctl:
        async def main() -> None:
            group = PathGroup(controller="ctl", portal=f"{ctl.host}:{ctl.port}",
                              target=ctl.iqn("v"), initiator_name="iqn.2026-11.io.difs:pipe",
                              channels=(ChannelSpec(0, header_digest=True, data_digest=True),),
                              timers=SessionTimers(nop_interval=None))
            await group.start()
            [path] = group.paths
            session = path.session
            params = session.session.params
            first_burst = params.first_burst_length
            assert params.immediate_data and not params.initial_r2t
            assert first_burst < 1 << 20
            # count what the controller asks for with R2Ts
            core = session.core
            on_r2t = core._handlers[Opcode.R2T]
            asked: list[int] = []

            def counting(pdu):
                asked.append(int.from_bytes(pdu.header[44:48], "big"))
                on_r2t(pdu)

            core._handlers[Opcode.R2T] = counting
            disk = AppDisk(app="pipe", group=group, requirement=Requirement(), path_wait=5)
            await disk.open()
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, path.outstanding)
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            blobs = [os.urandom(1 << 20) for _ in range(32)]
            await asyncio.gather(*(disk.write(i << 20, memoryview(b), fua=False)
                                   for i, b in enumerate(blobs)))
            small = [os.urandom(4096) for _ in range(32)]
            await asyncio.gather(*(disk.write((40 << 20) + i * 4096, memoryview(b), fua=False)
                                   for i, b in enumerate(small)))
            back = await asyncio.gather(*(disk.read(i << 20, 1 << 20) for i in range(32)))
            back_small = await asyncio.gather(*(disk.read((40 << 20) + i * 4096, 4096)
                                                for i in range(32)))
            watcher.cancel()
            assert [bytes(b) for b in back] == blobs
            assert [bytes(b) for b in back_small] == small
            # QD32 on one path: many commands in flight at once, not one after another
            assert peak > 8 and session.peak_outstanding > 8, (peak, session.peak_outstanding)
            # each 1 MiB write: the first burst went without being asked (immediate +
            # unsolicited), R2Ts asked for exactly the rest; 4 KiB writes needed none
            assert sum(asked) == 32 * ((1 << 20) - first_burst), (len(asked), sum(asked))
            await group.close()

        asyncio.run(asyncio.wait_for(main(), 60))
