"""All the paths (channels) from this host to one controller target, kept up.

A ``PathGroup`` opens one session per :class:`~difs.host.paths.ChannelSpec`
(channel 0 with CRC32C digests, channel 1 plain, by default), records what
each *actually* negotiated — digests and authentication (none, chap,
mutual_chap) — and re-establishes a lost path with exponential backoff and
jitter (:class:`~difs.host.recovery.ReconnectBackoff`: a path that breaks right
after its login is retried ever more slowly).
Each path has a :class:`~difs.host.recovery.ResendBudget`: :meth:`fault` says how long a
command that failed a digest or PI check on it waits before it is sent again, and marks the
path degraded (selection prefers another satisfying path) while it keeps failing.
Anyone waiting for a path to (re)appear awaits :meth:`changed`.

What each login settled is kept on its path in the evidence form (``Path.services``: digests,
authentication, the local address). ``lun_pi`` holds the T10 PI format of each logical unit
the host opened through the group, as its READ CAPACITY(16) reported it when its disk opened
(:meth:`difs.host.disk.AppDisk.open`): the host advertises only the PI types its paths to
those units can really carry.

A path keeps its ISID (the channel number is its qualifier) across reconnects,
so a reconnect is a new leading login of the same initiator port: the
controller *reinstates* the session, ending whatever the old connection left
behind before the new session runs a command (RFC 7143 6.3.5).

CHAP credentials come from a :class:`CredentialBook`: one pair for every
controller today (``difs host --chap``), per-target entries when they are
configured, without changing anything here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from difs.host.paths import DEFAULT_CHANNELS, ChannelSpec, Path, PathState
from difs.host.connection import DEFAULT_TIMERS, IscsiSession, SessionTimers
from difs.host.errors import LoginError
from difs.host.evidence import session_services
from difs.host.recovery import ReconnectBackoff, ResendBudget
from difs.iscsi.config import ChapCredentials, InitiatorConfig
from difs.policy.fast import NegotiatedServices
from difs.util.logs import RateLimitedEvent, log_event

log = logging.getLogger("difs.host")

_degraded = RateLimitedEvent(log, "path degraded: it keeps corrupting data, other satisfying "
                             "paths are preferred", level=logging.WARNING, burst=5)


def parse_chap(text: str, *, option: str = "--chap") -> ChapCredentials:
    """``USER:SECRET`` -> credentials (the secret may itself contain ``:``)."""
    user, sep, secret = text.partition(":")
    if not sep or not user or not secret:
        raise ValueError(f"{option}: write USER:SECRET")
    return ChapCredentials(user, secret)


@dataclass(frozen=True, slots=True)
class ChapSecrets:
    """What this host proves (``chap``) and, for mutual CHAP, what the controller must prove."""

    chap: ChapCredentials
    mutual: ChapCredentials | None = None


@dataclass(frozen=True)
class CredentialBook:
    """CHAP credentials by controller target IQN or portal; ``default`` for all others."""

    default: ChapSecrets | None = None
    per_target: Mapping[str, ChapSecrets] = field(default_factory=dict)

    def for_target(self, *, portal: str, target: str) -> ChapSecrets | None:
        return self.per_target.get(target) or self.per_target.get(portal) or self.default


def _login_problem(exc: Exception, chap: ChapCredentials | None) -> str:
    """The reason a login failed, with what to check when it is authentication."""
    text = str(exc)
    if not (isinstance(exc, LoginError) and exc.authentication_failed):
        return text
    if "mutual" in text.lower():
        hint = ("the controller did not prove the --mutual-chap credentials; check them against "
                "the controller's --mutual-chap for this volume")
    elif chap is None:
        hint = "the controller requires CHAP and this host has no --chap credentials"
    else:
        hint = (f"the controller refused CHAP user {chap.user!r}; check `difs host --chap` "
                "against the controller's --chap for this volume")
    return f"{text}: authentication failed: {hint}"


class PathGroup:
    def __init__(self, *, controller: str, portal: str, target: str, initiator_name: str,
                 channels: Sequence[ChannelSpec] = DEFAULT_CHANNELS,
                 chap: ChapCredentials | None = None, mutual_chap: ChapCredentials | None = None,
                 timers: SessionTimers = DEFAULT_TIMERS,
                 backoff: tuple[float, float] = (0.2, 5.0)) -> None:
        if mutual_chap is not None and chap is None:
            raise ValueError("mutual CHAP needs this host's own CHAP credentials too (--chap)")
        self.controller = controller
        self.portal = portal
        self.target = target
        self.initiator_name = initiator_name
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.timers = timers
        self.backoff = backoff
        self.paths = [Path(spec, controller=controller, portal=portal, target=target)
                      for spec in channels]
        #: channel -> why it is down (the last login or connection failure)
        self.last_error: dict[int, str] = {}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._budgets = {p.channel: ResendBudget() for p in self.paths}
        #: LUN -> the T10 PI type its READ CAPACITY(16) reported when it was opened (0: none)
        self.lun_pi: dict[int, int] = {}
        self._undegrade: dict[int, asyncio.TimerHandle] = {}

    def config_for(self, spec: ChannelSpec) -> InitiatorConfig:
        return InitiatorConfig(
            initiator_name=self.initiator_name, isid=spec.isid, target_name=self.target,
            chap=self.chap, mutual_chap=self.mutual_chap,
            header_digest=("CRC32C",) if spec.header_digest else ("None",),
            data_digest=("CRC32C",) if spec.data_digest else ("None",),
            nop_timeout=self.timers.nop_timeout, login_timeout=self.timers.login_timeout,
        )

    async def start(self, *, wait: float | None = None) -> None:
        """Open every channel; return once each has logged in or failed once."""
        first = [asyncio.get_running_loop().create_future() for _ in self.paths]
        for path, fut in zip(self.paths, first):
            self._tasks.append(asyncio.create_task(self._keep_up(path, fut)))
        await asyncio.wait_for(asyncio.gather(*first),
                               wait if wait is not None else self.timers.login_timeout + 5)

    async def _keep_up(self, path: Path, first: asyncio.Future) -> None:
        backoff = ReconnectBackoff(*self.backoff)
        loop = asyncio.get_running_loop()
        reported: str | None = None  # the failure already logged for this outage
        while not self._closing:
            try:
                session = await IscsiSession.connect(self.portal, self.config_for(path.spec),
                                                     name=path.name(), timers=self.timers,
                                                     dscp=path.spec.dscp)
            except (OSError, TimeoutError, LoginError) as exc:
                path.state = PathState.DOWN
                problem = _login_problem(exc, self.chap).removeprefix(f"{path.name()}: ")
                self.last_error[path.channel] = problem
                if problem != reported:  # once per outage and cause, not once per retry
                    reported = problem
                    log_event(log, "path login failed", level=logging.WARNING, path=path.name(),
                              target=self.target, reason=problem)
                if not first.done():
                    first.set_result(None)
                await asyncio.sleep(backoff.failed())
                continue
            backoff.up(loop.time())
            reported = None
            self.last_error.pop(path.channel, None)
            session.on_drain = lambda why, path=path: self._drain(path, why)
            path.session = session
            path.negotiated = NegotiatedServices.from_login(session.session.params,
                                                            dscp=session.dscp)
            path.services = session_services(path.negotiated, session.interface)
            path.state = PathState.UP
            self._notify()
            log_event(log, "path up", path=path.name(), target=self.target,
                      channel=path.channel, services=path.negotiated)
            if not first.done():
                first.set_result(None)
            reason = await session.closed
            if not self._closing:
                self.last_error[path.channel] = f"connection lost: {reason}"
            path.state = PathState.CLOSED if self._closing else PathState.DOWN
            self._notify()
            if not self._closing and (wait := backoff.dropped(loop.time())) > 0:
                await asyncio.sleep(wait)

    def mark_failed(self, path: Path) -> None:
        """A command saw the path break: stop choosing it until it is re-established."""
        if path.state is PathState.UP:
            path.state = PathState.DOWN
            path.errors += 1
            self._notify()
            if path.session is not None:
                path.session.abort()

    def fault(self, path: Path) -> float:
        """A command failed a digest or PI check on ``path``: seconds before it is sent
        again (0: at once); the path is degraded while it keeps doing that."""
        loop = asyncio.get_running_loop()
        budget = self._budgets[path.channel]
        wait = budget.fault(loop.time())
        if budget.degraded(loop.time()) and not path.degraded:
            path.degraded = True
            _degraded(path=path.name(), target=self.target, hold=f"{budget.hold:g}s")
            self._undegrade_later(path)
        return wait

    def _undegrade_later(self, path: Path) -> None:
        until = self._budgets[path.channel].degraded_until()
        self._undegrade[path.channel] = asyncio.get_running_loop().call_at(
            until, self._undegrade_now, path)

    def _undegrade_now(self, path: Path) -> None:
        if self._budgets[path.channel].degraded(asyncio.get_running_loop().time()):
            self._undegrade_later(path)  # it failed again meanwhile
            return
        path.degraded = False
        self._undegrade.pop(path.channel, None)
        log_event(log, "path no longer degraded", path=path.name(), target=self.target)
        self._notify()

    def _drain(self, path: Path, why: str) -> None:
        """The controller asked the path's session to log out: stop choosing it now (its
        commands in flight finish); it is re-established once the logout is done."""
        if path.state is PathState.UP:
            path.state = PathState.DOWN
            self.last_error[path.channel] = why
            self._notify()

    def describe_down(self) -> str:
        """Why paths are down: ``"ch0, ch1 down: <reason>"``, channels grouped by reason
        ("" when all are up)."""
        reasons: dict[str, list[str]] = {}
        for p in self.paths:
            if p.state is not PathState.UP:
                why = self.last_error.get(p.channel, p.state.value)
                reasons.setdefault(why, []).append(f"ch{p.channel}")
        return "; ".join(f"{', '.join(chs)} down: {why}" for why, chs in reasons.items())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    async def close(self) -> None:
        self._closing = True
        for handle in self._undegrade.values():
            handle.cancel()
        for path in self.paths:
            if path.session is not None and path.session.is_up:
                await path.session.logout()
            path.state = PathState.CLOSED
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
