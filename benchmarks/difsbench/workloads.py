"""The workloads, each driven by a real, unmodified client from Debian.

* ``iscsi-perf`` (libiscsi-bin): READ(16) only, random (``-r``) or sequential, at a
  queue depth; runs until SIGINT and prints a running ``iops average``.
* ``qemu-img bench`` (qemu-utils): QEMU's block layer over its iSCSI driver (libiscsi)
  or its NBD driver; reads or writes (``-w``), **sequential only** (offset += step,
  wrapping), a fixed request count — the runner sizes the count from the previous run
  so that every run lasts about ``duration`` seconds.
* ``fio --ioengine=nbd`` (libnbd): random reads and writes at a queue depth over NBD.
  fio has no libiscsi engine here, so against an iSCSI target it goes through a
  ``qemu-nbd`` bridge (C, libiscsi, the same for every target): that is how the
  runner measures **4 KiB random writes** on iSCSI, which no other tool here does.
"""

from __future__ import annotations

import json
import re
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .procs import BenchError

INITIATOR = "iqn.2026-11.io.difs.bench:client"


@dataclass
class Measurement:
    iops: float
    ios: int
    seconds: float
    latency_us: float  # mean completion latency (QD / IOPS when the tool gives no latency)


class Workload(ABC):
    """One client configuration. ``needs`` is the URL scheme it opens."""

    key: str
    label: str
    tool: str
    block: int
    depth: int
    needs: str  # "iscsi", "nbd" or "any"
    pattern: str  # "rand" or "seq"
    write: bool

    @property
    def is_latency(self) -> bool:
        return self.depth == 1

    def describe(self) -> str:
        return f"{self.label} [{self.tool}]"

    def prepare(self, url: str, *, endpoint: str) -> None:
        """Anything to do before a measured run (outside the CPU accounting window)."""

    @abstractmethod
    def run(self, url: str, duration: float, *, endpoint: str) -> Measurement:
        """Run once against ``url`` for about ``duration`` seconds."""


def _size_label(block: int) -> str:
    return f"{block >> 20}M" if block >= 1 << 20 else f"{block >> 10}K"


def _label(block: int, pattern: str, write: bool, depth: int) -> str:
    what = ("rand" if pattern == "rand" else "seq") + ("write" if write else "read")
    return f"{_size_label(block)} {what} QD{depth}"


class IscsiPerf(Workload):
    tool = "iscsi-perf"
    needs = "iscsi"
    write = False

    def __init__(self, *, depth: int, blocks: int, random: bool) -> None:
        self.depth, self.blocks, self.random = depth, blocks, random
        self.block = blocks * 512
        self.pattern = "rand" if random else "seq"
        self.label = _label(self.block, self.pattern, False, depth)
        self.key = f"{self.label}/iscsi-perf"

    def run(self, url: str, duration: float, *, endpoint: str) -> Measurement:
        cmd = ["iscsi-perf", "-i", INITIATOR, "-m", str(self.depth), "-b", str(self.blocks)]
        if self.random:
            cmd.append("-r")
        # iscsi-perf prints a running average once a second; SIGINT makes it finish.
        out = _run(["timeout", "-s", "INT", f"{duration + 0.5:.1f}", *cmd, url],
                   timeout=duration + 60, ok=(0, 124))
        averages = re.findall(r"(\d\d):(\d\d):(\d\d) - lba \d+, iops current \d+ \([^)]*\), "
                              r"iops average (\d+)", out)
        if not averages:
            raise BenchError(f"iscsi-perf printed no figures against {url}:\n{out[-1500:]}")
        h, m, s, avg = averages[-1]
        seconds = int(h) * 3600 + int(m) * 60 + int(s)
        iops = float(avg)
        return Measurement(iops, int(iops * seconds), float(seconds), self.depth / iops * 1e6)


