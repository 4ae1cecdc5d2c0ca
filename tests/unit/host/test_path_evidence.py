"""The host's evidence: what the disk counts per application x path (against the real target
core on loopback), the report built from it (deltas, baseline only when the manager accepted,
idle paths left out), the manager link sending it, and the PI types each path advertises."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from host_testtarget import TARGET, TestTarget
from test_disk_pi import PI1, QUIET, PiTarget, aborted_sense, open_disk, pattern, run

from difs.host.agent import Host, HostConfig
from difs.host.disk import AppDisk
from difs.host.pathgroup import PathGroup
from difs.host.evidence import PathTally, accept, build_report, path_pi_types
from difs.host.manager_link import HostManagerLink
from difs.host.pathgroup import CredentialBook
from difs.host.paths import ChannelSpec, Path, PathState
from difs.nodelink.client import ManagerError
from difs.policy.evidence import HostEvidenceReport, SessionServices
from difs.policy.fast import DATA_DIGEST, NegotiatedServices, Requirement

DIGESTS = SessionServices(header_digest=True, data_digest=True, interface="127.0.0.1")


# -- what the disk counts, per path -----------------------------------------------------------


def test_pi_io_is_counted_on_the_path_that_carried_it_with_its_latency() -> None:
    async def scenario() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, PI1)
        try:
            await disk.write(0, memoryview(pattern(8 * 512)), fua=False)
            assert await disk.read(0, 8 * 512) == pattern(8 * 512)
        finally:
            await group.close()
            await target.close()
        tallies = disk.tallies.values()
        # one write, one read: each counted once, on its own path (the open's READ CAPACITY
        # is the disk's own command, not the application's I/O)
        assert sum(t.counts[0] for t in tallies) == 2
        assert sum(t.pi_generated for t in tallies) == 8
        assert sum(t.pi_checked for t in tallies) == 8
        for channel, tally in disk.tallies.items():
            assert tally.counts is disk.per_path[channel]
            assert tally.latency.total == tally.counts[0]  # every command completed
            assert tally.latency.sum_ns > 0
            assert tally.digest_bytes == 0  # plain channels
            assert (tally.rejected, tally.resent, tally.failed) == (0, 0, 0)

    run(scenario())


def test_pi_failures_are_counted_on_the_path_where_they_happened() -> None:
    async def scenario() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, PI1)
        try:
            await disk.write(0, memoryview(pattern(4 * 512)), fua=False)
            target.flip_next_read = 1  # the host finds it on read
            assert await disk.read(0, 4 * 512) == pattern(4 * 512)
            target.answer_next = [aborted_sense(0x10, 0x01, 3)]  # the controller finds one
            await disk.write(0, memoryview(pattern(4 * 512)), fua=False)
        finally:
            await group.close()
            await target.close()
        tallies = list(disk.tallies.values())
        found = sum(t.pi_guard + t.pi_app + t.pi_ref for t in tallies)
        assert found == disk.pi_errors == 1
        assert sum(t.pi_rejected for t in tallies) == disk.pi_rejected == 1
        # the refused write is a CHECK CONDITION on the path that carried it
        assert sum(t.rejected for t in tallies) == 1
        assert [t.pi_rejected for t in tallies] == [t.rejected for t in tallies]

    run(scenario())


def test_a_crc_abort_is_a_digest_error_of_the_path_and_a_resend() -> None:
    async def scenario() -> None:
        target = PiTarget(pi_type=0)
        disk, group = await open_disk(target, Requirement())
        try:
            target.answer_next = [aborted_sense(0x47, 0x05)]
            await disk.write(0, memoryview(pattern(512)), fua=False)
        finally:
            await group.close()
            await target.close()
        assert sum(p.digest_errors for p in group.paths) == 1
        [refused] = [t for t in disk.tallies.values() if t.rejected]
        assert (refused.rejected, refused.resent) == (1, 1)
        assert [p.digest_errors for p in group.paths] == [
            disk.tallies[p.channel].rejected if p.channel in disk.tallies else 0
            for p in group.paths]

    run(scenario())


class CorruptingTarget(TestTarget):
    """Flips a bit in the data segment of the next Data-In, after its digest was computed."""

    corrupt_next = 0

    def execute(self, core, task) -> None:
        super().execute(core, task)
        if task.cdb[0] != 0x88 or not self.corrupt_next:
            return
        self.corrupt_next -= 1
        wire = bytearray(b"".join(bytes(c) for c in core.data_to_send()))
        wire[48 + 4 + 100] ^= 0x01  # BHS, its header digest, then the data
        conn = next(c for c in self.connections if c.core is core)
        conn.transport.write(bytes(wire))


def test_a_data_in_failing_its_digest_is_a_digest_error_of_the_path_and_a_resend() -> None:
    async def scenario() -> None:
        target = CorruptingTarget()
        portal = await target.start()
        channels = tuple(ChannelSpec(i, header_digest=True, data_digest=True) for i in (0, 1))
        group = PathGroup(controller="t", portal=portal, target=TARGET, initiator_name="iqn.x:h",
                          channels=channels, timers=QUIET, backoff=(0.05, 0.1))
        await group.start()
        disk = AppDisk(app="db", group=group, requirement=Requirement(flags=DATA_DIGEST),
                       path_wait=5.0)
        try:
            await disk.open()
            target.corrupt_next = 1
            assert await disk.read(0, 4096) == bytes(4096)
        finally:
            await group.close()
            await target.close()
        assert sum(p.digest_errors for p in group.paths) == 1
        assert sum(t.resent for t in disk.tallies.values()) == 1
        assert all(t.digest_bytes == t.counts[1] for t in disk.tallies.values())

    run(scenario())


@pytest.mark.parametrize("pi_type", [0, 1, 3])
def test_a_started_application_makes_its_paths_advertise_its_units_pi(pi_type: int) -> None:
    """A real Host opens the application's disk over a real PathGroup: the unit's PI format
    (READ CAPACITY(16) at open) is what its paths advertise, and their login's services."""
    async def scenario() -> None:
        target = PiTarget(pi_type=pi_type)
        portal = await target.start()
        host = Host(HostConfig(channels=(ChannelSpec(0), ChannelSpec(1)), timers=QUIET))
        try:
            await host.start_app("app1", controller="ctl1", portal=portal, target=TARGET,
                                 lun=0, requirement=Requirement(), policy_name="bronze")
            link = HostManagerLink(host, Client(), node="h1")  # type: ignore[arg-type]
            ad = link.advertisement()
            want = [pi_type] if pi_type else []
            assert [[int(t) for t in p.negotiated.pi_types] for p in ad.paths] == [want, want]
            group = host.apps["app1"].group
            assert all(p.services.interface == "127.0.0.1" for p in group.paths)
            await host.stop_app("app1")
            assert link.advertisement().paths == []  # no path, nothing claimed
        finally:
            await host.close()
            await target.close()

    run(scenario())


