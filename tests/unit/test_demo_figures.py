"""The ``difs up --demo`` figures, from metric samples (pure: no process).

The demo labels each application's path with what that path negotiated (the host's
``difs_host_path_up{services}``), never by its channel number, and attributes every counter
to the application whose I/O it is — host by ``app`` label, controller by volume ->
application — so two applications running at once never get each other's work.
"""

from __future__ import annotations

import threading

import pytest

from difs.allinone import (
    DEMO_CHUNK,
    AppFigures,
    DemoResult,
    Run,
    UpError,
    _chunk,
    _transfer,
    attribute,
    demo_table,
    mixed_figures,
    negotiated_paths,
    parse_metrics,
    run_concurrently,
    services_label,
)
from difs.nbd.client import Reply

APPS = [("app1", "integrity"), ("app2", "bronze")]


def host_text(*, ch0: str, ch1: str, app1: tuple[int, int] = (0, 0), app2: tuple[int, int] = (0, 0),
              pi: int = 0, path_digest_bytes: int = 0) -> str:
    """A host's exposition: app1 moved app1[c] bytes on channel c, app2 likewise."""
    lines = []
    for app, per in (("app1", app1), ("app2", app2)):
        for channel, moved in enumerate(per):
            if moved:
                labels = f'app="{app}",controller="ctl1",channel="{channel}"'
                lines.append(f"difs_host_app_ios_total{{{labels}}} {moved // 65536}")
                lines.append(f"difs_host_app_bytes_total{{{labels}}} {moved}")
        blocks = pi if app == "app1" else 0
        lines.append(f'difs_host_app_pi_generated_blocks_total{{app="{app}"}} {blocks}')
        lines.append(f'difs_host_app_pi_checked_blocks_total{{app="{app}"}} {blocks}')
    for channel, services in ((0, ch0), (1, ch1)):
        path = f'controller="ctl1",target="iqn.2026-11.io.difs:ctl1",channel="{channel}"'
        lines.append(f"difs_host_path_digest_bytes_total{{{path}}} {path_digest_bytes}")
        lines.append(f'difs_host_path_up{{{path},services="{services}"}} 1.0')
    return "\n".join(["# HELP difs_host_app_ios_total I/Os", *lines, ""])


def controller_text(sessions: list[tuple[str, int, bool, int, int]], *, app1_pi: int = 1) -> str:
    """A controller's exposition: (volume, channel, data digest, bytes, PI checked) sessions;
    volume vol-a is app1's (PI type ``app1_pi``), vol-b app2's (no PI)."""
    lines = [
        'difs_controller_volume_info{volume="vol-a",application="app1",'
        f'pi_type="{app1_pi}",requires="header digest, data digest, protection information"}} 1.0',
        'difs_controller_volume_info{volume="vol-b",application="app2",pi_type="0",'
        'requires="none"} 1.0',
    ]
    for volume, channel, dd, moved, checked in sessions:
        path = (f'volume="{volume}",initiator="iqn.2026-11.io.difs:host1",channel="{channel}",'
                f'header_digest="{str(dd).lower()}",data_digest="{str(dd).lower()}"')
        lines.append(f"difs_controller_commands_total{{{path}}} {moved // 65536}")
        lines.append(f'difs_controller_bytes_total{{{path},direction="write"}} {moved // 2}')
        lines.append(f'difs_controller_bytes_total{{{path},direction="read"}} {moved - moved // 2}')
        lines.append(f"difs_controller_pi_checked_blocks_total{{{path}}} {checked}")
        lines.append(f"difs_controller_pi_generated_blocks_total{{{path}}} 0")
    return "\n".join(lines) + "\n"


def figures(host_before: str, host_after: str, ctl_before: str, ctl_after: str
            ) -> dict[str, AppFigures]:
    got = attribute(APPS, (parse_metrics(host_before), parse_metrics(host_after)),
                    (parse_metrics(ctl_before), parse_metrics(ctl_after)))
    return {f.app: f for f in got}


