"""Run workloads against endpoints, repeated and interleaved, with progress lines.

Repetitions are interleaved (run 1 on every endpoint, then run 2, ...) so that a
change in background load on a shared machine hits every endpoint alike.
Each run records IOPS, mean latency and the CPU time of the endpoint's processes
per I/O (``/proc/PID/stat`` before and after).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field

from .procs import BenchError, total_cpu
from .targets import Endpoint
from .workloads import Workload


@dataclass
class Figure:
    """All runs of one workload against one endpoint."""

    section: str
    key: str
    label: str
    tool: str
    endpoint: str
    block: int
    depth: int
    via: str = ""  # how the client reached the endpoint, when not directly
    iops: list[float] = field(default_factory=list)
    latency_us: list[float] = field(default_factory=list)
    cpu_us_per_io: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.iops)

    @property
    def median(self) -> float:
        return statistics.median(self.iops) if self.iops else float("nan")

    @property
    def mb_s(self) -> float:
        return self.median * self.block / 1e6

    @property
    def latency(self) -> float:
        return statistics.median(self.latency_us) if self.latency_us else float("nan")

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_us_per_io) if self.cpu_us_per_io else float("nan")

    @classmethod
    def from_summary(cls, d: dict) -> Figure:
        """Rebuild from :meth:`summary` (per-run latencies are kept only as their median)."""
        return cls(d["section"], d["workload"], d["label"], d["tool"], d["endpoint"], d["block"],
                   d["depth"], via=d.get("via", ""), iops=list(d["runs_iops"]),
                   latency_us=[] if d["latency_us_median"] is None else [d["latency_us_median"]],
                   cpu_us_per_io=list(d["runs_cpu_us_per_io"]), errors=list(d["errors"]))

    def summary(self) -> dict[str, object]:
        return {
            "section": self.section, "workload": self.key, "label": self.label, "tool": self.tool,
            "endpoint": self.endpoint, "via": self.via, "block": self.block, "depth": self.depth,
            "runs_iops": [round(x, 1) for x in self.iops],
            "median_iops": round(self.median, 1) if self.ok else None,
            "min_iops": round(min(self.iops), 1) if self.ok else None,
            "max_iops": round(max(self.iops), 1) if self.ok else None,
            "mb_s": round(self.mb_s, 1) if self.ok else None,
            "latency_us_median": round(self.latency, 1) if self.ok else None,
            "cpu_us_per_io_median": round(self.cpu, 2) if self.cpu_us_per_io else None,
            "runs_cpu_us_per_io": [round(x, 2) for x in self.cpu_us_per_io],
            "errors": self.errors,
        }


class Progress:
    """``[12/90] 00:41 eta 04:10  section  workload  endpoint  result`` lines."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.monotonic()

    def add(self, n: int) -> None:
        self.total += n

    def step(self, text: str) -> None:
        self.done += 1
        spent = time.monotonic() - self.start
        eta = spent / self.done * (self.total - self.done) if self.done else 0
        print(f"[{self.done:>3}/{self.total}] {_mmss(spent)} eta {_mmss(eta)}  {text}", flush=True)

    def note(self, text: str) -> None:
        print(f"--- {text}", flush=True)


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def applicable(workload: Workload, endpoint: Endpoint) -> tuple[str, str] | None:
    """The URL ``workload`` opens on ``endpoint`` and how it gets there, or None."""
    scheme = endpoint.url.split(":", 1)[0].split("+", 1)[0]
    if workload.needs in ("any", scheme):
        return endpoint.url, ""
    if workload.needs == "nbd" and endpoint.nbd_url:
        return endpoint.nbd_url, "qemu-nbd bridge"
    return None


def count_runs(workloads: list[Workload], endpoints: list[Endpoint], repeat: int) -> int:
    return sum(repeat for w in workloads for e in endpoints if applicable(w, e))


def run_suite(section: str, workloads: list[Workload], endpoints: list[Endpoint], *,
              repeat: int, duration: float, progress: Progress) -> list[Figure]:
    figures: list[Figure] = []
    for w in workloads:
        row = []
        for e in endpoints:
            route = applicable(w, e)
            if route is None:
                continue
            row.append((e, route, Figure(section, w.key, w.label, w.tool, e.name, w.block,
                                         w.depth, via=route[1])))
        for _ in range(repeat):
            for e, (url, _via), fig in row:
                try:
                    w.prepare(url, endpoint=e.name)
                    cpu0 = total_cpu(e.cpu_pids)
                    m = w.run(url, duration, endpoint=e.name)
                except BenchError as exc:
                    fig.errors.append(str(exc))
                    progress.step(f"{section:<8} {w.describe():<34} {e.name:<20} FAILED: "
                                  f"{str(exc).splitlines()[0]}")
                    print(str(exc), file=sys.stderr, flush=True)
                    continue
                cpu = total_cpu(e.cpu_pids) - cpu0
                fig.iops.append(m.iops)
                fig.latency_us.append(m.latency_us)
                if m.ios:
                    fig.cpu_us_per_io.append(cpu / m.ios * 1e6)
                progress.step(
                    f"{section:<8} {w.describe():<34} {e.name:<20} {m.iops:>9,.0f} IOPS "
                    f"{m.iops * w.block / 1e6:>7,.0f} MB/s {m.latency_us:>8,.0f} µs "
                    f"{cpu / m.ios * 1e6 if m.ios else float('nan'):>7.1f} µs CPU/IO")
        figures.extend(fig for _, _, fig in row)
    return figures
