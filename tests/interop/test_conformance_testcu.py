"""libiscsi's SCSI/iSCSI conformance suite, ``iscsi-test-cu``, against a real controller.

Three volumes, three controllers, three runs in parallel (each run spends most of its
~80 s in the suite's own sleeps, so running them side by side keeps the total near one):

* **plain** - a thick (resource-provisioned) volume reached through two portals,
  127.0.0.1 and 127.0.0.2, with two initiator names: the MultipathIO family runs, and
  every test that needs a second I_T nexus uses the second path;
* **read-only** - a write-protected volume (ReadOnly.ReadOnlySBC runs);
* **thin** - a thin-provisioned volume (UNMAP deallocates, GET LBA STATUS, LBPRZ).

The verbose log is classified the way ``testcu-summary`` does it (CUnit reports a test
that skipped itself as passed): a test is *failed* if CUnit says FAILED or its output
contains ``[FAILED]``, *skipped* if its output contains ``[SKIPPED]``, else *exercised*.
A test whose "passed" line is followed by more text on the same line (the harness's
suite clean-up printing, e.g. a PERSISTENT RESERVE IN meeting a unit attention that
the target rightly queued for the second nexus) is not counted at all, exactly as the
summary tool does.

Every run must have zero failures, except the tests listed in ``SUMMARY_ARTIFACTS``:
tests that testcu-summary counts as failed whatever the target does, because libiscsi
logs the failures the test *expects* with a "[FAILED]" prefix. For those, CUnit's own
verdict (the test's "passed"/"FAILED" status line) must be "passed".
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import controller, free_port, need_tool

pytestmark = [pytest.mark.interop, pytest.mark.slow]

INITIATOR_1 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INITIATOR_2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"

#: failures that need an iSCSI-core change (not SCSI, not the adapter), with the change
SUMMARY_ARTIFACTS = {
    "iSCSIdatasn.iSCSIDataSnInvalid": (
        "sends writes whose Data-Out DataSN is wrong and asserts they fail; every such write "
        "is logged as '[FAILED] WRITE10 command failed ...' by libiscsi's helper, so "
        "testcu-summary marks the test failed even when the target fails the writes "
        "correctly (ABORTED COMMAND 47h/05h, connection kept)"),
}


def cunit_verdicts(text: str) -> dict[str, str]:
    """CUnit's own verdict per test: the 'passed'/'FAILED' that closes its block."""
    verdicts: dict[str, str] = {}
    suite = current = None
    for line in text.splitlines():
        m = re.match(r"^Suite: (\S+)", line)
        if m:
            suite = m.group(1)
            continue
        m = re.match(r"^\s+Test: (\S+) \.\.\.", line)
        if m:
            current = f"{suite}.{m.group(1)}"
        if current is not None:
            m = re.search(r"\b(passed|FAILED)\s*$", line)
            if m and not line.lstrip().startswith("["):
                verdicts[current] = m.group(1)
                current = None
    return verdicts

#: skip messages that are deliberate choices, and why (any other skip fails the test)
DELIBERATE_SKIPS = {
    # A virtual disk is not removable medium (RMB=0): hosts would treat it as a removable
    # drive otherwise. PreventAllow.* and StartStopUnit.Simple need removable medium.
    "Logical unit is not removable": "medium not removable",
    "Media is not removable": "medium not removable",
    # SANITIZE is not implemented, and the suite only tries it with --allow-sanitize.
    "--allow-sanitize flag is not set": "SANITIZE is not offered",
    # The physical block is the logical block (LBPPB=1; see LogicalUnit): tests of
    # partial physical blocks do not apply.
    "LBPPB < 2": "physical block = logical block",
}
#: per-run deliberate skips
RUN_SKIPS = {
    "plain": {"Logical unit is not write-protected": "the volume is writable"},
    "thin": {"Logical unit is not write-protected": "the volume is writable",
             "Multipath unavailable": "one portal (MultipathIO runs on the plain volume)"},
    "read-only": {"Multipath unavailable": "one portal (MultipathIO runs on the plain volume)"},
}