@pytest.mark.parametrize("services, label", [
    ("header digest,data digest", "digests"),
    ("none", "plain"),
    ("", "plain"),
    ("header digest", "header-digest"),
    ("data digest,CHAP", "data-digest+CHAP"),
    ("header digest,data digest,CHAP,mutual CHAP", "digests+mutual-CHAP"),
    ("protection information,PI type 1", "PI"),
    ("TLS,isolation domain", "TLS+isolated"),
])
def test_a_channel_is_labelled_by_what_it_negotiated(services: str, label: str) -> None:
    assert services_label(services) == label


def test_the_label_follows_the_negotiation_not_the_channel_number() -> None:
    """Channel 0 is the one `difs up` asks digests of; here its login settled none, and
    channel 1's settled both: the labels say so, and app1's digest work shows 0."""
    empty = host_text(ch0="none", ch1="header digest,data digest")
    after = host_text(ch0="none", ch1="header digest,data digest", app1=(1 << 20, 0),
                      app2=(0, 1 << 20))
    assert negotiated_paths(parse_metrics(after)) == {
        ("ctl1", 0): "none", ("ctl1", 1): "header digest,data digest"}
    got = figures(empty, after, controller_text([]), controller_text([]))
    assert got["app1"].paths == {0: "plain"}
    assert got["app2"].paths == {1: "digests"}
    assert got["app1"].host_digest_bytes == 0
    assert got["app2"].host_digest_bytes == 1 << 20
    table = demo_table(DemoResult(list(got.values()), [], 1.0, 0.1))
    assert "ch0=plain" in table and "ch1=digests" in table and "ch0=digests" not in table


def test_counters_are_attributed_per_application_when_both_share_a_path() -> None:
    """Both applications ran at once over the same digest channel: each gets its own bytes
    as digest-covered, not the path's whole digest work, at the host and the controller."""
    digests = "header digest,data digest"
    before = host_text(ch0=digests, ch1="none", app1=(4 << 20, 0), app2=(1 << 20, 0), pi=100,
                       path_digest_bytes=5 << 20)
    after = host_text(ch0=digests, ch1="none", app1=(12 << 20, 0), app2=(3 << 20, 0), pi=900,
                      path_digest_bytes=15 << 20)
    ctl_before = controller_text([("vol-a", 0, True, 4 << 20, 50), ("vol-b", 0, True, 1 << 20, 0)])
    ctl_after = controller_text([("vol-a", 0, True, 12 << 20, 850), ("vol-b", 0, True, 3 << 20, 0),
                                 ("vol-b", 1, False, 1 << 20, 0)])
    got = figures(before, after, ctl_before, ctl_after)
    app1, app2 = got["app1"], got["app2"]
    assert (app1.host_bytes, app1.host_digest_bytes) == (8 << 20, 8 << 20)
    assert (app2.host_bytes, app2.host_digest_bytes) == (2 << 20, 2 << 20)
    assert (app1.host_ios, app2.host_ios) == (128, 32)
    assert (app1.host_pi_generated, app1.host_pi_checked) == (800, 800)
    assert (app2.host_pi_generated, app2.host_pi_checked) == (0, 0)
    # the controller: by volume -> application; a session that appeared meanwhile counts whole
    assert (app1.ctl_bytes, app1.ctl_digest_bytes, app1.ctl_pi_checked) == (8 << 20, 8 << 20, 800)
    assert (app2.ctl_bytes, app2.ctl_digest_bytes, app2.ctl_pi_checked) == (3 << 20, 2 << 20, 0)
    assert (app1.ctl_commands, app2.ctl_commands) == (128, 48)
    assert (app1.wants_digests, app1.pi_type, app2.wants_digests, app2.pi_type) == (
        True, 1, False, 0)
    # app2 had digests it did not ask for: that is its figures showing the truth, and the
    # check says its digest work is not where its policy asks for it
    assert mixed_figures([app1]) == []
    assert [p.split()[0] for p in mixed_figures([app2])] == ["app2"]


