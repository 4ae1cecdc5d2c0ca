"""All the paths (channels) from this host to one controller target, kept up.

A ``PathGroup`` opens one session per :class:`~difs.host.paths.ChannelSpec`
(channel 0 with CRC32C digests, channel 1 plain, by default), records what
each *actually* negotiated, and re-establishes a lost path with exponential
backoff. Anyone waiting for a path to (re)appear awaits :meth:`changed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from difs.host.paths import DEFAULT_CHANNELS, ChannelSpec, Path, PathState
from difs.host.session import IscsiSession, LoginError
from difs.iscsi.config import ChapCredentials, InitiatorConfig
from difs.policy.fast import NegotiatedServices
from difs.util.logs import log_event

log = logging.getLogger("difs.host")


def negotiated_services(session: IscsiSession) -> NegotiatedServices:
    s = session.session
    auth = "none"
    if s.auth_method == "CHAP":
        auth = "mutual_chap" if s.mutual else "chap"
    return NegotiatedServices(header_digest=s.header_digest, data_digest=s.data_digest,
                              authentication=auth)


class PathGroup:
    def __init__(self, *, controller: str, portal: str, target: str, initiator_name: str,
                 channels: Sequence[ChannelSpec] = DEFAULT_CHANNELS,
                 chap: ChapCredentials | None = None, mutual_chap: ChapCredentials | None = None,
                 backoff: tuple[float, float] = (0.2, 5.0)) -> None:
        self.controller = controller
        self.portal = portal
        self.target = target
        self.initiator_name = initiator_name
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.backoff = backoff
        self.paths = [Path(spec, controller=controller, portal=portal, target=target)
                      for spec in channels]
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    def config_for(self, spec: ChannelSpec) -> InitiatorConfig:
        return InitiatorConfig(
            initiator_name=self.initiator_name, isid=spec.isid, target_name=self.target,
            chap=self.chap, mutual_chap=self.mutual_chap,
            header_digest=("CRC32C",) if spec.header_digest else ("None",),
            data_digest=("CRC32C",) if spec.data_digest else ("None",),
        )

    async def start(self, *, wait: float = 15.0) -> None:
        """Open every channel; return once each has logged in or failed once."""
        first = [asyncio.get_running_loop().create_future() for _ in self.paths]
        for path, fut in zip(self.paths, first):
            self._tasks.append(asyncio.create_task(self._keep_up(path, fut)))
        await asyncio.wait_for(asyncio.gather(*first), wait)

    async def _keep_up(self, path: Path, first: asyncio.Future) -> None:
        delay = self.backoff[0]
        while not self._closing:
            try:
                session = await IscsiSession.connect(self.portal, self.config_for(path.spec),
                                                     name=path.name())
            except (OSError, asyncio.TimeoutError, LoginError) as exc:
                path.state = PathState.DOWN
                if not first.done():
                    first.set_result(None)
                    log_event(log, "path login failed", level=logging.WARNING, path=path.name(),
                              target=self.target, reason=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            path.session = session
            path.negotiated = negotiated_services(session)
            path.state = PathState.UP
            self._notify()
            log_event(log, "path up", path=path.name(), target=self.target,
                      channel=path.channel, services=path.negotiated)
            if not first.done():
                first.set_result(None)
            await session.closed
            path.state = PathState.CLOSED if self._closing else PathState.DOWN
            self._notify()

    def mark_failed(self, path: Path) -> None:
        """A command saw the path break: stop choosing it until it is re-established."""
        if path.state is PathState.UP:
            path.state = PathState.DOWN
            path.errors += 1
            self._notify()
            if path.session is not None:
                path.session.abort()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    async def close(self) -> None:
        self._closing = True
        for path in self.paths:
            if path.session is not None and path.session.is_up:
                await path.session.logout()
            path.state = PathState.CLOSED
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