# -- the report ---------------------------------------------------------------------------------


def fake_path(channel: int, *, errors: int = 0, services: SessionServices = DIGESTS):
    return SimpleNamespace(channel=channel, digest_errors=errors, services=services)


def busy(tally: PathTally, ios: int, nbytes: int, ms: float = 1.0) -> None:
    for _ in range(ios):
        tally.counts[0] += 1
        tally.counts[1] += nbytes // ios
        tally.latency.record(int(ms * 1_000_000))


def test_report_is_the_delta_since_the_last_accepted_one_and_leaves_idle_paths_out() -> None:
    a0, b1 = PathTally([0, 0]), PathTally([0, 0])
    p0, p1 = fake_path(0, errors=2), fake_path(1, services=SessionServices())
    entries = [("app1", "ctl1", 0, a0, p0), ("app2", "ctl1", 1, b1, p1)]
    busy(a0, 4, 4096)
    a0.digest_bytes = 4096
    report, pending = build_report(entries, now=10.0, since=5.0)
    HostEvidenceReport.model_validate(report.model_dump(mode="json"))
    assert report.window_seconds == 5.0
    [e] = report.paths  # app2 did nothing: left out
    assert (e.application, e.controller, e.channel) == ("app1", "ctl1", 0)
    assert (e.ios, e.bytes, e.digest_bytes, e.digest_errors) == (4, 4096, 4096, 2)
    assert e.services == DIGESTS and e.latency.total == 4
    # not accepted: the next report still holds the whole window, plus what came since
    busy(a0, 1, 512)
    again, pending = build_report(entries, now=12.0, since=5.0)
    assert (again.paths[0].ios, again.paths[0].bytes, again.window_seconds) == (5, 4608, 7.0)
    since = accept(pending)
    assert since == 12.0
    # accepted: only what is new counts, and an idle window reports nothing
    empty, _ = build_report(entries, now=13.0, since=since)
    assert empty.paths == []
    busy(b1, 2, 1024)
    b1.resent = 1
    p0.digest_errors = 3
    third, _ = build_report(entries, now=14.0, since=since)
    [e] = third.paths
    assert (e.application, e.ios, e.resent, e.digest_bytes, e.latency.total) == (
        "app2", 2, 1, 0, 2)


def test_an_entry_that_cannot_be_reported_does_not_hide_the_others() -> None:
    a, b = PathTally([1, 512]), PathTally([1, 512])
    report, pending = build_report(
        [("app1", "127.0.0.1:3260", 0, a, None), ("app2", "ctl1", 0, b, fake_path(0))],
        now=1.0, since=0.0)
    assert [e.application for e in report.paths] == ["app2"]
    accept(pending)
    assert a.reported is None and b.reported is not None


# -- the manager link ---------------------------------------------------------------------------


