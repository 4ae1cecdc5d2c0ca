"""Processes, ports and CPU accounting for the benchmark runner."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, *, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited with {proc.returncode} before listening "
                             f"on 127.0.0.1:{port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def total_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


class Service:
    """A long-running process we started: output to a log file, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def wait_lines(self, prefix: str, count: int, *, timeout: float = 30) -> list[str]:
        """The first ``count`` stdout lines starting with ``prefix`` (the printed URLs)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line.strip() for line in self.stdout_path.read_text().splitlines()
                     if line.startswith(prefix)]
            if len(lines) >= count:
                return lines[:count]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.stderr_path.read_text()[-1500:]
                why = (f"exited with {self.proc.returncode}" if self.proc.returncode is not None
                       else f"printed no {prefix} line in {timeout:.0f}s")
                raise BenchError(f"{self.name} ({' '.join(self.argv[:3])} ...) {why}; its "
                                 f"log {self.stderr_path}:\n{tail}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, *, term_timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(term_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()


def _version(argv: list[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def _dpkg_version(package: str) -> str:
    if shutil.which("dpkg-query") is None:
        return "unknown"
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                         text=True)
    return out.stdout.strip() or "absent"


def machine() -> dict[str, object]:
    """What the figures were measured on: hardware, kernel, tool versions, difs commit, load."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "difs_commit": commit + ("+dirty-src" if dirty else ""),
        "tgt": _version(["tgtd", "-V"]),
        "libiscsi": _dpkg_version("libiscsi-bin"),
        "qemu_img": _version(["qemu-img", "--version"]),
        "fio": _version(["fio", "--version"], r"fio-(\S+)"),
        "loadavg_at_start": loadavg(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def wait_idle(max_seconds: float, *, below: float = 0.5) -> float:
    """Wait (at most ``max_seconds``) for the 1-minute load average to fall below ``below``:
    other work on a 2-core machine moves every figure. Returns the load average reached."""
    deadline = time.monotonic() + max_seconds
    load = float(loadavg()[0])
    if load >= below and max_seconds > 0:
        print(f"benchmarks: load average {load:.2f}; waiting up to {max_seconds:.0f} s for it to "
              f"fall below {below}", flush=True)
    while load >= below and time.monotonic() < deadline:
        time.sleep(5)
        load = float(loadavg()[0])
    return load


def warm(path: Path) -> None:
    """Read ``path`` once so that every target starts with its backing file in page cache."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while f.readinto(buf):
            pass


def random_image(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        chunk = 1 << 20
        for _ in range(size // chunk):
            f.write(os.urandom(chunk))
