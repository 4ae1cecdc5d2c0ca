"""The faults, one every ``--fault-every`` seconds, and what each measures.

=========================  ===============================================================
kind                       what the soak does (the supervisor restarts killed units)
=========================  ===============================================================
``kill-controller``        SIGKILL one controller
``kill-host``              SIGKILL one host
``path-cut``               the proxied host's connections to one controller reset, new ones
                           refused for ``cut_seconds``, then the link heals
``kill-manager``           SIGKILL the manager
``bit-flips``              for ``burst_seconds``, bits flipped in flight on the proxied host's
                           digest channel (0) to one controller: data both ways, headers
                           host->controller; the CRC32C digests must catch every one
``node-restart-while-      SIGKILL the manager and keep it down for ``manager_down``
manager-down``             seconds; meanwhile SIGKILL a controller or host, which the
                           supervisor restarts while the manager is still down
=========================  ===============================================================

Per fault: the applications it affects (on the killed node, or behind the cut/flipped
link; all of them for the manager), and after the run each one's recovery time — from the
fault (for the compound fault: from the node's kill) to the completion of its first
successful I/O *issued* after it — and the
manager's: from the fault until it answers with every node alive and every lease renewed
after the fault.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from faults import TO_HOST, TO_TARGET, BitFlip  # tests/faults.py

from .cluster import Cluster
from .driver import AppDriver

KINDS = ("kill-controller", "kill-host", "path-cut", "kill-manager", "bit-flips",
         "node-restart-while-manager-down")
#: not in the rotation: a check of the soak itself (flips where no digest can catch them
#: must be reported as corrupt data and fail the run)
CONTROLS = ("bit-flips-plain",)


@dataclass
class FaultRecord:
    kind: str
    target: str
    at: float  # seconds since I/O started
    t_mono: float
    t_wall: float
    affected: list[str]
    #: when the affected applications were hit (monotonic), if later than ``t_mono``
    hit_mono: float | None = None
    detail: dict = field(default_factory=dict)
    manager_recovery_s: float | None = None
    app_recovery_s: dict[str, float | None] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)  # all applications, until the next fault
    apps_with_errors: int = 0

    def summary(self) -> dict:
        times = [t for t in self.app_recovery_s.values() if t is not None]
        return {
            "kind": self.kind, "target": self.target, "at_s": round(self.at, 1),
            "affected_apps": len(self.affected),
            "app_recovery_s": {"min": _r(min(times, default=None)),
                               "median": _r(statistics.median(times) if times else None),
                               "max": _r(max(times, default=None))},
            "apps_not_recovered": sorted(a for a, t in self.app_recovery_s.items() if t is None),
            "app_recovery_by_app": {a: _r(t) for a, t in self.app_recovery_s.items()},
            "manager_recovery_s": _r(self.manager_recovery_s),
            "errors": dict(self.errors), "apps_with_errors": self.apps_with_errors,
            "detail": self.detail,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


class FaultRunner:
    def __init__(self, cluster: Cluster, drivers: dict[str, AppDriver], *, seed: int, order: str,
                 kinds: tuple[str, ...] = KINDS, cut_seconds: float = 5.0,
                 burst_seconds: float = 5.0, flip_rate: float = 0.1,
                 manager_down: float = 10.0) -> None:
        self.cluster = cluster
        self.drivers = drivers
        self.rng = random.Random(seed)
        self.order = order
        self.kinds = kinds
        self.cut_seconds = cut_seconds
        self.burst_seconds = burst_seconds
        self.flip_rate = flip_rate
        self.manager_down = manager_down
        self.records: list[FaultRecord] = []

    def next_kind(self, index: int) -> str:
        if self.order == "rotate":
            return self.kinds[index % len(self.kinds)]
        return self.rng.choice(self.kinds)

    def run(self, t0: float, duration: float, every: float, stop: threading.Event,
            say, *, tail: float = 60.0) -> None:
        """Inject a fault at t0 + every, t0 + 2 x every... while at least ``every / 2``
        seconds of the run would be left to recover. The last fault gets up to ``tail``
        seconds (the I/O goes on) for the manager and its applications to recover."""
        index = 0
        while (at := (index + 1) * every) <= duration - every / 2:
            if stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            kind = self.next_kind(index)
            record = self.inject(kind, t0)
            self.records.append(record)
            say(f"{record.at:6.1f}s  fault {kind} on {record.target} "
                f"({len(record.affected)} applications affected)")
            last = (index + 2) * every > duration - every / 2
            self.watch(record, deadline=t0 + at + (max(tail, every) if last else every - 1),
                       apps_too=last)
            index += 1

    # -- the faults ----------------------------------------------------------------------------

    def inject(self, kind: str, t0: float) -> FaultRecord:
        record = FaultRecord(kind, "", time.monotonic() - t0, time.monotonic(), time.time(), [])
        getattr(self, "_" + kind.replace("-", "_"))(record)
        return record

    def _apps_on(self, node: str) -> list[str]:
        return [a.name for a in self.cluster.apps if node in (a.host, a.controller)]

    def _behind(self, controller: str) -> list[str]:
        return [a.name for a in self.cluster.apps
                if a.host == self.cluster.proxied_host and a.controller == controller]

    def _pick(self, role: str) -> str:
        return self.rng.choice([p.name for p in self.cluster.procs.values() if p.role == role])

    def _pick_link(self, *, digests: bool = False) -> str:
        """A controller the proxied host has applications on (with digests: applications
        whose policy puts their I/O on the digest channel), so the fault hits someone."""
        apps = [a for a in self.cluster.apps if a.host == self.cluster.proxied_host
                and (not digests or a.policy != "bronze")]
        used = sorted({a.controller for a in apps})
        return self.rng.choice(used) if used else self._pick("controller")

    def _kill_controller(self, record: FaultRecord) -> None:
        record.target = self._pick("controller")
        record.affected = self._apps_on(record.target)
        self.cluster.kill(record.target)

    def _kill_host(self, record: FaultRecord) -> None:
        record.target = self._pick("host")
        record.affected = self._apps_on(record.target)
        self.cluster.kill(record.target)

    def _kill_manager(self, record: FaultRecord) -> None:
        record.target = "manager"
        record.affected = [a.name for a in self.cluster.apps]
        self.cluster.kill("manager")

    def _path_cut(self, record: FaultRecord) -> None:
        ctl = self._pick_link()
        record.target = f"{self.cluster.proxied_host}->{ctl}"
        record.affected = self._behind(ctl)
        proxy = self.cluster.proxies[ctl]
        channels = {link.channel for link in proxy.connections} | {0, 1}
        proxy.refused |= channels
        record.detail["connections_cut"] = sum(proxy.cut(ch) for ch in channels)
        time.sleep(self.cut_seconds)
        proxy.refused -= channels
        record.detail["outage_s"] = self.cut_seconds

    def _bit_flips(self, record: FaultRecord, *, channel: int = 0) -> None:
        ctl = self._pick_link(digests=channel == 0)
        record.target = f"{self.cluster.proxied_host}->{ctl} ch{channel}"
        record.affected = self._behind(ctl)
        proxy = self.cluster.proxies[ctl]
        seed = self.rng.randrange(1 << 30)
        flips = {
            "data_to_controller": BitFlip(TO_TARGET, "data", channel=channel,
                                          rate=self.flip_rate, limit=None, seed=seed),
            "data_to_host": BitFlip(TO_HOST, "data", channel=channel, rate=self.flip_rate,
                                    limit=None, seed=seed + 1),
        }
        if channel == 0:  # a flipped header on a channel without digests would break framing
            flips["header_to_controller"] = BitFlip(TO_TARGET, "header", channel=channel,
                                                    rate=self.flip_rate / 4, limit=None,
                                                    seed=seed + 2)
        for flip in flips.values():
            proxy.add(flip)
        time.sleep(self.burst_seconds)
        proxy.clear()
        record.detail = {"burst_s": self.burst_seconds,
                         "flipped": {k: f.fired for k, f in flips.items()},
                         "pdus_seen": {k: f.seen for k, f in flips.items()}}

    def _bit_flips_plain(self, record: FaultRecord) -> None:
        self._bit_flips(record, channel=1)

    def _node_restart_while_manager_down(self, record: FaultRecord) -> None:
        node = self._pick(self.rng.choice(["controller", "host"]))
        record.target = f"manager + {node}"
        record.affected = self._apps_on(node)
        self.cluster.kill("manager", hold=True)
        time.sleep(1.0)
        record.hit_mono = time.monotonic()  # the applications' recovery counts from here
        self.cluster.kill(node)  # restarted by the supervisor while the manager is down
        time.sleep(max(0.0, self.manager_down - 1.0))
        self.cluster.release("manager")
        record.detail["manager_down_s"] = self.manager_down

    # -- measuring -----------------------------------------------------------------------------

    def watch(self, record: FaultRecord, *, deadline: float, apps_too: bool) -> None:
        """Poll until the manager answers with every node alive and advertised after the
        fault (every lease renewed) and, with ``apps_too``, every affected application has
        done I/O again; or until ``deadline``."""
        hit = record.hit_mono or record.t_mono
        while time.monotonic() < deadline:
            if record.manager_recovery_s is None and self._leases_renewed(record):
                record.manager_recovery_s = time.monotonic() - record.t_mono
            if record.manager_recovery_s is not None and (not apps_too or all(
                    _first_success(self.drivers[a], hit, deadline) is not None
                    for a in record.affected)):
                return
            time.sleep(0.25)

    def _leases_renewed(self, record: FaultRecord) -> bool:
        try:
            nodes = self.cluster.nodes()
        except Exception:  # down or restarting: keep polling
            return False
        return bool(nodes) and all(_renewed(n, record.t_wall) for n in nodes)

    def attribute(self, end: float) -> None:
        """After the run: each fault's recovery per affected application, and the errors all
        applications saw until the next fault."""
        for i, record in enumerate(self.records):
            until = self.records[i + 1].t_mono if i + 1 < len(self.records) else end
            hit = record.hit_mono or record.t_mono
            for app in record.affected:
                record.app_recovery_s[app] = _first_success(self.drivers[app], hit, until)
            seen = set()
            for name, driver in self.drivers.items():
                for t, kind in driver.stats.error_log:
                    if record.t_mono <= t < until:
                        record.errors[kind] += 1
                        seen.add(name)
            record.apps_with_errors = len(seen)


def _renewed(node: dict, since_wall: float) -> bool:
    when = node.get("last_advertised_at")
    if node.get("state") != "alive" or when is None:
        return False
    stamp = datetime.fromisoformat(when)
    if stamp.tzinfo is None:  # the manager's clock is UTC
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp() >= since_wall


def _first_success(driver: AppDriver, since: float, until: float) -> float | None:
    for issued, done, ok in list(driver.stats.timeline):
        if issued >= since and ok:
            return done - since if done <= until else None
    return None
