"""VMs as the applications: a real guest (QEMU, Debian's cloud kernel, busybox) boots on an
application's difs disk, writes and verifies, powers off — and its application is bound on
power-on and unbound on power-off through the manager.

One cluster of real processes on loopback for the module: ``difs manager``, controller
``ctl1`` (with metrics), ``host1`` (channels digests + plain, NBD on TCP and a Unix socket) and
``host2`` (a plain channel only).  ``app1`` has the integrity policy (CRC32C digests + PI),
``app2`` bronze.  The VMs are driven with the ``difs vm`` command, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from difs.nodelink.client import ManagerClient
from difs.vm import image
from difs.vm.errors import ImageError
from support import DIFS, Proc, free_port, metric, start_difs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTEGRITY = {"name": "integrity", "services": {"integrity": {
    "header_digest": True, "data_digest": True, "protection_information": 1}}}


def _guest_missing() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (./scripts/setup.sh installs qemu-system-x86)"
    try:
        image.find_inputs()
    except ImageError as exc:
        return str(exc)
    return None


if (_missing := _guest_missing()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_missing))


def wait_until(what: str, ready, timeout: float = 60.0, procs: tuple[Proc, ...] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = ready()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n"
                                 + "\n".join(p.log_text()[-3000:] for p in procs))
        time.sleep(0.1)


@dataclass
class Cluster:
    tmp: Path
    url: str
    admin: ManagerClient
    token: str
    metrics: str
    nbd: dict[str, str]  # host -> HOST:PORT
    sockets: dict[str, str]  # host -> Unix socket path
    procs: list[Proc]

    def vm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DIFS_MANAGER": self.url, "DIFS_TOKEN": self.token,
               "DIFS_VM_DIR": str(self.tmp / "vm"), "COLUMNS": "200"}
        return subprocess.run([*DIFS, "vm", *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    def define(self, name: str, app: str, host: str = "host1", *extra: str, unix: bool = True) -> None:
        args = ["define", name, "--app", app, "--host", host, "--nbd", self.nbd[host], *extra]
        if unix:
            args += ["--nbd-unix", self.sockets[host]]
        done = self.vm(*args)
        assert done.returncode == 0, done.stderr

    def run_json(self, *args: str) -> tuple[int, dict[str, Any], str]:
        done = self.vm(*args, "--json")
        try:
            return done.returncode, json.loads(done.stdout), done.stderr
        except ValueError:
            raise AssertionError(f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}") from None

    def binding(self, app: str) -> dict[str, Any] | None:
        return self.admin.request("GET", f"/apps/{app}")["binding"]

    def volume_bytes(self, app: str, direction: str, **labels: str) -> float:
        volume = self.admin.request("GET", f"/apps/{app}")["volumes"][0]["name"]
        return metric(f"http://{self.metrics}/metrics", "difs_controller_bytes_total",
                      volume=volume, direction=direction, **labels)


def _node(admin: ManagerClient, name: str, kind: str) -> str:
    return admin.request("POST", "/nodes", json={"name": name, "kind": kind})["token"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("vm")
    procs: list[Proc] = []
    url = f"http://127.0.0.1:{free_port()}"
    try:
        procs.append(start_difs("manager", "--listen", url.removeprefix("http://"),
                                "--data-dir", str(tmp / "manager"), env={"DIFS_ADMIN_TOKEN": ""}))
        wait_until("the manager", lambda: httpx.get(url + "/api/v1/healthz", timeout=1)
                   .status_code == 200, procs=tuple(procs))
        token = (tmp / "manager" / "admin-token").read_text().strip()
        admin = ManagerClient(url, token=token)
        metrics = f"127.0.0.1:{free_port()}"
        procs.append(start_difs("controller", "--manager", url, "--name", "ctl1",
                                "--portal", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp / "ctl1"),
                                "--interval", "0.5", "--metrics", metrics,
                                env={"DIFS_NODE_TOKEN": _node(admin, "ctl1", "controller")}))
        nbd, sockets = {}, {}
        # host2's short path wait: it reports app1 failed (no satisfying path) within seconds
        for host, channels, wait in (("host1", "digests,plain", "30"), ("host2", "plain", "2")):
            nbd[host], sockets[host] = f"127.0.0.1:{free_port()}", str(tmp / f"{host}.sock")
            procs.append(start_difs(
                "host", "--manager", url, "--name", host, "--initiator-name",
                f"iqn.2026-11.io.difs:{host}", "--nbd", nbd[host], "--nbd-unix", sockets[host],
                "--channels", channels, "--interval", "0.5", "--state-dir", str(tmp / host),
                "--path-wait", wait,
                env={"DIFS_NODE_TOKEN": _node(admin, host, "host")}))
        for node in ("ctl1", "host1", "host2"):
            wait_until(f"{node} alive", lambda n=node: admin.request("GET", f"/nodes/{n}")["state"]
                       == "alive", procs=tuple(procs))
        admin.request("POST", "/policies", json=INTEGRITY)
        for app, policy in (("app1", "integrity"), ("app2", "bronze")):
            admin.request("POST", "/apps", json={"name": app, "size_bytes": 32 << 20,
                                                 "policy": policy, "host": "host1"})
        yield Cluster(tmp, url, admin, token, metrics, nbd, sockets, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_a_vm_boots_on_app1_writes_verifies_and_powers_off(cluster: Cluster) -> None:
    cluster.define("v1", "app1", "host1", "--mib", "4")
    written = cluster.volume_bytes("app1", "write", channel="0")
    code, vm, err = cluster.run_json("run", "v1")
    assert code == 0, (vm, err)
    r = vm["result"]
    assert (vm["state"], vm["ended_by"], vm["qemu_exit"]) == ("powered-off", "guest", 0)
    assert r["passed"] and r["workload"] == "verify" and r["direct_io"] is True
    assert r["bytes_written"] == r["bytes_read"] == r["verified"] == 4 << 20
    assert r["errors"] == 0 and r["io_errors"] == 0
    assert vm["disk"] == f"nbd+unix:///app1?socket={cluster.sockets['host1']}"  # the host is local
    assert vm["accelerator"] in ("kvm", "tcg") and vm["accelerator_why"]
    assert 0 < vm["boot_to_poweroff_seconds"] < 300
    # the guest's writes reached app1's volume at the controller, over channel 0 (digests)
    assert cluster.volume_bytes("app1", "write", channel="0", data_digest="true") - written >= 4 << 20
    assert cluster.binding("app1") is None  # power-off -> unbind
    shown = cluster.vm("show", "v1")
    assert "accelerator: " + vm["accelerator"] in shown.stdout
    assert "boot to power-off" in shown.stdout and "result: passed" in shown.stdout
    listed = json.loads(cluster.vm("list", "--json").stdout)
    assert [(v["name"], v["state"]) for v in listed] == [("v1", "powered-off")]
    console = Path(vm["console"])
    assert "DIFS-VERIFY" in console.read_text() and console.stat().st_mode & 0o777 == 0o600


def test_data_written_before_a_power_off_is_there_after_the_next_boot(cluster: Cluster) -> None:
    cluster.define("p1", "app1", "host1", "--mib", "2", "--workload", "persist-write")
    code, vm, err = cluster.run_json("run", "p1")
    assert code == 0 and vm["result"]["verified"] == 2 << 20, (vm, err)
    assert cluster.binding("app1") is None  # powered off: the volume was unbound in between
    code, vm, err = cluster.run_json("run", "p1", "--workload", "persist-check")
    assert code == 0, (vm, err)
    r = vm["result"]
    assert (r["workload"], r["bytes_written"], r["verified"], r["errors"]) == \
        ("persist-check", 0, 2 << 20, 0)
    # the check is not vacuous: another VM's pattern (another seed) is not on that disk
    cluster.define("p2", "app1", "host1", "--mib", "2", "--workload", "persist-check")
    code, vm, err = cluster.run_json("run", "p2")
    assert code == 1 and not vm["result"]["passed"]
    assert vm["result"]["verified"] == 0 and vm["result"]["errors"] == 2
    assert "2 MiB failed to write, read or compare" in err


def test_a_vm_whose_application_cannot_run_on_its_host_is_not_started(cluster: Cluster) -> None:
    # host2 has a plain channel only: app1's policy (digests) cannot be met there
    cluster.define("r1", "app1", "host2")
    done = cluster.vm("start", "r1")
    assert done.returncode == 1
    text = " ".join(done.stderr.split())
    assert "VM r1 not started" in text and "no available path satisfies app1's policy" in text
    assert cluster.binding("app1") is None  # the binding made for it was undone
    shown = json.loads(cluster.vm("show", "r1", "--json").stdout)
    assert shown["state"] == "not-started" and "policy" in shown["reason"]
    assert not (cluster.tmp / "vm" / "vms" / "r1" / "console.log").exists()  # QEMU never ran
    # an application bound on another host is not taken from it
    cluster.admin.bind("app2", initiator_iqn="iqn.2026-11.io.difs:host1", host="host1")
    try:
        cluster.define("r2", "app2", "host2")
        done = cluster.vm("start", "r2")
        assert done.returncode == 1
        assert "bound to host host1: unbind it there first" in " ".join(done.stderr.split())
        assert cluster.binding("app2")["host"] == "host1"
    finally:
        cluster.admin.unbind("app2")


def test_stop_powers_a_running_vm_off_then_unbinds(cluster: Cluster) -> None:
    # app2 on host2, over NBD/TCP (no Unix socket given): a steady workload stopped early
    cluster.define("s1", "app2", "host2", "--workload", "steady", "--seconds", "600", "--mib", "2",
                   unix=False)
    code, vm, err = cluster.run_json("start", "s1")
    assert code == 0 and vm["state"] == "running", (vm, err)
    assert vm["disk"] == f"nbd://{cluster.nbd['host2']}/app2"
    assert cluster.binding("app2")["host"] == "host2"
    console = Path(vm["console"])
    wait_until("the guest's workload", lambda: "DIFS-BEGIN" in console.read_text(), timeout=180)
    code, vm, err = cluster.run_json("stop", "s1")
    assert code == 0, (vm, err)
    assert (vm["state"], vm["ended_by"]) == ("powered-off", "stop")
    assert not vm["result"]["passed"] and not vm["result"]["complete"]
    assert cluster.binding("app2") is None


def test_a_disk_taken_away_is_an_io_error_the_guest_s_kernel_reports(cluster: Cluster) -> None:
    """The application is unbound under a running guest: its host closes the export, QEMU's
    requests fail, the guest's kernel logs I/O errors — the result counts them and fails."""
    cluster.define("e1", "app2", "host1", "--mib", "24")
    code, vm, err = cluster.run_json("start", "e1")
    assert code == 0, (vm, err)
    console = Path(vm["console"])
    wait_until("the guest's workload", lambda: "DIFS-BEGIN" in console.read_text(), timeout=180)
    cluster.admin.unbind("app2")
    wait_until("the guest's power-off", lambda: json.loads(
        cluster.vm("show", "e1", "--json").stdout)["state"] == "powered-off", timeout=300)
    r = json.loads(cluster.vm("show", "e1", "--json").stdout)["result"]
    assert r["complete"] and not r["passed"], r
    assert r["io_errors"] > 0 and r["errors"] > 0
    assert any("I/O error, dev vda" in line for line in r["kernel_io_error_lines"])
    assert "I/O error" in r["reason"]
