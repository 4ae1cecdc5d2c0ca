"""Fault injection end to end: bits flipped in flight between a real host and a real controller.

Topology of every test: ``difs controller`` <- :class:`faults.FaultProxy` <- ``difs host``
(channel 0 with CRC32C header and data digests, channel 1 plain) <- ``qemu-io`` over NBD as
the application. The proxy flips bits in iSCSI PDUs after the sender computed its digests,
as faulty hardware on the path would. What each policy promises, and what is asserted:

* **digests** (silver: header + data digest, so channel 0 only) — a flipped data bit in a
  Data-Out is caught by the controller's data digest check: that command ends with ABORTED
  COMMAND 47h/05h and nothing of it is stored; the host sends it again and the data reads back
  intact. A flipped header bit (either direction) is caught by the header digest: the
  connection is dropped, the host reconnects and re-sends; data intact.
* **PI** (a policy asking for T10 PI type 1 only, on a PI-formatted volume; the host picks
  the plain channel) — a bit flipped in a write's data passes iSCSI unnoticed but fails the
  controller's PI check (ABORTED COMMAND 10h/01h): nothing is stored, the host retries on
  another path. A bit flipped in a Data-In fails the host's PI verify before the
  application sees a byte; the host reads again on another path.
* **neither digests nor PI** (bronze, plain channel 1) — nothing on the path can notice: the
  flipped bit is stored, or returned, silently, and the host reports success. The tests assert
  that the corruption is *not* detected: that is the risk an application accepts by choosing
  a policy without integrity services, and exactly what the digest and PI policies are for.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from faults import DATA_IN, DATA_OUT, SCSI_COMMAND, TO_HOST, TO_TARGET, BitFlip, FaultProxy
from support import controller, free_port, need_tool, run, start_difs

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture
def cluster(tmp_path: Path):
    """``cluster(policy)`` -> (controller, proxy, host, NBD URL of application "app").

    controller(volume "vol", 16 MiB) <- fault proxy <- host(app with ``policy``)."""
    with contextlib.ExitStack() as stack:

        def start(policy: str, volume: str = "vol:16M"):
            ctl = stack.enter_context(controller(tmp_path / "ctl", "--volume", volume))
            proxy = FaultProxy((ctl.host, ctl.port))
            stack.callback(proxy.close)
            name = volume.split(":")[0]
            host = start_difs("host", "--nbd", f"127.0.0.1:{free_port()}",
                              "--app", f"app=iscsi://{proxy.portal}/{ctl.iqn(name)}/0",
                              "--policy", f"app={policy}", "--channels", "digests,plain",
                              "--path-wait", "5", "--nop-interval", "0")

            def stop_host() -> None:
                assert host.stop() == 0, host.log_text()[-3000:]

            stack.callback(stop_host)
            [url] = host.wait_for_lines(1, "nbd://")
            return ctl, proxy, host, url

        yield start


def qemu_io(url: str, *commands: str, check: bool = True):
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    result = run([*args, url], check=check, timeout=60)
    return result, result.stdout + result.stderr


def read_volume(url: str, tmp_path: Path) -> bytes:
    """Every byte of the application's disk, as the application reads it (through the host)."""
    out = tmp_path / "read.raw"
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(out)])
    return out.read_bytes()


def differing_bits(a: bytes, b: bytes) -> list[int]:
    """Bit positions (byte * 8 + bit) where ``a`` and ``b`` differ."""
    assert len(a) == len(b)
    x = np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)
    return [int(i) * 8 + bit for i in np.flatnonzero(x) for bit in range(8) if x[i] >> bit & 1]


def test_digest_catches_a_flipped_data_out_bit_and_the_host_resends(cluster) -> None:
    need_tool("qemu-io")
    ctl, proxy, host, url = cluster("silver")
    flip = proxy.add(BitFlip(TO_TARGET, where="data", channel=0, opcodes={DATA_OUT}))
    _, out = qemu_io(url, "write -P 0x5a 0 1M", "read -P 0x5a 0 1M")
    assert "Pattern verification failed" not in out and "error" not in out.lower(), out
    assert flip.fired == 1 and proxy.flips[0].opcode == DATA_OUT
    # the controller saw the digest fail and answered that command ABORTED COMMAND 47h/05h;
    # the host sent it again (on the only satisfying path: silver needs channel 0)
    assert "digest error" in ctl.proc.log_text() and "kind=data" in ctl.proc.log_text()
    log = host.log_text()
    assert "command aborted by the controller, re-sending" in log, log[-3000:]
    assert "47h/05h" in log
    assert proxy.count(channel=1, direction=TO_TARGET, opcode=SCSI_COMMAND) == 0


