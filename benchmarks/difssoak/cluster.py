"""The cluster under test: real ``difs`` processes on loopback, and the soak as their supervisor.

One manager (SQLite in the run's work directory), controllers ``ctl1``.., hosts ``host1``..,
each started as ``difs manager`` / ``difs controller --manager`` / ``difs host --manager``
(as an operator would, one unit each). :class:`Proc` is one such unit: it can be killed
(SIGKILL) and is restarted by :meth:`Cluster.supervise` with the same arguments after
``restart_delay`` seconds, as systemd's ``Restart=always`` would; a unit that dies without
being killed is restarted too, and the exit is recorded.

The last host reaches the controllers through fault proxies (``tests/faults.py``): a
:class:`ManagerRelay` between that host and the manager rewrites the controllers' portals
in the host's bindings to the proxies' ports, so the host's paths (and only its paths)
can be cut or have bits flipped in flight. Everything else talks directly.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from faults import FaultProxy  # tests/faults.py

from difs.nodelink.client import ManagerClient, ManagerError, ManagerUnreachable
from difsbench.procs import cpu_seconds, free_port

from . import ROOT

DIFS = [sys.executable, "-m", "difs.cli.main"]
IQN = "iqn.2026-11.io.difs:{}"

#: digests + PI end to end, as ``difs up`` defines it
INTEGRITY_POLICY = {
    "name": "integrity",
    "description": "CRC32C header and data digests on the path, T10 PI type 1 end to end",
    "services": {"integrity": {"header_digest": True, "data_digest": True,
                               "protection_information": 1}},
}


class SoakError(Exception):
    """The cluster could not be set up; the message says why."""


def memory(pid: int) -> tuple[int | None, int | None]:
    """RSS and peak RSS (VmHWM) of ``pid`` in bytes (None: gone)."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found.get("VmRSS"), found.get("VmHWM")


