"""API models, one family per entity: ``XCreate`` / ``XUpdate`` (input), ``XPublic`` (output).

Inputs are strict (unknown fields rejected, numbers range-checked); outputs are
what routes are typed to return, so the OpenAPI document describes every
response exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from difs.policy import (
    Advertisement,
    NodeKind,
    PathAdvert,
    PIType,
    PolicyServices,
    Portal,
    ServiceCapabilities,
    Unmet,
)
from difs.policy.services import NAME_PATTERN

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=63, examples=["db-prod"])]
Iqn = Annotated[
    str,
    Field(
        max_length=223,
        pattern=r"^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$",
        examples=["iqn.2025-01.org.difs:host-1"],
    ),
]
#: Volume sizes: a positive multiple of 4096 bytes, at most 1 PiB.
SizeBytes = Annotated[int, Field(ge=4096, le=1 << 50, multiple_of=4096)]

ComplianceState = Literal["compliant", "non_compliant", "unknown"]
NodeState = Literal["registered", "alive", "expired"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- problems ----------------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[str] | None = Field(None, description="each validation fault, in words")
    unmet: list[Unmet] | None = Field(None, description="requirements that cannot be met")
    rejected: list[RejectionPublic] | None = Field(None, description="placement candidates and why not")
    reasons: list[str] | None = Field(None, description="every reason a policy change was refused")
    current_version: int | None = None


# --- policies and tiers ------------------------------------------------------------------------


class PolicyCreate(_In):
    name: Name
    description: str = Field("", max_length=500)
    services: PolicyServices = Field(default_factory=PolicyServices)


class PolicyUpdate(_In):
    description: str | None = Field(None, max_length=500)
    services: PolicyServices | None = None


class PolicyPublic(BaseModel):
    name: str
    kind: Literal["policy", "tier"]
    builtin: bool
    description: str
    services: PolicyServices
    version: int
    service_class: int = Field(description="6-bit class for the CDB GROUP NUMBER field")
    summary: list[str]
    created_at: datetime
    updated_at: datetime


# --- nodes ---------------------------------------------------------------------------------------


class NodeRegister(_In):
    name: Name
    kind: NodeKind


class NodePublic(BaseModel):
    id: str
    name: str
    kind: NodeKind
    state: NodeState
    iqn: str | None
    services: ServiceCapabilities | None
    portals: list[Portal]
    containers: list[str]
    paths: list[PathAdvert]
    lease_seconds: float | None
    lease_expires_at: datetime | None
    last_advertised_at: datetime | None
    created_at: datetime


class NodeRegistered(BaseModel):
    node: NodePublic
    token: str = Field(description="the node's secret token: shown once, store it safely")


class AdvertisementIn(Advertisement):
    """A node's advertisement (see :class:`difs.policy.Advertisement`)."""


class AdvertisementAck(BaseModel):
    node: str
    state: NodeState
    lease_seconds: float
    lease_expires_at: datetime


# --- containers ----------------------------------------------------------------------------------


class ContainerCreate(_In):
    controller: Name
    name: Name
    capacity_bytes: Annotated[int, Field(ge=0, le=1 << 62)]
    pi_types: list[PIType] = Field(default_factory=list)


class ContainerUpdate(_In):
    capacity_bytes: Annotated[int, Field(ge=0, le=1 << 62)]


class ContainerPublic(BaseModel):
    id: str
    controller: str
    name: str
    capacity_bytes: int
    allocated_bytes: int
    free_bytes: int
    pi_types: list[PIType]
    source: Literal["declared", "advertised"]
    advertised: bool
    volumes: int


# --- placement -----------------------------------------------------------------------------------


class PolicyChoice(_In):
    """A policy given by catalogue name (a policy or a tier) or inline services — one of them."""

    policy: Name | None = Field(None, description="name of a policy or tier in the catalogue")
    services: PolicyServices | None = Field(None, description="inline services")

    @model_validator(mode="after")
    def _one(self) -> PolicyChoice:
        if (self.policy is None) == (self.services is None):
            raise ValueError("give exactly one of 'policy' (a policy or tier name) or 'services'")
        return self


