"""The host's conversation with the manager (out of band, over its REST API).

Every ``interval`` seconds the host:

1. **advertises** what it can do (digests, CHAP, path selection) and the paths
   it has established with what each negotiated, renewing its lease;
2. **follows its bindings**: an application bound to this host is started
   (its volume's path group opened, its NBD export created) in a task of its
   own; a new policy version is applied to the running application without
   restarting it; an application no longer bound is stopped. Each binding has
   a state: ``starting``, ``running`` or ``failed`` with the reason (a start
   that fails within START_GRACE of the binding's arrival stays ``starting``
   and is tried again every second; after that it is ``failed`` and tried again
   at the exchanges after a backoff, 1 s doubling to 60 s; a policy
   version that cannot be applied is tried once and the application keeps its
   previous one). One binding's fault never stops the link or another binding;
3. **reports** the evidence of the last window — per application x path, what the
   data path measured (:mod:`difs.host.evidence`: services the login settled, I/Os,
   bytes, PI, digests, refusals, re-sends, latency) — with ``PUT
   /hosts/NAME/evidence``, and each binding's state (``PUT
   /hosts/NAME/bindings/state``; also as soon as a start ends). The evidence baseline
   advances only when the manager accepted the report; a refusal is logged (rate-limited)
   and the next report covers the lost window too.

Each path advertises the T10 PI types it can really carry (:func:`difs.host.evidence.
path_pi_types`: those the host generates and verifies that the logical units it uses
through the path are formatted with); the host's own integrity capability is what its
software supports (:data:`~difs.host.evidence.HOST_PI_TYPES`).

The bindings are persisted in the host's state directory (see
:mod:`difs.host.state`) whenever they change. A host that starts while the
manager is unreachable starts the persisted applications; when the manager
answers, its bindings win.

The manager's HTTP client is synchronous, so each call runs in a worker thread;
the I/O path never waits for the manager. When the manager is unreachable the
host keeps serving what it has and says so in its log once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from difs.host import migrate
from difs.host.agent import Host
from difs.host.evidence import HOST_PI_TYPES, Entry, accept, build_report, path_pi_types
from difs.host.pathgroup import CredentialBook
from difs.host.errors import HostError
from difs.host.state import BindingStore, StateRefused, persisted
from difs.nodelink.client import ManagerClient, ManagerError, ManagerUnavailable, ManagerUnreachable
from difs.nodelink.link import NodeLink
from difs.policy import Advertisement, PolicyServices, Requirement
from difs.policy.fast import AUTH, DATA_DIGEST, HEADER_DIGEST, MUTUAL_AUTH
from difs.policy.evidence import HostEvidenceReport
from difs.util.logs import RateLimitedLog, log_event
from difs.util.units import format_portal

log = logging.getLogger("difs.host")


#: the states of a binding at the host
STARTING, RUNNING, FAILED = "starting", "running", "failed"
#: seconds before a failed start is tried again: doubles from the first to the cap
RETRY_FIRST, RETRY_CAP = 1.0, 60.0
#: seconds from a binding's arrival during which a failed start stays ``starting`` and is
#: retried every RETRY_FIRST: right after a bind, the controller may not yet have opened
#: the LUN to this host (it follows the manager on its own interval)
START_GRACE = 10.0


class BindingError(HostError):
    """A binding the host cannot follow as given (no volume, no endpoint)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a binding's volume is served."""

    controller: str
    portal: str
    target: str
    lun: int


@dataclass
class Follower:
    """One binding the host follows, and what became of it."""

    name: str
    endpoint: Endpoint | None
    version: int
    state: str = STARTING
    reason: str | None = None
    task: asyncio.Task | None = None
    attempts: int = 0
    retry_at: float = 0.0
    #: when the binding arrived (loop time; its start grace runs from here)
    since: float = 0.0
    #: the policy version that could not be applied to the running application
    refused_version: int | None = None
    #: the migration this host runs for it (difs.host.migrate.HostMigration), if any
    migration: Any = None


def auth_methods(book: CredentialBook) -> list[str]:
    """The CHAP methods this host can log in with, from the credentials it was given: ``chap``
    when it has any CHAP secret, ``mutual_chap`` when one of them comes with the controller's
    (--mutual-chap). A host without secrets advertises none, so no policy that needs them is
    placed on it."""
    given = [s for s in (book.default, *book.per_target.values()) if s is not None]
    methods = []
    if any(s.chap for s in given):
        methods.append("chap")
    if any(s.chap and s.mutual for s in given):
        methods.append("mutual_chap")
    return methods


