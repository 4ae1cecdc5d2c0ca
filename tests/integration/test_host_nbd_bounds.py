"""The host's NBD server keeps its resources bounded under a flood of connections (issue 17,
finding 3): a connection limit (one more is closed at once, the line that says so is
rate-limited, clients already in keep working), handshake deadlines (a silent or trickling
client is closed), and a few KiB per connection that never chooses an export.

Real processes: a controller and a ``difs host`` serving one application over NBD.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
from support import controller, free_port, need_tool, open_fds, rss_kib, run, start_difs

from difs.nbd import constants as c
from difs.nbd.client import NbdClient

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def nbd_host(tmp_path: Path, *args: str):
    """controller(app1: 16 MiB) <- difs host with ``args``; yields (host proc, NBD port)."""
    with controller(tmp_path / "ctl", "--volume", "app1:16M") as ctl:
        port = free_port()
        host = start_difs("host", "--nbd", f"127.0.0.1:{port}", "--channels", "plain",
                          "--app", f"app1=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('app1')}/0",
                          *args)
        try:
            host.wait_for_lines(1, "nbd://")
            yield host, port
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]






def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def refused_at_once(port: int) -> bool:
    """True when the server closes a new connection without sending its greeting."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            return sock.recv(18) == b""
        except ConnectionResetError:
            return True


def test_connection_over_the_limit_is_refused_and_clients_in_keep_working(tmp_path):
    need_tool("nbdinfo", "qemu-io")
    with nbd_host(tmp_path, "--nbd-max-connections", "3", "--nbd-handshake-timeout", "120",
                  "--nbd-handshake-idle", "120") as (host, port):
        first = NbdClient.open_tcp("127.0.0.1", port, "app1")
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert len(silent.recv(18)) == 18  # greeted, then says nothing
        third = NbdClient.open_tcp("127.0.0.1", port, "app1")
        try:
            for _ in range(20):
                assert refused_at_once(port)
            # the clients already in are served
            first.write(0, b"\x5a" * 4096)
            first.flush()
            assert third.read(0, 4096) == b"\x5a" * 4096
            # one line for the flood, not one per refusal
            refusals = [line for line in host.stderr if "connection refused" in line]
            assert 1 <= len(refusals) <= 2, refusals
            assert "limit=3" in refusals[0]
        finally:
            silent.close()
        # a slot is free again: real clients connect through it
        wait_until(lambda: not refused_at_once(port), 10, "a free slot")
        time.sleep(0.5)  # the probe's own connection is gone too
        url = f"nbd://127.0.0.1:{port}/app1"
        assert "export-size: 16777216" in run(["nbdinfo", url]).stdout
        io = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 4k", url])
        assert "verification failed" not in io.stdout, io.stdout
        first.disconnect()
        third.disconnect()
        first.close()
        third.close()


def test_silent_and_trickling_clients_are_closed_by_the_handshake_deadlines(tmp_path):
    with nbd_host(tmp_path, "--nbd-handshake-timeout", "3", "--nbd-handshake-idle", "1") as (
        host, port,
    ):
        silent = NbdClient.connect_tcp("127.0.0.1", port)
        trickler = NbdClient.connect_tcp("127.0.0.1", port)
        start = time.monotonic()
        trickler.handshake()
        silent_closed = None
        while time.monotonic() - start < 10:
            # one option every 0.5 s: never idle for 1 s, never done either
            try:
                trickler.option(c.OPT_LIST)
            except (ConnectionError, OSError):
                break
            if silent_closed is None and silent.is_closed_by_server(timeout=0.01):
                silent_closed = time.monotonic() - start
            time.sleep(0.5)
        trickler_closed = time.monotonic() - start
        if silent_closed is None:
            assert silent.is_closed_by_server(timeout=1)
            silent_closed = time.monotonic() - start
        assert 0.9 <= silent_closed <= 2.5, silent_closed  # idle bound: 1 s
        assert 2.9 <= trickler_closed <= 5.0, trickler_closed  # handshake bound: 3 s
        silent.close()
        trickler.close()
        # a client that does its handshake in time is served
        with NbdClient.open_tcp("127.0.0.1", port, "app1") as client:
            time.sleep(3.5)  # longer than both deadlines: they end with the handshake
            assert client.read(0, 512) == bytes(512)
        text = host.log_text()
        assert "handshake timed out" in text and "no handshake progress for 1 s" in text


def test_memory_stays_bounded_through_2000_idle_connections(tmp_path):
    count = 2000
    with nbd_host(tmp_path, "--nbd-max-connections", str(count + 100),
                  "--nbd-handshake-timeout", "300", "--nbd-handshake-idle", "300") as (host, port):
        pid = host.popen.pid
        with NbdClient.open_tcp("127.0.0.1", port, "app1") as warm:  # one real client first
            assert warm.read(0, 4096) == bytes(4096)
        time.sleep(0.5)
        before = rss_kib(pid)
        fds_before = open_fds(pid)
        socks = []
        try:
            for _ in range(count):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            wait_until(lambda: open_fds(pid) >= fds_before + count, 60, "the host to accept all")
            for sock in socks:  # each is greeted, and then says nothing
                assert len(sock.recv(18)) == 18
            during = rss_kib(pid)
        finally:
            for sock in socks:
                sock.close()
        wait_until(lambda: open_fds(pid) <= fds_before + 5, 60, "the host to close them all")
        time.sleep(0.5)
        after = rss_kib(pid)
        grown_mib = (during - before) / 1024, (after - before) / 1024
        assert grown_mib[0] < 100 and grown_mib[1] < 100, (before, during, after)
        # the host still serves, and 2,000 departures did not take 2,000 log lines
        with NbdClient.open_tcp("127.0.0.1", port, "app1") as client:
            assert client.read(0, 4096) == bytes(4096)
        left = [line for line in host.stderr if "closed before choosing an export" in line]
        assert 1 <= len(left) <= 20, len(left)
