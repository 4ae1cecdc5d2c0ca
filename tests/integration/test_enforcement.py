"""Enforcement in a real ``difs controller``: ad hoc volumes given a policy with
``--policy VOL=TIER|FILE.json`` refuse what their policy forbids - a session without the
digests it needs (including every standard client: libiscsi and QEMU cannot negotiate
DataDigest), a protect-000b write to a volume requiring PI end to end - with CHECK
CONDITION DATA PROTECT 74h/71h, a log line saying why, and counters in the metrics."""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.request
from pathlib import Path

import pytest
from support import controller, free_port, need_tool, run

from difs.host.connection import IscsiSession, SessionTimers
from difs.integrity import generate, interleave
from difs.iscsi.config import InitiatorConfig

pytestmark = pytest.mark.integration

QUIET = SessionTimers(nop_interval=None, command_timeout=None, login_timeout=5.0)
INIT = "iqn.2026-11.io.difs:test.enforce"
CLIENT = "iqn.2026-11.io.difs.test:client"
DENIED = (0x07, 0x74, 0x71)


def rw16(op: int, lba: int, n: int, protect: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, protect << 5, lba, n, group, 0)


def sense_of(done) -> tuple[int, int, int]:
    s = bytes(done.sense)
    return s[2] & 0x0F, s[12], s[13]


async def session(ctl, volume: str, *, isid: int, digests: bool) -> IscsiSession:
    offer = ("CRC32C",) if digests else ("None",)
    config = InitiatorConfig(initiator_name=INIT, isid=isid, target_name=ctl.iqn(volume),
                             header_digest=offer, data_digest=offer)
    return await IscsiSession.connect(f"{ctl.host}:{ctl.port}", config, name="t", timers=QUIET)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in\n{text}")


def test_silver_volume_serves_digest_sessions_only(tmp_path: Path) -> None:
    pi_policy = tmp_path / "e2e.json"
    pi_policy.write_text(json.dumps({"name": "e2e", "services": {
        "integrity": {"protection_information": 1}}}))
    with controller(tmp_path, "--volume", "sv:8M", "--policy", "sv=silver",
                    "--volume", "pv:8M", "--policy", f"pv={pi_policy}",
                    "--metrics", f"127.0.0.1:{free_port()}") as ctl:
        url = ctl.proc.wait_for_lines(1, "metrics ")[0].split(" ", 1)[1]

        async def main() -> None:
            plain = await session(ctl, "sv", isid=0x023D00000001, digests=False)
            digests = await session(ctl, "sv", isid=0x023D00000000, digests=True)
            pi = await session(ctl, "pv", isid=0x023D00000002, digests=False)
            try:
                for s in (plain, digests, pi):
                    await s.execute(0, bytes(6))
                done = await plain.execute(0, rw16(0x8A, 0, 8), data_out=bytes(4096))
                assert done.status == 2 and sense_of(done) == DENIED
                done = await digests.execute(0, rw16(0x8A, 0, 8, group=0x03),
                                             data_out=b"\x5a" * 4096)
                assert done.status == 0
                done = await digests.execute(0, rw16(0x88, 0, 8, group=0x01),
                                             expected_in_length=4096)
                assert sense_of(done) == DENIED  # its tag does not cover the volume's class
                done = await digests.execute(0, rw16(0x88, 0, 8), expected_in_length=4096)
                assert done.status == 0 and bytes(done.data) == b"\x5a" * 4096
                # the PI volume was created PI-formatted from its policy; protect 000b is
                # refused, WRPROTECT=001b accepted
                done = await pi.execute(0, rw16(0x8A, 0, 1), data_out=bytes(512))
                assert sense_of(done) == DENIED
                block = b"\x11" * 512
                done = await pi.execute(0, rw16(0x8A, 0, 1, 1), data_out=bytes(
                    interleave(block, generate(block, lba=0, pi_type=1))))
                assert done.status == 0
            finally:
                for s in (plain, digests, pi):
                    await s.logout()

        asyncio.run(main())
        text = scrape(url)
        log = ctl.proc.log_text()
    assert metric(text, "difs_controller_rejections_total", volume="sv", channel="1",
                  data_digest="false", reason="data_digest") == 1
    assert metric(text, "difs_controller_rejections_total", volume="sv", channel="0",
                  data_digest="true", reason="service_class") == 1
    assert metric(text, "difs_controller_rejections_total", volume="pv",
                  reason="pi_required") == 1
    assert metric(text, "difs_controller_bytes_total", volume="sv", channel="0",
                  direction="write") == 4096
    assert metric(text, "difs_controller_digests_total", channel="0",
                  data_digest="true") > 0
    refused = [line for line in log.splitlines() if "I/O refused" in line]
    assert any("reason=data_digest" in line and "volume=sv" in line and "channel=1" in line
               and "DataDigest=None" in line for line in refused), log
    assert any("reason=pi_required" in line and "volume=pv" in line for line in refused), log


@pytest.mark.interop
def test_standard_clients_are_refused_by_a_data_digest_policy(tmp_path: Path) -> None:
    need_tool("iscsi-inq", "iscsi-readcapacity16", "iscsi-perf", "qemu-io")
    with controller(tmp_path, "--volume", "sv:8M", "--policy", "sv=silver",
                    "--volume", "open:8M") as ctl:
        # the tools that only describe the logical unit still see it ...
        inq = run(["iscsi-inq", "-i", CLIENT, ctl.url("sv")], check=False)
        assert inq.returncode == 0 and "DIFS" in inq.stdout
        cap = run(["iscsi-readcapacity16", "-i", CLIENT, ctl.url("sv")], check=False)
        assert cap.returncode == 0 and "LOGICALBLOCKLENGTHINBYTES:512" in \
            cap.stdout.replace(" ", ""), cap.stdout
        # ... but any data is refused with DATA PROTECT 74h/71h
        perf = run(["timeout", "20", "iscsi-perf", "-i", CLIENT, "-t", "1", ctl.url("sv")],
                   check=False)
        out = perf.stdout + perf.stderr
        assert "DATA_PROTECT" in out or "DATA PROTECT" in out or "0x7471" in out, out
        qemu = run(["qemu-io", "-f", "raw", "-c", "read 0 4k", ctl.url("sv")], check=False)
        qout = (qemu.stdout + qemu.stderr).lower()
        assert qemu.returncode != 0 or "failed" in qout, qout
        assert "permission denied" in qout or "error" in qout, qout
        # the same clients on a volume without a policy are served
        ok = run(["qemu-io", "-f", "raw", "-c", "read 0 4k", ctl.url("open")])
        assert "failed" not in ok.stdout.lower()
        log = ctl.proc.log_text()
    refused = [line for line in log.splitlines() if "I/O refused" in line]
    assert refused and all("volume=sv" in line for line in refused)
    assert "reason=data_digest" in refused[0] and "cannot negotiate DataDigest" in refused[0]
