"""evidence from the data path: session_evidence (controllers) and path_evidence (hosts) replace path_stats

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from difs.manager.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_evidence",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("controller_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("volume_id", sa.String(36), sa.ForeignKey("volumes.id"), nullable=False),
        sa.Column("initiator", sa.String(223), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("controller_id", "volume_id", "initiator", "channel", name="uq_session_evidence"),
    )
    op.create_index("ix_session_evidence_volume_id", "session_evidence", ["volume_id"])
    op.create_table(
        "path_evidence",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("host_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("application_id", sa.String(36), sa.ForeignKey("applications.id"), nullable=False),
        sa.Column("controller", sa.String(63), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("host_id", "application_id", "controller", "channel", name="uq_path_evidence"),
    )
    op.create_index("ix_path_evidence_application_id", "path_evidence", ["application_id"])
    # the per-path statistics hosts sent before evidence: no longer read by anything
    op.drop_table("path_stats")


def downgrade() -> None:
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
    op.drop_index("ix_path_evidence_application_id", "path_evidence")
    op.drop_table("path_evidence")
    op.drop_index("ix_session_evidence_volume_id", "session_evidence")
    op.drop_table("session_evidence")