#: What runs against the read-only volume: every suite that does not need to change the
#: volume's data, and from the write suites the tests that expect a refusal (range,
#: WRPROTECT field, write protection). The other write tests expect their writes to
#: succeed, which a write-protected volume rightly refuses (DATA PROTECT, 27h/00h) -
#: ReadOnly.ReadOnlySBC checks exactly that, for every write-type command.
READ_ONLY_SUITES = (
    "Inquiry", "Mandatory", "ModeSense6", "NoMedia", "Prefetch10", "Prefetch16",
    "PreventAllow", "PrinReadKeys", "PrinReportCapabilities", "PrinServiceactionRange",
    "ProutClear", "ProutPreempt", "ProutRegister", "Read6", "Read10", "Read12", "Read16",
    "ReadCapacity10", "ReadCapacity16", "ReadDefectData10", "ReadDefectData12", "ReadOnly",
    "ReportSupportedOpcodes", "Reserve6", "StartStopUnit", "TestUnitReady", "Verify10",
    "Verify12", "Verify16", "iSCSIcmdsn")
READ_ONLY_TESTS = (
    "ExtendedCopy.DescrLimits", "ExtendedCopy.DescrType", "ExtendedCopy.ParamHdr",
    "ExtendedCopy.ValidSegDescr", "GetLBAStatus.BeyondEol", "GetLBAStatus.Simple",
    "OrWrite.BeyondEol", "OrWrite.Protect", "ProutReserve.Simple",
    *(f"ProutReserve.Ownership{t}" for t in ("EA", "EAAR", "EARO", "WE", "WEAR", "WERO")),
    "ReceiveCopyResults.OpParams",
    *(f"{suite}.{t}" for suite in ("Write10", "Write12", "Write16", "WriteSame10",
                                   "WriteSame16", "WriteVerify10", "WriteVerify12",
                                   "WriteVerify16") for t in ("BeyondEol", "WriteProtect")),
    "iSCSIResiduals.Read10Invalid", "iSCSIResiduals.Read10Residuals",
    "iSCSIResiduals.Read12Residuals", "iSCSIResiduals.Read16Residuals")
READ_ONLY_SELECTION = ",".join(f"ALL.{name}" for name in READ_ONLY_SUITES + READ_ONLY_TESTS)

#: extra iscsi-test-cu flags per run
RUN_FLAGS = {"plain": ["-d"], "thin": ["-d"], "read-only": ["-d", "-t", READ_ONLY_SELECTION]}
#: at least this many tests must report (a run that stopped early reports fewer)
RUN_TOTALS = {"plain": 225, "thin": 225, "read-only": 130}


def classify(text: str) -> dict[str, str]:
    """``{"Suite.Test": "exercised" | "skipped" | "failed"}`` from a verbose log, with the
    rules of /work/shared/tools/testcu-summary."""
    return {name: outcome for name, (outcome, _) in classify_with_reasons(text).items()}


def classify_with_reasons(text: str) -> dict[str, tuple[str, str]]:
    """Like :func:`classify`, with the text after ``[SKIPPED]`` for skipped tests."""
    results: dict[str, tuple[str, str]] = {}
    suite = current = None
    body: list[str] = []

    def close(status_line: str) -> None:
        chunk = "\n".join(body) + "\n" + status_line
        reason = ""
        if "FAILED" in status_line or "failed" in status_line or "[FAILED]" in chunk:
            outcome = "failed"
        elif "[SKIPPED]" in chunk:
            outcome = "skipped"
            reason = chunk.split("[SKIPPED]", 1)[1].strip().splitlines()[0]
        else:
            outcome = "exercised"
        results[f"{suite}.{current}"] = (outcome, reason)

    for line in text.splitlines():
        m = re.match(r"^Suite: (\S+)", line)
        if m:
            suite = m.group(1)
            continue
        m = re.match(r"^\s+Test: (\S+) \.\.\.(.*)$", line)
        if m:
            current, body = m.group(1), [m.group(2)]
            if re.search(r"\b(passed|FAILED)\s*$", m.group(2)):
                close(m.group(2))
                current = None
            continue
        if current is None:
            continue
        body.append(line)
        if line.rstrip().endswith(("passed", "FAILED")):
            close(line)
            current = None
    for s, t in re.findall(r"Suite (\S+), Test (\S+) had failures", text):
        results[f"{s}.{t}"] = ("failed", "")
    return results


def summary(results: dict[str, str]) -> str:
    counts = {k: sum(1 for v in results.values() if v == k)
              for k in ("exercised", "skipped", "failed")}
    return (f"exercised {counts['exercised']}, skipped {counts['skipped']}, "
            f"failed {counts['failed']}, total {len(results)}")


