"""``difs up``: the whole cluster on loopback, as real processes, in one command.

It starts, each as its own ``difs`` process:

* a **manager** on ``127.0.0.1:8600`` with its embedded SQLite database (tiers seeded);
* a **controller** ``ctl1`` serving its protocol endpoint on ``127.0.0.1:3260``
  (Prometheus metrics on ``127.0.0.1:9102``);
* a **host** ``host1`` with two channels to the controller (channel 0 with CRC32C
  header + data digests, channel 1 plain), its NBD server on ``127.0.0.1:10809``
  and Prometheus metrics on ``127.0.0.1:9101``;

registers the nodes, creates two applications — ``app1`` with the integrity
policy ``integrity`` (CRC32C header and data digests + T10 PI type 1) and ``app2``
with none (tier bronze) — binds them to
the host, and waits until both disks are served over NBD. Then it keeps running
for the user's own clients until Ctrl-C (or SIGTERM), and stops everything cleanly.

The demo (``difs up --demo``: :func:`run_demo`, :func:`demo_table`) runs both applications
at the same time, each writing then reading back its own pattern through its own NBD export,
and shows per application what the host and the controller counted for it (scraped from their
Prometheus endpoints before and after): the path it used, labelled with what that path
negotiated at login; I/Os, commands and bytes; its bytes covered by data digests; PI blocks
generated and checked at each end — attributed by application, never by path
(:func:`attribute`), and checked not to be mixed (:func:`mixed_figures`).

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
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    controller_metrics: str = "127.0.0.1:9102"
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
                      "--metrics", config.controller_metrics,
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
        f"  controller  ctl1  iscsi://{c.portal}, metrics http://{c.controller_metrics}/metrics",
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


# -- the demo: two applications at the same time, seen from the host and the controller ---------

#: a metric sample as scraped: (name, labels, value)
Sample = tuple[str, dict[str, str], float]

#: the demo's NBD request size, and how many requests each workload keeps in flight
DEMO_CHUNK = 64 * 1024
DEMO_DEPTH = 16

#: the words of a channel's label for the services a login can settle (``describe_flags``
#: names, as the host's ``difs_host_path_up{services}`` label carries them); PI type
#: names add nothing to "PI"
_SERVICE_WORDS = {"protection information": "PI", "CHAP": "CHAP", "mutual CHAP": "mutual",
                  "TLS": "TLS", "isolation domain": "isolated"}


@dataclass
class Run:
    """One application's workload: when it ran (``time.monotonic()``) and what it moved."""

    app: str
    started: float
    ended: float
    bytes: int


@dataclass
class AppFigures:
    """One application's counters over the demo, from the host's and the controller's
    Prometheus endpoints, attributed by application (host ``app`` label, controller volume
    -> application), never by path."""

    app: str
    tier: str
    paths: dict[int, str] = field(default_factory=dict)  # channel that carried it -> label
    host_ios: int = 0
    host_bytes: int = 0
    host_digest_bytes: int = 0  # its bytes on channels that negotiated data digests
    host_pi_generated: int = 0  # PI tuples the host generated (writes) ...
    host_pi_checked: int = 0  # ... and verified (reads)
    ctl_commands: int = 0
    ctl_bytes: int = 0
    ctl_digest_bytes: int = 0  # its bytes on sessions with data_digest=true
    ctl_pi_generated: int = 0
    ctl_pi_checked: int = 0
    wants_digests: bool = False  # the volume's policy, as the controller serves it
    pi_type: int = 0


