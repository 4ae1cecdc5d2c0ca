"""The host end to end: real controller and host processes, real NBD clients.

The host reaches the controller through a proxy that knows each connection's
channel (from its ISID), so a test can cut one path, or refuse a channel, and
watch the host re-send on another satisfying path — or refuse to downgrade.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from proxy import IscsiProxy
from support import controller, free_port, need_tool, run, start_difs

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path):
    """controller(app1, app2) <- proxy <- host(app1: silver, app2: bronze).

    Channels: 0 and 1 with CRC32C digests, 2 plain."""
    with controller(tmp_path / "ctl", "--volume", "app1:32M", "--volume", "app2:32M") as ctl:
        proxy = IscsiProxy((ctl.host, ctl.port))
        nbd_port = free_port()
        apps = []
        for name in ("app1", "app2"):
            apps += ["--app", f"{name}=iscsi://{proxy.portal}/{ctl.iqn(name)}/0"]
        host = start_difs("host", "--nbd", f"127.0.0.1:{nbd_port}", *apps,
                          "--policy", "app1=silver", "--channels", "digests,digests,plain",
                          "--path-wait", "3")
        try:
            urls = host.wait_for_lines(2, "nbd://")
            yield ctl, proxy, host, dict(zip(("app1", "app2"), urls))
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]
            proxy.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_qemu_img_convert_round_trip(cluster, tmp_path: Path) -> None:
    need_tool("qemu-img")
    _, proxy, _, urls = cluster
    src = tmp_path / "src.raw"
    src.write_bytes(os.urandom(12 << 20) + bytes(4 << 20) + os.urandom(16 << 20))
    for app in ("app1", "app2"):
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), urls[app]])
        back = tmp_path / f"{app}.raw"
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", urls[app], str(back)])
        assert sha(back) == sha(src)
    info = run(["qemu-img", "info", "--output=json", urls["app1"]]).stdout
    assert '"virtual-size": 33554432' in info


def test_nbdinfo_and_nbdcopy(cluster, tmp_path: Path) -> None:
    need_tool("nbdinfo", "nbdcopy")
    _, _, _, urls = cluster
    info = run(["nbdinfo", urls["app2"]]).stdout
    assert 'export="app2"' in info and "export-size: 33554432" in info
    src = tmp_path / "src.raw"
    src.write_bytes(os.urandom(32 << 20))
    run(["nbdcopy", str(src), urls["app2"]])
    back = tmp_path / "back.raw"
    run(["nbdcopy", urls["app2"], str(back)])
    assert sha(back) == sha(src)


def test_fio_verifies_through_the_host(cluster, tmp_path: Path) -> None:
    need_tool("fio")
    _, _, _, urls = cluster
    out = run(["fio", "--name=verify", "--ioengine=nbd", f"--uri={urls['app1']}",
               "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=8M", "--verify=crc32c",
               "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
               "--output-format=terse"], timeout=120, cwd=tmp_path)
    assert out.returncode == 0
    assert "verify" in out.stdout


def test_failover_resends_on_another_satisfying_path(cluster, tmp_path: Path) -> None:
    need_tool("qemu-io")
    _, proxy, host, urls = cluster
    writer = subprocess.Popen(
        ["qemu-io", "-f", "raw", "-c", "write -P 0x5e 0 24M", "-c", "aio_flush", urls["app1"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cut = 0
    deadline = time.monotonic() + 10
    while writer.poll() is None and time.monotonic() < deadline and not cut:
        time.sleep(0.05)
        cut = proxy.cut(0)  # cut digest channel 0 mid-stream; digest channel 1 remains
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert cut, "the stream ended before a path could be cut"
    check = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5e 0 24M", urls["app1"]]).stdout
    assert "Pattern verification failed" not in check
    # the host noticed, and re-established channel 0 behind the stream's back
    log = host.log_text()
    assert "path closed" in log and log.count("path up") > 6, log[-3000:]


def test_no_satisfying_path_fails_instead_of_downgrading(cluster, tmp_path: Path) -> None:
    need_tool("qemu-io")
    _, proxy, host, urls = cluster
    proxy.refused |= {0, 1}  # the digest channels; only plain channel 2 can come back
    assert proxy.cut(0) + proxy.cut(1) >= 2
    time.sleep(0.3)
    started = time.monotonic()
    bad = run(["qemu-io", "-f", "raw", "-c", "read 0 64k", urls["app1"]], check=False, timeout=60)
    assert time.monotonic() - started >= 2.5, bad  # it waited for a satisfying path first
    assert "Input/output error" in bad.stdout + bad.stderr
    assert "no satisfying path" in host.log_text()
    # the application that needs nothing carries on over the plain channel
    ok = run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", "-c", "read -P 0x11 0 64k",
              urls["app2"]]).stdout
    assert "Pattern verification failed" not in ok
    # and once a satisfying path is allowed back, app1 works again
    proxy.refused.clear()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        again = run(["qemu-io", "-f", "raw", "-c", "read 0 64k", urls["app1"]], check=False)
        if again.returncode == 0 and "error" not in again.stdout + again.stderr:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("app1 did not recover once its paths came back")
