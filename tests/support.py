"""Shared test support: free ports, real difs processes on loopback, tools.

Processes started here are always stopped by the fixture that started them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIFS = [sys.executable, "-m", "difs.cli.main"]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def need_tool(*names: str) -> None:
    """Fail (not skip) when a real peer is missing: ./scripts/setup.sh installs them all."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(f"missing tool(s) {missing}: run ./scripts/setup.sh", pytrace=False)


@dataclass
class Proc:
    """A difs process whose stdout/stderr are collected in the background."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for_lines(self, count: int, prefix: str = "", timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [line for line in self.lines if line.startswith(prefix)]
            if len(got) >= count:
                return got
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"process did not print {count} line(s) starting {prefix!r}; exit={self.popen.poll()}\n"
            f"stdout: {self.lines}\nstderr:\n" + "\n".join(self.stderr[-40:]))

    def log_text(self) -> str:
        return "\n".join(self.stderr)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for t in self._threads:
            t.join(2)
        return self.popen.returncode


def start_difs(*args: str, env: dict[str, str] | None = None) -> Proc:
    popen = subprocess.Popen(
        [*DIFS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )
    return Proc(popen)


@dataclass
class RunningController:
    proc: Proc
    host: str
    port: int
    urls: list[str]
    data_dir: Path

    def url(self, volume: str, **params: str) -> str:
        for url in self.urls:
            if url.rsplit("/", 2)[-2].endswith(f".{volume}"):
                if params:
                    url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
                return url
        raise KeyError(volume)

    def iqn(self, volume: str) -> str:
        return self.url(volume).rsplit("/", 2)[-2]


@contextlib.contextmanager
def controller(data_dir: Path, *args: str, volumes: int | None = None,
               host: str = "127.0.0.1") -> Iterator[RunningController]:
    """Run ``difs controller`` on a free loopback port with ``args``."""
    port = free_port(host)
    portal = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    proc = start_difs("controller", "--portal", portal, "--data-dir", str(data_dir),
                      "--name", "test", *args)
    try:
        count = volumes if volumes is not None else sum(1 for a in args if a in ("--volume", "-v"))
        urls = proc.wait_for_lines(count, "iscsi://")
        yield RunningController(proc, host, port, urls, data_dir)
    finally:
        rc = proc.stop()
        # A clean shutdown is part of the contract: SIGTERM ends with exit 0.
        assert rc == 0, f"controller exited {rc}\n" + proc.log_text()[-4000:]


def run(cmd: list[str], *, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                             f"stderr:\n{result.stderr}")
    return result


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (root only): a real file system that fills up.
    Unmounted (lazily if still busy) whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, *, leave: int = 0) -> int:
    """Write ``path`` until its file system is full, then give back ``leave`` bytes (whole
    pages); returns the bytes it holds."""
    chunk = b"\xa5" * (1 << 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[:len(chunk) // 2]
                continue
            size += n
        if leave:
            size = max(0, size - leave)
            os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return size


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the Prometheus samples of ``name`` at ``url`` whose labels include ``labels``."""
    import re

    import httpx

    total = 0.0
    for line in httpx.get(url, timeout=5).text.splitlines():
        m = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def wait_until(what: str, ready, timeout: float = 30.0, procs: tuple = ()):
    """Poll ``ready()`` every 0.1 s until it returns something true (returned); a network or
    NBD error while polling counts as not yet. On timeout: AssertionError naming ``what``,
    with the tail of each of ``procs``' logs."""
    import httpx

    from difs.nbd.client import NbdClientError

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = ready()
        except (httpx.HTTPError, OSError, NbdClientError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(p.log_text()[-4000:] for p in procs)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)
