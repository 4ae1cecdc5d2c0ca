"""Real initiators against a real ``difs controller`` process on loopback.

libiscsi's tools (iscsi-ls, iscsi-inq, iscsi-readcapacity16) and QEMU's iSCSI
driver (qemu-io, qemu-img) — the clients the design names — log in, read,
write, and authenticate with CHAP; wrong secrets are refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from support import controller, need_tool, run

pytestmark = pytest.mark.interop

INITIATOR = "iqn.2026-11.io.difs.test:client"


def test_libiscsi_discovers_inquires_and_reads_capacity(tmp_path: Path) -> None:
    need_tool("iscsi-ls", "iscsi-inq", "iscsi-readcapacity16")
    with controller(tmp_path, "--volume", "alpha:64M", "--volume", "beta:8M") as ctl:
        listing = run(["iscsi-ls", "-s", "-i", INITIATOR, f"iscsi://{ctl.host}:{ctl.port}"]).stdout
        assert ctl.iqn("alpha") in listing and ctl.iqn("beta") in listing
        inq = run(["iscsi-inq", "-i", INITIATOR, ctl.url("alpha")]).stdout
        assert "DIFS" in inq
        serial = run(["iscsi-inq", "-i", INITIATOR, "-e", "1", "-c", "128", ctl.url("alpha")]).stdout
        assert re.search(r"[0-9a-f]{8}", serial)
        cap = run(["iscsi-readcapacity16", "-i", INITIATOR, ctl.url("alpha")]).stdout
        assert "LOGICALBLOCKLENGTHINBYTES:512" in cap.replace(" ", "")
        assert "RETURNEDLOGICALBLOCKADDRESS:131071" in cap.replace(" ", "")
    # kept if present: the same volume is served again with the same identity
    with controller(tmp_path, "--volume", "alpha") as ctl:
        again = run(["iscsi-inq", "-i", INITIATOR, "-e", "1", "-c", "128", ctl.url("alpha")]).stdout
        assert again == serial


def test_qemu_io_writes_patterns_and_reads_them_back(tmp_path: Path) -> None:
    need_tool("qemu-io")
    with controller(tmp_path, "--volume", "pat:32M") as ctl:
        url = ctl.url("pat")
        cmds = ["-c", "write -P 0xa5 0 1M", "-c", "write -P 0x5a 1M 64k",
                "-c", "write -P 0x11 31M 1M", "-c", "aio_write -P 0x22 8M 128k", "-c", "aio_flush"]
        run(["qemu-io", "-f", "raw", *cmds, url])
        check = ["-c", "read -P 0xa5 0 1M", "-c", "read -P 0x5a 1M 64k",
                 "-c", "read -P 0x11 31M 1M", "-c", "read -P 0x22 8M 128k",
                 "-c", "read -P 0 2M 1M"]
        out = run(["qemu-io", "-f", "raw", *check, url]).stdout
        assert "Pattern verification failed" not in out
        assert out.count("read ") == 5
        bad = run(["qemu-io", "-f", "raw", "-c", "read -P 0xa5 1M 4k", url], check=False)
        assert "Pattern verification failed" in bad.stdout + bad.stderr


def test_qemu_img_convert_round_trip_is_identical(tmp_path: Path) -> None:
    need_tool("qemu-img")
    src = tmp_path / "src.raw"
    src.write_bytes(os.urandom(24 << 20) + bytes(8 << 20))
    with controller(tmp_path / "ctl", "--volume", "img:32M") as ctl:
        url = ctl.url("img")
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), url])
        back = tmp_path / "back.raw"
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(back)])
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()


def test_one_way_chap_through_qemu(tmp_path: Path) -> None:
    need_tool("qemu-io")
    with controller(tmp_path, "--volume", "sec:8M", "--chap", "sec=alice:alice-secret-123") as ctl:
        iqn = ctl.iqn("sec")

        def qemu_io(password: str) -> object:
            opts = (f"driver=iscsi,transport=tcp,portal={ctl.host}:{ctl.port},target={iqn},lun=0,"
                    f"user=alice,password-secret=pw,initiator-name={INITIATOR}")
            return run(["qemu-io", "--object", f"secret,id=pw,data={password}", "--image-opts",
                        "-c", "write -P 0x77 0 64k", "-c", "read -P 0x77 0 64k", opts], check=False)

        ok = qemu_io("alice-secret-123")
        assert ok.returncode == 0, ok.stderr
        assert "Pattern verification failed" not in ok.stdout
        bad = qemu_io("wrong-secret-456")
        assert bad.returncode != 0
        assert "Authorization failure" in bad.stderr or "authentication" in bad.stderr.lower() \
            or "Failed to" in bad.stderr
        # anonymous is refused too
        anon = run(["qemu-io", "-f", "raw", "-c", "read 0 4k", ctl.url("sec")], check=False)
        assert anon.returncode != 0
        assert "authentication failed" in ctl.proc.log_text().lower() or "auth" in ctl.proc.log_text().lower()


def test_mutual_chap_through_libiscsi_url(tmp_path: Path) -> None:
    need_tool("iscsi-inq")
    args = ["--volume", "mut:8M", "--chap", "mut=bob:bob-secret-1234",
            "--mutual-chap", "mut=ctl:target-secret-99"]
    with controller(tmp_path, *args) as ctl:
        base = ctl.url("mut").replace("iscsi://", "iscsi://bob%bob-secret-1234@")
        ok = run(["iscsi-inq", "-i", INITIATOR,
                  base + "?target_user=ctl&target_password=target-secret-99"], check=False)
        assert ok.returncode == 0, ok.stderr
        assert "DIFS" in ok.stdout
        # the initiator checks the target's answer: a wrong target secret is refused
        wrong_target = run(["iscsi-inq", "-i", INITIATOR,
                            base + "?target_user=ctl&target_password=not-the-secret"], check=False)
        assert wrong_target.returncode != 0
        wrong_user = run(["iscsi-inq", "-i", INITIATOR,
                          ctl.url("mut").replace("iscsi://", "iscsi://bob%bad-secret-000@")
                          + "?target_user=ctl&target_password=target-secret-99"], check=False)
        assert wrong_user.returncode != 0


def test_access_control_by_initiator_name(tmp_path: Path) -> None:
    need_tool("iscsi-inq", "iscsi-ls")
    with controller(tmp_path, "--volume", "acl:8M", "--volume", "open:8M",
                    "--allow", f"acl={INITIATOR}") as ctl:
        assert run(["iscsi-inq", "-i", INITIATOR, ctl.url("acl")], check=False).returncode == 0
        other = "iqn.2026-11.io.difs.test:intruder"
        assert run(["iscsi-inq", "-i", other, ctl.url("acl")], check=False).returncode != 0
        # discovery hides what the initiator may not see
        listing = run(["iscsi-ls", "-i", other, f"iscsi://{ctl.host}:{ctl.port}"]).stdout
        assert ctl.iqn("open") in listing and ctl.iqn("acl") not in listing


def test_required_header_digest_is_negotiated(tmp_path: Path) -> None:
    need_tool("qemu-io")
    with controller(tmp_path, "--volume", "dig:8M", "--require-digest", "dig=header") as ctl:
        out = run(["qemu-io", "-f", "raw", "-c", "write -P 0x3c 0 256k", "-c", "read -P 0x3c 0 256k",
                   ctl.url("dig")]).stdout
        assert "Pattern verification failed" not in out
        logins = [l for l in ctl.proc.stderr if " login " in l and "dig" in l]
        assert logins and all("header_digest=True" in l for l in logins), ctl.proc.log_text()


def test_malformed_pdus_end_only_their_own_connection(tmp_path: Path) -> None:
    """Garbage, a truncated login and an absurd data segment each end their own
    connection; a qemu-io session running meanwhile is untouched."""
    import socket
    import struct
    import subprocess

    need_tool("qemu-io")
    with controller(tmp_path, "--volume", "bad:16M") as ctl:
        writer = subprocess.Popen(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 8M", "-c", "read -P 0x42 0 8M",
             ctl.url("bad")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        login = bytearray(48)
        login[0] = 0x43  # immediate Login Request
        login[1] = 0x87  # T, CSG=1, NSG=3
        huge = bytearray(login)
        struct.pack_into(">I", huge, 4, 0x00FFFFFF)  # 16 MiB data segment: over any limit
        for payload in (os.urandom(4096), bytes(login[:20]), bytes(huge) + os.urandom(1000),
                        b"\xff" * 48 * 3):
            with socket.create_connection((ctl.host, ctl.port), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):  # the controller answers (or not) and closes
                    pass
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert "Pattern verification failed" not in out
        # and the controller still serves new sessions
        again = run(["qemu-io", "-f", "raw", "-c", "read -P 0x42 4M 4k", ctl.url("bad")]).stdout
        assert "Pattern verification failed" not in again
        assert ctl.proc.popen.poll() is None
