"""The guest's console parsed into a result: a real console, kernel noise, and malformed text."""

from __future__ import annotations

from pathlib import Path

from difs.vm.console import parse_console

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "vm"
#: the console of a real boot on a difs disk (TCG, 2 MiB verify through host2's Unix socket)
REAL = (VECTORS / "verify-passed.txt").read_text()
IO_ERROR = ("[   12.345678] I/O error, dev vda, sector 2048 op 0x1:(WRITE) flags 0x8800 "
            "phys_seg 256 prio class 2")


def test_a_real_console_is_a_passed_result() -> None:
    r = parse_console(REAL)
    assert (r.workload, r.mib, r.direct_io) == ("verify", 2, True)
    assert r.bytes_written == r.bytes_read == r.verified == 2 << 20
    assert (r.errors, r.io_errors, r.status) == (0, 0, 0)
    assert r.boot_seconds == 7.86 and r.uptime_seconds == 10.60
    assert r.extra == {"phase": {"name": "written", "uptime": "8.67"}}
    assert r.passed and r.reason() == "" and r.as_dict()["passed"] is True


def test_kernel_io_errors_on_the_console_fail_the_result() -> None:
    noisy = REAL.replace("DIFS-PHASE", IO_ERROR + "\r\nDIFS-PHASE")
    r = parse_console(noisy)
    assert r.io_errors == 1 and r.kernel_io_error_lines == [IO_ERROR]
    assert not r.passed and "1 I/O error" in r.reason()


def test_the_guest_s_own_dmesg_count_is_taken_when_larger() -> None:
    r = parse_console(REAL.replace("io_errors=0", "io_errors=3"))
    assert r.io_errors == 3 and not r.passed


def test_a_marker_after_a_printk_timestamp_or_cut_by_one_still_parses() -> None:
    text = REAL.replace("DIFS-IO direct=1", "[    8.1] virtio_blk virtio0: [vda] DIFS-IO direct=1")
    assert parse_console(text).direct_io is True


def test_a_truncated_console_is_incomplete_never_passed() -> None:
    cut = REAL[: REAL.index("DIFS-VERIFY")]
    r = parse_console(cut)
    assert not r.complete and not r.passed
    assert "did not report a complete result" in r.reason()
    assert not parse_console("").passed


def test_malformed_lines_are_kept_and_fail_the_result() -> None:
    for bad in ("DIFS-VERIFY bytes_written=2097152 bytes_read=x verified=2097152 errors=0",
                "DIFS-VERIFY bytes_written=2097152 verified=2097152 errors=0",  # a count missing
                "DIFS-END status=",
                "DIFS-VERIFY bytes_written=1 garbage here"):
        lines = [line for line in REAL.splitlines() if not line.startswith(bad.split()[0])]
        r = parse_console("\n".join(lines + [bad]))
        assert bad in r.malformed, bad
        assert not r.passed and "malformed" in r.reason()


def test_fewer_bytes_verified_than_written_fails() -> None:
    text = REAL.replace("verified=2097152", "verified=1048576")
    r = parse_console(text)
    assert not r.passed and "verified 1048576 of 2097152 bytes" in r.reason()


def test_errors_and_a_failed_status_are_reasons() -> None:
    text = REAL.replace("errors=0", "errors=2").replace("status=0", "status=1")
    r = parse_console(text)
    assert not r.passed
    assert "2 MiB failed" in r.reason() and "exit status 1" in r.reason()


def test_steady_passes_on_what_it_verified() -> None:
    text = ("DIFS-BEGIN workload=steady mib=4 seed=ab uptime=1.0\nDIFS-STEADY rounds=5 seconds=3\n"
            "DIFS-VERIFY bytes_written=5242880 bytes_read=10485760 verified=5242880 errors=0\n"
            "DIFS-KERNEL io_errors=0\nDIFS-END status=0 uptime=4.0\n")
    r = parse_console(text)
    assert r.passed and r.extra["steady"] == {"rounds": "5", "seconds": "3"}


def test_a_real_console_with_the_disk_taken_away() -> None:
    """A real guest whose application was unbound under it (tests/integration/test_vm.py)."""
    r = parse_console((VECTORS / "io-errors.txt").read_text())
    assert len(r.kernel_io_error_lines) == 38 and r.io_errors == 38
    assert r.kernel_io_error_lines[0].endswith("I/O error, dev vda, sector 0 op 0x1:(WRITE) "
                                               "flags 0x8800 phys_seg 11 prio class 2")
    assert (r.bytes_written, r.verified, r.errors, r.status) == (0, 0, 48, 1)
    assert r.complete and not r.passed and not r.malformed
    assert r.reason() == ("48 MiB failed to write, read or compare; the guest kernel saw 38 I/O "
                          "error(s); verified 0 of 25165824 bytes; workload exit status 1")