def test_classify_follows_testcu_summary_rules() -> None:
    log = textwrap.dedent("""\
        Suite: A
          Test: Good ...passed
          Test: Skip ...    [SKIPPED] not here
        passed
          Test: Bad ...FAILED
            1. x.c:1  - CU_ASSERT(0)
          Test: Noisy ...    [FAILED] WRITE10 command failed
        passed
          Test: Lost ...passed    [FAILED] PRIN command: failed with sense.
        Suite: B
          Test: Good ...passed
        """)
    assert classify(log) == {"A.Good": "exercised", "A.Skip": "skipped", "A.Bad": "failed",
                             "A.Noisy": "failed", "B.Good": "exercised"}
    assert classify_with_reasons(log)["A.Skip"] == ("skipped", "not here")


def _run_suite(flags: list[str], urls: list[str], log: Path) -> dict[str, tuple[str, str]]:
    cmd = ["iscsi-test-cu", *flags, "-v", "-i", INITIATOR_1, "-I", INITIATOR_2, *urls]
    with open(log, "w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=420, check=False)
    return classify_with_reasons(log.read_text(errors="replace"))


def _config(path: Path, name: str, *, thin: bool, read_only: bool = False) -> Path:
    path.write_text(textwrap.dedent(f"""\
        [[volume]]
        name = "{name}"
        size = "128M"
        thin = {str(thin).lower()}
        read_only = {str(read_only).lower()}
        """))
    return path


def test_iscsi_test_cu_plain_read_only_and_thin(tmp_path: Path) -> None:
    need_tool("iscsi-test-cu")
    second = f"127.0.0.2:{free_port('127.0.0.2')}"
    cases = {
        "plain": (_config(tmp_path / "plain.toml", "plain", thin=False), ["--portal", second]),
        "read-only": (_config(tmp_path / "ro.toml", "ro", thin=True, read_only=True), []),
        "thin": (_config(tmp_path / "thin.toml", "thin", thin=True), []),
    }
    with controller(tmp_path / "plain", "--config", str(cases["plain"][0]), *cases["plain"][1],
                    volumes=2) as plain, \
            controller(tmp_path / "ro", "--config", str(cases["read-only"][0]), volumes=1) as ro, \
            controller(tmp_path / "thin", "--config", str(cases["thin"][0]), volumes=1) as thin:
        urls = {"plain": plain.urls, "read-only": ro.urls, "thin": thin.urls}
        assert len(urls["plain"]) == 2 and urls["plain"][1].startswith("iscsi://127.0.0.2:")
        with ThreadPoolExecutor(3) as pool:
            futures = {name: pool.submit(_run_suite, RUN_FLAGS[name], u,
                                         tmp_path / f"{name}.log")
                       for name, u in urls.items()}
            detailed = {name: f.result() for name, f in futures.items()}

    results = {name: {t: o for t, (o, _) in r.items()} for name, r in detailed.items()}
    report = "\n".join(f"{name}: {summary(r)}" for name, r in results.items())
    print(report)
    for name, r in detailed.items():
        log = tmp_path / f"{name}.log"
        failed = sorted(t for t, (o, _) in r.items() if o == "failed")
        unexpected = [t for t in failed if t not in SUMMARY_ARTIFACTS]
        assert not unexpected, f"{name}: unexpected failures {unexpected}\n{report}\nlog: {log}"
        allowed = {**DELIBERATE_SKIPS, **RUN_SKIPS[name]}
        skipped = sorted(f"{t}: {why}" for t, (o, why) in r.items()
                         if o == "skipped" and not any(a in why for a in allowed))
        assert not skipped, f"{name}: skips without a deliberate reason {skipped}\n{report}"
        assert len(r) >= RUN_TOTALS[name], f"{name}: only {len(r)} tests reported\n{log}"
        verdicts = cunit_verdicts(log.read_text(errors="replace"))
        wrong = [t for t in failed if verdicts.get(t) != "passed"]
        assert not wrong, f"{name}: CUnit failed {wrong}\n{report}\nlog: {log}"
    exercised = sum(1 for o in results["plain"].values() if o == "exercised")
    assert exercised >= 200, report
    multipath = [t for t in results["plain"] if t.startswith("MultipathIO.")]
    assert multipath and all(results["plain"][t] == "exercised" for t in multipath), report
    assert results["read-only"].get("ReadOnly.ReadOnlySBC") == "exercised", report
    assert results["thin"].get("GetLBAStatus.UnmapSingle") == "exercised", report
