"""PI-formatted volumes in a real ``difs controller`` process, driven by difs' own initiator:
WRPROTECT/RDPROTECT=001b round trips, protect field 000b on the same volume, corruption at
rest flipped by ``python -m difs.controller.tools flip`` caught on read with the failing
LBA, and the PI work in the controller's Prometheus metrics."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import controller, free_port, run

from difs.host.connection import IscsiSession, SessionTimers
from difs.integrity import generate, interleave, split, verify
from difs.iscsi.config import InitiatorConfig

pytestmark = pytest.mark.integration

QUIET = SessionTimers(nop_interval=None, command_timeout=None, login_timeout=5.0)
INIT = "iqn.2026-11.io.difs:test.pi"


def rw16(op: int, lba: int, n: int, protect: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, protect << 5, lba, n, 0, 0)


def sense_of(done) -> tuple[int, int, int, int | None]:
    s = bytes(done.sense)
    info = struct.unpack_from(">I", s, 3)[0] if s[0] & 0x80 else None
    return s[2] & 0x0F, s[12], s[13], info


async def session(ctl, volume: str, isid: int = 0x023D00000001) -> IscsiSession:
    config = InitiatorConfig(initiator_name=INIT, isid=isid, target_name=ctl.iqn(volume))
    s = await IscsiSession.connect(f"{ctl.host}:{ctl.port}", config, name="t", timers=QUIET)
    await s.execute(0, bytes(6))  # power-on unit attention
    return s


def flip(data_dir: Path, volume: str, offset: int, *extra: str) -> str:
    return run([sys.executable, "-m", "difs.controller.tools", "flip", "--data-dir",
                str(data_dir), "--volume", volume, "--offset", str(offset), *extra]).stdout


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in\n{text}")


def test_pi_volume_end_to_end_with_at_rest_corruption(tmp_path: Path) -> None:
    with controller(tmp_path, "--volume", "pv:16M:pi1", "--app-tag", "pv=0x0d1f",
                    "--metrics", f"127.0.0.1:{free_port()}") as ctl:
        metrics_url = ctl.proc.wait_for_lines(1, "metrics ")[0].split(" ", 1)[1]

        async def main() -> None:
            s = await session(ctl, "pv")
            try:
                data = bytes((i * 31) & 0xFF for i in range(64 * 512))
                pi = generate(data, lba=100, pi_type=1, app_tag=0x0D1F)
                done = await s.execute(0, rw16(0x8A, 100, 64, 1),
                                       data_out=bytes(interleave(data, pi)))
                assert done.status == 0, sense_of(done)
                back = await s.execute(0, rw16(0x88, 100, 64, 1), expected_in_length=64 * 520)
                assert back.status == 0
                got, got_pi = split(back.data)
                assert bytes(got) == data and bytes(got_pi) == pi
                # protect 000b on the same blocks: checked and stripped
                plain = await s.execute(0, rw16(0x88, 100, 64), expected_in_length=64 * 512)
                assert plain.status == 0 and bytes(plain.data) == data
                # protect 000b write: the controller generates PI with the volume's tag
                done = await s.execute(0, rw16(0x8A, 300, 8), data_out=data[:4096])
                assert done.status == 0
                back = await s.execute(0, rw16(0x88, 300, 8, 1), expected_in_length=8 * 520)
                got, got_pi = split(back.data)
                verify(got, got_pi, lba=300, pi_type=1, app_tag=0x0D1F)
                # a wrong application tag is refused: ABORTED COMMAND 10h/02h at its LBA
                bad = generate(data[:512], lba=7, pi_type=1, app_tag=0x0D20)
                done = await s.execute(0, rw16(0x8A, 7, 1, 1),
                                       data_out=bytes(interleave(data[:512], bad)))
                assert sense_of(done) == (0x0B, 0x10, 0x02, 7)
                # corruption at rest is detected on read, never returned
                out = flip(tmp_path, "pv", 130 * 512 + 5, "--bit", "3")
                assert "LBA 130" in out
                done = await s.execute(0, rw16(0x88, 100, 64), expected_in_length=64 * 512)
                assert sense_of(done) == (0x0B, 0x10, 0x01, 130)
                assert not done.data
                # so is a corrupted reference tag in the stored PI (byte 4 of its tuple)
                flip(tmp_path, "pv", 110 * 8 + 7, "--pi")
                done = await s.execute(0, rw16(0x88, 110, 1, 1), expected_in_length=520)
                assert sense_of(done) == (0x0B, 0x10, 0x03, 110)
            finally:
                await s.logout()

        asyncio.run(main())
        text = scrape(metrics_url)
        path = {"volume": "pv", "initiator": INIT, "channel": "1"}
        assert metric(text, "difs_controller_pi_checked_blocks_total", **path) >= 64 * 3 + 8
        assert metric(text, "difs_controller_pi_generated_blocks_total", **path) == 8
        assert metric(text, "difs_controller_pi_check_failures_total", check="guard",
                      **path) == 1
        assert metric(text, "difs_controller_pi_check_failures_total", check="ref", **path) == 1
        assert metric(text, "difs_controller_rejections_total", reason="app_tag", **path) == 1
        assert metric(text, "difs_controller_volume_info", volume="pv", pi_type="1") == 1
    # the PI files are part of the volume; an unflushed intent log is replayed on restart
    assert (tmp_path / "volumes" / "pv.pi").stat().st_size == (16 << 20) // 512 * 8
    with controller(tmp_path, "--volume", "pv") as ctl:
        async def again() -> None:
            s = await session(ctl, "pv")
            try:
                done = await s.execute(0, rw16(0x88, 300, 8), expected_in_length=4096)
                assert done.status == 0
            finally:
                await s.logout()

        asyncio.run(again())


def test_pi_flags_and_refusal_to_reformat(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "difs.cli.main", "controller", "--data-dir",
                          str(tmp_path), "--volume", "x:8M:pi1:pi3"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "choose pi1 or pi3" in bad.stderr
    with controller(tmp_path, "--volume", "plain:8M"):
        pass
    again = subprocess.run([sys.executable, "-m", "difs.cli.main", "controller", "--data-dir",
                            str(tmp_path), "--portal", f"127.0.0.1:{free_port()}", "--volume",
                            "plain:8M:pi1"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert again.returncode == 2
    assert "PI format is fixed when a volume is created" in again.stderr