def test_figures_are_checked_not_to_be_mixed() -> None:
    good = [AppFigures("app1", "integrity", host_digest_bytes=1, ctl_digest_bytes=1,
                       ctl_pi_checked=8, host_pi_generated=8, wants_digests=True, pi_type=1),
            AppFigures("app2", "bronze")]
    assert mixed_figures(good) == []
    # the old per-path crediting: app2 credited with app1's digest work
    credited = [good[0], AppFigures("app2", "bronze", host_digest_bytes=1)]
    assert "app2 needs no digests" in mixed_figures(credited)[0]
    # PI checked at the controller but credited to the wrong application
    swapped = [AppFigures("app1", "integrity", host_digest_bytes=1, ctl_digest_bytes=1,
                          wants_digests=True, pi_type=1),
               AppFigures("app2", "bronze", ctl_pi_checked=8)]
    problems = mixed_figures(swapped)
    assert len(problems) == 2 and "app1's volume has PI type 1" in problems[0]
    assert "app2's volume has no PI" in problems[1]
    table = demo_table(DemoResult(swapped, [], 1.0, 0.1))
    assert "not mixed: NO" in table


class FakeDisk:
    """An NBD client over a dict: pipelined requests, replies in any order."""

    def __init__(self, *, corrupt_at: int | None = None) -> None:
        self.data: dict[int, bytes] = {}
        self.queue: list[Reply] = []
        self.handle = 0
        self.corrupt_at = corrupt_at
        self.in_flight = 0
        self.most_in_flight = 0

    def send_request(self, command: int, offset: int, length: int, *, data: bytes = b"") -> int:
        from difs.nbd import constants as nbd

        self.handle += 1
        if command == nbd.CMD_WRITE:
            self.data[offset] = data
            self.queue.append(Reply(self.handle))
        else:
            got = self.data.get(offset, bytes(length))
            if offset == self.corrupt_at:
                got = _chunk("app2", offset, got[16:])
            self.queue.append(Reply(self.handle, data=got))
        self.most_in_flight = max(self.most_in_flight, len(self.queue))
        return self.handle

    def recv_reply(self) -> Reply:
        return self.queue.pop()  # the newest first: out of order


def test_each_workload_reads_back_and_verifies_its_own_pattern() -> None:
    disk = FakeDisk()
    body = b"\x5a" * (DEMO_CHUNK - 16)
    _transfer(disk, "app1", 40, body, write=True)
    _transfer(disk, "app1", 40, body, write=False)
    assert disk.most_in_flight == 16  # requests are pipelined
    assert disk.data[DEMO_CHUNK * 3] == _chunk("app1", DEMO_CHUNK * 3, body)
    # another application's chunk (same fill byte) read back is caught
    disk.corrupt_at = DEMO_CHUNK * 7
    with pytest.raises(UpError, match=f"app1: the data read back at {DEMO_CHUNK * 7}"):
        _transfer(disk, "app1", 40, body, write=False)


def test_the_overlap_of_the_runs_is_reported() -> None:
    runs = [Run("app1", 10.0, 13.0, 1 << 30), Run("app2", 10.5, 12.0, 1 << 30)]
    assert DemoResult([], runs, 3.0, 6.0).overlap == pytest.approx(1.5)
    assert DemoResult([], runs, 3.0, 6.0).cpu_per_gib == pytest.approx(3.0)
    one_after_the_other = [Run("app1", 10.0, 11.0, 1), Run("app2", 11.5, 12.0, 1)]
    assert DemoResult([], one_after_the_other, 2.0, 1.0).overlap < 0


def test_a_workload_that_cannot_start_ends_the_demo_with_its_reason() -> None:
    """No NBD server: every workload fails to connect; none waits forever at the barrier."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = threading.Event()
    errors: list[BaseException] = []

    def go() -> None:
        try:
            run_concurrently(f"127.0.0.1:{port}", ["app1", "app2"], 1 << 20)
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            errors.append(exc)
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(30)
    assert len(errors) == 1 and isinstance(errors[0], UpError), errors
    assert str(errors[0]).startswith(("app1's workload failed", "app2's workload failed"))
