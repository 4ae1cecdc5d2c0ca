"""The host reports what its data path measured, per application x path, and advertises only
the PI its paths can carry.

Real processes on loopback: ``difs controller`` (a plain volume and a PI type 1 volume) and
``difs host --manager`` following two bindings handed out by a small HTTP server standing in for
the manager (it captures the advertisements and the evidence reports, and answers the evidence
with 500 until told otherwise). Two applications do NBD I/O at the same time: ``app1`` needs
digests (channel 0), ``app2`` needs T10 PI and nothing of its path (channel 1, plain).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from difs.nbd.client import NbdClient
from difs.policy.evidence import HostEvidenceReport
from support import controller, free_port, start_difs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS, SIZE = 24, 64 << 10  # per application: this many writes, then as many reads


class StandIn:
    """What the host asks of the manager, answered from memory."""

    def __init__(self, bindings: list[dict[str, Any]]) -> None:
        self.bindings = bindings
        self.lock = threading.Lock()
        self.adverts: list[dict[str, Any]] = []
        self.states: dict[str, str] = {}
        #: (status answered, body) of every evidence report
        self.evidence: list[tuple[int, dict[str, Any]]] = []
        self.evidence_status = 500

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for status, body in self.evidence if status == 200]

    def refused(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for status, body in self.evidence if status != 200]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            if (method, path) == ("PUT", "/api/v1/nodes/host1/advertisement"):
                self.adverts.append(body)
                return 200, {}
            if (method, path) == ("GET", "/api/v1/hosts/host1/bindings"):
                return 200, self.bindings
            if (method, path) == ("PUT", "/api/v1/hosts/host1/bindings/state"):
                self.states = {b["application"]: b["state"] for b in body["bindings"]}
                return 200, {}
            if (method, path) == ("PUT", "/api/v1/hosts/host1/evidence"):
                HostEvidenceReport.model_validate(body)  # every body the host sends
                status = self.evidence_status
                self.evidence.append((status, body))
                if status != 200:
                    return status, {"title": "Internal Server Error", "detail": "stand-in"}
                return 200, {"accepted": len(body["paths"])}
        return 404, {"title": "Not Found", "detail": path}


@contextmanager
def stand_in(bindings: list[dict[str, Any]]) -> Iterator[tuple[StandIn, str]]:
    manager = StandIn(bindings)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = manager.handle(self.command, self.path.split("?")[0], body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield manager, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def binding(app: str, target: str, port: int, policy: dict[str, Any]) -> dict[str, Any]:
    return {"application": app, "policy": policy, "policy_version": 1,
            "volumes": [{"controller": "ctl1", "target_iqn": target, "lun": 0,
                         "portals": [{"address": "127.0.0.1", "port": port}]}]}


def wait_until(what: str, ready: Callable[[], Any], logs: Callable[[], str],
               timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()[-4000:]}")
        time.sleep(0.05)
    return value


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def io(port: int, app: str, seed: int) -> None:
    with NbdClient.open_tcp("127.0.0.1", port, app) as nbd:
        for i in range(REQUESTS):
            nbd.write(i * SIZE, bytes([seed + i & 0xFF]) * SIZE)
        for i in range(REQUESTS):
            assert nbd.read(i * SIZE, SIZE) == bytes([seed + i & 0xFF]) * SIZE


def summed(reports: list[dict[str, Any]], app: str, channel: int, field: str) -> int:
    return sum(p[field] if field != "latency" else sum((p["latency"] or {"counts": [0]})["counts"])
               for r in reports for p in r["paths"]
               if (p["application"], p["channel"]) == (app, channel))


def test_evidence_per_application_and_path_with_a_manager_refusing_then_accepting(
        tmp_path: Path) -> None:
    with controller(tmp_path / "ctl", "--volume", "a:16M", "--volume", "b:16M:pi1") as ctl:
        bindings = [
            binding("app1", ctl.iqn("a"), ctl.port,
                    {"integrity": {"header_digest": True, "data_digest": True}}),
            binding("app2", ctl.iqn("b"), ctl.port, {"integrity": {"protection_information": 1}}),
        ]
        with stand_in(bindings) as (manager, url):
            nbd, metrics_port = free_port(), free_port()
            host = start_difs(
                "host", "--manager", url, "--name", "host1", "--nbd", f"127.0.0.1:{nbd}",
                "--interval", "0.2", "--state-dir", str(tmp_path / "state"),
                "--channels", "digests,plain", "--metrics", f"127.0.0.1:{metrics_port}",
                env={"DIFS_NODE_TOKEN": "stand-in"})
            try:
                host.wait_for_lines(1, "nbd://")
                wait_until("both applications running", lambda: manager.states == {
                    "app1": "running", "app2": "running"}, host.log_text)
                # both applications at once, while the manager refuses every evidence report
                workers = [threading.Thread(target=io, args=(nbd, name, seed))
                           for name, seed in (("app1", 0x10), ("app2", 0x80))]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join(60)
                assert not any(w.is_alive() for w in workers)
                done = 2 * REQUESTS  # the writes and the reads (the open's READ CAPACITY is the disk's, not the application's)
                wait_until("a refused report holding all the I/O", lambda: any(
                    summed([r], "app1", 0, "latency") == done
                    and summed([r], "app2", 1, "latency") == done
                    for r in manager.refused()), host.log_text)
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
                ios = {app: metric(text, "difs_host_app_ios_total", app=app)
                       for app in ("app1", "app2")}
                manager.evidence_status = 200
                wait_until("the accepted reports to hold all the I/O", lambda: all(
                    sum(summed(manager.accepted(), app, ch, "ios") for ch in (0, 1)) == ios[app]
                    for app in ios), host.log_text)
                count = len(manager.accepted())
                wait_until("one more report", lambda: len(manager.accepted()) > count + 1,
                           host.log_text)
                advert = manager.adverts[-1]
            finally:
                assert host.stop() == 0, host.log_text()[-3000:]
    accepted = manager.accepted()
    # nothing lost to the refusals, nothing counted twice
    assert summed(accepted, "app1", 0, "ios") == ios["app1"] >= done
    assert summed(accepted, "app2", 1, "ios") == ios["app2"] >= done
    # each application's I/O on its own path only
    assert summed(accepted, "app1", 1, "ios") == summed(accepted, "app2", 0, "ios") == 0
    moved = REQUESTS * SIZE * 2
    assert summed(accepted, "app1", 0, "bytes") >= moved
    assert summed(accepted, "app2", 1, "bytes") >= moved * 520 // 512  # PI on the wire
    # digests covered app1's bytes (its path negotiated them), none of app2's
    assert summed(accepted, "app1", 0, "digest_bytes") == summed(accepted, "app1", 0, "bytes")
    assert summed(accepted, "app2", 1, "digest_bytes") == 0
    # one latency per completed command
    assert summed(accepted, "app1", 0, "latency") == done
    assert summed(accepted, "app2", 1, "latency") == done
    entries = {(p["application"], p["channel"]): p for r in accepted for p in r["paths"]}
    one, two = entries["app1", 0], entries["app2", 1]
    assert (one["services"]["header_digest"], one["services"]["data_digest"]) == (True, True)
    assert (two["services"]["header_digest"], two["services"]["data_digest"]) == (False, False)
    assert one["services"]["interface"] == two["services"]["interface"] == "127.0.0.1"
    blocks = REQUESTS * SIZE // 512
    pi = [p["pi"] for r in accepted for p in r["paths"] if p["application"] == "app2"]
    assert sum(p["generated_blocks"] for p in pi) == sum(p["checked_blocks"] for p in pi) == blocks
    assert not any(p["pi"]["generated_blocks"] for r in accepted for p in r["paths"]
                   if p["application"] == "app1")
    for r in accepted:
        for p in r["paths"]:
            assert (p["rejected"], p["failed"], p["digest_errors"], p["pi_rejected"]) == (0,) * 4
    # the refusals were logged, rate-limited
    assert len(manager.refused()) >= 2
    assert host.log_text().count("manager refused the evidence report") == 1
    # the same from Prometheus
    assert metric(text, "difs_host_app_latency_seconds_count", app="app1", channel="0") == done
    assert metric(text, "difs_host_app_latency_seconds_count", app="app2", channel="1") == done
    assert metric(text, "difs_host_app_latency_seconds_bucket", app="app1", le="+Inf") == done
    assert metric(text, "difs_host_app_digest_bytes_total", app="app1", channel="0") == \
        metric(text, "difs_host_app_bytes_total", app="app1", channel="0")
    assert metric(text, "difs_host_app_digest_bytes_total", app="app2") == 0
    assert metric(text, "difs_host_app_path_pi_generated_blocks_total", app="app2",
                  channel="1") == blocks
    assert metric(text, "difs_host_app_path_pi_checked_blocks_total", app="app2",
                  channel="1") == blocks
    # honest advertisement: only the paths to the PI volume carry PI (type 1, as formatted)
    # (each volume of a standalone controller is a target of its own: two groups of two paths)
    assert sorted(p["negotiated"]["pi_types"] for p in advert["paths"]) == [[], [], [1], [1]]
    assert advert["services"]["integrity"]["pi_types"] == [1, 3]
