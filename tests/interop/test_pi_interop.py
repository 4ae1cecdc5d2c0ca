"""Standard clients on PI-formatted volumes of a real ``difs controller``.

QEMU and libiscsi always send RDPROTECT/WRPROTECT=000b: the controller generates PI on
their writes and checks it on their reads, so a bit flipped at rest (``python -m
difs.controller.tools flip``) comes back to them as a failed read (ABORTED COMMAND 10h/01h,
which QEMU reports as "Operation canceled"), never as data; on a volume without PI the same flip is returned silently - that is what an
integrity policy is for.  libiscsi's ``iscsi-test-cu`` runs its SBC suites (PI reporting,
protect fields, residuals, provisioning) against type 1 and type 3 volumes with no failure.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import controller, need_tool, run

pytestmark = pytest.mark.interop

CLIENT = "iqn.2026-11.io.difs.test:client"
INITIATOR_1 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INITIATOR_2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"

#: a short selection of iscsi-test-cu's SCSI suites that exercise what PI changes:
#: reporting (INQUIRY, READ CAPACITY(16) Protection, VPD), every command with a protect
#: field at protect 000b, residuals (transfer lengths), provisioning (escape PI)
TESTCU_SUITES = (
    "Inquiry", "ReadCapacity16", "Read6", "Read10", "Read12", "Read16", "Write10", "Write12",
    "Write16", "Verify10", "Verify16", "WriteVerify10", "WriteVerify16", "WriteSame10",
    "WriteSame16", "CompareAndWrite", "OrWrite", "WriteAtomic16", "Unmap", "GetLBAStatus",
    "ModeSense6", "ReportSupportedOpcodes",
)
TESTCU_SELECTION = ",".join([f"SCSI.{s}" for s in TESTCU_SUITES] + ["iSCSI.iSCSIResiduals"])


def flip(data_dir: Path, volume: str, offset: int) -> None:
    run([sys.executable, "-m", "difs.controller.tools", "flip", "--data-dir", str(data_dir),
         "--volume", volume, "--offset", str(offset), "--bit", "6"])


def test_qemu_io_on_pi_volumes_and_corruption_at_rest(tmp_path: Path) -> None:
    need_tool("qemu-io", "iscsi-readcapacity16", "iscsi-inq")
    with controller(tmp_path, "--volume", "p1:16M:pi1", "--volume", "p3:16M:pi3:thick",
                    "--volume", "plain:16M") as ctl:
        cap = run(["iscsi-readcapacity16", "-i", CLIENT, ctl.url("p1")]).stdout
        assert "P_TYPE:0 PROT_EN:1" in cap
        cap3 = run(["iscsi-readcapacity16", "-i", CLIENT, ctl.url("p3")]).stdout
        assert "P_TYPE:2 PROT_EN:1" in cap3
        assert "Protect:1" in run(["iscsi-inq", "-i", CLIENT, ctl.url("p1")]).stdout
        assert "Protect:0" in run(["iscsi-inq", "-i", CLIENT, ctl.url("plain")]).stdout
        for vol in ("p1", "p3", "plain"):
            out = run(["qemu-io", "-f", "raw", "-c", "write -P 0xc3 0 1M",
                       "-c", "write -P 0x3c 4M 64k", "-c", "aio_write -P 0x77 8M 256k",
                       "-c", "aio_flush", "-c", "read -P 0xc3 0 1M", "-c", "read -P 0x3c 4M 64k",
                       "-c", "read -P 0x77 8M 256k", "-c", "read -P 0 12M 1M",
                       ctl.url(vol)]).stdout
            assert "Pattern verification failed" not in out and out.count("read ") == 4
        # one bit flipped at rest in block 1000 (offset 512000 + 77) of each volume
        for vol in ("p1", "p3", "plain"):
            flip(tmp_path, vol, 1000 * 512 + 77)
        for vol in ("p1", "p3"):
            bad = run(["qemu-io", "-f", "raw", "-c", "read -P 0xc3 0 1M", ctl.url(vol)],
                      check=False)
            text = bad.stdout + bad.stderr
            # QEMU maps ABORTED COMMAND to ECANCELED: the read fails, no data is returned
            assert "read failed" in text and "Pattern verification failed" not in text, text
            assert "COMMAND ABORTED(11)" in text and "0x1001" in text, text
            # the blocks around it still read (only the damaged block fails)
            ok = run(["qemu-io", "-f", "raw", "-c", "read -P 0xc3 0 500k",
                      "-c", "read -P 0xc3 501k 523k", ctl.url(vol)]).stdout
            assert "Pattern verification failed" not in ok
        silent = run(["qemu-io", "-f", "raw", "-c", "read -P 0xc3 0 1M", ctl.url("plain")],
                     check=False)
        assert "Pattern verification failed" in silent.stdout + silent.stderr  # not detected
        assert "Input/output error" not in silent.stdout + silent.stderr
        # rewriting the block heals it
        run(["qemu-io", "-f", "raw", "-c", "write -P 0xc3 500k 1k", ctl.url("p1")])
        again = run(["qemu-io", "-f", "raw", "-c", "read -P 0xc3 0 1M", ctl.url("p1")]).stdout
        assert "Pattern verification failed" not in again
        log = ctl.proc.log_text()
    assert "store error" not in log


def _testcu(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iscsi-test-cu", "-d", "-v", "-i", INITIATOR_1, "-I", INITIATOR_2,
                           "-t", TESTCU_SELECTION, url], capture_output=True, text=True,
                          timeout=240)


def test_iscsi_test_cu_sbc_suites_on_pi_volumes(tmp_path: Path) -> None:
    need_tool("iscsi-test-cu")
    with controller(tmp_path, "--volume", "t1:64M:pi1", "--volume", "t3:64M:pi3:thick") as ctl:
        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(("t1", "t3"), pool.map(_testcu, [ctl.url("t1"), ctl.url("t3")])))
    for vol, res in results.items():
        out = res.stdout + res.stderr
        summary = [line for line in out.splitlines() if line.strip().startswith("tests ")]
        assert summary, out[-3000:]
        total, ran, passed, failed = (int(x) for x in summary[0].split()[1:5])
        assert failed == 0 and ran == total and total >= 100, (vol, summary[0], out[-4000:])
        assert "CUnit" in out and res.returncode == 0, (vol, out[-3000:])
        # the PI tests saw a PI-formatted unit (not the "no protection" branch)
        assert "Device does not support/use protection information" not in out
        # escape PI on unmapped blocks, generated PI on written ones: no PI check failed
        assert "0x1001" not in out and "0x1003" not in out
