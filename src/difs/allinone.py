"""``difs up``: the whole cluster on loopback, as real processes, in one command.

It starts, each as its own ``difs`` process:

* a **manager** on ``127.0.0.1:8600`` with its embedded SQLite database (tiers seeded);
* a **controller** ``ctl1`` serving its protocol endpoint on ``127.0.0.1:3260``;
* a **host** ``host1`` with two channels to the controller (channel 0 with CRC32C
  header + data digests, channel 1 plain) and its NBD server on ``127.0.0.1:10809``;

registers the nodes, creates two applications — ``app1`` with the integrity
policy ``integrity`` (CRC32C header and data digests + T10 PI type 1) and ``app2``
with none (tier bronze) — binds them to
the host, and waits until both disks are served over NBD. Then it keeps running
for the user's own clients until Ctrl-C (or SIGTERM), and stops everything cleanly.

While it runs it supervises them (:mod:`difs.util.supervise`): a child that dies is
reported (how it ended, the tail of its log) and restarted with exponential backoff and
jitter, with the same arguments, ports, tokens and data dir; the others keep running
untouched — a restarted manager finds its database, the nodes' links reconnect, and
applications keep their I/O through the manager's absence. While the cluster is still
coming up a dead child is a set-up failure instead (:class:`UpError`, with its log).

State lives under ``--data-dir`` (``var/up``, 0700; tokens, logs, the database and the
volumes inside are 0600, and every child runs with umask 077): a second ``difs up`` finds
the same applications and data. ``up-status.json`` there holds every child's pid, state,
restarts and last exit.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from difs.nodelink.client import ManagerClient, ManagerError
from difs.util.supervise import Child, ChildSpec, Exit, RestartPolicy, Supervisor, log_tail

DEMO_APPS = (("app1", "integrity"), ("app2", "bronze"))

#: app1's policy: integrity end to end — digests on the path, PI from host to disk.
INTEGRITY_POLICY = {
    "name": "integrity",
    "description": "CRC32C header and data digests on the path, T10 PI type 1 end to end",
    "services": {"integrity": {"header_digest": True, "data_digest": True,
                               "protection_information": 1}},
}


#: in the data dir: every child's pid, state, restarts and last exit (JSON, rewritten on change)
STATUS_FILE = "up-status.json"


class UpError(Exception):
    """The cluster could not be brought up; the message says what to do."""


@dataclass
class UpConfig:
    data_dir: Path = Path("var/up")
    manager_listen: str = "127.0.0.1:8600"
    portal: str = "127.0.0.1:3260"
    nbd: str = "127.0.0.1:10809"
    host_metrics: str = "127.0.0.1:9101"
    app_size: str = "256M"
    interval: float = 1.0
    log_level: str = "info"
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace: float = 20.0  # seconds between a child's SIGTERM and its SIGKILL


@dataclass
class Cluster:
    config: UpConfig
    supervisor: Supervisor
    admin_token: str = ""

    @property
    def manager_url(self) -> str:
        return f"http://{self.config.manager_listen}"

    @property
    def children(self) -> list[Child]:
        return self.supervisor.children

    def nbd_url(self, app: str) -> str:
        return f"nbd://{self.config.nbd}/{app}"

    # -- processes ---------------------------------------------------------------

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        argv = [sys.executable, "-m", "difs.cli.main", *args, "--log-level", self.config.log_level]
        return self.supervisor.start(ChildSpec(name, argv, self.config.data_dir / f"{name}.log",
                                               env or {}))

    def check_alive(self) -> None:
        """While the cluster comes up a dead child is a set-up failure (a port in use, a bad
        option): say so at once, with its log, rather than restart it."""
        for child in self.children:
            if child.popen is not None and child.popen.poll() is not None:
                tail = log_tail(child.log, 15)
                how = Exit.from_returncode(child.popen.returncode).describe()
                raise UpError(f"the {child.name} {how}; its log ({child.log}) ends:\n  "
                              + "\n  ".join(tail))

    def supervise(self) -> None:
        """Once up: report and restart (with backoff) any child that died; call it often."""
        self.supervisor.check()

    def stop(self) -> None:
        self.supervisor.stop(grace=self.config.stop_grace)

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
        os.chmod(path, 0o600)  # one left readable by an older difs is private from now on
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _node_token(client: ManagerClient, name: str, kind: str) -> str:
    try:
        return client.request("POST", "/nodes", json={"name": name, "kind": kind})["token"]
    except ManagerError as exc:
        if exc.status != 409:
            raise
        return client.request("POST", f"/nodes/{name}/token")["token"]


def bring_up(config: UpConfig, say: Callable[[str], None],
             report: Callable[[str], None] | None = None) -> Cluster:
    """Start everything and return the running cluster (``supervise()`` it often, ``stop()``
    it when done). ``report`` gets the supervisor's messages (a death, a restart)."""
    from difs.util.units import parse_size

    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)  # one made by hand, or by an older difs, is private too
    cluster = Cluster(config, Supervisor(
        status_file=config.data_dir / STATUS_FILE, say=report or say, policy=config.restart))
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
                      "--metrics", config.host_metrics, "--state-dir", str(config.data_dir / "host1"),
                      env={"DIFS_NODE_TOKEN": host_token})

        def alive(name: str) -> bool:
            return client.request("GET", f"/nodes/{name}")["state"] == "alive"

        cluster.wait_for("the controller to advertise", lambda: alive("ctl1"))
        cluster.wait_for("the host to advertise", lambda: alive("host1"))
        policies = {p["name"] for p in client.request("GET", "/policies")}
        if INTEGRITY_POLICY["name"] not in policies:
            client.request("POST", "/policies", json=INTEGRITY_POLICY)
        existing = {a["name"] for a in client.request("GET", "/apps")}
        for app, tier in DEMO_APPS:
            if app not in existing:
                say(f"creating application {app} (policy {tier}, {config.app_size})")
                client.request("POST", "/apps", json={
                    "name": app, "size_bytes": parse_size(config.app_size), "policy": tier,
                    "host": "host1"})
            shown = client.request("GET", f"/apps/{app}")
            if not shown.get("binding"):
                client.bind(app, initiator_iqn="iqn.2026-11.io.difs:host1", host="host1")
        for app, _ in DEMO_APPS:
            cluster.wait_for(f"{app}'s disk on the host", lambda app=app: _nbd_ready(
                config.nbd, app), timeout=60)
    except ManagerError as exc:
        cluster.stop()
        raise UpError(f"the manager refused a set-up step: {exc}") from None
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
        f"  host        host1 NBD on {c.nbd}, metrics http://{c.host_metrics}/metrics",
        "",
        "applications (any NBD client is the application):",
    ]
    for app, tier in DEMO_APPS:
        lines.append(f"  {app}  policy {tier:<10} {cluster.nbd_url(app)}")
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


