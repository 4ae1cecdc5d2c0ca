"""The manager's tables (SQLAlchemy 2 declarative). Schema changes go through Alembic.

JSON columns hold validated pydantic dumps (capabilities, policy services,
compliance reports, evidence); they are re-validated when read back by the services.
Times are stored as naive UTC and come back timezone-aware (``UTCDateTime``),
the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class PolicyRow(Base):
    """A named policy document in the catalogue; ``kind`` is ``policy`` or ``tier``."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    services: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class NodeRow(Base):
    """A registered host, controller or switch and its latest advertisement."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="registered")
    iqn: Mapped[str | None] = mapped_column(String(223), nullable=True)
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    portals: Mapped[list[Any]] = mapped_column(JSON, default=list)
    paths: Mapped[list[Any]] = mapped_column(JSON, default=list)
    lease_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    last_advertised_at: Mapped[datetime | None] = mapped_column(nullable=True)
    advertisements: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]

    containers: Mapped[list[ContainerRow]] = relationship(back_populates="node")


class ContainerRow(Base):
    """A storage container on a controller: declared by an admin or advertised by the controller."""

    __tablename__ = "containers"
    __table_args__ = (UniqueConstraint("node_id", "name", name="uq_containers_node_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    name: Mapped[str] = mapped_column(String(63))
    capacity_bytes: Mapped[int] = mapped_column(BigInteger)
    pi_types: Mapped[list[Any]] = mapped_column(JSON, default=list)
    source: Mapped[str] = mapped_column(String(16))  # declared | advertised
    advertised: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]

    node: Mapped[NodeRow] = relationship(back_populates="containers")
    volumes: Mapped[list[VolumeRow]] = relationship(back_populates="container")


class ApplicationRow(Base):
    """An application and its entry in the central depository (its policy, versioned)."""

    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    policy_source: Mapped[str | None] = mapped_column(String(63), nullable=True)
    services: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    policy_version: Mapped[int] = mapped_column(Integer, default=0)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), nullable=True)
    initiator_iqn: Mapped[str | None] = mapped_column(String(223), nullable=True)
    bound_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: what the bound host last reported of this binding: starting | running | failed
    host_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    host_state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    host_state_at: Mapped[datetime | None] = mapped_column(nullable=True)
    compliance_state: Mapped[str] = mapped_column(String(16), default="unknown")
    compliance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    host: Mapped[NodeRow | None] = relationship()
    volumes: Mapped[list[VolumeRow]] = relationship(
        back_populates="application", order_by="VolumeRow.created_at"
    )
    migrations: Mapped[list[MigrationRow]] = relationship(
        order_by="MigrationRow.created_at", viewonly=True
    )


class VolumeRow(Base):
    """A volume (VVOL) in a container, with the mirror of its application's policy."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("controller_id", "lun", name="uq_volumes_controller_lun"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"))
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id"))
    controller_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    lun: Mapped[int] = mapped_column(Integer)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    policy_version: Mapped[int] = mapped_column(Integer, default=0)
    service_class: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    application: Mapped[ApplicationRow] = relationship(back_populates="volumes")
    container: Mapped[ContainerRow] = relationship(back_populates="volumes")


class SessionEvidenceRow(Base):
    """The latest window a controller reported for one session x one volume
    (:class:`difs.policy.evidence.SessionEvidence` in ``data``)."""

    __tablename__ = "session_evidence"
    __table_args__ = (
        UniqueConstraint("controller_id", "volume_id", "initiator", "channel", name="uq_session_evidence"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    controller_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    initiator: Mapped[str] = mapped_column(String(223))
    channel: Mapped[int] = mapped_column(Integer)
    window_seconds: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    reported_at: Mapped[datetime]


class PathEvidenceRow(Base):
    """The latest window a host reported for one application on one path
    (:class:`difs.policy.evidence.PathEvidence` in ``data``)."""

    __tablename__ = "path_evidence"
    __table_args__ = (
        UniqueConstraint("host_id", "application_id", "controller", "channel", name="uq_path_evidence"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"), index=True)
    controller: Mapped[str] = mapped_column(String(63))
    channel: Mapped[int] = mapped_column(Integer)
    window_seconds: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    reported_at: Mapped[datetime]


class EventRow(Base):
    """Something that happened: registrations, lease expiries, policy changes, compliance."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MigrationRow(Base):
    """A policy change that moves the application's data to a new volume (host-driven copy).

    ``state``: ``copying`` (the new volume exists, the host copies), ``switching`` (the host
    pauses the application to switch; no abort from here), then ``done``, ``aborted`` or
    ``failed``. The policy (``services``, ``policy_version``) becomes the application's at
    ``done``; until then the application keeps its old one."""

    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)
    source_volume: Mapped[str] = mapped_column(String(63))
    target_volume: Mapped[str] = mapped_column(String(63))
    target_controller: Mapped[str] = mapped_column(String(63))
    policy_source: Mapped[str | None] = mapped_column(String(63), nullable=True)
    services: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    policy_version: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    bytes_copied: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    pause_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
