"""Configuration of the iSCSI cores: plain dataclasses, validated on construction.

``PortalConfig`` / ``TargetConfig`` describe what a target portal offers; ``InitiatorConfig`` what
an initiator asks for. Sizes follow RFC 7143 chapter 13 (512 .. 2**24-1 bytes).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .chap import ALGORITHMS, DEFAULT_ALGORITHMS

_MAX_LEN = (1 << 24) - 1


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    user: str
    secret: bytes | str

    def __repr__(self) -> str:  # never print secrets
        return f"ChapCredentials(user={self.user!r}, secret=***)"


@dataclass(slots=True)
class TargetConfig:
    """One iSCSI target (IQN) behind a portal. LUN dispatch is the adapter's business."""

    name: str
    alias: str | None = None
    allowed_initiators: frozenset[str] | None = None  # None = any initiator
    chap: ChapCredentials | None = None  # the initiator must authenticate with these
    mutual_chap: ChapCredentials | None = None  # the target's own credentials (mutual CHAP)
    require_header_digest: bool = False
    require_data_digest: bool = False
    luns: frozenset[int] = frozenset()

    def allows(self, initiator_name: str) -> bool:
        return self.allowed_initiators is None or initiator_name in self.allowed_initiators


def _check_length(name: str, value: int) -> None:
    if not 512 <= value <= _MAX_LEN:
        raise ValueError(f"{name}={value} is out of range 512..{_MAX_LEN}")


@dataclass(slots=True)
class PortalConfig:
    """A target portal group: its addresses, targets and the session parameters it offers.

    ``initial_r2t=False`` and ``immediate_data=True`` let writes up to ``first_burst_length``
    travel without waiting for an R2T (the result is still the RFC's OR/AND with the initiator's
    wish). ``command_window`` is the CmdSN window (queue depth) granted per session.
    """

    addresses: list[str]
    portal_group_tag: int = 1
    targets: dict[str, TargetConfig] = field(default_factory=dict)
    discovery_auth: ChapCredentials | None = None
    discovery_mutual_chap: ChapCredentials | None = None
    max_recv_data_segment_length: int = 262144
    first_burst_length: int = 262144
    max_burst_length: int = 1048576
    immediate_data: bool = True
    initial_r2t: bool = False
    max_outstanding_r2t: int = 8
    max_connections: int = 1
    default_time2wait: int = 2
    default_time2retain: int = 20
    command_window: int = 128
    nop_interval: float | None = None
    nop_timeout: float = 30.0
    login_timeout: float = 30.0
    chap_algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS
    random_bytes: Callable[[int], bytes] = secrets.token_bytes

    def __post_init__(self) -> None:
        for name in ("max_recv_data_segment_length", "first_burst_length", "max_burst_length"):
            _check_length(name, getattr(self, name))
        if self.first_burst_length > self.max_burst_length:
            raise ValueError("first_burst_length must not exceed max_burst_length")
        if not 0 <= self.portal_group_tag <= 0xFFFF:
            raise ValueError("portal_group_tag must fit in 16 bits")
        if not 1 <= self.command_window <= 1 << 20:
            raise ValueError("command_window out of range")
        unknown = set(self.chap_algorithms) - set(ALGORITHMS)
        if unknown:
            raise ValueError(f"unknown CHAP algorithms {sorted(unknown)}")


@dataclass(slots=True)
class InitiatorConfig:
    """What an initiator connection asks for. ``target_name=None`` means a Discovery session.

    ``header_digest`` / ``data_digest`` are offered lists in preference order, e.g.
    ``("CRC32C",)`` to require digests or ``("CRC32C", "None")`` to prefer them.
    ``mutual_chap`` holds the credentials the *target* must prove (mutual CHAP).
    """

    initiator_name: str
    isid: int
    target_name: str | None = None
    alias: str | None = None
    tsih: int = 0
    cid: int = 0
    chap: ChapCredentials | None = None
    mutual_chap: ChapCredentials | None = None
    chap_algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS
    header_digest: tuple[str, ...] = ("None",)
    data_digest: tuple[str, ...] = ("None",)
    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 262144
    immediate_data: bool = True
    initial_r2t: bool = False
    max_outstanding_r2t: int = 8
    max_connections: int = 1
    default_time2wait: int = 2
    default_time2retain: int = 0  # nothing to retain: difs re-sends on another path
    initial_cmdsn: int = 1
    nop_timeout: float = 30.0
    login_timeout: float = 30.0
    random_bytes: Callable[[int], bytes] = secrets.token_bytes

    def __post_init__(self) -> None:
        for name in ("max_recv_data_segment_length", "first_burst_length", "max_burst_length"):
            _check_length(name, getattr(self, name))
        if not 0 <= self.isid < 1 << 48:
            raise ValueError("isid must fit in 48 bits")
        if self.mutual_chap is not None and self.chap is None:
            raise ValueError("mutual CHAP needs one-way CHAP credentials too")
        for digests in (self.header_digest, self.data_digest):
            if not digests or set(digests) - {"None", "CRC32C"}:
                raise ValueError(f"digest list {digests} must name None and/or CRC32C")