@dataclass
class DemoResult:
    apps: list[AppFigures]
    runs: list[Run]
    seconds: float  # from the first workload's start to the last one's end
    cpu_seconds: float  # host + controller processes over that time

    @property
    def overlap(self) -> float:
        """Seconds during which every workload was running (> 0: they ran at the same time)."""
        if not self.runs:
            return 0.0
        return min(r.ended for r in self.runs) - max(r.started for r in self.runs)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.runs)

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu_seconds / (self.bytes / 2**30) if self.bytes else 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_metrics(text: str) -> list[Sample]:
    """The labelled samples of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.rsplit("}", 1)[0]))
        out.append((name, labels, float(line.rsplit(" ", 1)[1])))
    return out


def _scrape(url: str) -> list[Sample]:
    return parse_metrics(httpx.get(url, timeout=5).text)


def services_label(services: str) -> str:
    """A channel's short label from the services it negotiated, as the host's
    ``difs_host_path_up{services}`` label lists them: ``"header digest,data digest"`` ->
    ``"digests"``, ``"none"`` -> ``"plain"``, ``"data digest,CHAP"`` -> ``"data-digest+CHAP"``."""
    names = [n for n in services.split(",") if n and n != "none"]
    words = []
    digests = [n for n in ("header digest", "data digest") if n in names]
    if len(digests) == 2:
        words.append("digests")
    elif digests:
        words.append(digests[0].replace(" ", "-"))
    for name in names:
        word = _SERVICE_WORDS.get(name)
        if word is not None and word not in words:
            words.append(word)
    if "mutual" in words:  # mutual CHAP is CHAP too: say it once
        words = [w for w in words if w != "CHAP"]
        words[words.index("mutual")] = "mutual-CHAP"
    return "+".join(words) or "plain"


def negotiated_paths(samples: list[Sample]) -> dict[tuple[str, int], str]:
    """(controller, channel) -> the services that path negotiated (the ``services`` label of
    ``difs_host_path_up``, which the host fills from the path's login), for the demo's labels."""
    return {(labels["controller"], int(labels["channel"])): labels["services"]
            for name, labels, _ in samples
            if name == "difs_host_path_up" and "channel" in labels}


def _deltas(before: list[Sample], after: list[Sample], name: str) -> list[tuple[dict, float]]:
    """Each series of counter ``name``: its labels and how much it grew from before to after."""
    def series(samples):
        return {tuple(sorted(lab.items())): v for n, lab, v in samples if n == name}

    b = series(before)
    return [(dict(key), value - b.get(key, 0.0)) for key, value in series(after).items()]


def attribute(apps: list[tuple[str, str]], host: tuple[list[Sample], list[Sample]],
              controller: tuple[list[Sample], list[Sample]]) -> list[AppFigures]:
    """Per application, what its I/O did between two scrapes of each node (pure).

    The host counts per application (``app`` label); the controller per session x volume,
    mapped to the application by ``difs_controller_volume_info``. Channel labels come from
    what each path negotiated; digest-covered bytes are the application's own bytes on
    paths / sessions that negotiated data digests — so two applications running at once on
    one host never get each other's work."""
    figures = {app: AppFigures(app, tier) for app, tier in apps}
    h0, h1 = host
    c0, c1 = controller
    services = negotiated_paths(h1)
    for labels, moved in _deltas(h0, h1, "difs_host_app_bytes_total"):
        f = figures.get(labels.get("app", ""))
        if f is None or not moved:
            continue
        channel = int(labels["channel"])
        negotiated = services.get((labels["controller"], channel), "none")
        f.paths[channel] = services_label(negotiated)
        f.host_bytes += int(moved)
        if "data digest" in negotiated.split(","):
            f.host_digest_bytes += int(moved)
    for metric, attr in (("difs_host_app_ios_total", "host_ios"),
                         ("difs_host_app_pi_generated_blocks_total", "host_pi_generated"),
                         ("difs_host_app_pi_checked_blocks_total", "host_pi_checked")):
        for labels, grew in _deltas(h0, h1, metric):
            f = figures.get(labels.get("app", ""))
            if f is not None:
                setattr(f, attr, getattr(f, attr) + int(grew))
    owner: dict[str, AppFigures] = {}
    for name, labels, _ in c1:
        if name == "difs_controller_volume_info" and labels.get("application") in figures:
            f = owner[labels["volume"]] = figures[labels["application"]]
            f.wants_digests = "data digest" in labels.get("requires", "").split(", ")
            f.pi_type = int(labels.get("pi_type") or 0)
    for metric, attr in (("difs_controller_commands_total", "ctl_commands"),
                         ("difs_controller_bytes_total", "ctl_bytes"),
                         ("difs_controller_pi_generated_blocks_total", "ctl_pi_generated"),
                         ("difs_controller_pi_checked_blocks_total", "ctl_pi_checked")):
        for labels, grew in _deltas(c0, c1, metric):
            f = owner.get(labels.get("volume", ""))
            if f is None:
                continue
            setattr(f, attr, getattr(f, attr) + int(grew))
            if attr == "ctl_bytes" and labels.get("data_digest") == "true":
                f.ctl_digest_bytes += int(grew)
    return [figures[app] for app, _ in apps]


def mixed_figures(figures: list[AppFigures]) -> list[str]:
    """What shows one application's figures mixed with another's (empty when none): an
    application whose volume wants data digests has digest-covered bytes at both ends, one
    that does not has none; one with a PI volume has PI checked at the controller, one
    without has no PI work anywhere."""
    problems = []
    for f in figures:
        host, ctl = f.host_digest_bytes, f.ctl_digest_bytes
        where = (f"host {host / 2**20:.1f} MiB, controller {ctl / 2**20:.1f} MiB; paths "
                 + (",".join(f"ch{ch}={label}" for ch, label in sorted(f.paths.items())) or "-"))
        if f.wants_digests and not (host and ctl):
            problems.append(f"{f.app} needs data digests but shows digest-covered bytes "
                            f"({where})")
        if not f.wants_digests and (host or ctl):
            problems.append(f"{f.app} needs no digests but shows digest-covered bytes ({where})")
        if f.pi_type and not f.ctl_pi_checked:
            problems.append(f"{f.app}'s volume has PI type {f.pi_type} but the controller "
                            "checked no PI for it")
        if not f.pi_type and (f.ctl_pi_checked or f.host_pi_generated or f.host_pi_checked):
            problems.append(f"{f.app}'s volume has no PI but PI work is counted for it")
    return problems


def _chunk(app: str, offset: int, body: bytes) -> bytes:
    """What ``app`` writes at ``offset``: its name and the offset, then its fill byte — read
    back anywhere else, or from another application's disk, it does not match."""
    return app.encode()[:8].ljust(8, b"\0") + offset.to_bytes(8, "big") + body


def _transfer(client, app: str, chunks: int, body: bytes, *, write: bool) -> None:
    """Write (or read back and verify) ``chunks`` requests, ``DEMO_DEPTH`` in flight."""
    from difs.nbd import constants as nbd

    pending: dict[int, int] = {}
    sent = done = 0
    while done < chunks:
        while sent < chunks and len(pending) < DEMO_DEPTH:
            offset = sent * DEMO_CHUNK
            if write:
                handle = client.send_request(nbd.CMD_WRITE, offset, DEMO_CHUNK,
                                             data=_chunk(app, offset, body))
            else:
                handle = client.send_request(nbd.CMD_READ, offset, DEMO_CHUNK)
            pending[handle] = offset
            sent += 1
        reply = client.recv_reply()
        offset = pending.pop(reply.handle)
        if reply.error:
            raise UpError(f"{app}: NBD {'write' if write else 'read'} at {offset} failed "
                          f"(error {reply.error})")
        if not write and reply.data != _chunk(app, offset, body):
            raise UpError(f"{app}: the data read back at {offset} is not what it wrote")
        done += 1


def _workload(address: str, app: str, size: int, fill: int, start: threading.Barrier) -> Run:
    """One application: connect to its export, wait for the other, then write ``size`` bytes
    of its own pattern, flush, and read them back verifying every request."""
    from difs.nbd.client import NbdClient
    from difs.util.units import parse_portal

    host, port = parse_portal(address, default_port=10809)
    body = bytes([fill]) * (DEMO_CHUNK - 16)
    with NbdClient.open_tcp(host, port, app, structured=False) as client:
        if client.export.size < size:
            raise UpError(f"{app}'s disk ({client.export.size} bytes) is smaller than the "
                          f"demo's {size} bytes: use a larger --size or a smaller --demo-mib")
        start.wait()
        started = time.monotonic()
        _transfer(client, app, size // DEMO_CHUNK, body, write=True)
        client.flush()
        _transfer(client, app, size // DEMO_CHUNK, body, write=False)
        ended = time.monotonic()
        client.disconnect()
    return Run(app, started, ended, 2 * size)


def run_concurrently(address: str, apps: list[str], size: int) -> list[Run]:
    """Every application's workload in its own thread through its own NBD export, all
    released at once by a barrier; returns each one's start and end. One that fails (cannot
    connect, reads back wrong data) releases the others and its reason ends the demo."""
    start = threading.Barrier(len(apps), timeout=60)

    def one(app: str, fill: int) -> Run:
        try:
            return _workload(address, app, size, fill, start)
        except threading.BrokenBarrierError:
            raise
        except Exception as exc:
            start.abort()  # the others stop waiting for this one
            if isinstance(exc, UpError):
                raise
            raise UpError(f"{app}'s workload failed: {exc}") from exc

    with ThreadPoolExecutor(len(apps), thread_name_prefix="demo") as pool:
        futures = [pool.submit(one, app, 0x5A + i) for i, app in enumerate(apps)]
    errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    if failed:
        raise failed[0]
    if any(errors):
        raise UpError("the demo's workloads did not all start together")
    return [f.result() for f in futures]


def run_demo(cluster: Cluster, *, size_mib: int = 64, say: Callable[[str], None] = print
             ) -> DemoResult:
    """Both applications write then read ``size_mib`` each, at the same time, each through
    its own NBD export; return what the host and the controller counted for each."""
    c = cluster.config
    host_url = f"http://{c.host_metrics}/metrics"
    ctl_url = f"http://{c.controller_metrics}/metrics"
    pids = [ch.pid for ch in cluster.children if ch.name in ("host", "controller") and ch.pid]
    host0, ctl0 = _scrape(host_url), _scrape(ctl_url)
    cpu0 = sum(_cpu_seconds(p) for p in pids)
    runs = run_concurrently(c.nbd, [app for app, _ in DEMO_APPS], size_mib << 20)
    cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
    host1, ctl1 = _scrape(host_url), _scrape(ctl_url)
    t0 = min(r.started for r in runs)
    for r in runs:
        say(f"  {r.app}: moved {r.bytes >> 20} MiB from +{r.started - t0:.2f}s to "
            f"+{r.ended - t0:.2f}s")
    figures = attribute(list(DEMO_APPS), (host0, host1), (ctl0, ctl1))
    return DemoResult(figures, runs, max(r.ended for r in runs) - t0, cpu)


def demo_table(result: DemoResult) -> str:
    """The demo's figures per application: the host's beside the controller's."""
    mib = 2**20
    side = f"{'I/Os':>8}{'MiB':>6}{'digest':>8}{'PI gen':>9}{'PI chk':>9}"
    lines = ["", f"per application, both running at once ({result.overlap:.1f}s of "
             f"{result.seconds:.1f}s together):",
             f"  {'':<37}{' host ':-^40}  {' controller ':-^40}",
             f"  {'app':<6}{'policy':<11}{'path (negotiated)':<20}{side}  "
             + side.replace("    I/Os", "    cmds")]
    for f in result.apps:
        used = ",".join(f"ch{ch}={label}" for ch, label in sorted(f.paths.items())) or "-"
        lines.append(
            f"  {f.app:<6}{f.tier:<11}{used:<20}"
            f"{f.host_ios:>8,}{f.host_bytes / mib:>6.0f}{f.host_digest_bytes / mib:>8.0f}"
            f"{f.host_pi_generated:>9,}{f.host_pi_checked:>9,}  "
            f"{f.ctl_commands:>8,}{f.ctl_bytes / mib:>6.0f}{f.ctl_digest_bytes / mib:>8.0f}"
            f"{f.ctl_pi_generated:>9,}{f.ctl_pi_checked:>9,}")
    problems = mixed_figures(result.apps)
    lines += [
        "  path: the channel that carried its I/O = what that channel negotiated at login.",
        "  MiB: its data moved (with the 8-byte PI per block where PI travels); digest: its MiB",
        "  on paths (host) / sessions (controller) with CRC32C data digests; PI gen / PI chk:",
        "  512-byte blocks whose T10 PI was generated / checked (the controller checks on write",
        "  and again on read).",
        f"  host + controller CPU: {result.cpu_seconds:.2f}s for {result.bytes / 2**30:.2f} GiB "
        f"({result.cpu_per_gib:.2f} s/GiB, both applications together)",
        "  not mixed: " + ("yes: digest and PI work show only where the volume's policy asks "
                           "for them" if not problems else "NO: " + "; ".join(problems)),
    ]
    return "\n".join(lines)
