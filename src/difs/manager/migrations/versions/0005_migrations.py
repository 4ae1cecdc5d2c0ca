"""migrations: a policy change that moves an application's data to a new volume

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from difs.manager.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("application_id", sa.String(36), sa.ForeignKey("applications.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=True),
        sa.Column("source_volume", sa.String(63), nullable=False),
        sa.Column("target_volume", sa.String(63), nullable=False),
        sa.Column("target_controller", sa.String(63), nullable=False),
        sa.Column("policy_source", sa.String(63), nullable=True),
        sa.Column("services", sa.JSON(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("bytes_copied", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("pause_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_migrations_application_id", "migrations", ["application_id"])


def downgrade() -> None:
    op.drop_index("ix_migrations_application_id", table_name="migrations")
    op.drop_table("migrations")
