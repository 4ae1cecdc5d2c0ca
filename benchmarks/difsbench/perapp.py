"""The per-application claim: two applications on one host, only one needing integrity.

Application A needs integrity (tier ``silver``: CRC32C header and data digests);
application B needs nothing (tier ``bronze``). Each has its own volume on one
difs controller. Two host set-ups run side by side (both started, used in turn):

* **per-application** — ``difs host --channels digests,plain``: A's I/O goes over
  the digest channel, B's over the plain one (least-outstanding prefers the path
  with the fewest services B did not ask for);
* **host-wide** — ``difs host --channels digests``: the conventional set-up, every
  path with every service, so B's I/O pays for digests it never asked for.

Per shape, mode and repetition: A and B at once (each application's throughput),
then A alone and B alone (each application's CPU cost, host + controller CPU
seconds per GiB moved, so the cost can be attributed).
"""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .procs import BenchError, total_cpu
from .suite import Progress
from .targets import DifsController, DifsHost, Stack
from .workloads import Measurement, fio_argv, fio_parse

APPS = {"app-a": "silver", "app-b": "bronze"}
MODES = {"per-application": "digests,plain", "host-wide": "digests"}
SHAPES = [  # (label, fio rw, block, depth)
    ("1M seqread QD8", "read", 1 << 20, 8),
    ("4K randread QD32", "randread", 4096, 32),
]
GIB = 1 << 30


@dataclass
class Cell:
    """One (shape, mode): lists over repetitions."""

    shape: str
    mode: str
    together_mb_s: dict[str, list[float]] = field(default_factory=dict)
    together_cpu_s_per_gib: list[float] = field(default_factory=list)
    alone_mb_s: dict[str, list[float]] = field(default_factory=dict)
    alone_cpu_s_per_gib: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_summary(cls, d: dict) -> Cell:
        """Rebuild from :meth:`summary` (CPU figures are kept only as their medians)."""
        one = lambda v: [] if v is None else [v]  # noqa: E731
        return cls(d["shape"], d["mode"],
                   together_mb_s={a: list(v) for a, v in d["together_mb_s_runs"].items()},
                   together_cpu_s_per_gib=one(d["together_cpu_s_per_gib"]),
                   alone_mb_s={a: one(v) for a, v in d["alone_mb_s"].items()},
                   alone_cpu_s_per_gib={a: one(v) for a, v in d["alone_cpu_s_per_gib"].items()},
                   errors=list(d["errors"]))

    def summary(self) -> dict[str, object]:
        med = lambda xs: round(statistics.median(xs), 3) if xs else None  # noqa: E731
        return {
            "shape": self.shape, "mode": self.mode,
            "together_mb_s": {a: med(v) for a, v in self.together_mb_s.items()},
            "together_mb_s_runs": self.together_mb_s,
            "together_cpu_s_per_gib": med(self.together_cpu_s_per_gib),
            "alone_mb_s": {a: med(v) for a, v in self.alone_mb_s.items()},
            "alone_cpu_s_per_gib": {a: med(v) for a, v in self.alone_cpu_s_per_gib.items()},
            "errors": self.errors,
        }


def _fio_at_once(urls: dict[str, str], rw: str, block: int, depth: int,
                 duration: float) -> dict[str, Measurement]:
    procs = {app: subprocess.Popen(fio_argv(url, rw=rw, block=block, depth=depth,
                                            duration=duration, name=app),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for app, url in urls.items()}
    out = {}
    for app, proc in procs.items():
        try:
            text, _ = proc.communicate(timeout=duration + 90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(f"fio on {app} did not finish") from None
        out[app] = fio_parse(text, write=False, url=urls[app])
    return out


def run_perapp(work: Path, image: Path, log_dir: Path, stack: Stack, *, repeat: int,
               duration: float, progress: Progress) -> list[Cell]:
    controller = stack.add(DifsController("difs-apps", work, {a: image for a in APPS}, log_dir))
    hosts = {mode: stack.add(DifsHost(f"host-{mode}", [(a, controller.urls[a], t)
                                                       for a, t in APPS.items()],
                                      channels, log_dir))
             for mode, channels in MODES.items()}
    cells = {(s[0], m): Cell(s[0], m) for s in SHAPES for m in MODES}
    for label, rw, block, depth in SHAPES:
        for _ in range(repeat):
            for mode, host in hosts.items():
                cell = cells[(label, mode)]
                pids = [controller.pid, host.pid]
                runs = [("together", list(APPS))] + [("alone", [a]) for a in APPS]
                for kind, apps in runs:
                    cpu0 = total_cpu(pids)
                    try:
                        res = _fio_at_once({a: host.urls[a] for a in apps}, rw, block, depth,
                                           duration)
                    except BenchError as exc:
                        cell.errors.append(str(exc))
                        progress.step(f"per-app  {label:<18} {mode:<16} {kind:<8} FAILED: "
                                      f"{str(exc).splitlines()[0]}")
                        continue
                    cpu = total_cpu(pids) - cpu0
                    moved = sum(m.ios * block for m in res.values())
                    cpu_per_gib = cpu / (moved / GIB) if moved else float("nan")
                    mb_s = {a: m.iops * block / 1e6 for a, m in res.items()}
                    if kind == "together":
                        for a, v in mb_s.items():
                            cell.together_mb_s.setdefault(a, []).append(v)
                        cell.together_cpu_s_per_gib.append(cpu_per_gib)
                    else:
                        (a,) = apps
                        cell.alone_mb_s.setdefault(a, []).append(mb_s[a])
                        cell.alone_cpu_s_per_gib.setdefault(a, []).append(cpu_per_gib)
                    shown = "  ".join(f"{a} {v:,.0f} MB/s" for a, v in mb_s.items())
                    progress.step(f"per-app  {label:<18} {mode:<16} {kind:<8} {shown}  "
                                  f"{cpu_per_gib:.2f} CPU s/GiB")
    return list(cells.values())


def crc32c_cost() -> float | None:
    """CPU seconds to CRC32C one GiB on this machine (the ``crc32c`` package difs uses):
    the floor of what data digests can cost, once on each side of a channel."""
    try:
        import crc32c
    except ImportError:
        return None
    import os
    import time

    buf = os.urandom(1 << 20)
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(256):
            crc32c.crc32c(buf)
        best = min(best, (time.process_time() - t0) * 4)
    return round(best, 4)


def count_perapp(repeat: int) -> int:
    return len(SHAPES) * repeat * len(MODES) * (1 + len(APPS))