class HostManagerLink(NodeLink):
    offline_behaviour = "serving the applications already running"

    def __init__(self, host: Host, client: ManagerClient, *, node: str,
                 interval: float = 5.0, lease: float = 30.0,
                 store: BindingStore | None = None) -> None:
        super().__init__(client, node=node, log=log, interval=interval, lease=lease)
        self.host = host
        self.store = store
        self.followers: dict[str, Follower] = {}
        self._synced = False  # the manager has given its bindings since the host started
        self._store_tried = False
        self._saved: list[dict[str, Any]] | None = None
        self._save_failed = False
        self._states_refused = False
        self._fault: str | None = None
        self._pushes: set[asyncio.Task] = set()
        self.start_grace = START_GRACE
        #: the end of the last evidence window the manager accepted
        self._evidence_since = time.monotonic()
        self._evidence_log = RateLimitedLog(log, interval=60.0)

    # -- what the host says ---------------------------------------------------------

    def advertisement(self) -> Advertisement:
        paths = []
        for group in self.host.groups.values():
            luns = [a.lun for a in self.host.apps.values() if a.group is group]
            for path in group.paths:
                if path.negotiated is None:
                    continue
                flags = path.negotiated.flags
                paths.append({
                    "controller": group.controller, "channel": path.channel,
                    "portal": group.portal, "up": path.is_available(),
                    "negotiated": {
                        "header_digest": bool(flags & HEADER_DIGEST),
                        "data_digest": bool(flags & DATA_DIGEST),
                        "authentication": "mutual_chap" if flags & MUTUAL_AUTH
                        else "chap" if flags & AUTH else "none",
                        # PI is end to end: the path carries what the host generates and
                        # the units it uses through it are formatted with
                        "pi_types": path_pi_types(group.lun_pi, luns),
                        # what its socket really carries (read back), not what was asked
                        "dscp": path.negotiated.dscp if path.negotiated.dscp >= 0 else None,
                    },
                })
        return Advertisement.model_validate({
            "kind": "host", "iqn": self.host.config.initiator_name,
            "services": {"integrity": {"header_digest": True, "data_digest": True,
                                       "pi_types": list(HOST_PI_TYPES)},
                         "security": {"authentication": auth_methods(self.host.config.credentials)},
                         "qos": {"limit": True, "dscp_classes": sorted(
                             {c.dscp for c in self.host.config.channels if c.dscp is not None})}},
            "paths": paths, "lease_seconds": self.lease,
        })

    def _evidence_entries(self) -> list[Entry]:
        entries = []
        for app in list(self.host.apps.values()):
            paths = {p.channel: p for p in app.group.paths}
            for channel, tally in list(app.disk.tallies.items()):
                entries.append((app.name, app.controller, channel, tally, paths.get(channel)))
        return entries

    def stats_report(self) -> HostEvidenceReport:
        """The evidence since the last report the manager accepted (the baseline stays)."""
        return build_report(self._evidence_entries(), now=time.monotonic(),
                            since=self._evidence_since)[0]

    async def report_evidence(self) -> bool:
        """Send the window's evidence; the baseline advances only when the manager took it.
        A refusal or a fault is logged (rate-limited) and the link carries on."""
        try:
            report, pending = build_report(self._evidence_entries(), now=time.monotonic(),
                                           since=self._evidence_since)
            await self.call(self.client.report_host_evidence, self.node, report)
        except ManagerUnreachable:  # and 503: the round ends as any other call's would
            raise
        except ManagerError as exc:
            self._evidence_log("manager refused the evidence report", logging.WARNING,
                               status=exc.status, reason=str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a fault of the report never ends the link
            self._evidence_log("evidence report failed", logging.ERROR, reason=_reason(exc))
            return False
        self._evidence_since = accept(pending)
        return True

    # -- following the bindings ------------------------------------------------------

    async def sync_bindings(self, bindings: list[dict[str, Any]]) -> None:
        """Follow the manager's bindings: start, re-point, update or stop applications.

        Starting runs in each binding's own task, so one that waits for a path (up to
        ``--path-wait``) holds up neither the others nor the link; a fault of one
        binding becomes that binding's ``failed`` state and ends nothing else."""
        wanted: dict[str, dict[str, Any]] = {}
        for binding in bindings:
            if isinstance(binding, dict) and isinstance(binding.get("application"), str):
                wanted[binding["application"]] = binding
        stale = [n for n in self.followers if n not in wanted]
        # and those started outside the link (--app): the manager's list wins
        stale += [n for n in self.host.apps if n not in wanted and n not in stale]
        for name in stale:
            try:
                await self._forget(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # closing its paths failed: it is stopped all the same
                log_event(log, "application stop failed", level=logging.WARNING, app=name,
                          reason=_reason(exc))
        for name, binding in wanted.items():
            try:
                await self._follow(name, binding)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one binding's fault ends at that binding
                follower = self.followers.setdefault(name, Follower(name, None, 0))
                self._set(follower, FAILED, _reason(exc))

    async def _follow(self, name: str, binding: dict[str, Any]) -> None:
        version = int(binding.get("policy_version") or 0)
        requirement = requirement_of(binding)
        follower = self.followers.get(name)
        try:
            endpoint = endpoint_of(binding)
        except BindingError as exc:
            if follower is None or follower.endpoint is not None:
                await self._forget(name)
                follower = self.followers[name] = Follower(name, None, version)
            self._set(follower, FAILED, str(exc))
            return
        if follower is not None and migrate.follow(self, follower, binding, endpoint, version):
            return  # a migration runs (or has switched and waits for the manager's commit)
        if follower is None or follower.endpoint != endpoint:
            if follower is not None:  # moved (or now complete): start it where it is now
                await self._forget(name)
            follower = self.followers[name] = Follower(
                name, endpoint, version, since=asyncio.get_running_loop().time())
            self._launch(follower, requirement, version)
            return
        if follower.task is not None and not follower.task.done():
            return  # still starting; a newer policy is applied once it runs
        app = self.host.apps.get(name)
        if app is None:  # its start failed: again when due, or at once for a new policy
            if version != follower.version or asyncio.get_running_loop().time() >= follower.retry_at:
                self._launch(follower, requirement, version)
            return
        follower.version = version
        if app.policy_version == version or follower.refused_version == version:
            return
        try:
            self.host.update_policy(name, requirement=requirement, policy_name=f"v{version}",
                                    version=version)
        except Exception as exc:  # e.g. ProtectionUnavailable: nothing changed, tried once
            follower.refused_version = version
            self._set(follower, FAILED, f"policy version {version} cannot be applied: "
                      f"{_reason(exc)} (still running with version {app.policy_version})")
        else:
            follower.refused_version = None
            self._set(follower, RUNNING)

    def _launch(self, follower: Follower, requirement: Requirement, version: int) -> None:
        follower.version = version
        follower.refused_version = None
        follower.task = asyncio.create_task(self._start(follower, requirement, version),
                                            name=f"start {follower.name}")

    async def _start(self, follower: Follower, requirement: Requirement, version: int) -> None:
        ep = follower.endpoint
        assert ep is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.host.start_app(
                    follower.name, controller=ep.controller, portal=ep.portal, target=ep.target,
                    lun=ep.lun, requirement=requirement, policy_name=f"v{version}",
                    policy_version=version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the application does not start; the others are untouched
                now = loop.time()
                if follower.state == STARTING and now - follower.since < self.start_grace:
                    self._set(follower, STARTING, f"retrying: {_reason(exc)}")
                    await asyncio.sleep(RETRY_FIRST)
                    continue
                follower.attempts += 1
                follower.retry_at = now + min(RETRY_CAP, RETRY_FIRST * 2 ** (follower.attempts - 1))
                self._set(follower, FAILED, _reason(exc))
            else:
                follower.attempts = 0
                self._set(follower, RUNNING, None)
            break
        self._push_states_soon()

    async def _forget(self, name: str) -> None:
        follower = self.followers.pop(name, None)
        if follower is not None and follower.migration is not None:
            follower.migration.cancel()
        if follower is not None and follower.task is not None and not follower.task.done():
            follower.task.cancel()
            await asyncio.gather(follower.task, return_exceptions=True)
        if name in self.host.apps:
            await self.host.stop_app(name)

    def _set(self, follower: Follower, state: str, reason: str | None = None) -> None:
        if (follower.state, follower.reason) == (state, reason):
            return
        follower.state, follower.reason = state, reason
        if state == FAILED:  # once per binding and reason, not once per attempt
            log_event(log, "binding failed", level=logging.ERROR, app=follower.name,
                      reason=reason)

    # -- what the host says about its bindings ------------------------------------------

    def binding_states(self) -> dict[str, Any]:
        return {"bindings": [{"application": f.name, "state": f.state, "reason": f.reason,
                              "policy_version": f.version,
                              **({"migration": f.migration.report()} if f.migration is not None else {})}
                             for f in self.followers.values()]}

    async def confirm_switch(self, migration: migrate.HostMigration) -> bool:
        """A migration may pause the application and switch: the manager heard its ``pause``
        and holds the migration ``switching`` (it can no longer be aborted)."""
        try:
            await self.report_states()
            bindings = await self.call(self.client.host_bindings, self.node)
        except (ManagerUnreachable, ManagerError):
            return False
        mine = next((b for b in bindings if isinstance(b, dict) and b.get("application") == migration.name), {})
        wanted = mine.get("migration") or {}
        return wanted.get("id") == migration.id and wanted.get("state") == "switching"

    async def commit_switch(self, migration: migrate.HostMigration) -> bool | None:
        """Report a migration ``switched`` while the application's I/O is still held: True when
        the manager took it (it commits as it does), False when it refused or could not, None
        when no answer came (it may have committed) or a concurrent change made it retry."""
        try:
            await self.call(functools.partial(
                self.client.request, "PUT", f"/hosts/{self.node}/bindings/state",
                json=self.binding_states()))
        except ManagerUnavailable:
            return False
        except ManagerUnreachable:
            return None
        except ManagerError as exc:
            # 409: a concurrent request (an evidence report, an advertisement) changed the
            # application first and nothing was committed: the same report goes again
            return None if exc.status == 409 else False
        return True

    def push_states_soon(self) -> None:
        self._push_states_soon()

    async def report_states(self) -> None:
        try:
            await self.call(functools.partial(
                self.client.request, "PUT", f"/hosts/{self.node}/bindings/state",
                json=self.binding_states()))
        except ManagerError as exc:
            if not self._states_refused:
                log_event(log, "manager refused the bindings' states", level=logging.WARNING,
                          status=exc.status, reason=str(exc))
            self._states_refused = True
        else:
            self._states_refused = False

    def _push_states_soon(self) -> None:
        """Tell the manager a binding's new state now, not at the next exchange."""
        async def push() -> None:
            try:
                await self.report_states()
            except Exception:  # the next exchange reports it (and logs what is wrong)
                pass
        task = asyncio.create_task(push())
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    # -- the persisted bindings --------------------------------------------------------

    async def _persist(self, bindings: list[dict[str, Any]]) -> None:
        if self.store is None:
            return
        kept = persisted(bindings)
        if kept == self._saved:
            return
        try:
            await asyncio.to_thread(self.store.save, kept)
        except OSError as exc:
            if not self._save_failed:
                log_event(log, "cannot persist the bindings", level=logging.WARNING,
                          file=str(self.store.path), reason=exc.strerror or str(exc))
            self._save_failed = True
            return
        self._save_failed = False
        self._saved = kept

    async def _start_from_store(self) -> None:
        """At start, with the manager unreachable: the last bindings it gave, or none."""
        self._store_tried = True
        if self.store is None:
            return
        try:
            bindings = await asyncio.to_thread(self.store.load)
        except StateRefused as exc:
            log_event(log, "persisted bindings refused; none of them is started",
                      level=logging.ERROR, reason=str(exc))
            return
        if bindings is None:
            return
        log_event(log, "manager unreachable at start; starting the applications from persisted "
                  "state", file=str(self.store.path),
                  apps=",".join(str(b.get("application")) for b in bindings) or "-")
        self._saved = bindings
        await self.sync_bindings(bindings)

    # -- the loop -------------------------------------------------------------------------

    async def exchange(self) -> None:
        try:
            await self._exchange()
        except (ManagerUnreachable, ManagerError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a fault of the host's own: logged, and the link carries on
            reason = _reason(exc)
            if reason != self._fault:
                log.exception("manager link: %s", reason)
            self._fault = reason

    async def _exchange(self) -> None:
        try:
            await self.call(self.client.advertise, self.node, self.advertisement())
        except ManagerUnreachable:
            if not self._synced and not self._store_tried:
                await self._start_from_store()
            raise
        bindings = await self.call(self.client.host_bindings, self.node)
        self._synced = True
        await self._persist(bindings)
        await self.sync_bindings(bindings)
        await self.report_evidence()
        await self.report_states()
        self._fault = None

    async def stop_followers(self) -> None:
        """Cancel the starts in progress (the applications running are the host's to stop)."""
        for follower in self.followers.values():
            if follower.task is not None and not follower.task.done():
                follower.task.cancel()
            if follower.migration is not None:
                follower.migration.cancel()
        await asyncio.gather(*(f.task for f in self.followers.values() if f.task is not None),
                             *(f.migration.task for f in self.followers.values()
                               if f.migration is not None and f.migration.task is not None),
                             *self._pushes, return_exceptions=True)

    async def close(self) -> None:
        if self._task is not None:  # the loop first: it launches no start after this
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.stop_followers()
        await super().close()


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message if message else exc.__class__.__name__


def requirement_of(binding: dict[str, Any]) -> Requirement:
    services = binding.get("policy")
    return Requirement.from_policy(PolicyServices.model_validate(services) if services else None)


def endpoint_of(binding: dict[str, Any]) -> Endpoint:
    """Where the binding's (first) volume is: raises :class:`BindingError` when it says not."""
    volumes = binding.get("volumes") or []
    if not volumes:
        raise BindingError("the binding names no volume")
    volume = volumes[0]
    portals = volume.get("portals") or []
    if not portals or not volume.get("target_iqn"):
        raise BindingError(f"controller {volume.get('controller')} has advertised no portal "
                           "or target name")
    portal = format_portal(portals[0]["address"], portals[0].get("port", 3260))
    return Endpoint(volume["controller"], portal, volume["target_iqn"], int(volume["lun"]))
