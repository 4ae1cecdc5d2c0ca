"""CHAP on the host's paths, end to end: real controller and host processes.

The host proves itself with ``--chap`` (and asks the controller to prove itself with
``--mutual-chap``); each path records what it authenticated, and a policy that requires
(mutual) CHAP is carried only by paths that did — never by one that did not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from proxy import IscsiProxy
from support import controller, free_port, need_tool, run, start_difs

pytestmark = pytest.mark.integration

HOST_CHAP = "host-user:host-secret-1234"
TARGET_CHAP = "ctl-user:ctl-secret-56789"


def policy_file(tmp_path: Path, name: str, services: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "services": services}))
    return str(path)


def secure_policy(tmp_path: Path) -> str:
    return policy_file(tmp_path, "secure", {
        "integrity": {"header_digest": True, "data_digest": True},
        "security": {"authentication": "mutual_chap"},
    })


def host_args(url: str, policy: str, *extra: str) -> list[str]:
    return ["host", "--nbd", f"127.0.0.1:{free_port()}", "--app", f"a={url}",
            "--policy", f"a={policy}", "--channels", "digests,plain", "--nop-interval", "1",
            *extra]


def test_mutual_chap_paths_carry_a_policy_that_requires_them(tmp_path: Path) -> None:
    need_tool("qemu-io")
    with controller(tmp_path / "ctl", "--volume", "a:16M", "--chap", f"a={HOST_CHAP}",
                    "--mutual-chap", f"a={TARGET_CHAP}") as ctl:
        host = start_difs(*host_args(ctl.url("a"), secure_policy(tmp_path), "--chap", HOST_CHAP,
                                     "--mutual-chap", TARGET_CHAP, "--path-wait", "3"))
        try:
            [url] = host.wait_for_lines(1, "nbd://")
            out = run(["qemu-io", "-f", "raw", "-c", "write -P 0x3c 1M 2M",
                       "-c", "read -P 0x3c 1M 2M", url]).stdout
            assert "Pattern verification failed" not in out and "error" not in out
            log = host.log_text()
            ups = [line for line in log.splitlines() if "path up" in line]
            assert len(ups) == 2, log
            assert all("'CHAP'" in line and "'mutual CHAP'" in line for line in ups), ups
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]
        assert "login refused" not in ctl.proc.log_text()


def test_wrong_secret_keeps_paths_down_and_says_why(tmp_path: Path) -> None:
    with controller(tmp_path / "ctl", "--volume", "a:16M", "--chap", f"a={HOST_CHAP}") as ctl:
        started = time.monotonic()
        host = start_difs(*host_args(ctl.url("a"), "bronze", "--chap", "host-user:wrong-secret-99",
                                     "--path-wait", "2"))
        rc = host.popen.wait(60)
        host.stop()
        log = host.log_text()
        assert rc == 1, log
        assert time.monotonic() - started >= 2.0  # it waited --path-wait for a path first
        assert "path login failed" in log and "authentication failed" in log
        assert "refused CHAP user 'host-user'" in log
        # the error names the application, and why no path could carry it
        assert "difs host: application a: no available path satisfies a's policy" in log
        assert "AUTHENTICATION_FAILURE" in ctl.proc.log_text() or "login refused" in ctl.proc.log_text()


def test_policy_requiring_chap_is_never_carried_by_an_unauthenticated_path(tmp_path: Path) -> None:
    chap_only = policy_file(tmp_path, "chap-only", {"security": {"authentication": "chap"}})
    with controller(tmp_path / "ctl", "--volume", "a:16M") as ctl:  # asks for no CHAP
        host = start_difs(*host_args(ctl.url("a"), chap_only, "--path-wait", "1"))
        rc = host.popen.wait(60)
        host.stop()
        log = host.log_text()
        assert rc == 1, log
        assert log.count("path up") == 2  # the paths are up, just not authenticated
        assert "no available path satisfies a's policy (CHAP)" in log


def test_rotated_secret_at_the_controller_fails_io_after_path_wait(tmp_path: Path) -> None:
    """The controller comes back with a secret the host does not know: the paths stay down
    with the reason logged, and I/O fails with EIO after --path-wait naming what it needs."""
    need_tool("qemu-io")
    policy = secure_policy(tmp_path)
    with controller(tmp_path / "ctl", "--volume", "a:16M", "--chap", f"a={HOST_CHAP}",
                    "--mutual-chap", f"a={TARGET_CHAP}") as ctl:
        proxy = IscsiProxy((ctl.host, ctl.port))
        url = f"iscsi://{proxy.portal}/{ctl.iqn('a')}/0"
        host = start_difs(*host_args(url, policy, "--chap", HOST_CHAP, "--mutual-chap",
                                     TARGET_CHAP, "--path-wait", "2", "--login-timeout", "3"))
        try:
            [nbd] = host.wait_for_lines(1, "nbd://")
            ok = run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", nbd])
            assert "error" not in ok.stdout
            # the same volume (same IQN) served by a controller with a rotated host secret
            with controller(tmp_path / "ctl2", "--volume", "a:16M",
                            "--chap", "a=host-user:rotated-secret-77",
                            "--mutual-chap", f"a={TARGET_CHAP}") as ctl2:
                assert ctl2.iqn("a") == ctl.iqn("a")
                proxy.upstream = (ctl2.host, ctl2.port)
                assert proxy.cut(0) + proxy.cut(1) == 2
                started = time.monotonic()
                bad = run(["qemu-io", "-f", "raw", "-c", "read 0 64k", nbd], check=False)
                assert time.monotonic() - started >= 1.9, bad
                assert "Input/output error" in bad.stdout + bad.stderr
                # read while ctl2 still answers: a retry after it stops is reset, not refused
                log = host.log_text()
            failed = [line for line in log.splitlines() if "path login failed" in line]
            assert failed and all("authentication failed" in line for line in failed), log
            eios = [line for line in log.splitlines() if "no satisfying path" in line]
            assert eios, log
            for eio in eios:
                assert "requires=\"header digest, data digest, CHAP, mutual CHAP\"" in eio, eio
                assert "refused CHAP user 'host-user'" in eio, eio
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]
            proxy.close()
