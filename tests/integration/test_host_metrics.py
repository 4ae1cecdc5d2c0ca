"""The host's Prometheus metrics tell which path carried each application's I/O,
and how much CRC32C work each path did."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from support import controller, free_port, need_tool, run, start_difs

pytestmark = pytest.mark.integration


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_show_per_application_paths_and_digest_work(tmp_path: Path) -> None:
    need_tool("qemu-io")
    with controller(tmp_path, "--volume", "a:16M", "--volume", "b:16M") as ctl:
        nbd, metrics_port = free_port(), free_port()
        host = start_difs(
            "host", "--nbd", f"127.0.0.1:{nbd}", "--metrics", f"127.0.0.1:{metrics_port}",
            "--app", f"app1=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('a')}/0",
            "--app", f"app2=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('b')}/0",
            "--policy", "app1=silver", "--channels", "digests,plain")
        try:
            urls = host.wait_for_lines(2, "nbd://")
            for url, pattern in zip(urls, ("0x11", "0x22")):
                run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 4M",
                     "-c", f"read -P {pattern} 0 4M", url])
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        finally:
            assert host.stop() == 0
    # app1 needs digests: all its I/O on channel 0; app2 needs nothing: all on channel 1
    assert metric(text, "difs_host_app_bytes_total", app="app1", channel="0") >= 8 << 20
    assert metric(text, "difs_host_app_bytes_total", app="app1", channel="1") == 0
    assert metric(text, "difs_host_app_bytes_total", app="app2", channel="1") >= 8 << 20
    assert metric(text, "difs_host_app_bytes_total", app="app2", channel="0") == 0
    # digests were computed on app1's digest channel only
    a, b = ctl.iqn("a"), ctl.iqn("b")
    assert metric(text, "difs_host_path_digest_bytes_total", target=a, channel="0") >= 8 << 20
    assert metric(text, "difs_host_path_digests_total", target=b, channel="1") == 0
    assert metric(text, "difs_host_path_digests_total", target=a, channel="1") == 0
    assert metric(text, "difs_host_path_up", target=a, channel="0") == 1
    # neither application asked for PI: no tuples generated or checked, no PI errors
    assert metric(text, "difs_host_app_pi_generated_blocks_total") == 0
    assert metric(text, "difs_host_app_pi_checked_blocks_total") == 0
    assert 'difs_host_app_pi_errors_total{app="app1",found_by="host"} 0.0' in text


def test_controller_sees_each_application_only_on_satisfying_sessions(tmp_path: Path) -> None:
    """Path selection proven from the controller's side: its per-session counters show the
    digest-requiring application's commands only on sessions that negotiated digests, and
    the other application's only on plain ones."""
    need_tool("qemu-io")
    ctl_metrics = free_port()
    with controller(tmp_path, "--volume", "a:16M", "--volume", "b:16M",
                    "--metrics", f"127.0.0.1:{ctl_metrics}") as ctl:
        nbd = free_port()
        host = start_difs(
            "host", "--nbd", f"127.0.0.1:{nbd}",
            "--app", f"app1=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('a')}/0",
            "--app", f"app2=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('b')}/0",
            "--policy", "app1=silver", "--channels", "digests,plain")
        try:
            urls = host.wait_for_lines(2, "nbd://")
            for url, pattern in zip(urls, ("0x31", "0x32")):
                run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 2M",
                     "-c", f"read -P {pattern} 0 2M", url])
            text = httpx.get(f"http://127.0.0.1:{ctl_metrics}/metrics", timeout=5).text
        finally:
            assert host.stop() == 0
    cmds = "difs_controller_commands_total"
    # app1 (volume a) is silver: every command it sent arrived on a digest session
    assert metric(text, cmds, volume="a", header_digest="true", data_digest="true") >= 2
    assert metric(text, cmds, volume="a", header_digest="false") == 0
    # app2 (volume b) needs nothing: the host kept it off the digest channel
    assert metric(text, cmds, volume="b", header_digest="false", data_digest="false") >= 2
    assert metric(text, cmds, volume="b", header_digest="true") == 0
    # and nothing was refused
    assert metric(text, "difs_controller_rejections_total") == 0
