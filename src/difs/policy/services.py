"""The four data-in-flight services and the policy document that names them.

A *policy* says which services an application's I/O needs, with parameters:

- ``integrity``  — CRC32C header/data digests on the iSCSI path; T10 Protection
  Information (type 1 or 3) generated at the host, checked at the controller,
  stored with the data.
- ``security``   — CHAP or mutual CHAP authentication, TLS 1.3 on the channel,
  AES-XTS encryption at the host (the controller stores ciphertext).
- ``qos``        — reservation and limit in IOPS and bytes/s, a proportional
  share weight, a latency target and a DSCP class for the channel's packets.
- ``isolation``  — exclusive access (only the bound host's initiator sees the
  volume), an isolation tag (a path per isolation domain) and a VLAN.

Every model here is strict: unknown services or fields are rejected with a
message that lists what is known, and numbers are range-checked, so a policy
that validates is one the rest of difs can act on. These are the documents
users write; the hot-path form of a policy is
:class:`difs.policy.fast.Requirement`.
"""

from __future__ import annotations

import re
from enum import IntEnum, StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AuthMethod",
    "PIType",
    "IntegrityService",
    "SecurityService",
    "QosService",
    "IsolationService",
    "PolicyServices",
    "SERVICE_NAMES",
    "DSCP_CLASSES",
    "parse_dscp",
    "NAME_PATTERN",
]

#: Names of policies, tiers, applications, nodes, containers and volumes.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)

#: Upper bounds on numbers, to keep nonsense out (and integers inside 64 bits).
MAX_IOPS = 100_000_000
MAX_BYTES_PER_SECOND = 1 << 50  # 1 PiB/s
MAX_WEIGHT = 10_000
MAX_LATENCY_MS = 60_000.0


class AuthMethod(StrEnum):
    """Authentication on an iSCSI path (RFC 7143 CHAP, one-way or mutual)."""

    NONE = "none"
    CHAP = "chap"
    MUTUAL_CHAP = "mutual_chap"


class PIType(IntEnum):
    """T10 Protection Information type (SBC-4): 1 = ref tag is the LBA, 3 = opaque ref tag."""

    TYPE1 = 1
    TYPE3 = 3


#: DSCP per-hop-behaviour names (RFC 2474, 2597, 3246, 5865) -> code point.
DSCP_CLASSES: dict[str, int] = {
    "default": 0,
    "be": 0,
    **{f"cs{i}": i * 8 for i in range(8)},
    **{f"af{c}{d}": c * 8 + d * 2 for c in range(1, 5) for d in range(1, 4)},
    "ef": 46,
    "voice-admit": 44,
}


def parse_dscp(value: int | str) -> int:
    """A DSCP code point from an integer 0..63 or a class name (``"af41"``, ``"ef"``)."""
    if isinstance(value, bool):
        raise ValueError("DSCP must be a number 0..63 or a class name like 'af41' or 'ef'")
    if isinstance(value, int):
        if not 0 <= value <= 63:
            raise ValueError(f"DSCP {value} is out of range: a code point is 0..63")
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        if key.isdigit():
            return parse_dscp(int(key))
        if key in DSCP_CLASSES:
            return DSCP_CLASSES[key]
        raise ValueError(
            f"unknown DSCP class {value!r}: use 0..63 or one of "
            + ", ".join(sorted(k for k in DSCP_CLASSES if k not in ("be", "voice-admit")))
        )
    raise ValueError("DSCP must be a number 0..63 or a class name like 'af41' or 'ef'")