class PlacementRequest(_In):
    size_bytes: SizeBytes
    policy: Name | None = None
    services: PolicyServices | None = None
    host: Name | None = Field(None, description="place where this host can reach")


class PlacementChoicePublic(BaseModel):
    controller: str
    container: str
    host: str | None


class RejectionPublic(BaseModel):
    kind: Literal["container", "host"]
    candidate: str
    reasons: list[str]


class PlacementPublic(BaseModel):
    feasible: bool
    choice: PlacementChoicePublic | None
    rejected: list[RejectionPublic]


# --- applications, the depository, volumes -------------------------------------------------------


class AppPolicyPublic(BaseModel):
    """getDIFS: an application's policy as stored in the central depository."""

    application: str
    source: str | None = Field(description="the catalogue policy or tier it was taken from")
    services: PolicyServices
    version: int
    service_class: int
    summary: list[str]
    migration: MigrationPublic | None = Field(
        None, description="the migration this change started (202): the policy becomes this one when it is done")


class AppPolicySet(PolicyChoice):
    """addDIFS / updateDIFS body."""

    migrate: bool = Field(
        False, description="move the data to a new volume when the change needs it (otherwise such a change is refused)")


class ApplicationCreate(_In):
    name: Name
    size_bytes: SizeBytes
    policy: Name | None = Field(None, description="policy or tier name; omit for no policy")
    services: PolicyServices | None = None
    host: Name | None = Field(None, description="place where this host can reach")

    @model_validator(mode="after")
    def _not_both(self) -> ApplicationCreate:
        if self.policy is not None and self.services is not None:
            raise ValueError("give either 'policy' (a policy or tier name) or 'services', not both")
        return self


class VolumeCreate(_In):
    application: Name
    size_bytes: SizeBytes
    name: Name | None = None


class VolumeResize(_In):
    size_bytes: SizeBytes


class VolumePublic(BaseModel):
    id: str
    name: str
    application: str
    controller: str
    container: str
    size_bytes: int
    lun: int
    policy_version: int
    service_class: int
    allowed_initiators: list[str]


class ControllerVolume(BaseModel):
    """A volume as its controller must serve it: the mirror of the depository entry."""

    id: str
    name: str
    application: str
    container: str
    size_bytes: int
    lun: int
    block_size: int = 512
    policy: PolicyServices | None
    policy_version: int
    service_class: int
    allowed_initiators: list[str]


class ServiceCompliance(BaseModel):
    service: str
    expected: str
    observed: str
    state: ComplianceState


class EvidenceSummary(BaseModel):
    """One fresh evidence entry behind a compliance judgement: a controller's session x volume
    (``side="controller"``) or a host's application x path (``side="host"``)."""

    side: Literal["controller", "host"]
    node: str = Field(description="the node that reported it")
    controller: str
    channel: int
    volume: str | None = Field(None, description="controller side: the volume")
    initiator: str | None = Field(None, description="controller side: the session's initiator")
    services: list[str] = Field(description="what the session's login settled, in words (empty: nothing)")
    ios: int = Field(description="commands (controller) or I/Os (host) in the window")
    bytes: int
    refused: int = Field(description="commands refused by the controller in the window")
    p50_ms: float | None = Field(None, description="upper bound of the bucket holding the median latency")
    p99_ms: float | None = None
    window_seconds: float
    age_seconds: float = Field(description="how long before the evaluation the window ended")


class CompliancePublic(BaseModel):
    application: str
    state: ComplianceState
    evaluated_at: datetime | None
    services: list[ServiceCompliance]
    fresh_seconds: float | None = Field(None, description="evidence older than this did not count")
    evidence: list[EvidenceSummary] = Field(default_factory=list)


class BindRequest(_In):
    initiator_iqn: Iqn
    host: Name | None = Field(None, description="the host node (implied for a host's own token)")


class BoundVolume(BaseModel):
    volume_id: str
    name: str
    controller: str
    container: str
    target_iqn: str | None
    portals: list[Portal]
    lun: int
    size_bytes: int


BindingStateName = Literal["starting", "running", "failed"]


