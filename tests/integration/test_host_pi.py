"""T10 PI end to end through a real host and a real controller.

An application whose policy asks for protection information gets it from the host: PI
generated on write, sent with WRPROTECT=001b, verified on read before the application sees a
byte. A volume that cannot store PI is refused when the application starts, with the volume
named.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest
from support import controller, free_port, need_tool, run, start_difs

from difs.host.connection import IscsiSession, SessionTimers
from difs.integrity import crc16_t10dif, split
from difs.iscsi.config import InitiatorConfig
from difs.sam.apptag import application_tag

pytestmark = pytest.mark.integration

QUIET = SessionTimers(nop_interval=None, command_timeout=None, login_timeout=5.0)


def policy_file(tmp_path: Path, name: str, **integrity) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "services": {"integrity": integrity}}))
    return str(path)


def test_pi_policy_on_a_volume_without_pi_refuses_to_start(tmp_path: Path) -> None:
    pi1 = policy_file(tmp_path, "pi1", protection_information=1)
    with controller(tmp_path / "ctl", "--volume", "plain:8M") as ctl:
        host = start_difs("host", "--nbd", f"127.0.0.1:{free_port()}",
                          "--app", f"db=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('plain')}/0",
                          "--policy", f"db={pi1}", "--channels", "plain", "--path-wait", "3")
        try:
            rc = host.popen.wait(30)
        finally:
            host.stop()
        err = host.log_text()
        assert rc != 0, err
        assert f"volume {ctl.iqn('plain')} LUN 0 is not formatted with protection " \
               "information" in err, err
        assert "db's policy requires T10 PI type 1" in err
        assert not host.lines  # no NBD export was offered


def test_one_application_that_cannot_start_leaves_the_others_running(tmp_path: Path) -> None:
    """Issue 17 finding 9: a standalone host used to exit when one application's policy could
    not be met at start, taking the healthy applications with it."""
    need_tool("qemu-io")
    pi1 = policy_file(tmp_path, "pi1", protection_information=1)
    nbd = free_port()
    with controller(tmp_path / "ctl", "--volume", "plain:8M", "--volume", "other:8M") as ctl:
        host = start_difs("host", "--nbd", f"127.0.0.1:{nbd}",
                          "--app", f"db=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('plain')}/0",
                          "--policy", f"db={pi1}",
                          "--app", f"web=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('other')}/0",
                          "--channels", "plain", "--path-wait", "3")
        try:
            urls = host.wait_for_lines(1, "nbd://")
            assert urls == [f"nbd://127.0.0.1:{nbd}/web"], urls
            out = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k",
                       "-c", "read -P 0x5a 0 64k", f"nbd://127.0.0.1:{nbd}/web"])
            assert "read 65536/65536" in out.stdout, out.stdout + out.stderr
            refused = run(["qemu-io", "-f", "raw", "-c", "read 0 4k",
                           f"nbd://127.0.0.1:{nbd}/db"], check=False)
            assert refused.returncode != 0
            assert host.popen.poll() is None  # still serving
        finally:
            rc = host.stop()
        err = host.log_text()
        assert rc == 0, err
        line = next(l for l in err.splitlines() if "application not started" in l)
        assert "app=db" in line and "not formatted with protection information" in line, line


async def read_stored_pi(portal: tuple[str, int], target: str, lba: int, blocks: int):
    """Data and PI tuples the controller has for ``blocks`` at ``lba`` (READ(16) RDPROTECT=001b
    from a bare difs initiator, no host in between)."""
    config = InitiatorConfig(initiator_name="iqn.2026-11.io.difs:test.reader",
                             isid=0x023D0000FFFF, target_name=target)
    session = await IscsiSession.connect(f"{portal[0]}:{portal[1]}", config, name="reader",
                                         timers=QUIET)
    try:
        cdb = struct.pack(">BBQIBB", 0x88, 0x20, lba, blocks, 0, 0)
        for _ in range(3):  # the first command of a session may report a unit attention
            result = await session.execute(0, cdb, expected_in_length=blocks * 520)
            if result.status == 0:
                break
        assert result.status == 0, result.sense.hex()
        data, pi = split(result.data)
        return bytes(data), list(struct.iter_unpack(">HHI", pi))
    finally:
        await session.logout()


@pytest.fixture
def pi_host(tmp_path: Path):
    """controller(db: 16 MiB, PI type 1) <- host(db with a policy asking for PI type 1)."""
    pi1 = policy_file(tmp_path, "pi1", protection_information=1)
    with controller(tmp_path / "ctl", "--volume", "db:16M:pi1") as ctl:
        host = start_difs("host", "--nbd", f"127.0.0.1:{free_port()}",
                          "--app", f"db=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('db')}/0",
                          "--policy", f"db={pi1}", "--channels", "digests,plain",
                          "--path-wait", "3")
        try:
            [url] = host.wait_for_lines(1, "nbd://")
            yield ctl, host, url
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]


def test_host_generates_the_pi_the_controller_stores(pi_host) -> None:
    need_tool("qemu-io")
    ctl, host, url = pi_host
    assert f"pi=type1/tag:{application_tag('db'):04x}" in host.log_text()
    out = run(["qemu-io", "-f", "raw", "-c", "write -P 0xa5 64k 128k", "-c",
               "read -P 0xa5 64k 128k", url]).stdout
    assert "Pattern verification failed" not in out
    data, tuples = asyncio.run(read_stored_pi((ctl.host, ctl.port), ctl.iqn("db"), 128, 256))
    assert data == b"\xa5" * (128 << 10)
    tag = application_tag("db")
    assert {(g, a) for g, a, _ in tuples} == {(crc16_t10dif(b"\xa5" * 512), tag)}
    assert [r for _, _, r in tuples] == list(range(128, 384))  # type 1: reference tag = LBA
    # blocks nobody wrote carry the escape tuple, and read as zeros through the host
    out = run(["qemu-io", "-f", "raw", "-c", "read -P 0 0 64k", url]).stdout
    assert "Pattern verification failed" not in out
