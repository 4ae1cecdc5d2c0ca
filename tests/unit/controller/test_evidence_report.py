"""The controller's evidence (issue 16): what its data path measured per session x volume -
the services the login settled, commands, bytes, digest-covered bytes, refusals by reason,
digest errors, latency - reported to the manager as deltas over the window since the last
report the manager *accepted*.

The sessions are real (difs' initiator core against the controller adapter, in memory); the
report builder is pure; the link's baseline is checked against a manager client that
refuses, then accepts."""

from __future__ import annotations

import asyncio
import logging
import struct

from adapter_client import Client, make_controller, run

from difs.controller.config import Chap
from difs.controller.enforcement import IoStats, SessionFacts
from difs.controller.evidence import Baseline, build_report
from difs.controller.manager_link import ControllerManagerLink
from difs.controller.metrics import ControllerCollector
from difs.iscsi.config import ChapCredentials
from difs.nodelink.client import ManagerError
from difs.policy.evidence import ControllerEvidenceReport

INIT = "iqn.2024-01.test:evidence"
GOOD, CHECK_CONDITION = 0x00, 0x02


def rw16(op: int, lba: int, n: int) -> bytes:
    return struct.pack(">BBQIBB", op, 0, lba, n, 0, 0)


def report_of(ctl, baseline: Baseline, now: float):
    return build_report(list(ctl.enforcement.stats.values()), baseline,
                        applications=ctl.enforcement.applications(), now=now)


def entries(report: ControllerEvidenceReport) -> dict[tuple[str, int], object]:
    return {(e.volume, e.channel): e for e in report.sessions}


def test_report_counts_what_each_session_did_with_the_services_it_settled(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, policy="silver")  # requires both digests
        plain = Client(ctl, INIT, isid=0x400000000001)
        digests = Client(ctl, INIT, isid=0x400000000002, digests=True)
        for c in (plain, digests):
            c.command(bytes(6))  # the power-on unit attention
        assert plain.command(rw16(0x8A, 0, 8), data_out=bytes(4096)).status == CHECK_CONDITION
        assert digests.command(rw16(0x8A, 0, 8), data_out=b"\x11" * 4096).status == GOOD
        assert digests.command(rw16(0x88, 0, 4), expected_in=2048).status == GOOD

        built = report_of(ctl, Baseline(taken_at=100.0), now=102.5)
        report = ControllerEvidenceReport.model_validate(built.report.model_dump(mode="json"))
        assert report.window_seconds == 2.5 and built.unreportable == []
        got = entries(report)
        refused, served = got[("vol", 1)], got[("vol", 2)]
        assert (refused.commands, refused.rejected) == (2, {"data_digest": 1})
        assert (refused.write_bytes, refused.read_bytes, refused.digest_bytes) == (0, 0, 0)
        assert refused.services.model_dump() == {
            "header_digest": False, "data_digest": False, "authentication": "none",
            "tls": False, "interface": None, "vlan": None, "dscp": None}
        assert (served.commands, served.write_bytes, served.read_bytes) == (3, 4096, 2048)
        assert served.digest_bytes == 4096 + 2048 and served.rejected == {}
        assert served.services.header_digest and served.services.data_digest
        assert served.application == "vol" and served.initiator == INIT
        assert served.latency.total == served.commands and refused.latency.total == 2
        assert served.latency.sum_ms > 0

    run(main())


