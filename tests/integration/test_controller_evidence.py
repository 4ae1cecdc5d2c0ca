"""A manager-driven ``difs controller`` reports evidence from its data path (issue 16), with
real processes on loopback: the controller, difs' own iSCSI initiator (the host's) with and
without CRC32C digests, and a small HTTP server in the test standing for the manager (it
places two volumes and records every evidence report).

Each report validates against the contract (``ControllerEvidenceReport``); the counts the
manager accepted add up to exactly the I/O done, per volume and session; data digests are
claimed only for the session that negotiated them, and only its bytes are digest-covered; a
command the volume's policy refused is counted by reason; the latency histogram and the
session's services are in the Prometheus metrics. A manager answering 500 loses nothing:
the next report it accepts carries the refused window's counts.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from support import free_port, start_difs

from difs.host.connection import IscsiSession, SessionTimers
from difs.iscsi.config import InitiatorConfig
from difs.policy.evidence import ControllerEvidenceReport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODE = "ctl-ev"
INIT = "iqn.2026-11.io.difs.test:evidence-host"
QUIET = SessionTimers(nop_interval=None, command_timeout=10.0, login_timeout=5.0)
VOLUMES = [
    {"name": "plain", "size_bytes": 8 << 20, "lun": 0, "policy": None, "policy_version": 1,
     "application": "app-plain", "allowed_initiators": [INIT]},
    {"name": "guarded", "size_bytes": 8 << 20, "lun": 1, "policy_version": 1,
     "policy": {"integrity": {"header_digest": True, "data_digest": True}},
     "application": "app-guarded", "allowed_initiators": [INIT]},
]


class FakeManager(ThreadingHTTPServer):
    """Answers what a controller's link asks; records the evidence reports."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.evidence_status = 200
        self.reports: list[tuple[ControllerEvidenceReport, int]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def snapshot(self) -> list[tuple[ControllerEvidenceReport, int]]:
        with self.lock:
            return list(self.reports)


class _Handler(BaseHTTPRequestHandler):
    server: FakeManager

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == f"/api/v1/controllers/{NODE}/volumes":
            self._answer(200, VOLUMES)
        else:
            self._answer(404, {"title": "not found"})

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == f"/api/v1/nodes/{NODE}/advertisement":
            self._answer(200, {})
        elif self.path == f"/api/v1/controllers/{NODE}/evidence":
            report = ControllerEvidenceReport.model_validate_json(body)
            with self.server.lock:
                status = self.server.evidence_status
                self.server.reports.append((report, status))
            self._answer(status, {} if status == 200 else {"title": "manager trouble"})
        else:
            self._answer(404, {"title": "not found"})


@contextmanager
def fake_manager() -> Iterator[FakeManager]:
    server = FakeManager()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got


def rw16(op: int, lba: int, n: int) -> bytes:
    return struct.pack(">BBQIBB", op, 0, lba, n, 0, 0)


def accepted_totals(manager: FakeManager) -> dict[tuple[str, int], dict[str, object]]:
    """Per (volume, channel): the sum of what the manager accepted."""
    totals: dict[tuple[str, int], dict[str, object]] = {}
    for report, status in manager.snapshot():
        if status != 200:
            continue
        for e in report.sessions:
            t = totals.setdefault((e.volume, e.channel), {
                "commands": 0, "read": 0, "write": 0, "digest_bytes": 0, "rejected": {},
                "latency": 0, "services": set(), "application": set()})
            t["commands"] += e.commands
            t["read"] += e.read_bytes
            t["write"] += e.write_bytes
            t["digest_bytes"] += e.digest_bytes
            t["latency"] += e.latency.total if e.latency else 0
            t["services"].add((e.services.header_digest, e.services.data_digest,
                               str(e.services.authentication), e.services.interface))
            t["application"].add(e.application)
            for reason, n in e.rejected.items():
                t["rejected"][reason] = t["rejected"].get(reason, 0) + n
    return totals


def scrape_metric(url: str, name: str, **labels: str) -> float | None:
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_evidence_reports_add_up_to_the_io_done_and_survive_a_refused_report(
        tmp_path: Path) -> None:
    port = free_port()
    with fake_manager() as manager:
        proc = start_difs("controller", "--manager", manager.url, "--token", "node-token",
                          "--name", NODE, "--portal", f"127.0.0.1:{port}",
                          "--data-dir", str(tmp_path), "--interval", "0.3",
                          "--metrics", f"127.0.0.1:{free_port()}")
        try:
            metrics = proc.wait_for_lines(1, "metrics ")[0].split(" ", 1)[1]
            target = proc.wait_for_lines(1, "iscsi://")[0].rsplit("/", 1)[1]
            _scenario(manager, proc, port, target, metrics)
        finally:
            assert proc.stop() == 0, proc.log_text()[-3000:]


def _scenario(manager: FakeManager, proc, port: int, target: str, metrics: str) -> None:
    async def connect(isid: int, digests: bool) -> IscsiSession:
        offer = ("CRC32C",) if digests else ("None",)
        config = InitiatorConfig(initiator_name=INIT, isid=isid, target_name=target,
                                 header_digest=offer, data_digest=offer)
        return await IscsiSession.connect(f"127.0.0.1:{port}", config, name="t", timers=QUIET)

    async def first_part() -> None:
        plain = await connect(0x023D00000001, digests=False)
        digests = await connect(0x023D00000002, digests=True)
        try:
            for lun in (0, 1):
                await digests.execute(lun, bytes(6))  # power-on unit attention: 1 command
            await plain.execute(0, bytes(6))
            for i in range(5):  # plain volume, plain session: 5 x 4 KiB writes, 2 reads
                done = await plain.execute(0, rw16(0x8A, i * 8, 8), data_out=bytes([i]) * 4096)
                assert done.status == 0
            for _ in range(2):
                assert (await plain.execute(0, rw16(0x88, 0, 8),
                                            expected_in_length=4096)).status == 0
            # the guarded volume refuses the plain session (reason data_digest) ...
            done = await plain.execute(1, rw16(0x8A, 0, 8), data_out=bytes(4096))
            assert done.status == 2 and bytes(done.sense)[12:14] == b"\x74\x71"
            # ... and serves the digest session: 3 x 8 KiB writes, 1 read of 8 KiB
            for i in range(3):
                assert (await digests.execute(1, rw16(0x8A, i * 16, 16),
                                              data_out=b"\x5a" * 8192)).status == 0
            assert (await digests.execute(1, rw16(0x88, 0, 16),
                                          expected_in_length=8192)).status == 0
        finally:
            await plain.logout()
            await digests.logout()

    asyncio.run(first_part())
    want = {("plain", 1): dict(commands=8, read=8192, write=20480, digest_bytes=0),
            ("guarded", 1): dict(commands=1, read=0, write=0, digest_bytes=0),
            ("guarded", 2): dict(commands=5, read=8192, write=24576, digest_bytes=32768),
            ("plain", 2): dict(commands=1, read=0, write=0, digest_bytes=0)}

    def reported() -> bool:
        got = accepted_totals(manager)
        return all(got.get(k, {}).get("commands") == w["commands"] for k, w in want.items())

    wait_until(reported, "the manager to accept evidence of all the I/O")
    got = accepted_totals(manager)
    assert set(got) == set(want)
    interface = f"127.0.0.1:{port}"
    for key, w in want.items():
        t = got[key]
        assert {k: t[k] for k in w} == w, (key, t)
        assert t["latency"] == w["commands"], key  # every command has its latency
        digest = key[1] == 2
        assert t["services"] == {(digest, digest, "none", interface)}, key
        assert t["application"] == {"app-" + key[0]}
    assert got[("guarded", 1)]["rejected"] == {"data_digest": 1}
    assert all(not got[k]["rejected"] for k in want if k != ("guarded", 1))

    # Prometheus: the latency histogram per path and the sessions' services
    path = dict(volume="guarded", initiator=INIT, channel="2", header_digest="true",
                data_digest="true")
    assert scrape_metric(metrics, "difs_controller_latency_seconds_count", **path) == 5
    assert scrape_metric(metrics, "difs_controller_latency_seconds_bucket", le="+Inf",
                         **path) == 5
    assert scrape_metric(metrics, "difs_controller_latency_seconds_sum", **path) > 0
    assert scrape_metric(metrics, "difs_controller_digest_bytes_total", **path) == 32768
    assert scrape_metric(metrics, "difs_controller_digest_bytes_total", volume="plain",
                         channel="1") == 0
    assert scrape_metric(metrics, "difs_controller_digest_errors_total", channel="2") == 0

    # the manager refuses a window: nothing of it is lost
    with manager.lock:
        manager.evidence_status = 500
        refused_before = sum(1 for _, s in manager.reports if s == 500)

    def refused_with_the_writes() -> bool:
        return any(s == 500 and any(e.volume == "plain" and e.write_bytes == 2048
                                    for e in r.sessions)
                   for r, s in manager.snapshot()[refused_before:])

    async def second_part() -> None:
        plain = await connect(0x023D00000001, digests=False)
        try:
            await plain.execute(0, bytes(6))  # the unit attention of the nexus lost at logout
            for i in range(4):
                assert (await plain.execute(0, rw16(0x8A, 64 + i, 1),
                                            data_out=b"\x33" * 512)).status == 0
            await asyncio.to_thread(wait_until, refused_with_the_writes,
                                    "a refused report carrying the new writes")
            # the open session and what its login settled
            assert scrape_metric(metrics, "difs_controller_session_info", initiator=INIT,
                                 channel="1", authentication="none", header_digest="false",
                                 data_digest="false", interface=interface) == 1
        finally:
            await plain.logout()

    asyncio.run(second_part())
    with manager.lock:
        manager.evidence_status = 200
    want[("plain", 1)]["commands"] += 5
    want[("plain", 1)]["write"] += 2048
    wait_until(lambda: accepted_totals(manager)[("plain", 1)]["commands"]
               >= want[("plain", 1)]["commands"], "the next accepted report")
    got = accepted_totals(manager)
    assert {k: got[("plain", 1)][k] for k in want[("plain", 1)]} == want[("plain", 1)]
    assert "evidence report not accepted" in proc.log_text()
