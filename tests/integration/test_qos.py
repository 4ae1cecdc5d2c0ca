"""QoS at the controller, through real processes: a real ``difs controller`` and real
libiscsi initiators (``iscsi-perf``, 4 KiB random reads, 16-64 in flight) on loopback.

What is achieved is read from the controller's own counters (commands per volume, between
two scrapes while the clients run): a volume limited to L IOPS stays within L x 1.1 while a
volume without QoS next to it runs unscheduled and far faster; a volume with a reservation
R gets at least 0.9 R while a heavier-weighted noisy neighbour floods the controller.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support import controller, free_port, metric, need_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INITIATOR = "iqn.2026-11.io.difs.test:qos"
WINDOW = 2.0  # seconds measured


def policy(tmp_path: Path, name: str, qos: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "services": {"qos": qos}}))
    return f"{name}={path}"


@contextlib.contextmanager
def perf(url: str, *, depth: int):
    """``iscsi-perf`` at full blast on ``url`` (random 4 KiB reads) until the block ends."""
    proc = subprocess.Popen(["iscsi-perf", "-i", INITIATOR, "-m", str(depth), "-r", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def commands(url: str) -> dict[str, float]:
    """SCSI commands per volume so far, from one scrape of the controller's metrics."""
    out: dict[str, float] = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        m = re.match(r'difs_controller_commands_total{.*volume="([^"]+)".*} (\S+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def running(url: str, volumes: list[str], timeout: float = 20.0) -> None:
    """Wait until every volume's client has moved some I/O (past its ramp-up)."""
    deadline = time.monotonic() + timeout
    while not all(commands(url).get(v, 0) > 300 for v in volumes):
        assert time.monotonic() < deadline, "the clients did not start"
        time.sleep(0.1)


def rates(url: str, volumes: list[str]) -> dict[str, float]:
    """IOPS each volume achieved over WINDOW seconds, from the controller's counters."""
    t0 = time.monotonic()
    before = commands(url)
    t0 = (t0 + time.monotonic()) / 2
    time.sleep(WINDOW)  # the measurement itself: I/O for WINDOW seconds
    t1 = time.monotonic()
    after = commands(url)
    elapsed = (t1 + time.monotonic()) / 2 - t0
    return {v: (after.get(v, 0) - before.get(v, 0)) / elapsed for v in volumes}


@contextlib.contextmanager
def metered(tmp_path: Path, *args: str):
    with controller(tmp_path / "ctl", "--metrics", f"127.0.0.1:{free_port()}", *args) as ctl:
        url = ctl.proc.wait_for_lines(1, "metrics ")[0].split(" ", 1)[1]
        yield ctl, url


def test_limit_holds_and_a_volume_without_qos_is_unaffected(tmp_path: Path) -> None:
    need_tool("iscsi-perf")
    limit = 300
    with metered(tmp_path, "--volume", "lim:64M", "--volume", "free:64M",
                 "--policy", policy(tmp_path, "lim", {"limit_iops": limit}),
                 "--capacity-iops", "50000", "--capacity-bytes-per-second", "2G") as (ctl, url):
        with perf(ctl.url("lim"), depth=32), perf(ctl.url("free"), depth=16):
            running(url, ["lim", "free"])
            got = rates(url, ["lim", "free"])
        print("achieved IOPS", got)
        assert got["lim"] <= limit * 1.1, got
        assert got["lim"] >= limit * 0.5, got  # and it runs near it (a loaded machine lags)
        assert got["free"] >= 3 * limit, got  # the unscheduled volume runs at its own pace
        # the volume without QoS never entered the scheduler
        assert metric(url, "difs_controller_qos_dispatched_total", volume="free") == 0
        assert metric(url, "difs_controller_qos_delayed_total", volume="lim") > 0


def test_reservation_is_met_next_to_a_noisy_neighbour(tmp_path: Path) -> None:
    need_tool("iscsi-perf")
    reservation = 400
    with metered(tmp_path, "--volume", "res:64M", "--volume", "noisy:64M",
                 "--policy", policy(tmp_path, "res", {"reservation_iops": reservation,
                                                      "weight": 1}),
                 "--policy", policy(tmp_path, "noisy", {"weight": 100}),
                 "--capacity-iops", "2000", "--capacity-bytes-per-second", "1G") as (ctl, url):
        with perf(ctl.url("noisy"), depth=64), perf(ctl.url("res"), depth=16):
            running(url, ["res", "noisy"])
            got = rates(url, ["res", "noisy"])
        print("achieved IOPS", got)
        assert got["res"] >= 0.9 * reservation, got
        # the neighbour has the rest of the capacity (a 4 KiB I/O costs 1 + 4/1024 units
        # of a 1 MiB size unit), not more
        assert got["noisy"] <= 2000 * 1.1, got
        assert metric(url, "difs_controller_qos_dispatched_total", volume="res",
                      phase="reservation") > 0
