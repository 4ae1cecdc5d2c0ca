#!/usr/bin/env python3
"""The controller's QoS scheduler: its cost per I/O, and what it achieves through real processes.

    .venv/bin/python benchmarks/qos_bench.py                 # both parts (~40 s)
    .venv/bin/python benchmarks/qos_bench.py --only pure     # the scheduler alone (~10 s)
    .venv/bin/python benchmarks/qos_bench.py --only real --seconds 10

``pure``: :class:`difs.controller.qos.QosScheduler` on virtual time, n = 1, 10, 100, 1000
volumes, every volume backlogged (a closed loop: each dispatched request is replaced at
once), a mix of reservations, limits and weights under a capacity; the figure is CPU time
per I/O (submit + dispatch + tag), best of ``--rounds``. Also the bypass a volume without
QoS pays: one attribute test on its guard.

``real``: one ``difs controller`` (capacity given with ``--capacity-iops``, so the figures do
not depend on this disk) with three volumes, each driven by libiscsi's ``iscsi-perf`` (4 KiB
random reads) at full blast: ``res`` with a reservation R (weight 1), ``lim`` with a limit L
(weight 10: its share alone would pass L, so the limit binds), ``noisy`` best effort with
weight 10 and the deepest queue. Per one-second
window, from the controller's own counters: achieved IOPS, res / R and lim / L.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from difs.controller.qos import Capacity, ClientInfo, QosScheduler

REPO = Path(__file__).resolve().parent.parent


# -- pure ----------------------------------------------------------------------------

def _info(i: int) -> ClientInfo:
    kind = i % 4
    if kind == 0:
        return ClientInfo(reservation_iops=50, weight=1 + i % 5)
    if kind == 1:
        return ClientInfo(limit_iops=200, weight=2)
    if kind == 2:
        return ClientInfo(reservation_bytes_per_second=1 << 20, limit_bytes_per_second=8 << 20)
    return ClientInfo(weight=1 + i % 7)


def pure_cost(n: int, ios: int, depth: int = 4) -> float:
    """Seconds of CPU per I/O with ``n`` backlogged volumes."""
    sched = QosScheduler(Capacity(iops=max(2000, 200 * n), bytes_per_second=1 << 33))
    clients = [sched.client(f"v{i}", _info(i)) for i in range(n)]
    now = 0.0
    for c in clients:
        for _ in range(depth):
            sched.submit(c, c, 4096, now)
    done = 0
    dispatch, submit = sched.dispatch, sched.submit
    start = time.process_time()
    while done < ios:
        out = dispatch(now)
        for c in out:
            submit(c, c, 4096, now)
        done += len(out)
        if not out:
            now = sched.wakeup
    return (time.process_time() - start) / done


def idle_cost(ios: int) -> float:
    """One volume under its tags: each I/O is admitted at once (the adapter's fast path)."""
    sched = QosScheduler(Capacity(iops=10**7, bytes_per_second=1 << 40))
    c = sched.client("v", ClientInfo(reservation_iops=10, limit_iops=10**7, weight=1))
    now = 0.0
    start = time.process_time()
    for _ in range(ios):
        now += 1e-6
        if not sched.admit(c, 4096, now):
            sched.submit(c, None, 4096, now)
            sched.dispatch(now)
    return (time.process_time() - start) / ios


def bypass_cost(ios: int) -> float:
    """What a volume without QoS pays on its hot path: ``guard.qos is not None``."""

    class Guard:
        __slots__ = ("qos",)

    guard = Guard()
    guard.qos = None
    start = time.process_time()
    for _ in range(ios):
        if guard.qos is not None:
            raise AssertionError
    empty = time.process_time()
    for _ in range(ios):
        pass
    end = time.process_time()
    return max(0.0, (empty - start) - (end - empty)) / ios


def run_pure(rounds: int) -> dict:
    rows = []
    for n in (1, 10, 100, 1000):
        ios = 60_000 if n < 1000 else 40_000
        best = min(pure_cost(n, ios) for _ in range(rounds))
        rows.append({"volumes": n, "us_per_io": best * 1e6})
        print(f"  pure n={n:>4}: {best * 1e6:.2f} µs per I/O", flush=True)
    idle = min(idle_cost(100_000) for _ in range(rounds))
    bypass = min(bypass_cost(1_000_000) for _ in range(rounds))
    print(f"  one volume under its tags (admitted at once): {idle * 1e6:.2f} µs",
          flush=True)
    print(f"  a volume without QoS (bypass test): {bypass * 1e9:.0f} ns", flush=True)
    return {"backlogged": rows, "under_tags_us": idle * 1e6, "bypass_ns": bypass * 1e9}


# -- real ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _commands(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        m = re.match(r'difs_controller_commands_total{.*volume="([^"]+)".*} (\S+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


@contextlib.contextmanager
def _process(cmd: list[str], log: Path):
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGINT if cmd[0] == "iscsi-perf" else signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(path: Path, pattern: str, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in path.read_text().splitlines() if ln.startswith(pattern)]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {pattern!r} in {path}")
        time.sleep(0.1)


def run_real(seconds: int, capacity: int, reservation: int, limit: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="difs-qos-bench-"))
    port, mport = _free_port(), _free_port()
    policies = {"res": {"reservation_iops": reservation, "weight": 1},
                "lim": {"limit_iops": limit, "weight": 10},
                "noisy": {"weight": 10}}
    args = []
    for name, qos in policies.items():
        path = work / f"{name}.json"
        path.write_text(json.dumps({"name": name, "services": {"qos": qos}}))
        args += ["--volume", f"{name}:256M", "--policy", f"{name}={path}"]
    cmd = [sys.executable, "-m", "difs.cli.main", "controller", "--portal", f"127.0.0.1:{port}",
           "--data-dir", str(work / "data"), "--name", "bench", "--metrics",
           f"127.0.0.1:{mport}", "--capacity-iops", str(capacity),
           "--capacity-bytes-per-second", "4G", *args]
    log = work / "controller.log"
    depth = {"res": 16, "lim": 16, "noisy": 64}
    windows: list[dict[str, float]] = []
    with _process(cmd, log):
        urls = _wait_for(log, "iscsi://", 3)
        metrics = _wait_for(log, "metrics ", 1)[0].split(" ", 1)[1]
        with contextlib.ExitStack() as stack:
            for name in policies:
                url = next(u for u in urls if f".{name}/" in u)
                stack.enter_context(_process(["iscsi-perf", "-m", str(depth[name]), "-r", url],
                                             work / f"perf-{name}.log"))
            time.sleep(2.0)  # ramp-up, not measured
            before, t0 = _commands(metrics), time.monotonic()
            for _ in range(seconds):
                time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
                after, t1 = _commands(metrics), time.monotonic()
                windows.append({v: (after.get(v, 0) - before.get(v, 0)) / (t1 - t0)
                                for v in policies})
                before, t0 = after, t1
    res = [w["res"] / reservation for w in windows]
    lim = [w["lim"] / limit for w in windows]
    summary = {
        "capacity_iops": capacity, "reservation": reservation, "limit": limit,
        "windows": windows,
        "res_over_R": {"min": min(res), "median": statistics.median(res)},
        "lim_over_L": {"max": max(lim), "median": statistics.median(lim)},
        "res_met_share": sum(r >= 1.0 for r in res) / len(res),
        "res_98_share": sum(r >= 0.98 for r in res) / len(res),
        "noisy_median": statistics.median(w["noisy"] for w in windows),
        "logs": str(work),
    }
    print(f"  {'s':>3} {'res':>8} {'lim':>8} {'noisy':>8} {'res/R':>7} {'lim/L':>7}")
    for i, w in enumerate(windows, 1):
        print(f"  {i:>3} {w['res']:>8.0f} {w['lim']:>8.0f} {w['noisy']:>8.0f} "
              f"{w['res'] / reservation:>7.3f} {w['lim'] / limit:>7.3f}")
    print(f"  res/R min {summary['res_over_R']['min']:.3f} median "
          f"{summary['res_over_R']['median']:.3f}; windows with R met "
          f"{summary['res_met_share']:.0%} (>= 0.98 R: {summary['res_98_share']:.0%}); "
          f"lim/L max {summary['lim_over_L']['max']:.3f} "
          f"median {summary['lim_over_L']['median']:.3f}; noisy median "
          f"{summary['noisy_median']:.0f} IOPS", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("pure", "real"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="measured windows (real)")
    parser.add_argument("--capacity-iops", type=int, default=3000)
    parser.add_argument("--reservation", type=int, default=900, help="res's IOPS (30 %%)")
    parser.add_argument("--limit", type=int, default=300, help="lim's IOPS (10 %%)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    out = {"load_average_start": os.getloadavg()}
    if args.only in (None, "pure"):
        print("pure scheduler, CPU per I/O:", flush=True)
        out["pure"] = run_pure(args.rounds)
    if args.only in (None, "real"):
        print(f"real: capacity {args.capacity_iops} IOPS, res R={args.reservation}, "
              f"lim L={args.limit} weight 10, noisy weight 10 (iscsi-perf 4 KiB random reads):",
              flush=True)
        out["real"] = run_real(args.seconds, args.capacity_iops, args.reservation, args.limit)
    out["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
