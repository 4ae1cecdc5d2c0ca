"""The tiers every manager starts with: gold, silver and bronze.

Tiers are ordinary policy documents with well-known names. The manager seeds
these on its first start (an Alembic data migration holds a frozen copy; a test
keeps the two equal); users then add, edit and delete their own.
"""

from __future__ import annotations

from difs.policy.document import PolicyDocument
from difs.policy.services import (
    AuthMethod,
    IntegrityService,
    PIType,
    PolicyServices,
    QosService,
    SecurityService,
)

__all__ = ["GOLD", "SILVER", "BRONZE", "DEFAULT_TIERS"]

GOLD = PolicyDocument(
    name="gold",
    description="end-to-end integrity (digests + T10 PI), mutual CHAP, reserved IOPS",
    services=PolicyServices(
        integrity=IntegrityService(
            header_digest=True, data_digest=True, protection_information=PIType.TYPE1
        ),
        security=SecurityService(authentication=AuthMethod.MUTUAL_CHAP),
        qos=QosService(reservation_iops=1000, weight=400),
    ),
)

SILVER = PolicyDocument(
    name="silver",
    description="CRC32C header and data digests on every path",
    services=PolicyServices(integrity=IntegrityService(header_digest=True, data_digest=True)),
)

BRONZE = PolicyDocument(
    name="bronze",
    description="no data-in-flight services (best effort)",
    services=PolicyServices(),
)

DEFAULT_TIERS: dict[str, PolicyDocument] = {t.name: t for t in (GOLD, SILVER, BRONZE)}