def test_corrupt_data_is_never_stored(cluster) -> None:
    """Every attempt of one write is corrupted: the host gives up (EIO) and the volume still
    holds the old data — not one byte of the corrupt write was stored."""
    need_tool("qemu-io")
    _ctl, proxy, _host, url = cluster("silver")
    qemu_io(url, "write -P 0x11 0 1M")
    flip = proxy.add(BitFlip(TO_TARGET, where="data", channel=0, opcodes={DATA_OUT},
                             limit=None))
    _bad, out = qemu_io(url, "write -P 0x22 0 1M", check=False)
    assert "Input/output error" in out, out
    # the first try and three re-sends (each a new task), every one caught and refused
    assert flip.fired >= 4 and len({f.itt for f in proxy.flips}) == 4
    proxy.clear()
    _, out = qemu_io(url, "read -P 0x11 0 1M")
    assert "Pattern verification failed" not in out, out


def test_header_digest_catches_flipped_header_bits_both_ways(cluster) -> None:
    need_tool("qemu-io")
    ctl, proxy, host, url = cluster("silver")
    to_target = proxy.add(BitFlip(TO_TARGET, where="header", channel=0,
                                  opcodes={SCSI_COMMAND}, nth=2))
    _, out = qemu_io(url, "write -P 0x3c 0 256k", "read -P 0x3c 0 256k")
    assert "Pattern verification failed" not in out and "error" not in out.lower(), out
    assert to_target.fired == 1
    assert "kind=header" in ctl.proc.log_text()
    proxy.clear()
    to_host = proxy.add(BitFlip(TO_HOST, where="header", channel=0, opcodes={DATA_IN}))
    _, out = qemu_io(url, "read -P 0x3c 0 256k")
    assert "Pattern verification failed" not in out and "error" not in out.lower(), out
    assert to_host.fired == 1
    log = host.log_text()
    # each time the connection was dropped, re-established, and the command sent again
    assert log.count("path failed, re-sending") >= 2, log[-3000:]
    assert "header digest" in log.lower()


def test_a_path_that_keeps_breaking_is_not_stormed_with_logins(cluster) -> None:
    """Issue 17 finding 5: 30 % of the Data-Ins on the digest channel arrive with a broken
    header digest, so the connection drops soon after each login. The host used to log in
    again at once, every time (53 logins in the ~3 s this workload took, hundreds a second on
    a longer run); it now backs off (recovery.ReconnectBackoff), so over 8 s of the same
    workload it logs in a handful of times, and no read returns wrong data."""
    need_tool("qemu-io")
    ctl, proxy, host, url = cluster("silver")  # silver: digests, so channel 0 only
    flips = proxy.add(BitFlip(TO_HOST, where="header", channel=0, opcodes={DATA_IN},
                              rate=0.3, limit=None))
    logins_before = host.log_text().count("path up path=")
    reads = [c for _ in range(16) for c in ("-c", "read -P 0 0 1M")]
    result = run(["timeout", "8", "qemu-io", "-f", "raw", *reads, url], check=False, timeout=30)
    out = result.stdout + result.stderr
    assert "Pattern verification failed" not in out, out
    logins = host.log_text().count("path up path=") - logins_before
    assert flips.fired >= 2  # the path really broke, again and again
    # backoff from 0.2 s, doubling to 5 s, with jitter: at most ~7 logins in 8 s
    assert 2 <= logins <= 10, (logins, host.log_text()[-3000:])


def test_without_digests_or_pi_a_flipped_bit_is_stored_silently(cluster, tmp_path) -> None:
    """Bronze asks for no integrity service: a bit flipped in a Data-Out on the plain channel
    is stored and read back, and nobody notices (asserted: the write and the read succeed,
    and the data read differs from the data written in exactly that bit)."""
    need_tool("qemu-io", "qemu-img")
    ctl, proxy, host, url = cluster("bronze")
    flip = proxy.add(BitFlip(TO_TARGET, where="data", channel=1,
                             opcodes={SCSI_COMMAND, DATA_OUT}))
    _, out = qemu_io(url, "write -P 0x77 0 1M")
    assert "error" not in out.lower(), out
    assert flip.fired == 1
    [flipped] = proxy.flips
    back = read_volume(url, tmp_path)
    assert differing_bits(back, b"\x77" * MiB + bytes(15 * MiB)) == \
        [flipped.volume_offset * 8 + flipped.bit]
    log = host.log_text() + ctl.proc.log_text()
    assert "re-sending" not in log and "digest error" not in log and "PI check" not in log


def test_without_digests_or_pi_a_flipped_data_in_bit_is_returned_silently(cluster,
                                                                          tmp_path) -> None:
    need_tool("qemu-io", "qemu-img")
    _ctl, proxy, _host, url = cluster("bronze")
    qemu_io(url, "write -P 0x0f 0 1M")
    flip = proxy.add(BitFlip(TO_HOST, where="data", channel=1, opcodes={DATA_IN}))
    back = read_volume(url, tmp_path)
    assert flip.fired == 1
    [flipped] = proxy.flips
    written = b"\x0f" * MiB + bytes(15 * MiB)
    assert differing_bits(back, written) == [flipped.volume_offset * 8 + flipped.bit]
    proxy.clear()
    # the volume itself is fine: the corruption happened on the wire, and was not caught
    assert read_volume(url, tmp_path) == written