def test_deltas_over_the_window_and_idle_sessions_left_out(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        a = Client(ctl, INIT, isid=0x400000000001)
        b = Client(ctl, INIT, isid=0x400000000002)
        for c in (a, b):
            c.command(bytes(6))
            c.command(rw16(0x8A, 0, 1), data_out=bytes(512))
        first = report_of(ctl, Baseline(taken_at=0.0), now=5.0)
        assert set(entries(first.report)) == {("vol", 1), ("vol", 2)}
        a.command(rw16(0x88, 0, 2), expected_in=1024)
        second = report_of(ctl, first.baseline, now=9.0)
        assert second.report.window_seconds == 4.0
        (only,) = second.report.sessions  # b did nothing: left out
        assert (only.channel, only.commands, only.read_bytes, only.write_bytes) == (1, 1, 1024, 0)
        assert only.latency.total == 1
        third = report_of(ctl, second.baseline, now=10.0)
        assert third.report.sessions == []  # nothing moved: an empty report

    run(main())


def test_a_closed_session_reports_its_last_counts_once(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        c = Client(ctl, INIT)
        c.command(bytes(6))
        first = report_of(ctl, Baseline(taken_at=0.0), now=1.0)
        c.command(rw16(0x8A, 0, 4), data_out=bytes(2048))
        c.drop()
        await asyncio.sleep(0)  # the connection is lost
        assert not ctl._connections
        second = report_of(ctl, first.baseline, now=2.0)
        (last,) = second.report.sessions
        assert (last.commands, last.write_bytes) == (1, 2048)
        assert report_of(ctl, second.baseline, now=3.0).report.sessions == []

    run(main())


def test_authentication_and_digest_errors_are_the_sessions_own(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, chap=Chap(user="u", secret="initiator-secret"),
                              mutual_chap=Chap(user="t", secret="target-secret-1"))
        creds = ChapCredentials("u", "initiator-secret")
        one_way = Client(ctl, INIT, isid=0x400000000001, chap=creds, digests=True)
        both = Client(ctl, INIT, isid=0x400000000002, chap=creds,
                      mutual_chap=ChapCredentials("t", "target-secret-1"))
        for c in (one_way, both):
            c.command(bytes(6))
        # a Data-Out whose data digest does not match: the core Rejects it and fails the
        # command; the session's evidence counts the digest error
        one_way.core.submit_command(0, rw16(0x8A, 0, 1), data_out=b"\x22" * 512)
        wire = bytearray(b"".join(bytes(x) for x in one_way.core.data_to_send()))
        wire[48 + 4 + 100] ^= 0xFF  # BHS + header digest, then a byte of the data
        one_way.conn.data_received(bytes(wire))
        one_way.pump()
        got = entries(report_of(ctl, Baseline(taken_at=0.0), now=1.0).report)
        assert got[("vol", 1)].services.authentication == "chap"
        assert got[("vol", 1)].digest_errors == 1
        assert got[("vol", 2)].services.authentication == "mutual_chap"
        assert got[("vol", 2)].digest_errors == 0

    run(main())


def test_an_entry_outside_the_contract_is_left_out_not_the_report():
    facts = SessionFacts("t", "iqn." + "x" * 300, 1, False, False, "none", None)
    bad, good = IoStats("vol", facts), IoStats("vol", SessionFacts(
        "t", INIT, 2, False, False, "none", "127.0.0.1:3260"))
    bad.commands = good.commands = 1
    built = build_report([bad, good], Baseline(taken_at=0.0), applications={}, now=1.0)
    assert [e.channel for e in built.report.sessions] == [2]
    assert built.unreportable == [bad.key]
    assert bad.key not in built.baseline.counts  # tried again next window


class Manager:
    """The part of the manager's client the link's evidence step calls: refuses with the
    statuses in ``answers`` (None: accepts), records every report."""

    def __init__(self, answers: list[int | None]) -> None:
        self.answers = answers
        self.reports: list[tuple[ControllerEvidenceReport, bool]] = []

    def report_controller_evidence(self, node: str, report) -> dict:
        status = self.answers.pop(0) if self.answers else None
        body = ControllerEvidenceReport.model_validate(report.model_dump(mode="json"))
        self.reports.append((body, status is None))
        if status is not None:
            raise ManagerError(status, {"title": "refused", "detail": "test"})
        return {}

    def close(self) -> None:
        pass


def test_the_baseline_advances_only_when_the_manager_accepted(tmp_path, caplog):
    async def main():
        ctl = make_controller(tmp_path / "d")
        manager = Manager([404, 500, None, None])
        link = ControllerManagerLink(ctl, manager, node="t")  # type: ignore[arg-type]
        c = Client(ctl, INIT)
        c.command(bytes(6))
        c.command(rw16(0x8A, 0, 2), data_out=bytes(1024))
        with caplog.at_level(logging.WARNING, logger="difs.controller"):
            await link.report_evidence()  # 404: a manager without the endpoint
            c.command(rw16(0x88, 0, 1), expected_in=512)
            await link.report_evidence()  # 500
        await link.report_evidence()  # accepted: everything so far
        c.command(rw16(0x88, 0, 1), expected_in=512)
        await link.report_evidence()  # accepted: only the new read
        reports = manager.reports
        assert [accepted for _, accepted in reports] == [False, False, True, True]
        assert [r.sessions[0].commands for r, _ in reports] == [2, 3, 3, 1]
        assert reports[2][0].sessions[0].read_bytes == 512
        assert reports[2][0].sessions[0].write_bytes == 1024
        refused = [r for r in caplog.records if r.getMessage().startswith("evidence report")]
        assert len(refused) == 1  # rate-limited: the 500 right after the 404 is only counted
        assert refused[0].difs_fields["status"] == 404

    run(main())


def test_prometheus_serves_latency_session_info_digest_bytes_and_errors(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        plain = Client(ctl, INIT, isid=0x400000000001)
        digests = Client(ctl, INIT, isid=0x400000000003, digests=True)
        for c in (plain, digests):
            c.command(bytes(6))
            c.command(rw16(0x8A, 0, 8), data_out=bytes(4096))
        families = {f.name: f for f in ControllerCollector(ctl).collect()}
        path = {"volume": "vol", "initiator": INIT, "channel": "3", "header_digest": "true",
                "data_digest": "true"}
        latency = {(s.name, s.labels.get("le")): s.value
                   for s in families["difs_controller_latency_seconds"].samples
                   if all(s.labels.get(k) == v for k, v in path.items())}
        assert latency[("difs_controller_latency_seconds_count", None)] == 2
        assert latency[("difs_controller_latency_seconds_bucket", "+Inf")] == 2
        assert latency[("difs_controller_latency_seconds_sum", None)] > 0
        digest_bytes = {s.labels["channel"]: s.value
                        for s in families["difs_controller_digest_bytes"].samples}
        assert digest_bytes == {"1": 0, "3": 4096}
        info = sorted((s.labels["channel"], s.labels["data_digest"], s.labels["authentication"])
                      for s in families["difs_controller_session_info"].samples)
        assert info == [("1", "false", "none"), ("3", "true", "none")]
        errors = families["difs_controller_digest_errors"].samples
        assert {s.labels["channel"]: s.value for s in errors} == {"1": 0, "3": 0}
        plain.drop()
        await asyncio.sleep(0)
        families = {f.name: f for f in ControllerCollector(ctl).collect()}
        assert [s.labels["channel"] for s in families["difs_controller_session_info"].samples
                ] == ["3"]  # only open sessions

    run(main())


def test_logins_alone_hold_no_records_and_an_early_digest_error_is_kept(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        for isid in range(0x400000000010, 0x400000000030):
            Client(ctl, INIT, isid=isid).logout()
        assert ctl.enforcement.sessions == {} and ctl.enforcement.stats == {}
        # a digest error before the session's first command is still the session's
        c = Client(ctl, INIT, isid=0x400000000040, digests=True)
        c.core.submit_command(0, rw16(0x8A, 0, 1), data_out=b"\x22" * 512)
        wire = bytearray(b"".join(bytes(x) for x in c.core.data_to_send()))
        wire[-8] ^= 0xFF  # a byte of the data, before its digest
        c.conn.data_received(bytes(wire))
        c.pump()
        (facts,) = ctl.enforcement.sessions.values()
        assert (facts.channel, facts.digest_errors) == (0x40, 1)

    run(main())