@dataclass
class Proc:
    """One supervised ``difs`` process (a unit)."""

    name: str
    role: str  # manager, controller, host
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    restarts: int = 0
    #: exits we did not cause: (monotonic time, return code)
    unexpected: list[tuple[float, int]] = field(default_factory=list)
    killed: bool = False
    #: while held, a dead unit is not restarted (the manager kept down on purpose)
    held: bool = False
    restart_at: float | None = None
    #: the highest RSS seen (sampled each second, and each instance's VmHWM); CPU seconds
    #: summed over its instances
    rss_peak: int = 0
    cpu_s_done: float = 0.0
    cpu_s: float = 0.0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, start_new_session=True)
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would; :meth:`Cluster.supervise` restarts it."""
        if self.alive():
            self.killed = True
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def sample(self) -> None:
        if not self.alive():
            return
        rss, hwm = memory(self.pid)
        self.rss_peak = max(self.rss_peak, rss or 0, hwm or 0)
        self.cpu_s = self.cpu_s_done + cpu_seconds(self.pid)

    def tail(self, lines: int = 12) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n  ".join(text[-lines:])


class ManagerRelay:
    """An HTTP relay between one host and the manager that rewrites, in the host's bindings,
    each controller portal ``127.0.0.1:P`` to ``127.0.0.1:portal_map[P]`` (its fault proxy).
    When the manager is down the relay drops the connection unanswered, so the host sees
    the same transport error as without it."""

    def __init__(self, upstream_port: int, portal_map: dict[int, int]) -> None:
        self.upstream_port = upstream_port
        self.portal_map = portal_map
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                relay.forward(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _relay

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a host killed mid-request: nothing to relay, nothing to report

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host",
                                                                                 "connection")}
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=15)
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            handler.close_connection = True  # unanswered: the host sees the manager gone
            return
        finally:
            conn.close()
        if resp.status == 200 and re.search(r"/hosts/[^/]+/bindings$", handler.path.split("?")[0]):
            data = self.rewrite(data)
        handler.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("content-length", "connection", "transfer-encoding", "date",
                                   "server"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def rewrite(self, data: bytes) -> bytes:
        bindings = json.loads(data)
        for binding in bindings:
            for volume in binding.get("volumes") or []:
                for portal in volume.get("portals") or []:
                    if portal.get("port") in self.portal_map:
                        portal["port"] = self.portal_map[portal["port"]]
        return json.dumps(bindings).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AppPlacement:
    name: str
    host: str
    controller: str
    policy: str
    nbd_port: int


class Cluster:
    """The processes, the proxies of the last host, and the applications placed on them."""

    def __init__(self, work: Path, *, controllers: int, hosts: int, interval: float,
                 restart_delay: float, log_level: str) -> None:
        self.work = work
        self.interval = interval
        self.restart_delay = restart_delay
        self.log_level = log_level
        self.admin_token = secrets.token_urlsafe(24)
        self.manager_port = free_port()
        self.manager_url = f"http://127.0.0.1:{self.manager_port}"
        self.ctl_ports = {f"ctl{i + 1}": free_port() for i in range(controllers)}
        self.nbd_ports = {f"host{i + 1}": free_port() for i in range(hosts)}
        self.proxied_host = f"host{hosts}"
        self.proxies: dict[str, FaultProxy] = {}
        self.relay: ManagerRelay | None = None
        self.procs: dict[str, Proc] = {}
        self.apps: list[AppPlacement] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.admin = ManagerClient(self.manager_url, token=self.admin_token, timeout=10)

    # -- bringing it up ------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, **extra}

    def _add(self, name: str, role: str, args: list[str], **env: str) -> Proc:
        proc = Proc(name, role, [*DIFS, *args, "--log-level", self.log_level], self._env(**env),
                    self.work / f"{name}.log")
        self.procs[name] = proc
        proc.start()
        return proc

    def start(self) -> None:
        self._add("manager", "manager", ["manager", "--listen", f"127.0.0.1:{self.manager_port}",
                                         "--data-dir", str(self.work / "manager"),
                                         "--sweep-interval", "1"],
                  DIFS_ADMIN_TOKEN=self.admin_token)
        self.wait_for("the manager", self.manager_healthy)
        tokens = {name: self._node_token(name, "controller") for name in self.ctl_ports}
        tokens |= {name: self._node_token(name, "host") for name in self.nbd_ports}
        for name, port in self.ctl_ports.items():
            self.proxies[name] = FaultProxy(("127.0.0.1", port))
            self._add(name, "controller", [
                "controller", "--manager", self.manager_url, "--name", name,
                "--portal", f"127.0.0.1:{port}", "--data-dir", str(self.work / name),
                "--interval", str(self.interval)], DIFS_NODE_TOKEN=tokens[name])
        self.relay = ManagerRelay(self.manager_port, {self.ctl_ports[c]: p.port
                                                      for c, p in self.proxies.items()})
        for name, port in self.nbd_ports.items():
            url = self.relay.url if name == self.proxied_host else self.manager_url
            self._add(name, "host", [
                "host", "--manager", url, "--name", name, "--initiator-name", IQN.format(name),
                "--nbd", f"127.0.0.1:{port}", "--channels", "digests,plain",
                "--interval", str(self.interval)], DIFS_NODE_TOKEN=tokens[name])
        for name in [*self.ctl_ports, *self.nbd_ports]:
            self.wait_for(f"{name} to advertise", lambda n=name: self.node_state(n) == "alive")
        self._supervisor = threading.Thread(target=self.supervise, daemon=True)
        self._supervisor.start()

    def _node_token(self, name: str, kind: str) -> str:
        try:
            return self.admin.request("POST", "/nodes", json={"name": name, "kind": kind})["token"]
        except ManagerError as exc:
            raise SoakError(f"registering {name}: {exc}") from None

    def create_apps(self, count: int, size: int, policies: list[str]) -> None:
        """``count`` applications, round-robin over the hosts and ``policies``; the manager
        places each volume; each is bound to its host."""
        if "integrity" in policies:
            self.admin.request("POST", "/policies", json=INTEGRITY_POLICY)
        hosts = list(self.nbd_ports)
        for i in range(count):
            name, host, policy = f"app{i:02d}", hosts[i % len(hosts)], policies[i % len(policies)]
            try:
                created = self.admin.request("POST", "/apps", json={
                    "name": name, "size_bytes": size, "policy": policy, "host": host})
                self.admin.bind(name, initiator_iqn=IQN.format(host), host=host)
            except ManagerError as exc:
                raise SoakError(f"creating {name} (policy {policy}) on {host}: {exc}") from None
            self.apps.append(AppPlacement(name, host, created["volumes"][0]["controller"],
                                          policy, self.nbd_ports[host]))

    def wait_for(self, what: str, ready, timeout: float = 60.0, *,
                 fail_on_exit: bool = True) -> None:
        """Poll ``ready`` until it is true; a unit exiting on its own fails at once (during
        the set-up), unless ``fail_on_exit`` is false (the supervisor restarts it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs.values() if fail_on_exit else ():
                if proc.popen.poll() is not None and not proc.killed:
                    raise SoakError(f"{proc.name} exited ({proc.popen.returncode}); its log "
                                    f"({proc.log}) ends:\n  {proc.tail()}")
            try:
                if ready():
                    return
            except (httpx.HTTPError, ManagerError, ManagerUnreachable, OSError):
                pass  # not ready yet
            time.sleep(0.2)
        raise SoakError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.work}")

    # -- the manager's view --------------------------------------------------------------------

    def manager_healthy(self) -> bool:
        return httpx.get(self.manager_url + "/api/v1/healthz", timeout=2).status_code == 200

    def node_state(self, name: str) -> str:
        return self.admin.request("GET", f"/nodes/{name}")["state"]

    def nodes(self) -> list[dict]:
        return self.admin.request("GET", "/nodes")

    # -- supervision ---------------------------------------------------------------------------

    def kill(self, name: str, *, hold: bool = False) -> None:
        proc = self.procs[name]
        with self._lock:
            proc.held = hold
            proc.sample()
            proc.kill()
            proc.cpu_s_done = proc.cpu_s
            proc.restart_at = time.monotonic() + self.restart_delay

    def release(self, name: str) -> None:
        """Let a held unit be restarted (at once)."""
        with self._lock:
            proc = self.procs[name]
            proc.held = False
            proc.restart_at = time.monotonic()

    def supervise(self) -> None:
        """Restart dead units after ``restart_delay``; sample memory and CPU once a second."""
        next_sample = 0.0
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                for proc in self.procs.values():
                    self._restart_if_due(proc, now)
                if now >= next_sample:
                    for proc in self.procs.values():
                        proc.sample()
                    next_sample = now + 1.0

    def _restart_if_due(self, proc: Proc, now: float) -> None:
        if proc.alive() or proc.held:
            return
        if not proc.killed and proc.restart_at is None:  # it died on its own
            proc.unexpected.append((now, proc.popen.returncode))
            proc.cpu_s_done = proc.cpu_s
            proc.restart_at = now + self.restart_delay
        if proc.restart_at is not None and now >= proc.restart_at:
            proc.restart_at = None
            proc.restarts += 1
            proc.start()

    def rss(self) -> dict[str, int | None]:
        """Each unit's RSS now (None: not running)."""
        with self._lock:
            return {n: memory(p.pid)[0] if p.alive() else None
                    for n, p in self.procs.items()}

    def reset_peaks(self) -> None:
        with self._lock:
            for proc in self.procs.values():
                proc.rss_peak = 0

    def all_running(self) -> bool:
        return all(p.alive() for p in self.procs.values())

    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for proc in self.procs.values():
            proc.sample()
        for role in ("host", "controller", "manager"):
            for proc in self.procs.values():
                if proc.role == role:
                    proc.stop()
        if self.relay is not None:
            self.relay.close()
        for proxy in self.proxies.values():
            proxy.close()
        self.admin.close()
