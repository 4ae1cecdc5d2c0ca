"""Retry storms stay bounded (issue 17 finding 5, re-sends).

Real processes on loopback: ``difs controller`` <- :class:`faults.FaultProxy` (bits flipped in
flight) <- ``difs host`` <- NBD clients reading as fast as they can, with a T10 PI policy so
that the host's PI verify catches every flipped bit. What each test proves:

* a path that corrupts half its Data-Ins makes the host re-send at most about its re-send
  budget a second (it used to re-send thousands a second), every read returns the right data
  or EIO — never silently wrong data — and the log holds a few lines, not one per fault;
* with two satisfying paths, the one that keeps corrupting is degraded and the I/O moves to
  the other.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest
from faults import DATA_IN, TO_HOST, BitFlip, FaultProxy
from support import controller, free_port, metric, start_difs

from difs.nbd import constants as c
from difs.nbd.client import NbdClient

pytestmark = pytest.mark.integration

MiB = 1 << 20
VOLUME = 16 * MiB
CHUNK = 4096
PATTERN = b"\x5a" * CHUNK


def pi_policy(tmp_path: Path) -> str:
    """A policy asking for T10 PI type 1 and nothing else (any channel satisfies it)."""
    path = tmp_path / "pi1.json"
    path.write_text(json.dumps({"name": "pi1", "services": {
        "integrity": {"protection_information": 1}}}))
    return str(path)


@contextlib.contextmanager
def faulty_host(tmp_path: Path, *, channels: str):
    """controller(vol: 16 MiB, PI type 1) <- fault proxy <- difs host(app "app" with a PI
    policy, ``channels``, metrics); yields (controller, proxy, host proc, NBD port, metrics
    URL). The application's data is PATTERN everywhere, written before any fault."""
    with controller(tmp_path / "ctl", "--volume", "vol:16M:pi1") as ctl:
        proxy = FaultProxy((ctl.host, ctl.port))
        nbd, metrics = free_port(), free_port()
        host = start_difs("host", "--nbd", f"127.0.0.1:{nbd}",
                          "--app", f"app=iscsi://{proxy.portal}/{ctl.iqn('vol')}/0",
                          "--policy", f"app={pi_policy(tmp_path)}", "--channels", channels,
                          "--path-wait", "5", "--nop-interval", "0",
                          "--metrics", f"127.0.0.1:{metrics}")
        try:
            host.wait_for_lines(1, "nbd://")
            with NbdClient.open_tcp("127.0.0.1", nbd, "app") as client:
                for off in range(0, VOLUME, MiB):
                    client.write(off, PATTERN * (MiB // CHUNK))
                client.flush()
                client.disconnect()
            yield ctl, proxy, host, nbd, f"http://127.0.0.1:{metrics}/metrics"
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]
            proxy.close()




class Readers:
    """``threads`` NBD clients, each with ``depth`` reads of CHUNK in flight, for ``seconds``:
    how many reads returned data, how many of those were not PATTERN (must be none), and how
    many failed (EIO)."""

    def __init__(self, port: int, *, seconds: float, threads: int = 4, depth: int = 8) -> None:
        self.port, self.seconds, self.depth = port, seconds, depth
        self.good = self.wrong = self.failed = 0
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._threads:
            t.join(self.seconds + 60)

    def _run(self, index: int) -> None:
        end = time.monotonic() + self.seconds
        chunks = VOLUME // CHUNK
        try:
            with NbdClient.open_tcp("127.0.0.1", self.port, "app") as client:
                i = index * 997
                while time.monotonic() < end:
                    for _ in range(self.depth):
                        client.send_request(c.CMD_READ, (i % chunks) * CHUNK, CHUNK)
                        i += 1
                    for _ in range(self.depth):
                        reply = client.recv_reply()
                        if reply.error:
                            self.failed += 1
                        elif reply.data == PATTERN:
                            self.good += 1
                        else:
                            self.wrong += 1
                client.disconnect()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))


@pytest.mark.slow
def test_a_corrupting_path_is_not_stormed_with_resends_and_no_data_is_silently_wrong(tmp_path):
    """Half the Data-Ins on the only path (plain, PI type 1 policy) have a bit flipped: the
    host's PI verify catches each before the application sees a byte, and reads again. The
    host used to re-read at once, every time: thousands of re-sends a second. Now each
    re-send waits for the path's budget (10 at once, then 50 a second), and each read still
    returns the right data or EIO."""
    seconds = 6.0
    with faulty_host(tmp_path, channels="plain") as (_ctl, proxy, host, port, metrics):
        flips = proxy.add(BitFlip(TO_HOST, where="data", channel=0, opcodes={DATA_IN},
                                  rate=0.5, limit=None))
        log_before = len(host.log_text())
        start = time.monotonic()
        with Readers(port, seconds=seconds) as readers:
            pass
        elapsed = time.monotonic() - start
        resent = metric(metrics, "difs_host_app_resent_total", app="app")
        pi_errors = metric(metrics, "difs_host_app_pi_errors_total", app="app")
        proxy.clear()
        assert not readers.errors, readers.errors
        assert readers.wrong == 0  # never silently wrong
        assert readers.good > 0
        assert flips.fired >= 100 and pi_errors >= 100, (flips.fired, pi_errors)
        # Each failed check is followed by one re-send (needing a token of the budget: 10 at
        # once, then 50 a second) or, after one, by EIO: at most ~2 x 50 a second. The old code
        # re-sent at once: ~800 failed checks a second here, thousands on a faster machine.
        assert pi_errors / elapsed < 150, (pi_errors, resent, elapsed, readers.failed)
        # a few lines per event for the whole flood, not one per fault: hundreds of faults
        # (thousands of log lines before) now write a few KiB
        text = host.log_text()
        assert len(text) - log_before < 16 * 1024, len(text) - log_before
        assert 1 <= text.count("PI check failed") <= 10, (pi_errors, elapsed, text[-3000:])


@pytest.mark.slow
def test_a_path_that_keeps_corrupting_is_degraded_and_io_moves_to_another_satisfying_path(
        tmp_path):
    """A plain channel 0 and a digest channel 1 both satisfy the PI policy; the selector
    prefers the plain one (no unrequested services). Channel 0 corrupts half its Data-Ins:
    it is degraded, and the reads move to channel 1 — the other path that satisfies."""
    with faulty_host(tmp_path, channels="plain,digests") as (_ctl, proxy, host, port, metrics):
        proxy.add(BitFlip(TO_HOST, where="data", channel=0, opcodes={DATA_IN}, rate=0.5,
                          limit=None))
        with Readers(port, seconds=1.0) as warmup:  # ch0 runs out of its budget here
            pass
        assert not warmup.errors and warmup.wrong == 0, warmup.errors
        assert "path degraded" in host.log_text(), host.log_text()[-3000:]
        before = {ch: metric(metrics, "difs_host_app_ios_total", app="app", channel=str(ch))
                  for ch in (0, 1)}
        resent_before = metric(metrics, "difs_host_app_resent_total", app="app")
        with Readers(port, seconds=3.0) as readers:
            pass
        assert not readers.errors and readers.wrong == 0, readers.errors
        assert readers.failed == 0 and readers.good > 100
        moved = {ch: metric(metrics, "difs_host_app_ios_total", app="app", channel=str(ch))
                 - before[ch] for ch in (0, 1)}
        assert moved[1] > 20 * max(moved[0], 1), moved  # the degraded one carries ~nothing
        assert metric(metrics, "difs_host_app_resent_total", app="app") - resent_before < 10
