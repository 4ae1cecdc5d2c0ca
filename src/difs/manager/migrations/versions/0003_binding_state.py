"""applications: the state the bound host reports of the binding (starting / running / failed)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from difs.manager.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("host_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("host_state_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("host_state_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("host_state_at")
        batch.drop_column("host_state_reason")
        batch.drop_column("host_state")
