"""The asyncio NBD server on loopback, driven by the small blocking client."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time

import pytest

from difs.nbd import constants as c
from difs.nbd.__main__ import parse_listen, parse_size
from difs.nbd.backend import FileBackend, MemoryBackend
from difs.nbd.client import NbdClient, NbdClientError
from difs.nbd.errors import NbdBackendError
from difs.nbd.testing import BackgroundNbdServer

MiB = 1 << 20


class InstrumentedBackend(MemoryBackend):
    """Memory backend with per-offset read delays, failure injection and a concurrency gauge."""

    def __init__(self, size: int, **kwargs) -> None:
        super().__init__(size, **kwargs)
        self.delays: dict[int, float] = {}
        self.default_delay = 0.0
        self.fail: dict[int, BaseException] = {}
        self.active = 0
        self.max_active = 0
        self.calls = 0

    async def _enter(self, offset: int) -> None:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            delay = self.delays.get(offset, self.default_delay)
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.active -= 1
        if offset in self.fail:
            raise self.fail[offset]

    async def read(self, offset: int, length: int) -> bytes:
        await self._enter(offset)
        return await super().read(offset, length)

    async def write(self, offset: int, data: memoryview, *, fua: bool) -> None:
        await self._enter(offset)
        await super().write(offset, data, fua=fua)


@pytest.fixture
def backend():
    return InstrumentedBackend(4 * MiB)


@pytest.fixture
def srv(backend):
    with BackgroundNbdServer({"vm1": backend, "other": MemoryBackend(MiB)}) as server:
        yield server


def _open(srv, name="vm1", structured=True) -> NbdClient:
    return NbdClient.open_tcp(srv.host, srv.port, name, structured=structured)


@pytest.mark.parametrize("structured", [True, False])
def test_write_read_round_trip_over_tcp(srv, backend, structured):
    payload = os.urandom(256 * 1024)
    with _open(srv, structured=structured) as cl:
        assert cl.export.size == 4 * MiB and cl.export.block_sizes == (512, 4096, 32 * MiB)
        cl.write(4096, payload, flags=c.CMD_FLAG_FUA)
        assert cl.read(4096, len(payload)) == payload
        cl.flush()
        cl.disconnect()
        assert cl.is_closed_by_server()
    assert bytes(backend.buffer[4096 : 4096 + len(payload)]) == payload
    assert srv.server.stats["vm1"].writes == 1 and srv.server.stats["vm1"].reads == 1


def test_unix_socket(srv, backend):
    backend.buffer[:512] = b"u" * 512
    with NbdClient.connect_unix(srv.unix_path) as cl:
        cl.handshake()
        assert cl.list_exports() == ["vm1", "other"]
        cl.go("vm1")
        assert cl.read(0, 512) == b"u" * 512


def test_pipelined_replies_come_back_out_of_order(srv, backend):
    backend.delays = {0: 0.3, 512: 0.15, 1024: 0.0}
    with _open(srv) as cl:
        handles = [cl.send_request(c.CMD_READ, off, 512) for off in (0, 512, 1024)]
        got = [cl.recv_reply().handle for _ in handles]
    assert got == list(reversed(handles))


def test_concurrent_backend_calls_bounded_by_max_in_flight(backend):
    backend.default_delay = 0.02
    with BackgroundNbdServer({"vm1": backend}, max_in_flight=4, unix=False) as srv:
        with _open(srv) as cl:
            handles = {cl.send_request(c.CMD_READ, i * 512, 512) for i in range(40)}
            replies = {cl.recv_reply().handle for _ in handles}
    assert replies == handles
    assert backend.max_active == 4  # concurrent, and never more than the limit


def test_backend_errors_fail_one_request_only(srv, backend):
    backend.fail = {0: NbdBackendError(28, "volume full"), 512: RuntimeError("bug")}
    with _open(srv) as cl:
        with pytest.raises(NbdClientError) as err:
            cl.write(0, b"a" * 512)
        assert err.value.error == c.ENOSPC and "volume full" in str(err.value)
        with pytest.raises(NbdClientError) as err:
            cl.read(512, 512)
        assert err.value.error == c.EIO
        cl.write(1024, b"b" * 512)  # the connection goes on
        assert cl.read(1024, 512) == b"b" * 512
    assert srv.server.stats["vm1"].errors == 2


def test_out_of_range_gets_einval_or_enospc_and_connection_continues(srv):
    with _open(srv) as cl:
        with pytest.raises(NbdClientError) as err:
            cl.read(4 * MiB, 512)
        assert err.value.error == c.EINVAL
        with pytest.raises(NbdClientError) as err:
            cl.write(4 * MiB - 512, b"x" * 1024)
        assert err.value.error == c.ENOSPC
        assert cl.read(0, 512) == bytes(512)


def test_garbage_closes_that_connection_only(srv):
    with _open(srv) as good, _open(srv) as bad:
        bad.send_raw(b"\xde\xad\xbe\xef" * 16)
        assert bad.is_closed_by_server()
        good.write(0, b"g" * 512)
        assert good.read(0, 512) == b"g" * 512
    assert srv.server.stats["vm1"].protocol_violations == 1


def test_oversized_write_gets_einval_then_close(srv):
    with _open(srv) as cl:
        cl.send_request(c.CMD_WRITE, 0, 64 * MiB, handle=5)
        reply = cl.recv_reply()
        assert (reply.handle, reply.error) == (5, c.EINVAL)
        assert cl.is_closed_by_server()


def test_garbage_before_handshake_closes(srv):
    with NbdClient.connect_tcp(srv.host, srv.port) as cl:
        cl.recv_exact(18)
        cl.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert cl.is_closed_by_server()


def test_add_and_remove_exports_at_runtime(srv):
    srv.call_soon(srv.server.add_export, "late", MemoryBackend(MiB))
    with NbdClient.connect_tcp(srv.host, srv.port) as cl:
        cl.handshake()
        assert "late" in cl.list_exports()
    with _open(srv, "late") as cl:
        cl.write(0, b"l" * 512)
        srv.call_soon(srv.server.remove_export, "late")
        assert cl.is_closed_by_server()
    with NbdClient.connect_tcp(srv.host, srv.port) as cl:
        cl.handshake()
        with pytest.raises(NbdClientError) as err:
            cl.go("late")
        assert err.value.reply_type == c.REP_ERR_UNKNOWN


def test_disc_answers_requests_in_flight_first(srv, backend):
    backend.delays = {0: 0.2}
    with _open(srv) as cl:
        h = cl.send_request(c.CMD_WRITE, 0, 512, data=b"d" * 512)
        cl.disconnect()
        reply = cl.recv_reply()
        assert (reply.handle, reply.error) == (h, 0)
        assert cl.is_closed_by_server()
    assert bytes(backend.buffer[:512]) == b"d" * 512


def test_close_waits_for_writes_in_flight(backend):
    backend.delays = {0: 0.3}
    srv = BackgroundNbdServer({"vm1": backend}, unix=False).start()
    try:
        cl = _open(srv)
        h = cl.send_request(c.CMD_WRITE, 0, 512, data=b"w" * 512)
        time.sleep(0.1)
        closer = threading.Thread(target=srv.stop)
        closer.start()
        reply = cl.recv_reply()
        assert (reply.handle, reply.error) == (h, 0)
        closer.join(10)
        cl.close()
    finally:
        srv.stop()
    assert bytes(backend.buffer[:512]) == b"w" * 512


def test_client_not_reading_replies_stops_the_server_reading(backend):
    with BackgroundNbdServer({"vm1": backend}, unix=False) as srv:
        with _open(srv) as cl:
            cl.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            total = 2000  # 2000 x 64 KiB = 125 MiB of replies the client does not read yet
            for i in range(total // 100):
                cl.sock.sendall(b"".join(
                    struct.pack(">IHHQQI", c.REQUEST_MAGIC, 0, c.CMD_READ, i * 100 + j, 0, 65536)
                    for j in range(100)
                ))
            time.sleep(0.3)
            calls = backend.calls
            time.sleep(0.3)
            # the server stopped taking requests (its reply buffer is full) and stays stopped
            assert backend.calls == calls
            assert calls < 200, calls
            # once the client reads, everything is answered
            cl.sock.settimeout(30)
            handles = set()
            for _ in range(total):
                magic, flags, rtype, handle, length = struct.unpack(">IHHQI", cl.recv_exact(20))
                assert rtype == c.REPLY_TYPE_OFFSET_DATA and length == 8 + 65536
                cl.recv_exact(length)
                handles.add(handle)
            assert handles == set(range(total))


def test_file_backend(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(4 * MiB)

    async def scenario():
        b = FileBackend(path)
        assert b.size == 4 * MiB
        await b.write(MiB, memoryview(b"f" * 8192), fua=True)
        assert await b.read(MiB, 8192) == b"f" * 8192
        extents = await b.block_status(0, 4 * MiB)
        assert sum(n for n, _ in extents) == 4 * MiB
        data_ranges = [n for n, flags in extents if flags == 0]
        assert data_ranges and sum(data_ranges) < 4 * MiB  # the rest is a hole
        await b.write_zeroes(MiB, 4096, may_trim=True, fua=False)
        assert await b.read(MiB, 8192) == bytes(4096) + b"f" * 4096
        await b.trim(MiB + 4096, 4096)
        await b.flush()
        with pytest.raises(NbdBackendError) as err:
            await b.read(4 * MiB - 512, 1024)  # a short read is an error, not short data
        assert err.value.error == c.EIO
        await b.close()

    asyncio.run(scenario())


def test_file_backend_read_only(tmp_path):
    path = tmp_path / "ro.img"
    path.write_bytes(b"r" * 4096)
    b = FileBackend(path, read_only=True)
    with BackgroundNbdServer({"ro": b}, unix=False) as srv:
        with _open(srv, "ro") as cl:
            assert cl.export.flags & c.TFLAG_READ_ONLY
            assert cl.read(0, 4096) == b"r" * 4096
            with pytest.raises(NbdClientError) as err:
                cl.write(0, b"x" * 512)
            assert err.value.error == c.EPERM
    asyncio.run(b.close())


def test_cli_parsers():
    assert parse_size("64M") == 64 * MiB and parse_size("1GiB") == 1 << 30
    assert parse_size("4096") == 4096
    assert parse_listen("127.0.0.1:10809") == ("127.0.0.1", 10809)
    assert parse_listen("[::1]:0") == ("::1", 0)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_listen("nohost")