class _Strict(BaseModel):
    """Base of every policy model: no unknown fields, no silent coercion of strings to bools."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class IntegrityService(_Strict):
    """Integrity: corrupt data is never stored or returned silently."""

    header_digest: bool = Field(False, description="CRC32C HeaderDigest on the path")
    data_digest: bool = Field(False, description="CRC32C DataDigest on the path")
    protection_information: PIType | None = Field(
        None, description="T10 PI type (1 or 3) generated at the host and checked end to end"
    )

    @property
    def empty(self) -> bool:
        return not (self.header_digest or self.data_digest or self.protection_information)


class SecurityService(_Strict):
    """Security: only the right parties talk; nobody reads the data in flight."""

    authentication: AuthMethod = Field(AuthMethod.NONE, description="none, chap or mutual_chap")
    tls: bool = Field(False, description="TLS 1.3 (mutual, manager-issued certificates)")
    at_host_encryption: bool = Field(
        False, description="AES-XTS at the host: the controller stores ciphertext"
    )

    @property
    def empty(self) -> bool:
        return self.authentication == AuthMethod.NONE and not self.tls and not self.at_host_encryption


IopsInt = Annotated[int, Field(ge=0, le=MAX_IOPS)]
BpsInt = Annotated[int, Field(ge=0, le=MAX_BYTES_PER_SECOND)]


class QosService(_Strict):
    """QoS: the application gets its reservation and never exceeds its limit."""

    reservation_iops: IopsInt | None = None
    limit_iops: IopsInt | None = None
    reservation_bytes_per_second: BpsInt | None = None
    limit_bytes_per_second: BpsInt | None = None
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT)] | None = Field(
        None, description="proportional share among applications on a controller (1..10000)"
    )
    latency_target_ms: Annotated[float, Field(gt=0, le=MAX_LATENCY_MS)] | None = None
    dscp: int | None = Field(
        None, description="DSCP code point 0..63 (class names such as 'af41' or 'ef' accepted)"
    )

    @field_validator("dscp", mode="before")
    @classmethod
    def _dscp(cls, value: Any) -> Any:
        return None if value is None else parse_dscp(value)

    @model_validator(mode="after")
    def _reservation_within_limit(self) -> QosService:
        for unit in ("iops", "bytes_per_second"):
            res = getattr(self, f"reservation_{unit}")
            lim = getattr(self, f"limit_{unit}")
            if res is not None and lim is not None and res > lim:
                raise ValueError(
                    f"reservation_{unit} ({res}) is above limit_{unit} ({lim}): "
                    "a reservation must fit inside the limit"
                )
        return self

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in type(self).model_fields)


class IsolationService(_Strict):
    """Isolation: the application's volumes are reachable only through its own paths."""

    exclusive: bool = Field(
        False, description="only the bound host's initiator may see the volume (LUN masking)"
    )
    tag: str | None = Field(
        None, description="isolation domain: I/O travels only on paths carrying this tag"
    )
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(
                "an isolation tag is 1-63 characters of a-z, 0-9, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @property
    def empty(self) -> bool:
        return not self.exclusive and self.tag is None and self.vlan is None


SERVICE_NAMES = ("integrity", "security", "qos", "isolation")


class PolicyServices(_Strict):
    """The services a policy requires. A missing service means "not required"."""

    integrity: IntegrityService | None = None
    security: SecurityService | None = None
    qos: QosService | None = None
    isolation: IsolationService | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_services(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in SERVICE_NAMES)
            if unknown:
                raise ValueError(
                    f"unknown service{'s' if len(unknown) > 1 else ''} "
                    + ", ".join(repr(u) for u in unknown)
                    + ": the services are "
                    + ", ".join(SERVICE_NAMES)
                )
        return data

    def normalized(self) -> PolicyServices:
        """The same requirements with empty services dropped (so equal policies compare equal)."""
        return PolicyServices(
            **{
                name: svc
                for name in SERVICE_NAMES
                if (svc := getattr(self, name)) is not None and not svc.empty
            }
        )

    @property
    def empty(self) -> bool:
        return all(
            (svc := getattr(self, name)) is None or svc.empty for name in SERVICE_NAMES
        )

    def describe(self) -> list[str]:
        """Short human phrases for each requirement (for tables and messages)."""
        out: list[str] = []
        i, s, q, iso = self.integrity, self.security, self.qos, self.isolation
        if i:
            if i.header_digest:
                out.append("header digest")
            if i.data_digest:
                out.append("data digest")
            if i.protection_information:
                out.append(f"PI type {int(i.protection_information)}")
        if s:
            if s.authentication != AuthMethod.NONE:
                out.append(s.authentication.value.replace("_", " "))
            if s.tls:
                out.append("TLS 1.3")
            if s.at_host_encryption:
                out.append("AES-XTS at host")
        if q:
            if q.reservation_iops is not None:
                out.append(f"reserve {q.reservation_iops} IOPS")
            if q.limit_iops is not None:
                out.append(f"limit {q.limit_iops} IOPS")
            if q.reservation_bytes_per_second is not None:
                out.append(f"reserve {q.reservation_bytes_per_second} B/s")
            if q.limit_bytes_per_second is not None:
                out.append(f"limit {q.limit_bytes_per_second} B/s")
            if q.weight is not None:
                out.append(f"weight {q.weight}")
            if q.latency_target_ms is not None:
                out.append(f"latency <= {q.latency_target_ms:g} ms")
            if q.dscp is not None:
                out.append(f"DSCP {q.dscp}")
        if iso:
            if iso.exclusive:
                out.append("exclusive")
            if iso.tag is not None:
                out.append(f"isolation tag {iso.tag}")
            if iso.vlan is not None:
                out.append(f"VLAN {iso.vlan}")
        return out
