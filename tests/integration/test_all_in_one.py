"""``difs up``: manager + controller + host as real processes, driven through the manager.

This is the README's first command. The applications' volumes are placed by the
manager, served by the controller as LUNs of its protocol endpoint (each visible
only to the host it is bound to), and reached by NBD clients through the host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO, free_port, need_tool, run

pytestmark = pytest.mark.integration


def start_up(tmp_path: Path, *extra: str, until: str = "Ctrl-C stops everything"):
    ports = {k: free_port() for k in ("manager", "portal", "nbd", "metrics", "ctl_metrics")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "difs.cli.main", "up", "--data-dir", str(tmp_path / "up"),
         "--manager-listen", f"127.0.0.1:{ports['manager']}",
         "--portal", f"127.0.0.1:{ports['portal']}", "--nbd", f"127.0.0.1:{ports['nbd']}",
         "--host-metrics", f"127.0.0.1:{ports['metrics']}",
         "--controller-metrics", f"127.0.0.1:{ports['ctl_metrics']}", "--size", "32M", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if until in line:
            break
    return proc, ports, lines


@pytest.fixture
def up(tmp_path: Path):
    proc, ports, lines = start_up(tmp_path)
    if not any("difs is up" in l for l in lines):
        proc.kill()
        logs = "".join((tmp_path / "up" / f"{n}.log").read_text()[-2000:]
                       for n in ("manager", "controller", "host") if (tmp_path / "up" / f"{n}.log").exists())
        raise AssertionError("difs up did not come up:\n" + "".join(lines) + logs)
    try:
        yield proc, ports, tmp_path / "up", "".join(lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def test_up_serves_both_applications_and_stops_cleanly(up) -> None:
    need_tool("qemu-io", "iscsi-ls")
    proc, ports, data, banner = up
    for app, pattern in (("app1", "0x1a"), ("app2", "0x2b")):
        url = f"nbd://127.0.0.1:{ports['nbd']}/{app}"
        assert url in banner
        out = run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 1M",
                   "-c", f"read -P {pattern} 0 1M", url]).stdout
        assert "Pattern verification failed" not in out
    env = {**os.environ, "DIFS_MANAGER": f"http://127.0.0.1:{ports['manager']}",
           "DIFS_TOKEN": (data / "admin-token").read_text().strip()}
    apps = json.loads(run([sys.executable, "-m", "difs.cli.main", "app", "list", "--json"],
                          env=env).stdout)
    by_name = {a["name"]: a for a in apps}
    assert set(by_name) == {"app1", "app2"}
    assert by_name["app1"]["policy"]["source"] == "integrity"
    # the protocol endpoint shows a stranger no LUNs at all (LUN masking per initiator)
    listing = run(["iscsi-ls", "-s", "-i", "iqn.2026-11.io.difs.test:stranger",
                   f"iscsi://127.0.0.1:{ports['portal']}"]).stdout
    assert "iqn.2026-11.io.difs:ctl1" in listing and "Lun:" not in listing
    mine = run(["iscsi-ls", "-s", "-i", "iqn.2026-11.io.difs:host1",
                f"iscsi://127.0.0.1:{ports['portal']}"]).stdout
    assert "Lun:0" in mine and "Lun:1" in mine
    # stop and start an application through the manager: the host follows its bindings
    difs = [sys.executable, "-m", "difs.cli.main"]
    run([*difs, "app", "stop", "app2"], env=env)
    assert wait_until(lambda: run(["qemu-io", "-f", "raw", "-c", "read 0 4k",
                                   f"nbd://127.0.0.1:{ports['nbd']}/app2"], check=False)
                      .returncode != 0), "app2's export is still there after stop"
    run([*difs, "app", "start", "app2", "--host", "host1"], env=env)
    assert wait_until(lambda: "Pattern verification failed" not in run(
        ["qemu-io", "-f", "raw", "-c", "read -P 0x2b 0 1M", f"nbd://127.0.0.1:{ports['nbd']}/app2"],
        check=False).stdout and run(["qemu-io", "-f", "raw", "-c", "read 0 4k",
                                     f"nbd://127.0.0.1:{ports['nbd']}/app2"], check=False)
        .returncode == 0), "app2 did not come back with its data after start"
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "difs up: stopped" in rest


def wait_until(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


def test_demo_shows_the_overhead_is_paid_only_by_the_integrity_application(tmp_path: Path) -> None:
    """Both applications run at the same time; the table shows, per application, the host's
    and the controller's counters, the path labelled with what it negotiated."""
    proc, _ports, lines = start_up(tmp_path, "--demo", "--demo-mib", "8",
                                   until="still running for your own clients")
    try:
        text = "".join(lines)
        rows, runs = {}, {}
        for line in lines:
            parts = line.split()
            if parts and parts[0] in ("app1", "app2") and len(parts) == 13 and parts[1] in (
                    "integrity", "bronze"):
                rows[parts[0]] = [parts[0], parts[1], parts[2],
                                  *(int(p.replace(",", "")) for p in parts[3:])]
            elif len(parts) == 8 and parts[1] == "moved" and parts[4] == "from":
                # "app1: moved 16 MiB from +0.00s to +3.03s"
                runs[parts[0].rstrip(":")] = (float(parts[5].strip("+s")),
                                              float(parts[7].strip("+s")))
        assert set(rows) == {"app1", "app2"}, text
        # the two workloads ran at the same time: their intervals overlap
        assert set(runs) == {"app1", "app2"}, text
        (s1, e1), (s2, e2) = runs["app1"], runs["app2"]
        assert max(s1, s2) < min(e1, e2), runs
        assert "both running at once" in text and "not mixed: yes" in text, text
        # columns: app policy path | host I/Os MiB digest PIgen PIchk | ctl cmds MiB digest PIgen PIchk
        app, pol, path, h_ios, h_mib, h_dig, h_gen, h_chk, c_cmd, c_mib, c_dig, c_gen, c_chk = \
            rows["app1"]
        blocks = (8 << 20) // 512
        # app1 (integrity): only the digest channel, labelled by what it negotiated, and its
        # data digest-covered at both ends
        assert path.startswith("ch0=") and "digests" in path[4:].split("+") and "ch1" not in path
        assert h_dig >= 8 and c_dig >= 8 and h_mib >= 16 and c_mib >= 16
        # and PI end to end: a tuple generated per block written, verified per block read;
        # the controller checked each block on write and again on read
        assert h_gen + h_chk == 2 * blocks
        assert c_chk == 2 * blocks and c_gen == 0
        assert h_ios >= 2 * (8 << 20) // 65536 and c_cmd >= h_ios - 2
        app, pol, path, h_ios, h_mib, h_dig, h_gen, h_chk, c_cmd, c_mib, c_dig, c_gen, c_chk = \
            rows["app2"]
        # app2 (bronze): only the plain channel, and zero digests and PI, at both ends
        assert path.startswith("ch1=") and "digest" not in path and "ch0" not in path
        assert h_dig == c_dig == 0 and h_gen == h_chk == c_gen == c_chk == 0
        assert h_mib == c_mib == 16 and c_cmd >= h_ios - 2
        # the manager judges both applications compliant from what the host reported
        env = {**os.environ, "DIFS_MANAGER": f"http://127.0.0.1:{_ports['manager']}",
               "DIFS_TOKEN": (tmp_path / "up" / "admin-token").read_text().strip()}

        def states() -> dict[str, str]:
            listed = json.loads(run([sys.executable, "-m", "difs.cli.main", "app", "list",
                                     "--json"], env=env).stdout)
            return {a["name"]: a["compliance"]["state"] for a in listed}

        assert wait_until(lambda: states() == {"app1": "compliant", "app2": "compliant"}), states()
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
