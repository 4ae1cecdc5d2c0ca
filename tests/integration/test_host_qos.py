"""The host's QoS through real processes: a limited application never sends more than its
limit (and its neighbour is not slowed), and a channel configured with a DSCP class carries
it in the IP header of every packet it sends, seen on the wire (loopback capture)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from difs.nbd.client import NbdClient
from support import controller, free_port, metric, start_difs

pytestmark = pytest.mark.integration


def policy_file(tmp_path: Path, name: str, qos: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "services": {"qos": qos} if qos else {}}))
    return str(path)


def nbd_urls(host) -> dict[str, tuple[str, int]]:
    out = {}
    for url in host.wait_for_lines(len([a for a in host.popen.args if a == "--app"]), "nbd://"):
        addr, name = url.removeprefix("nbd://").split("/", 1)
        h, port = addr.rsplit(":", 1)
        out[name] = (h, int(port))
    return out


def drive(addr: tuple[str, int], name: str, *, seconds: float, size: int, conns: int = 4) -> tuple[int, float]:
    """Reads of ``size`` bytes from ``conns`` connections for ``seconds``: (I/Os done, elapsed)."""
    clients = [NbdClient.open_tcp(*addr, name) for _ in range(conns)]
    counts = [0] * conns
    start = time.monotonic()
    end = start + seconds

    def loop(i: int) -> None:
        c = clients[i]
        while time.monotonic() < end:
            c.read((counts[i] * size) % (8 << 20), size)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    for c in clients:
        c.close()
    return sum(counts), elapsed


@pytest.mark.slow
def test_a_limited_application_stays_under_its_limit_and_its_neighbour_is_not_slowed(tmp_path: Path):
    iops, bps = 100, 2 << 20
    with controller(tmp_path / "ctl", "--volume", "iops:16M", "--volume", "bytes:16M", "--volume", "free:16M") as ctl:
        nbd, metrics = free_port(), free_port()
        apps = [a for name in ("iops", "bytes", "free")
                for a in ("--app", f"{name}=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn(name)}/0")]
        host = start_difs("host", "--nbd", f"127.0.0.1:{nbd}", *apps, "--channels", "plain",
                          "--metrics", f"127.0.0.1:{metrics}",
                          "--policy", "iops=" + policy_file(tmp_path, "iops", {"limit_iops": iops}),
                          "--policy", "bytes=" + policy_file(tmp_path, "bytes", {"limit_bytes_per_second": bps}))
        try:
            urls = nbd_urls(host)
            before = drive(urls["free"], "free", seconds=1.5, size=4096)
            results: dict[str, tuple[int, float]] = {}
            jobs = [threading.Thread(target=lambda n=n, s=s: results.__setitem__(n, drive(urls[n], n, seconds=3.0, size=s)))
                    for n, s in (("iops", 4096), ("bytes", 64 << 10), ("free", 4096))]
            for j in jobs:
                j.start()
            for j in jobs:
                j.join()
            after = drive(urls["free"], "free", seconds=1.5, size=4096)
            waits = {n: metric(f"http://127.0.0.1:{metrics}/metrics", "difs_host_app_qos_waits_total", app=n)
                     for n in ("iops", "bytes", "free")}
        finally:
            assert host.stop() == 0, host.log_text()[-3000:]
    got_iops = results["iops"][0] / results["iops"][1]
    got_bps = results["bytes"][0] * (64 << 10) / results["bytes"][1]
    free_alone = min(n / t for n, t in (before, after))  # (the machine is shared: its slower second)
    free_together = results["free"][0] / results["free"][1]
    assert 0.8 * iops <= got_iops <= 1.1 * iops, got_iops
    assert 0.8 * bps <= got_bps <= 1.1 * bps, got_bps
    # the unlimited neighbour is far past the limits, and not held back by them
    assert free_together > 3 * iops, (free_alone, free_together)
    assert free_together >= 0.5 * free_alone, (free_alone, free_together)
    # the waits are counted, for the limited applications only
    assert waits["iops"] >= results["iops"][0] - iops and waits["bytes"] > 0 and waits["free"] == 0, waits


# --- DSCP on the wire -------------------------------------------------------------------------

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # (Linux; not exported by every Python)


class LoopbackCapture:
    """Every IPv4 TCP packet sent on ``lo`` to ``port``: (TOS byte, source port, TCP payload)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.packets: list[tuple[int, int, bytes]] = []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)  # (root) no drops
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(65600)
            except TimeoutError:
                continue
            if addr[2] != socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue  # loopback shows each packet twice (out, in): keep one; IPv4 only
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_TCP:
                continue
            tcp = ip[ihl:]
            sport, dport = struct.unpack_from("!HH", tcp)
            if dport == self.port:
                self.packets.append((ip[1], sport, bytes(tcp[(tcp[12] >> 4) * 4:])))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def by_channel(self) -> dict[int, list[tuple[int, bytes]]]:
        """channel (the ISID qualifier of the connection's login) -> its packets (TOS, payload)."""
        channel_of: dict[int, int] = {}
        for _, sport, payload in self.packets:
            if sport not in channel_of and len(payload) >= 48 and payload[0] & 0x3F == 0x03:
                channel_of[sport] = struct.unpack_from("!H", payload, 12)[0]  # ISID low 16 bits
        out: dict[int, list[tuple[int, bytes]]] = {}
        for tos, sport, payload in self.packets:
            out.setdefault(channel_of.get(sport, -1), []).append((tos, payload))
        return out


@pytest.mark.slow
def test_a_channels_dscp_is_on_every_packet_it_sends_and_not_on_the_plain_one(tmp_path: Path):
    with controller(tmp_path / "ctl", "--volume", "marked:16M", "--volume", "other:16M") as ctl:
        capture = LoopbackCapture(ctl.port)
        nbd = free_port()
        try:
            apps = [a for name in ("marked", "other")
                    for a in ("--app", f"{name}=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn(name)}/0")]
            host = start_difs("host", "--nbd", f"127.0.0.1:{nbd}", *apps, "--channels", "plain:af41,plain",
                              "--policy", "marked=" + policy_file(tmp_path, "marked", {"dscp": "af41"}),
                              "--policy", "other=" + policy_file(tmp_path, "other", {}))
            try:
                urls = nbd_urls(host)
                data = bytes(range(256)) * 4096  # 1 MiB
                for name in ("marked", "other"):
                    with NbdClient.open_tcp(*urls[name], name) as c:
                        for i in range(4):
                            c.write(i << 20, data)
                        assert c.read(0, 1 << 20) == data
            finally:
                assert host.stop() == 0, host.log_text()[-3000:]
            log = host.log_text()
        finally:
            capture.close()
    channels = capture.by_channel()
    assert set(channels) == {0, 1}, {k: len(v) for k, v in channels.items()}
    af41 = 34 << 2
    marked, plain = channels[0], channels[1]
    # every packet of channel 0 — SYN, login, commands, data, ACKs — carries AF41; none of channel 1 does
    assert {tos for tos, _ in marked} == {af41}
    assert {tos for tos, _ in plain} == {0}
    # and the marked application's data went on the marked channel (4 MiB written, 1 MiB read back)
    assert sum(len(p) for _, p in marked) > 4 << 20
    # the path reports the DSCP read back from its socket
    assert "dscp=34" in log and "dscp=-1" in log
