"""``python -m difs.nbd`` as a real process: serve a file, serve memory for qemu-img bench."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.interop

MiB = 1 << 20


class StandaloneServer:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "difs.nbd", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.tcp: tuple[str, int] | None = None
        self.unix: str | None = None
        expected = ("--listen" in args) + ("--unix" in args)
        for _ in range(expected):
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise AssertionError(f"server did not start: {self.proc.stderr.read()}")
            kind, *where = line.split()[1:]
            if kind == "tcp":
                self.tcp = (where[0], int(where[1]))
            else:
                self.unix = where[0]

    def uri(self, export: str) -> str:
        assert self.tcp is not None
        return f"nbd://{self.tcp[0]}:{self.tcp[1]}/{export}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def standalone():
    servers: list[StandaloneServer] = []

    def start(*args: str) -> StandaloneServer:
        server = StandaloneServer(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_serve_a_file_over_tcp_and_unix(standalone, tmp_path):
    if shutil.which("qemu-img") is None or shutil.which("nbdcopy") is None:
        pytest.skip("qemu-img/nbdcopy not installed")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(4 * MiB)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 * MiB))
    sock = str(tmp_path / "nbd.sock")
    server = standalone("--file", str(disk), "--export", "app1",
                        "--listen", "127.0.0.1:0", "--unix", sock)
    assert server.tcp and server.unix == sock
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src),
                    server.uri("app1")], check=True, timeout=60)
    back = tmp_path / "back.img"
    subprocess.run(["nbdcopy", f"nbd+unix:///app1?socket={sock}", str(back)], check=True,
                   timeout=60)
    assert server.stop() == 0  # SIGTERM is a clean shutdown
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == digest  # the file holds the data
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest


def _bench(uri: str, *extra: str, count: int) -> float:
    proc = subprocess.run(
        ["qemu-img", "bench", *extra, "-t", "none", "-f", "raw", "-c", str(count), "-d", "32",
         "-s", "4k", uri],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seconds = float(re.search(r"Run completed in ([0-9.]+) seconds", proc.stdout).group(1))
    return count / seconds


def test_qemu_img_bench_memory_export(standalone):
    """A short qemu-img bench (4 KiB, QD 32) read and write; prints IOPS. The full measurement
    in the report uses -c 200000 with the same command."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    server = standalone("--memory", "256M", "--export", "bench", "--listen", "127.0.0.1:0")
    read_iops = _bench(server.uri("bench"), count=20000)
    write_iops = _bench(server.uri("bench"), "-w", count=20000)
    print(f"\nqemu-img bench 4k QD32: read {read_iops:,.0f} IOPS, write {write_iops:,.0f} IOPS")
    # generous floor: catches a broken pipeline (e.g. one request at a time), not a slow box
    assert read_iops > 2000 and write_iops > 2000


def test_the_standalone_server_has_the_hosts_bounds(standalone):
    """``python -m difs.nbd --max-connections 2 --handshake-idle 1``: a third connection is
    closed at once, a silent client is closed after a second; a real client is served."""
    import socket
    import time

    from difs.nbd.client import NbdClient

    server = standalone("--memory", "4M", "--export", "e", "--listen", "127.0.0.1:0",
                        "--max-connections", "2", "--handshake-idle", "1")
    host, port = server.tcp
    silent = socket.create_connection((host, port), timeout=5)
    assert len(silent.recv(18)) == 18  # greeted
    with NbdClient.open_tcp(host, port, "e") as client:
        with socket.create_connection((host, port), timeout=5) as third:
            try:
                assert third.recv(18) == b""  # over the limit: closed without a greeting
            except ConnectionResetError:
                pass
        start = time.monotonic()
        silent.settimeout(5)
        try:
            assert silent.recv(1) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 3  # closed by the idle bound, not the test
        silent.close()
        assert client.read(0, 512) == bytes(512)
        client.disconnect()


def test_the_standalone_server_refuses_nonsense_bounds():
    for option, value in (("--max-connections", "0"), ("--handshake-idle", "-1")):
        result = subprocess.run([sys.executable, "-m", "difs.nbd", "--memory", "4M", option,
                                 value], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and option in result.stderr, result.stderr