# -- the demo: two applications, two policies, one host -----------------------------------


@dataclass
class AppFigures:
    app: str
    tier: str
    bytes: int
    seconds: float
    cpu_seconds: float
    channels: dict[int, int]  # channel -> bytes
    digests: int
    digest_bytes: int
    pi_blocks: int = 0  # PI tuples generated (writes) and verified (reads) at the host

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu_seconds / (self.bytes / 2**30) if self.bytes else 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    import re

    out = []
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.split("}")[0]))
        out.append((name, labels, float(line.rsplit(" ", 1)[1])))
    return out


def run_demo(cluster: Cluster, *, size_mib: int = 64, say: Callable[[str], None] = print
             ) -> list[AppFigures]:
    """Write then read ``size_mib`` through each application in turn and measure it."""
    metrics_url = f"http://{cluster.config.host_metrics}/metrics"
    pids = [c.pid for c in cluster.children if c.name in ("host", "controller") and c.pid]
    figures = []
    for app, tier in DEMO_APPS:
        before = _scrape(metrics_url)
        cpu0 = sum(_cpu_seconds(p) for p in pids)
        t0 = time.monotonic()
        count = size_mib * 16  # 64 KiB requests
        for write in (True, False):
            cmd = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-c", str(count), "-d", "16",
                   "-s", "65536"] + (["-w", "--pattern=0x5a"] if write else []) + [cluster.nbd_url(app)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise UpError(f"qemu-img bench on {app} failed: {done.stderr.strip()}")
        seconds = time.monotonic() - t0
        cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
        after = _scrape(metrics_url)
        figures.append(_figures(app, tier, before, after, seconds, cpu))
        say(f"  {app}: moved {2 * size_mib} MiB in {seconds:.1f}s")
    return figures


def _figures(app: str, tier: str, before, after, seconds: float, cpu: float) -> AppFigures:
    def total(samples, name: str, **labels: str) -> dict[tuple, float]:
        got: dict[tuple, float] = {}
        for n, lab, value in samples:
            if n == name and all(lab.get(k) == v for k, v in labels.items()):
                key = tuple(sorted(lab.items()))
                got[key] = got.get(key, 0.0) + value
        return got

    def delta(name: str, **labels: str) -> dict[tuple, float]:
        b, a = total(before, name, **labels), total(after, name, **labels)
        return {k: a[k] - b.get(k, 0.0) for k in a}

    channels: dict[int, int] = {}
    for key, value in delta("difs_host_app_bytes_total", app=app).items():
        if value:
            channels[int(dict(key)["channel"])] = int(value)
    # Digest work is counted per path; in this demo each application has the
    # channels it used to itself while it runs, so the path's work is its work.
    digests = digest_bytes = 0
    for key, value in delta("difs_host_path_digests_total").items():
        if int(dict(key)["channel"]) in channels:
            digests += int(value)
    for key, value in delta("difs_host_path_digest_bytes_total").items():
        if int(dict(key)["channel"]) in channels:
            digest_bytes += int(value)
    pi_blocks = sum(int(v) for name in ("difs_host_app_pi_generated_blocks_total",
                                         "difs_host_app_pi_checked_blocks_total")
                    for v in delta(name, app=app).values())
    return AppFigures(app, tier, sum(channels.values()), seconds, cpu, channels, digests,
                      digest_bytes, pi_blocks)


def demo_table(figures: list[AppFigures]) -> str:
    lines = ["", "per application (host + controller processes):",
             f"  {'app':<6}{'policy':<11}{'channels used':<22}{'MiB':>8}{'CRC32C digests':>16}"
             f"{'digested MiB':>14}{'PI tuples':>11}{'CPU s/GiB':>11}"]
    for f in figures:
        used = ", ".join(f"ch{c} ({'digests' if c == 0 else 'plain'})" for c in sorted(f.channels))
        lines.append(f"  {f.app:<6}{f.tier:<11}{used:<22}{f.bytes / 2**20:>8.0f}{f.digests:>16,}"
                     f"{f.digest_bytes / 2**20:>14.0f}{f.pi_blocks:>11,}{f.cpu_per_gib:>11.2f}")
    lines.append("  PI tuples: 8-byte T10 PI tuples the host generated on writes and verified on "
                 "reads\n  (the controller checks each again and stores it with the data).")
    return "\n".join(lines)