class QemuImgBench(Workload):
    tool = "qemu-img bench"
    needs = "any"
    pattern = "seq"

    def __init__(self, *, depth: int, size: int, write: bool) -> None:
        self.depth, self.block, self.write = depth, size, write
        self.label = _label(size, "seq", write, depth)
        self.key = f"{self.label}/qemu-img"
        self._rate: dict[str, float] = {}  # endpoint -> last IOPS, to size the next count

    def prepare(self, url: str, *, endpoint: str) -> None:
        if endpoint not in self._rate:  # calibrate: a short run, not reported
            self._run(url, 200 if self.block >= 1 << 20 else (500 if self.depth == 1 else 5000),
                      endpoint)

    def run(self, url: str, duration: float, *, endpoint: str) -> Measurement:
        self.prepare(url, endpoint=endpoint)
        return self._run(url, max(50, int(self._rate[endpoint] * duration)), endpoint)

    def _run(self, url: str, count: int, endpoint: str) -> Measurement:
        cmd = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-c", str(count),
               "-d", str(self.depth), "-s", str(self.block)]
        if self.write:
            cmd += ["-w", "--pattern=0xa5"]
        out = _run([*cmd, url], timeout=120 + count / 100)
        match = re.search(r"Run completed in ([\d.]+) seconds", out)
        if not match:
            raise BenchError(f"qemu-img bench printed no figures against {url}:\n{out[-1500:]}")
        seconds = float(match.group(1))
        iops = count / seconds
        self._rate[endpoint] = iops
        return Measurement(iops, count, seconds, self.depth / iops * 1e6)


def fio_argv(url: str, *, rw: str, block: int, depth: int, duration: float,
             name: str = "bench") -> list[str]:
    return ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={url}", f"--rw={rw}",
            f"--bs={block}", f"--iodepth={depth}", "--time_based", f"--runtime={duration:g}",
            "--norandommap", "--randrepeat=0", "--output-format=json"]


def fio_parse(out: str, *, write: bool, url: str) -> Measurement:
    start = out.find("{")
    try:
        job = json.loads(out[start:])["jobs"][0]
    except (ValueError, KeyError, IndexError):
        raise BenchError(f"fio printed no JSON against {url}:\n{out[-1500:]}") from None
    side = job["write" if write else "read"]
    if job.get("error"):
        raise BenchError(f"fio failed against {url} (error {job['error']}):\n{out[-1500:]}")
    seconds = job["job_runtime"] / 1000
    return Measurement(side["iops"], side["total_ios"], seconds, side["lat_ns"]["mean"] / 1000)


class FioNbd(Workload):
    tool = "fio nbd"
    needs = "nbd"

    def __init__(self, *, depth: int, block: int, write: bool, pattern: str = "rand") -> None:
        self.depth, self.block, self.write, self.pattern = depth, block, write, pattern
        self.rw = ("rand" if pattern == "rand" else "") + ("write" if write else "read")
        self.label = _label(block, pattern, write, depth)
        self.key = f"{self.label}/fio"

    def run(self, url: str, duration: float, *, endpoint: str) -> Measurement:
        argv = fio_argv(url, rw=self.rw, block=self.block, depth=self.depth, duration=duration)
        return fio_parse(_run(argv, timeout=duration + 90), write=self.write, url=url)


def _run(argv: list[str], *, timeout: float, ok: tuple[int, ...] = (0,)) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              errors="replace")
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv[:4])} ... did not finish in {timeout:.0f}s") from None
    out = proc.stdout + proc.stderr
    if proc.returncode not in ok:
        raise BenchError(f"{' '.join(argv)} exited with {proc.returncode}:\n{out[-1500:]}")
    return out


def target_workloads() -> list[Workload]:
    """Issue 7's workloads against iSCSI targets (tgt and the difs controller)."""
    return [
        IscsiPerf(depth=32, blocks=8, random=True),
        QemuImgBench(depth=32, size=4096, write=False),
        FioNbd(depth=32, block=4096, write=True),
        QemuImgBench(depth=32, size=4096, write=True),
        IscsiPerf(depth=16, blocks=2048, random=False),
        QemuImgBench(depth=16, size=1 << 20, write=False),
        QemuImgBench(depth=16, size=1 << 20, write=True),
        IscsiPerf(depth=1, blocks=8, random=True),
        QemuImgBench(depth=1, size=4096, write=False),
    ]


def host_workloads() -> list[Workload]:
    """The same shapes through NBD (the host path) and directly over iSCSI."""
    return [
        QemuImgBench(depth=32, size=4096, write=False),
        QemuImgBench(depth=32, size=4096, write=True),
        FioNbd(depth=32, block=4096, write=False),
        FioNbd(depth=32, block=4096, write=True),
        QemuImgBench(depth=16, size=1 << 20, write=False),
        QemuImgBench(depth=16, size=1 << 20, write=True),
        QemuImgBench(depth=1, size=4096, write=False),
    ]
