"""seed the gold / silver / bronze tiers (a frozen copy of difs.policy.tiers)

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-01
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIERS = [
    {
        "name": "gold",
        "description": "end-to-end integrity (digests + T10 PI), mutual CHAP, reserved IOPS",
        "services": {
            "integrity": {"header_digest": True, "data_digest": True, "protection_information": 1},
            "security": {"authentication": "mutual_chap"},
            "qos": {"reservation_iops": 1000, "weight": 400},
        },
    },
    {
        "name": "silver",
        "description": "CRC32C header and data digests on every path",
        "services": {"integrity": {"header_digest": True, "data_digest": True}},
    },
    {"name": "bronze", "description": "no data-in-flight services (best effort)", "services": {}},
]


def upgrade() -> None:
    policies = sa.table(
        "policies",
        sa.column("name", sa.String),
        sa.column("kind", sa.String),
        sa.column("builtin", sa.Boolean),
        sa.column("description", sa.Text),
        sa.column("services", sa.JSON),
        sa.column("version", sa.Integer),
        sa.column("created_at", sa.DateTime),
        sa.column("updated_at", sa.DateTime),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(
        policies,
        [
            {**t, "kind": "tier", "builtin": True, "version": 1, "created_at": now, "updated_at": now}
            for t in TIERS
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM policies WHERE builtin")