class BindingPublic(BaseModel):
    application: str
    host: str
    initiator_iqn: str
    policy: PolicyServices | None
    policy_version: int
    service_class: int
    volumes: list[BoundVolume]
    state: BindingStateName | None = Field(
        None, description="what the host last reported: starting, running or failed (None: nothing yet)")
    state_reason: str | None = Field(None, description="why it failed, as the host said")
    state_at: datetime | None = None
    migration: BindingMigration | None = Field(
        None, description="a copy the host must make: the application's data to a new volume")


class BindingState(_In):
    """One binding as its host sees it."""

    application: Name
    state: BindingStateName
    reason: Annotated[str, Field(max_length=2000)] | None = None
    policy_version: Annotated[int, Field(ge=0, le=1 << 31)] = 0
    migration: MigrationReport | None = None


MigrationState = Literal["copying", "switching", "done", "aborted", "failed"]
MigrationPhase = Literal["waiting", "copy", "recopy", "pause", "switched", "failed"]


class MigrationPublic(BaseModel):
    """GET /apps/{name}/migration: a policy change that moves the data, and how far it got."""

    id: str
    application: str
    state: MigrationState
    phase: MigrationPhase | None = Field(None, description="what the host last said it does")
    source_volume: str
    target_volume: str
    target_controller: str
    policy_source: str | None
    policy_version: int = Field(description="the version the policy gets when the migration is done")
    reasons: list[str] = Field(description="why the data must move")
    bytes_copied: int
    bytes_total: int
    pause_ms: float | None = Field(None, description="how long the application's I/O was paused at the switch")
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class BindingMigration(BaseModel):
    """What the bound host needs to copy the data: the new volume and the policy it carries."""

    id: str
    state: MigrationState
    source_volume: str
    target: BoundVolume
    policy: PolicyServices | None
    policy_version: int
    service_class: int


class MigrationReport(_In):
    """The host's word on a migration it runs (in its bindings' state report)."""

    id: Annotated[str, Field(max_length=36)]
    phase: MigrationPhase
    bytes_copied: Annotated[int, Field(ge=0, le=1 << 62)] = 0
    bytes_total: Annotated[int, Field(ge=0, le=1 << 62)] = 0
    pause_ms: Annotated[float, Field(ge=0, le=1e9)] | None = None
    error: Annotated[str, Field(max_length=2000)] | None = None


class BindingStatesReport(_In):
    """A host's report of the state of every binding it follows."""

    bindings: list[BindingState] = Field(max_length=10_000)


class ApplicationPublic(BaseModel):
    id: str
    name: str
    policy: AppPolicyPublic | None
    volumes: list[VolumePublic]
    binding: BindingPublic | None
    compliance: CompliancePublic
    created_at: datetime
    updated_at: datetime


class ApplicationCreated(ApplicationPublic):
    placement: PlacementPublic


# --- statistics, evidence, events, health ----------------------------------------------------------------

Count = Annotated[int, Field(ge=0, le=1 << 62)]


class PathStat(_In):
    application: Name
    controller: Name
    channel: Annotated[int, Field(ge=0, le=65535)]
    ios: Count = 0
    bytes: Count = 0
    rejected: Count = 0
    digest_errors: Count = 0
    pi_errors: Count = 0
    qos_waits: Count = Field(0, description="I/Os that waited for QoS tokens at the host")
    latency_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None


class PathStatsReport(_In):
    window_seconds: Annotated[float, Field(gt=0, le=86_400)]
    paths: list[PathStat] = Field(max_length=10_000)


class StatsAck(BaseModel):
    accepted: int


class IgnoredEvidence(BaseModel):
    entry: str = Field(description="the entry, e.g. 'volume db-0 initiator iqn... channel 0'")
    reason: str


class EvidenceAck(BaseModel):
    """What the manager did with an evidence report: entries stored, and each one ignored with why."""

    accepted: int
    ignored: list[IgnoredEvidence] = Field(default_factory=list)


class EventPublic(BaseModel):
    id: int
    at: datetime
    kind: str
    subject: str
    message: str
    data: dict[str, object]


class Health(BaseModel):
    #: "degraded": the manager runs but its database does not answer (API requests get 503)
    status: Literal["ok", "degraded"]
    version: str
    database: str
    database_up: bool = True
    #: why the database is down (the driver's error class), and for how long, when it is
    database_error: str | None = None
    database_down_seconds: float | None = None
