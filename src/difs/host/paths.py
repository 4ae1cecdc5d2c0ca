"""Paths (channels) from this host to a controller, and what each negotiated.

A *path* is one iSCSI session to one controller target, opened with a given
set of services (a :class:`ChannelSpec`). Its channel number is carried in the
ISID qualifier, so the controller — and anyone reading its logs — can tell the
channels of one host apart. After login the path records what was *actually*
negotiated (:class:`~difs.policy.fast.NegotiatedServices`); selection only ever
trusts that record, never the wish.

Paths expose pure predicates — :meth:`Path.satisfies`, :meth:`Path.is_available`
— so that selection (``difs.host.selection``) is a synchronous decision made
before any I/O happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from difs.policy.fast import NegotiatedServices, Requirement, path_satisfies
from difs.policy.services import parse_dscp

#: OUI-format ISID (type 00b) prefix shared by every difs host; the low bytes
#: are the channel number (qualifier), so ISIDs differ per channel.
ISID_PREFIX = 0x023D_0000_0000


def isid_for_channel(channel: int) -> int:
    if not 0 <= channel <= 0xFFFF:
        raise ValueError(f"channel {channel} does not fit the ISID qualifier (0..65535)")
    return ISID_PREFIX | channel


@dataclass(frozen=True)
class ChannelSpec:
    """The services a channel asks for when it logs in."""

    channel: int
    header_digest: bool = False
    data_digest: bool = False
    label: str = ""
    #: the DSCP class its packets are marked with (None: not marked)
    dscp: int | None = None

    @property
    def isid(self) -> int:
        return isid_for_channel(self.channel)

    def describe(self) -> str:
        parts = [p for p, on in (("header-digest", self.header_digest),
                                 ("data-digest", self.data_digest)) if on]
        return self.label or ("+".join(parts) if parts else "plain")


_KINDS = {
    "digests": dict(header_digest=True, data_digest=True),
    "header": dict(header_digest=True),
    "plain": {},
}


def parse_channels(text: str) -> tuple[ChannelSpec, ...]:
    """``"digests,plain"`` -> channel 0 with both digests, channel 1 plain;
    ``"digests:af41,plain"``: channel 0's packets also marked with DSCP AF41 (34)."""
    specs = []
    for number, item in enumerate(k.strip() for k in text.split(",")):
        kind, sep, dscp = item.partition(":")
        if kind not in _KINDS:
            raise ValueError(f"unknown channel kind {kind!r}; use {', '.join(_KINDS)} "
                             "(comma-separated, one per channel, e.g. digests,plain), "
                             "each optionally with :DSCP (e.g. digests:af41)")
        try:
            marked = parse_dscp(dscp) if sep else None
        except ValueError as exc:
            raise ValueError(f"channel {number} ({item}): {exc}") from None
        specs.append(ChannelSpec(number, label=kind, dscp=marked, **_KINDS[kind]))
    return tuple(specs)


#: The default channel plan: channel 0 with both CRC32C digests, channel 1 plain.
DEFAULT_CHANNELS = (
    ChannelSpec(0, header_digest=True, data_digest=True, label="digests"),
    ChannelSpec(1, label="plain"),
)


class PathState(Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"  # lost; reconnecting with backoff
    CLOSED = "closed"


class Path:
    """One established (or re-establishing) channel. Mutable counters, no I/O."""

    __slots__ = ("spec", "controller", "portal", "target", "negotiated", "state",
                 "outstanding", "ios", "bytes", "errors", "_session", "digest_history",
                 "degraded", "services", "refused_digests", "_digest_errors_before")

    def __init__(self, spec: ChannelSpec, *, controller: str, portal: str, target: str) -> None:
        self.spec = spec
        self.controller = controller
        self.portal = portal
        self.target = target
        self.negotiated: NegotiatedServices | None = None
        self.state = PathState.CONNECTING
        self.outstanding = 0
        self.ios = 0
        self.bytes = 0
        self.errors = 0
        self._session: Any = None
        #: (digests, bytes) of the sessions this path had before the current one
        self.digest_history = (0, 0)
        #: it corrupted data often of late (``difs.host.recovery.ResendBudget``): selection
        #: prefers another satisfying path while this is set
        self.degraded = False
        #: what the current login settled, in the evidence form
        #: (:class:`~difs.policy.evidence.SessionServices`; None before the first login)
        self.services: Any = None
        #: commands the controller aborted because their data failed its CRC32C check
        self.refused_digests = 0
        self._digest_errors_before = 0

    @property
    def session(self) -> Any:
        """The adapter's session object (``difs.host.connection.IscsiSession``)."""
        return self._session

    @session.setter
    def session(self, session: Any) -> None:
        old = self._session
        core = getattr(old, "core", None)
        if core is not None and old is not session:
            count, covered = core.digest_work
            self.digest_history = (self.digest_history[0] + count,
                                   self.digest_history[1] + covered)
        if old is not None and old is not session:
            self._digest_errors_before += getattr(old, "digest_errors", 0)
        self._session = session

    @property
    def digest_errors(self) -> int:
        """CRC32C digest errors on this path: found by the host (its sessions, before and now)
        and reported by the controller (ABORTED COMMAND 47h/05h)."""
        return (self.refused_digests + self._digest_errors_before
                + getattr(self._session, "digest_errors", 0))

    @property
    def channel(self) -> int:
        return self.spec.channel

    def is_available(self) -> bool:
        return self.state is PathState.UP

    def satisfies(self, requirement: Requirement) -> bool:
        return self.negotiated is not None and path_satisfies(self.negotiated, requirement)

    def name(self) -> str:
        return f"{self.controller}/ch{self.channel}"

    def __repr__(self) -> str:
        degraded = " degraded" if self.degraded else ""
        return f"<Path {self.name()} {self.state.value}{degraded} {self.negotiated!r}>"
