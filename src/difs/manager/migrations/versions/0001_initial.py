"""initial schema: policies, nodes, containers, applications, volumes, path_stats, events

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from difs.manager.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("iqn", sa.String(223), nullable=True),
        sa.Column("capabilities", sa.JSON(), nullable=True),
        sa.Column("portals", sa.JSON(), nullable=False),
        sa.Column("paths", sa.JSON(), nullable=False),
        sa.Column("lease_seconds", sa.Float(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_advertised_at", UTCDateTime(), nullable=True),
        sa.Column("advertisements", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_nodes_lease_expires_at", "nodes", ["lease_expires_at"])
    op.create_table(
        "containers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("node_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("capacity_bytes", sa.BigInteger(), nullable=False),
        sa.Column("pi_types", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("advertised", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("node_id", "name", name="uq_containers_node_name"),
    )
    op.create_table(
        "applications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("policy_source", sa.String(63), nullable=True),
        sa.Column("services", sa.JSON(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=True),
        sa.Column("initiator_iqn", sa.String(223), nullable=True),
        sa.Column("bound_at", UTCDateTime(), nullable=True),
        sa.Column("compliance_state", sa.String(16), nullable=False),
        sa.Column("compliance", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("application_id", sa.String(36), sa.ForeignKey("applications.id"), nullable=False),
        sa.Column("container_id", sa.String(36), sa.ForeignKey("containers.id"), nullable=False),
        sa.Column("controller_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("lun", sa.Integer(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("service_class", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("controller_id", "lun", name="uq_volumes_controller_lun"),
    )
    op.create_table(
        "path_stats",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("host_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("application_id", sa.String(36), sa.ForeignKey("applications.id"), nullable=False),
        sa.Column("controller", sa.String(63), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("ios", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("digest_errors", sa.BigInteger(), nullable=False),
        sa.Column("pi_errors", sa.BigInteger(), nullable=False),
        sa.Column("qos_waits", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("host_id", "application_id", "controller", "channel", name="uq_path_stats"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_at", "events", ["at"])
    op.create_index("ix_events_kind", "events", ["kind"])


def downgrade() -> None:
    for table in ("events", "path_stats", "volumes", "applications", "containers", "nodes", "policies"):
        op.drop_table(table)