def pi_policy(tmp_path: Path) -> str:
    """A policy asking for T10 PI type 1 and nothing else (so any channel satisfies it)."""
    path = tmp_path / "pi1.json"
    path.write_text(json.dumps({"name": "pi1", "services": {
        "integrity": {"protection_information": 1}}}))
    return str(path)


def test_pi_catches_a_flipped_data_out_bit_without_digests(cluster, tmp_path) -> None:
    """PI without digests: the host sends on the plain channel 1. A bit flipped in the data of
    a write passes iSCSI unnoticed (no data digest), but the controller's PI check refuses
    the command (ABORTED COMMAND 10h/01h); the host retries on another path; data intact."""
    need_tool("qemu-io")
    ctl, proxy, host, url = cluster(pi_policy(tmp_path), "vol:16M:pi1")
    # byte 1000 of the segment: data of the second block (the PI of block 0 is bytes 512-519)
    flip = proxy.add(BitFlip(TO_TARGET, where="data", channel=1, byte=1000,
                             opcodes={SCSI_COMMAND, DATA_OUT}))
    _, out = qemu_io(url, "write -P 0x5a 0 1M", "read -P 0x5a 0 1M")
    assert "Pattern verification failed" not in out and "error" not in out.lower(), out
    assert flip.fired == 1
    log = host.log_text()
    assert "PI check failed" in log and "found_by=controller" in log and "check=guard" in log
    assert "digest error" not in ctl.proc.log_text()


def test_pi_catches_a_flipped_data_in_bit_and_the_host_rereads(cluster, tmp_path) -> None:
    """A bit flipped in a Data-In on the plain channel: the host's PI verify catches it before
    the application sees a byte, and reads again on another path; data correct."""
    need_tool("qemu-io")
    _ctl, proxy, host, url = cluster(pi_policy(tmp_path), "vol:16M:pi1")
    qemu_io(url, "write -P 0x6b 0 1M")
    flip = proxy.add(BitFlip(TO_HOST, where="data", channel=1, byte=1000, opcodes={DATA_IN}))
    _, out = qemu_io(url, "read -P 0x6b 0 1M")
    assert "Pattern verification failed" not in out and "error" not in out.lower(), out
    assert flip.fired == 1
    log = host.log_text()
    assert "PI check failed" in log and "found_by=host" in log
    assert "retrying on another path" in log


def flip_at_rest(ctl, volume: str, offset: int, *, pi: bool = False, bit: int = 0) -> str:
    """The controller engineer's tool: flip one stored bit of a volume (data, or PI)."""
    args = [sys.executable, "-m", "difs.controller.tools", "flip", "--data-dir",
            str(ctl.data_dir), "--volume", volume, "--offset", str(offset), "--bit", str(bit)]
    return run([*args, "--pi"] if pi else args).stdout


def test_pi_catches_corruption_at_rest_never_wrong_data(cluster, tmp_path) -> None:
    """A stored data bit flipped (LBA 9): the read fails with EIO, the application never gets
    the wrong byte; blocks around it still read. A flipped application-tag bit in the
    stored PI (LBA 20; the controller has no expected tag to check) is caught by the host."""
    need_tool("qemu-io")
    ctl, _proxy, host, url = cluster(pi_policy(tmp_path), "vol:16M:pi1")
    qemu_io(url, "write -P 0x42 0 64k")
    assert "LBA 9" in flip_at_rest(ctl, "vol", 9 * 512 + 77, bit=3)
    _, out = qemu_io(url, "read -P 0x42 4k 4k", check=False)  # LBA 8..15
    assert "Input/output error" in out and "Pattern verification failed" not in out, out
    _, out = qemu_io(url, "read -P 0x42 0 4k", "read -P 0x42 8k 56k")
    assert "error" not in out.lower() and "Pattern verification failed" not in out, out
    log = host.log_text()
    assert "PI check failed" in log and "lba=9 " in log and "check=guard" in log, log[-3000:]
    assert "action=\"I/O error to the application\"" in log

    assert "LBA 20" in flip_at_rest(ctl, "vol", 20 * 8 + 2, pi=True)  # application tag
    _bad, out = qemu_io(url, "read -P 0x42 8k 4k", check=False)  # LBA 16..23
    assert "Input/output error" in out, out
    log = host.log_text()
    assert "lba=20 " in log and "check=app" in log and "found_by=host" in log, log[-3000:]


def test_without_pi_corruption_at_rest_is_returned_silently(cluster, tmp_path) -> None:
    """Bronze, plain volume: a stored bit flipped is returned as data, and nothing notices
    (asserted: the read succeeds and differs from what was written in exactly that bit)."""
    need_tool("qemu-io", "qemu-img")
    ctl, _proxy, host, url = cluster("bronze")
    qemu_io(url, "write -P 0x42 0 64k")
    flip_at_rest(ctl, "vol", 9 * 512 + 77, bit=3)
    back = read_volume(url, tmp_path)
    assert differing_bits(back, b"\x42" * 65536 + bytes(16 * MiB - 65536)) == \
        [(9 * 512 + 77) * 8 + 3]
    assert "PI check" not in host.log_text() and "failed" not in host.log_text()