class Client:
    """Answers the evidence report with the given statuses, then accepts."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.reports: list[dict] = []

    def report_host_evidence(self, host: str, report) -> dict:
        body = report.model_dump(mode="json")
        HostEvidenceReport.model_validate(body)
        self.reports.append(body)
        if self.statuses:
            status = self.statuses.pop(0)
            raise ManagerError(status, {"title": "Internal Server Error", "detail": "boom"})
        return {"accepted": len(body["paths"])}


def fake_host(*apps: tuple[str, int, list]) -> SimpleNamespace:
    groups = {}
    running = {}
    for name, lun, paths in apps:
        group = groups.setdefault("t", SimpleNamespace(controller="ctl1", portal="p:3260",
                                                       target="iqn.t", paths=paths, lun_pi={}))
        disk = SimpleNamespace(tallies={p.channel: PathTally([0, 0]) for p in paths})
        running[name] = SimpleNamespace(name=name, controller="ctl1", lun=lun, group=group,
                                        disk=disk)
    config = SimpleNamespace(initiator_name="iqn.2026-11.io.difs:h", credentials=CredentialBook(),
                             channels=[])
    return SimpleNamespace(apps=running, groups=groups, config=config)


def real_path(channel: int) -> Path:
    path = Path(ChannelSpec(channel), controller="ctl1", portal="p:3260", target="iqn.t")
    path.negotiated = NegotiatedServices(data_digest=channel == 0)
    path.state = PathState.UP
    path.services = SessionServices(data_digest=channel == 0)
    return path


def test_a_refused_report_is_logged_once_and_its_window_is_sent_again(caplog) -> None:
    async def scenario() -> None:
        host = fake_host(("app1", 0, [real_path(0)]))
        client = Client(500, 500)
        link = HostManagerLink(host, client, node="h1")  # type: ignore[arg-type]
        tally = host.apps["app1"].disk.tallies[0]
        busy(tally, 3, 3 * 4096)
        with caplog.at_level(logging.WARNING, logger="difs.host"):
            assert await link.report_evidence() is False
            busy(tally, 1, 4096)
            assert await link.report_evidence() is False
            assert await link.report_evidence() is True
            assert await link.report_evidence() is True
        sent = [[(p["ios"], p["bytes"]) for p in r["paths"]] for r in client.reports]
        assert sent == [[(3, 3 * 4096)], [(4, 4 * 4096)], [(4, 4 * 4096)], []]
        assert client.reports[2]["window_seconds"] >= client.reports[0]["window_seconds"]
        refused = [r for r in caplog.records if r.getMessage().startswith("manager refused")]
        assert len(refused) == 1  # rate-limited: one line for the burst

    run(scenario())


def test_the_link_no_longer_posts_statistics_but_puts_evidence() -> None:
    calls: list[str] = []

    class Recording(Client):
        def advertise(self, node, ad):
            calls.append("advertise")

        def host_bindings(self, node):
            return []

        def report_stats(self, node, report):  # the old POST /hosts/NAME/stats
            calls.append("stats")

        def report_host_evidence(self, host, report):
            calls.append("evidence")
            return super().report_host_evidence(host, report)

        def request(self, method, path, **kw):
            calls.append(f"{method} {path}")

    async def scenario() -> None:
        link = HostManagerLink(fake_host(), Recording(), node="h1")  # type: ignore[arg-type]
        await link._exchange()

    run(scenario())
    assert "stats" not in calls and "evidence" in calls


# -- honest advertisement: PI types per path -------------------------------------------------------


def test_path_pi_types_are_the_host_types_the_units_in_use_are_formatted_with() -> None:
    assert path_pi_types({0: 1, 1: 0}, [0, 1]) == [1]
    assert path_pi_types({0: 1, 1: 3}, [0, 1]) == [1, 3]
    assert path_pi_types({0: 1, 1: 3}, [1]) == [3]
    assert path_pi_types({0: 0}, [0]) == []
    assert path_pi_types({}, [0]) == []  # not read (yet): nothing claimed
    assert path_pi_types({0: 2}, [0]) == []  # type 2: the host does not generate it
    assert path_pi_types({0: 1}, []) == []  # no unit in use through the path


def test_each_path_advertises_only_the_pi_its_units_carry() -> None:
    host = fake_host(("app1", 1, [real_path(0), real_path(1)]))  # LUN 1 only: no PI
    host.groups["t"].lun_pi.update({0: 1, 1: 0})
    link = HostManagerLink(host, Client(), node="h1")  # type: ignore[arg-type]
    ad = link.advertisement()
    assert [p.negotiated.pi_types for p in ad.paths] == [[], []]
    assert [p.negotiated.data_digest for p in ad.paths] == [True, False]
    host.apps["app2"] = SimpleNamespace(name="app2", controller="ctl1", lun=0,
                                        group=host.groups["t"], disk=None)
    ad = link.advertisement()
    assert [[int(t) for t in p.negotiated.pi_types] for p in ad.paths] == [[1], [1]]
    # the host's own capability stays what its software does
    assert [int(t) for t in ad.services.integrity.pi_types] == [1, 3]
