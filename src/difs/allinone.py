"""``difs up``: the whole cluster on loopback, as real processes, in one command.

It starts, each as its own ``difs`` process:

* a **manager** on ``127.0.0.1:8600`` with its embedded SQLite database (tiers seeded);
* a **controller** ``ctl1`` serving its protocol endpoint on ``127.0.0.1:3260``;
* a **host** ``host1`` with two channels to the controller (channel 0 with CRC32C
  header + data digests, channel 1 plain) and its NBD server on ``127.0.0.1:10809``;

registers the nodes, creates two applications — ``app1`` with an integrity
policy (tier silver: digests) and ``app2`` with none (tier bronze) — binds them to
the host, and waits until both disks are served over NBD. Then it keeps running
for the user's own clients until Ctrl-C, and stops everything cleanly.

State lives under ``--data-dir`` (``var/up``): a second ``difs up`` finds the same
applications and data.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from difs.manager.client import ManagerClient, ManagerError

DEMO_APPS = (("app1", "silver"), ("app2", "bronze"))


class UpError(Exception):
    """The cluster could not be brought up; the message says what to do."""


@dataclass
class UpConfig:
    data_dir: Path = Path("var/up")
    manager_listen: str = "127.0.0.1:8600"
    portal: str = "127.0.0.1:3260"
    nbd: str = "127.0.0.1:10809"
    app_size: str = "256M"
    interval: float = 1.0
    log_level: str = "info"


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    config: UpConfig
    children: list[Child] = field(default_factory=list)
    admin_token: str = ""

    @property
    def manager_url(self) -> str:
        return f"http://{self.config.manager_listen}"

    def nbd_url(self, app: str) -> str:
        return f"nbd://{self.config.nbd}/{app}"

    # -- processes ---------------------------------------------------------------

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        log = self.config.data_dir / f"{name}.log"
        out = open(log, "ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "difs.cli.main", *args, "--log-level", self.config.log_level],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True)
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.children:
            if child.popen.poll() is not None:
                tail = child.log.read_text(errors="replace").splitlines()[-15:]
                raise UpError(f"the {child.name} exited ({child.popen.returncode}); its log "
                              f"({child.log}) ends:\n  " + "\n  ".join(tail))

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.popen.wait(20)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(5)

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if ready():
                    return
            except (httpx.HTTPError, ManagerError, OSError):
                pass
            time.sleep(0.1)
        raise UpError(f"timed out after {timeout:.0f}s waiting for {what}; logs are in "
                      f"{self.config.data_dir}")


def _token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _node_token(client: ManagerClient, name: str, kind: str) -> str:
    try:
        return client.request("POST", "/nodes", json={"name": name, "kind": kind})["token"]
    except ManagerError as exc:
        if exc.status != 409:
            raise
        return client.request("POST", f"/nodes/{name}/token")["token"]


def bring_up(config: UpConfig, say: Callable[[str], None]) -> Cluster:
    """Start everything and return the running cluster (``stop()`` it when done)."""
    from difs.util.units import parse_size

    config.data_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(config)
    cluster.admin_token = _token(config.data_dir / "admin-token")
    try:
        say(f"starting the manager on {cluster.manager_url} (SQLite in {config.data_dir}/manager)")
        cluster.spawn("manager", "manager", "--listen", config.manager_listen,
                      "--data-dir", str(config.data_dir / "manager"),
                      env={"DIFS_ADMIN_TOKEN": cluster.admin_token})
        cluster.wait_for("the manager", lambda: httpx.get(
            cluster.manager_url + "/api/v1/healthz", timeout=1).status_code == 200)
        client = ManagerClient(cluster.manager_url, token=cluster.admin_token)
        ctl_token = _node_token(client, "ctl1", "controller")
        host_token = _node_token(client, "host1", "host")

        say(f"starting controller ctl1 on {config.portal}")
        cluster.spawn("controller", "controller", "--manager", cluster.manager_url,
                      "--name", "ctl1", "--portal", config.portal,
                      "--data-dir", str(config.data_dir / "ctl1"),
                      "--interval", str(config.interval), env={"DIFS_NODE_TOKEN": ctl_token})
        say(f"starting host host1 (channels: 0 digests, 1 plain; NBD on {config.nbd})")
        cluster.spawn("host", "host", "--manager", cluster.manager_url, "--name", "host1",
                      "--initiator-name", "iqn.2026-11.io.difs:host1", "--nbd", config.nbd,
                      "--channels", "digests,plain", "--interval", str(config.interval),
                      env={"DIFS_NODE_TOKEN": host_token})

        def alive(name: str) -> bool:
            return client.request("GET", f"/nodes/{name}")["state"] == "alive"

        cluster.wait_for("the controller to advertise", lambda: alive("ctl1"))
        cluster.wait_for("the host to advertise", lambda: alive("host1"))
        existing = {a["name"] for a in client.request("GET", "/apps")}
        for app, tier in DEMO_APPS:
            if app not in existing:
                say(f"creating application {app} (tier {tier}, {config.app_size})")
                client.request("POST", "/apps", json={
                    "name": app, "size_bytes": parse_size(config.app_size), "policy": tier,
                    "host": "host1"})
            shown = client.request("GET", f"/apps/{app}")
            if not shown.get("binding"):
                client.bind(app, initiator_iqn="iqn.2026-11.io.difs:host1", host="host1")
        for app, _ in DEMO_APPS:
            cluster.wait_for(f"{app}'s disk on the host", lambda app=app: _nbd_ready(
                config.nbd, app), timeout=60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _nbd_ready(address: str, export: str) -> bool:
    from difs.nbd.client import NbdClient
    from difs.util.units import parse_portal

    host, port = parse_portal(address, default_port=10809)
    try:
        with NbdClient.open_tcp(host, port, export) as client:
            return client.export.size > 0
    except Exception:  # not served yet: any failure means "not ready"
        return False


def summary(cluster: Cluster) -> str:
    c = cluster.config
    lines = [
        "",
        "difs is up (all on loopback):",
        f"  manager     {cluster.manager_url}   (dashboard; API under /api/v1, token in "
        f"{c.data_dir}/admin-token)",
        f"  controller  ctl1  iscsi://{c.portal}",
        f"  host        host1 NBD on {c.nbd}",
        "",
        "applications (any NBD client is the application):",
    ]
    for app, tier in DEMO_APPS:
        lines.append(f"  {app}  tier {tier:<7} {cluster.nbd_url(app)}")
    lines += [
        "",
        "try:",
        f"  qemu-img info {cluster.nbd_url('app1')}",
        f"  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' {cluster.nbd_url('app2')}",
        f"  DIFS_MANAGER={cluster.manager_url} DIFS_TOKEN=$(cat {c.data_dir}/admin-token) "
        ".venv/bin/difs app list",
        "",
        f"logs: {c.data_dir}/{{manager,controller,host}}.log — Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
