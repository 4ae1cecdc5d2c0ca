"""Rows -> public API models."""

from __future__ import annotations

from difs.manager.models import ApplicationRow, ContainerRow, MigrationRow, NodeRow, VolumeRow
from difs.manager.schemas import (
    AppPolicyPublic,
    ApplicationPublic,
    BindingMigration,
    BindingPublic,
    BoundVolume,
    CompliancePublic,
    ContainerPublic,
    ControllerVolume,
    EvidenceSummary,
    NodePublic,
    ServiceCompliance,
    VolumePublic,
)
from difs.manager.services.common import services_of
from difs.policy import PathAdvert, PolicyServices, Portal, ServiceCapabilities, service_class


def node_public(row: NodeRow) -> NodePublic:
    return NodePublic(
        id=row.id,
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        iqn=row.iqn,
        services=None if row.capabilities is None else ServiceCapabilities.model_validate(row.capabilities),
        portals=[Portal.model_validate(p) for p in row.portals or ()],
        containers=sorted(c.name for c in row.containers),
        paths=[PathAdvert.model_validate(p) for p in row.paths or ()],
        lease_seconds=row.lease_seconds,
        lease_expires_at=row.lease_expires_at,
        last_advertised_at=row.last_advertised_at,
        created_at=row.created_at,
    )


def container_public(row: ContainerRow) -> ContainerPublic:
    allocated = sum(v.size_bytes for v in row.volumes)
    return ContainerPublic(
        id=row.id,
        controller=row.node.name,
        name=row.name,
        capacity_bytes=row.capacity_bytes,
        allocated_bytes=allocated,
        free_bytes=row.capacity_bytes - allocated,
        pi_types=row.pi_types or [],
        source=row.source,  # type: ignore[arg-type]
        advertised=row.advertised,
        volumes=len(row.volumes),
    )


def allowed_initiators(app: ApplicationRow) -> list[str]:
    return [app.initiator_iqn] if app.host_id is not None and app.initiator_iqn else []


def volume_public(row: VolumeRow) -> VolumePublic:
    return VolumePublic(
        id=row.id,
        name=row.name,
        application=row.application.name,
        controller=row.container.node.name,
        container=row.container.name,
        size_bytes=row.size_bytes,
        lun=row.lun,
        policy_version=row.policy_version,
        service_class=row.service_class,
        allowed_initiators=allowed_initiators(row.application),
    )


def controller_volume(row: VolumeRow) -> ControllerVolume:
    return ControllerVolume(
        id=row.id,
        name=row.name,
        application=row.application.name,
        container=row.container.name,
        size_bytes=row.size_bytes,
        lun=row.lun,
        policy=services_of(row.policy),
        policy_version=row.policy_version,
        service_class=row.service_class,
        allowed_initiators=allowed_initiators(row.application),
    )


def app_policy_public(app: ApplicationRow) -> AppPolicyPublic | None:
    services = services_of(app.services)
    if services is None:
        return None
    return AppPolicyPublic(
        application=app.name,
        source=app.policy_source,
        services=services,
        version=app.policy_version,
        service_class=service_class(services),
        summary=services.describe(),
    )


#: states of a migration still going (at most one per application)
ACTIVE_MIGRATION = ("copying", "switching")


def active_migration(app: ApplicationRow) -> MigrationRow | None:
    return next((m for m in reversed(app.migrations) if m.state in ACTIVE_MIGRATION), None)


def bound_volume(v: VolumeRow) -> BoundVolume:
    ctl = v.container.node
    return BoundVolume(
        volume_id=v.id,
        name=v.name,
        controller=ctl.name,
        container=v.container.name,
        target_iqn=ctl.iqn,
        portals=[Portal.model_validate(p) for p in ctl.portals or ()],
        lun=v.lun,
        size_bytes=v.size_bytes,
    )


def binding_migration(app: ApplicationRow, row: MigrationRow | None) -> BindingMigration | None:
    """What the bound host needs of a migration in progress (its new volume is not yet the
    application's: it is left out of the binding's volumes)."""
    new = None if row is None else next((v for v in app.volumes if v.name == row.target_volume), None)
    if row is None or new is None:
        return None
    services = services_of(row.services)
    return BindingMigration(
        id=row.id, state=row.state, source_volume=row.source_volume,  # type: ignore[arg-type]
        target=bound_volume(new), policy=services, policy_version=row.policy_version,
        service_class=service_class(services or PolicyServices()),
    )


def binding_public(app: ApplicationRow) -> BindingPublic | None:
    if app.host is None or app.initiator_iqn is None:
        return None
    services = services_of(app.services)
    migration = active_migration(app)
    volumes = [bound_volume(v) for v in app.volumes if migration is None or v.name != migration.target_volume]
    return BindingPublic(
        application=app.name,
        host=app.host.name,
        initiator_iqn=app.initiator_iqn,
        policy=services,
        policy_version=app.policy_version,
        service_class=service_class(services or PolicyServices()),
        volumes=volumes,
        state=app.host_state,  # type: ignore[arg-type]
        state_reason=app.host_state_reason,
        state_at=app.host_state_at,
        migration=binding_migration(app, migration),
    )


def compliance_public(app: ApplicationRow) -> CompliancePublic:
    data = app.compliance or {}
    return CompliancePublic(
        application=app.name,
        state=app.compliance_state,  # type: ignore[arg-type]
        evaluated_at=data.get("evaluated_at"),
        services=[ServiceCompliance.model_validate(s) for s in data.get("services", [])],
        fresh_seconds=data.get("fresh_seconds"),
        evidence=[EvidenceSummary.model_validate(e) for e in data.get("evidence", [])],
    )


def app_public(app: ApplicationRow) -> ApplicationPublic:
    return ApplicationPublic(
        id=app.id,
        name=app.name,
        policy=app_policy_public(app),
        volumes=[volume_public(v) for v in app.volumes],
        binding=binding_public(app),
        compliance=compliance_public(app),
        created_at=app.created_at,
        updated_at=app.updated_at,
    )
