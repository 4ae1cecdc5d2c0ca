"""Hot-path form of policies and paths: integer flags, no validation per call.

The host's path selector and the controller's per-I/O check ask one question
millions of times a second: *do the services this path negotiated satisfy what
this I/O's policy requires?* Answering it with pydantic models would cost
microseconds; here both sides are compiled once into small slotted objects
holding a bit mask plus the few values that must match exactly, and
:func:`path_satisfies` is a mask test and (rarely) three comparisons.

What a path negotiated comes from its iSCSI login in one place,
:meth:`NegotiatedServices.from_login` (a login's ``NegotiatedParams`` -> digests and
CHAP / mutual CHAP); the controller's per-I/O guard and the host's path selection
both use it.

Only **path properties** live here: digests, PI, authentication, TLS, DSCP
marking and the isolation domain (tag / VLAN). QoS rates, exclusive access and
at-host encryption are enforced by the controller's scheduler, its LUN masking
and the host's cipher, not by choosing a path. A :class:`Requirement` also
carries the policy's limits (``limit_iops``, ``limit_bytes_per_second``) for the
host, which holds its application's I/O to them before it chooses a path
(:mod:`difs.host.ratelimit`); they take no part in satisfaction or equality.

The **service class** is the low six bits of the flag mask: a number 0..63
that fits the SCSI GROUP NUMBER field of a READ/WRITE(16) CDB. The host puts
its application's class in every CDB; the controller decodes it with
:meth:`Requirement.from_service_class`, and can check both that the session
satisfies it and that it covers the volume's own class
(:func:`class_covers`). Class 0 means "no requirement", which is what a
standard initiator sends. Bit layout::

    bit 0  CRC32C header digest        bit 3  CHAP (one-way or mutual)
    bit 1  CRC32C data digest          bit 4  TLS 1.3
    bit 2  T10 protection information  bit 5  isolation domain (tag / VLAN)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from difs.iscsi.params import NegotiatedParams

__all__ = [
    "HEADER_DIGEST",
    "DATA_DIGEST",
    "PI",
    "AUTH",
    "TLS",
    "ISOLATED",
    "MUTUAL_AUTH",
    "PI_TYPE1",
    "PI_TYPE3",
    "SERVICE_CLASS_MASK",
    "NegotiatedServices",
    "Requirement",
    "path_satisfies",
    "class_covers",
    "describe_flags",
]

HEADER_DIGEST = 1 << 0
DATA_DIGEST = 1 << 1
PI = 1 << 2
AUTH = 1 << 3
TLS = 1 << 4
ISOLATED = 1 << 5
MUTUAL_AUTH = 1 << 6
PI_TYPE1 = 1 << 7
PI_TYPE3 = 1 << 8

#: The bits that make up a service class (GROUP NUMBER is 6 bits wide).
SERVICE_CLASS_MASK = 0x3F

_FLAG_NAMES = (
    (HEADER_DIGEST, "header digest"),
    (DATA_DIGEST, "data digest"),
    (PI, "protection information"),
    (AUTH, "CHAP"),
    (TLS, "TLS"),
    (ISOLATED, "isolation domain"),
    (MUTUAL_AUTH, "mutual CHAP"),
    (PI_TYPE1, "PI type 1"),
    (PI_TYPE3, "PI type 3"),
)


def describe_flags(flags: int) -> list[str]:
    """Human names of the bits set in ``flags``."""
    return [name for bit, name in _FLAG_NAMES if flags & bit]


def _pi_flags(pi_types: Iterable[int]) -> int:
    flags = 0
    for t in pi_types:
        t = int(t)
        if t == 1:
            flags |= PI | PI_TYPE1
        elif t == 3:
            flags |= PI | PI_TYPE3
        else:
            raise ValueError(f"PI type {t} is not supported (1 or 3)")
    return flags


#: (AuthMethod, mutual CHAP) an iSCSI login settled -> the policy's authentication
_LOGIN_AUTHENTICATION = {
    ("None", False): "none",
    ("CHAP", False): "chap",
    ("CHAP", True): "mutual_chap",
}


def _auth_flags(authentication: str) -> int:
    a = str(authentication)
    if a in ("none", "AuthMethod.NONE", ""):
        return 0
    if a in ("chap", "AuthMethod.CHAP"):
        return AUTH
    if a in ("mutual_chap", "AuthMethod.MUTUAL_CHAP"):
        return AUTH | MUTUAL_AUTH
    raise ValueError(f"unknown authentication {authentication!r}")


class NegotiatedServices:
    """What one established path (channel) actually negotiated. Build once per login."""

    __slots__ = ("flags", "dscp", "vlan", "isolation_tag")

    def __init__(
        self,
        *,
        header_digest: bool = False,
        data_digest: bool = False,
        pi_types: Iterable[int] = (),
        authentication: str = "none",
        tls: bool = False,
        dscp: int | None = None,
        vlan: int | None = None,
        isolation_tag: str | None = None,
    ) -> None:
        flags = _pi_flags(pi_types) | _auth_flags(getattr(authentication, "value", authentication))
        if header_digest:
            flags |= HEADER_DIGEST
        if data_digest:
            flags |= DATA_DIGEST
        if tls:
            flags |= TLS
        if vlan is not None or isolation_tag is not None:
            flags |= ISOLATED
        self.flags = flags
        self.dscp = -1 if dscp is None else int(dscp)
        self.vlan = -1 if vlan is None else int(vlan)
        self.isolation_tag = isolation_tag

    @classmethod
    def from_login(cls, params: NegotiatedParams, *, dscp: int | None = None) -> NegotiatedServices:
        """The services an iSCSI login gives its path: CRC32C header and data digests, and
        CHAP (one-way, or mutual when the target proved itself too); ``dscp``: the class its
        socket is marked with (read back from the socket). Build once per login."""
        try:
            authentication = _LOGIN_AUTHENTICATION[params.auth_method, params.mutual_chap]
        except KeyError:
            raise ValueError(f"AuthMethod={params.auth_method} with mutual CHAP "
                             f"{params.mutual_chap} is not a service") from None
        return cls(header_digest=params.header_digest, data_digest=params.data_digest,
                   authentication=authentication, dscp=dscp)

    def __repr__(self) -> str:
        return (
            f"NegotiatedServices(flags={describe_flags(self.flags)}, dscp={self.dscp}, "
            f"vlan={self.vlan}, isolation_tag={self.isolation_tag!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NegotiatedServices) and (
            self.flags,
            self.dscp,
            self.vlan,
            self.isolation_tag,
        ) == (other.flags, other.dscp, other.vlan, other.isolation_tag)

    def __hash__(self) -> int:
        return hash((self.flags, self.dscp, self.vlan, self.isolation_tag))


class Requirement:
    """The path properties a policy requires, compiled. Build once per policy version.

    ``needs_match`` is true when a DSCP class, VLAN or isolation tag must equal
    the path's; otherwise satisfaction is a single mask test.
    """

    __slots__ = ("flags", "dscp", "vlan", "isolation_tag", "needs_match", "service_class",
                 "limit_iops", "limit_bytes_per_second")

    def __init__(
        self,
        *,
        flags: int = 0,
        dscp: int | None = None,
        vlan: int | None = None,
        isolation_tag: str | None = None,
        limit_iops: int | None = None,
        limit_bytes_per_second: int | None = None,
    ) -> None:
        if vlan is not None or isolation_tag is not None:
            flags |= ISOLATED
        self.flags = flags
        self.dscp = -1 if dscp is None else int(dscp)
        self.vlan = -1 if vlan is None else int(vlan)
        self.isolation_tag = isolation_tag
        self.needs_match = self.dscp >= 0 or self.vlan >= 0 or isolation_tag is not None
        self.service_class = flags & SERVICE_CLASS_MASK
        self.limit_iops = limit_iops or None  # (the host's limit: 0 or None is no limit)
        self.limit_bytes_per_second = limit_bytes_per_second or None

    @classmethod
    def from_service_class(cls, service_class: int) -> Requirement:
        """What a CDB's GROUP NUMBER promises (coarse: no PI type, no tag or VLAN values)."""
        if not 0 <= service_class <= SERVICE_CLASS_MASK:
            raise ValueError(f"service class {service_class} is out of range 0..63")
        return cls(flags=service_class)

    @classmethod
    def from_policy(cls, services: object) -> Requirement:
        """Compile a :class:`~difs.policy.services.PolicyServices` (or ``None``: no requirement)."""
        if services is None:
            return NO_REQUIREMENT
        flags = 0
        dscp = vlan = tag = limit_iops = limit_bps = None
        integrity = getattr(services, "integrity", None)
        if integrity is not None:
            if integrity.header_digest:
                flags |= HEADER_DIGEST
            if integrity.data_digest:
                flags |= DATA_DIGEST
            if integrity.protection_information is not None:
                flags |= _pi_flags((integrity.protection_information,))
        security = getattr(services, "security", None)
        if security is not None:
            flags |= _auth_flags(security.authentication.value)
            if security.tls:
                flags |= TLS
        qos = getattr(services, "qos", None)
        if qos is not None:
            dscp = qos.dscp
            limit_iops, limit_bps = qos.limit_iops, qos.limit_bytes_per_second
        isolation = getattr(services, "isolation", None)
        if isolation is not None:
            vlan = isolation.vlan
            tag = isolation.tag
        return cls(flags=flags, dscp=dscp, vlan=vlan, isolation_tag=tag,
                   limit_iops=limit_iops, limit_bytes_per_second=limit_bps)

    def __repr__(self) -> str:
        return (
            f"Requirement(flags={describe_flags(self.flags)}, dscp={self.dscp}, "
            f"vlan={self.vlan}, isolation_tag={self.isolation_tag!r}, "
            f"service_class={self.service_class})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Requirement) and (
            self.flags,
            self.dscp,
            self.vlan,
            self.isolation_tag,
        ) == (other.flags, other.dscp, other.vlan, other.isolation_tag)

    def __hash__(self) -> int:
        return hash((self.flags, self.dscp, self.vlan, self.isolation_tag))


NO_REQUIREMENT = Requirement()


def path_satisfies(negotiated: NegotiatedServices, requirement: Requirement) -> bool:
    """True when a path that negotiated ``negotiated`` may carry I/O needing ``requirement``."""
    rf = requirement.flags
    if negotiated.flags & rf != rf:
        return False
    if not requirement.needs_match:
        return True
    if requirement.dscp >= 0 and negotiated.dscp != requirement.dscp:
        return False
    if requirement.vlan >= 0 and negotiated.vlan != requirement.vlan:
        return False
    tag = requirement.isolation_tag
    return tag is None or negotiated.isolation_tag == tag


def class_covers(tag_class: int, required_class: int) -> bool:
    """True when an I/O tagged ``tag_class`` asks for at least what ``required_class`` needs."""
    return tag_class & required_class == required_class
