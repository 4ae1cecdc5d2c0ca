"""What nodes can do: capability advertisements from hosts, controllers and switches.

Every node periodically sends the manager an :class:`Advertisement`: the
services it offers with their parameters and limits, its portals, its storage
containers (controllers), and the paths it has established with the services
each negotiated (hosts). An advertisement holds for ``lease_seconds``; a node
that stops renewing it loses its capabilities.

A service capability says what the node can take part in, from its side of a
path: a host that offers ``data_digest`` can negotiate DataDigest=CRC32C; a
controller that offers PI type 1 can check it; a switch that lists DSCP 34 will
honour that class. Whether a whole path meets a policy is decided by
:func:`difs.policy.satisfaction.unmet`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from difs.policy.fast import NegotiatedServices
from difs.policy.services import MAX_BYTES_PER_SECOND, MAX_IOPS, NAME_PATTERN, AuthMethod, PIType
from difs.policy.services import parse_dscp

__all__ = [
    "NodeKind",
    "IntegrityCapability",
    "SecurityCapability",
    "QosCapability",
    "IsolationCapability",
    "ServiceCapabilities",
    "Portal",
    "ContainerAdvert",
    "NegotiatedServicesModel",
    "PathAdvert",
    "Advertisement",
]

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Vlan = Annotated[int, Field(ge=1, le=4094)]


class NodeKind(StrEnum):
    HOST = "host"
    CONTROLLER = "controller"
    SWITCH = "switch"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _dscp_list(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return sorted({parse_dscp(v) for v in value})
    return value


class IntegrityCapability(_Strict):
    header_digest: bool = False
    data_digest: bool = False
    pi_types: list[PIType] = Field(default_factory=list, description="T10 PI types supported")


class SecurityCapability(_Strict):
    authentication: list[AuthMethod] = Field(
        default_factory=list, description="chap and/or mutual_chap"
    )
    tls: bool = False
    at_host_encryption: bool = Field(False, description="hosts: AES-XTS before sending")


class QosCapability(_Strict):
    reservation: bool = Field(False, description="can guarantee reservations (controller)")
    limit: bool = Field(False, description="can enforce limits (controller or host)")
    weight: bool = Field(False, description="proportional shares (controller)")
    latency_target: bool = Field(False, description="schedules for a latency target (controller)")
    dscp_classes: list[int] = Field(
        default_factory=list, description="DSCP code points this node marks (host) or honours"
    )
    max_iops: Annotated[int, Field(ge=0, le=MAX_IOPS)] | None = Field(
        None, description="IOPS the node can reserve in total"
    )
    max_bytes_per_second: Annotated[int, Field(ge=0, le=MAX_BYTES_PER_SECOND)] | None = None
    min_latency_ms: Annotated[float, Field(ge=0, le=60_000)] | None = Field(
        None, description="best latency the node can give"
    )

    _dscp = field_validator("dscp_classes", mode="before")(classmethod(lambda cls, v: _dscp_list(v)))


class IsolationCapability(_Strict):
    exclusive: bool = Field(False, description="per-volume LUN masking / access lists")
    tags: bool = Field(False, description="keeps a path per isolation domain")
    vlans: list[Vlan] = Field(default_factory=list)


class ServiceCapabilities(_Strict):
    """Per-service capabilities of a node; a missing service means "offers nothing of it"."""

    integrity: IntegrityCapability = Field(default_factory=IntegrityCapability)
    security: SecurityCapability = Field(default_factory=SecurityCapability)
    qos: QosCapability = Field(default_factory=QosCapability)
    isolation: IsolationCapability = Field(default_factory=IsolationCapability)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(
                    "unknown service " + ", ".join(repr(u) for u in unknown)
                    + ": the services are integrity, security, qos, isolation"
                )
        return data


class Portal(_Strict):
    """A network endpoint of a controller (iSCSI portal)."""

    address: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\-\[\]%]+$")
    port: int = Field(3260, ge=1, le=65535)
    tls: bool = False
    vlan: Vlan | None = None

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address and not self.address.startswith("[") else self.address
        return f"{host}:{self.port}"


class ContainerAdvert(_Strict):
    """A storage container a controller holds volumes in."""

    name: Name
    capacity_bytes: int = Field(ge=0, le=1 << 62)
    pi_types: list[PIType] = Field(
        default_factory=list, description="PI formats the container can store"
    )


class NegotiatedServicesModel(_Strict):
    """The services one established path negotiated (the wire/JSON form)."""

    header_digest: bool = False
    data_digest: bool = False
    pi_types: list[PIType] = Field(default_factory=list)
    authentication: AuthMethod = AuthMethod.NONE
    tls: bool = False
    dscp: int | None = None
    vlan: Vlan | None = None
    isolation_tag: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None

    @field_validator("dscp", mode="before")
    @classmethod
    def _dscp(cls, value: Any) -> Any:
        return None if value is None else parse_dscp(value)

    def compile(self) -> NegotiatedServices:
        """The hot-path form, for :func:`difs.policy.fast.path_satisfies`."""
        return NegotiatedServices(
            header_digest=self.header_digest,
            data_digest=self.data_digest,
            pi_types=[int(t) for t in self.pi_types],
            authentication=self.authentication.value,
            tls=self.tls,
            dscp=self.dscp,
            vlan=self.vlan,
            isolation_tag=self.isolation_tag,
        )


class PathAdvert(_Strict):
    """An established path (channel) from a host to a controller."""

    controller: Name = Field(description="name of the controller node")
    channel: int = Field(ge=0, le=65535)
    portal: str = Field(min_length=1, max_length=300)
    via: list[Name] = Field(default_factory=list, description="switches on the path, in order")
    negotiated: NegotiatedServicesModel = Field(default_factory=NegotiatedServicesModel)
    up: bool = True


class Advertisement(_Strict):
    """Everything a node tells the manager about itself, valid for ``lease_seconds``."""

    kind: NodeKind
    iqn: str | None = Field(
        None,
        max_length=223,
        pattern=r"^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$",
        description="initiator name (host) or target name (controller)",
    )
    services: ServiceCapabilities = Field(default_factory=ServiceCapabilities)
    portals: list[Portal] = Field(default_factory=list, max_length=64)
    containers: list[ContainerAdvert] = Field(default_factory=list, max_length=1024)
    paths: list[PathAdvert] = Field(default_factory=list, max_length=4096)
    lease_seconds: float = Field(30.0, ge=1.0, le=3600.0)

    @model_validator(mode="after")
    def _fits_kind(self) -> Advertisement:
        if self.containers and self.kind != NodeKind.CONTROLLER:
            raise ValueError("only a controller advertises storage containers")
        if self.paths and self.kind != NodeKind.HOST:
            raise ValueError("only a host advertises established paths")
        names = [c.name for c in self.containers]
        if len(names) != len(set(names)):
            raise ValueError("container names must be unique within an advertisement")
        return self
