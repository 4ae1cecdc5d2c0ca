"""SCSI status codes (SAM-5 5.3): the byte a command ends with, on both sides of a path.

Plain ``int`` constants, because they are compared on every I/O (import them at module level:
``from difs.sam.status import GOOD``); :func:`status_text` names one for a log line.
"""

from __future__ import annotations

GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
ACA_ACTIVE = 0x30
TASK_ABORTED = 0x40

STATUS_NAMES: dict[int, str] = {
    GOOD: "GOOD",
    CHECK_CONDITION: "CHECK CONDITION",
    CONDITION_MET: "CONDITION MET",
    BUSY: "BUSY",
    RESERVATION_CONFLICT: "RESERVATION CONFLICT",
    TASK_SET_FULL: "TASK SET FULL",
    ACA_ACTIVE: "ACA ACTIVE",
    TASK_ABORTED: "TASK ABORTED",
}


def status_text(status: int) -> str:
    """``"CHECK CONDITION (02h)"``; an unknown code is named by its value alone."""
    name = STATUS_NAMES.get(status)
    return f"{name} ({status:02x}h)" if name else f"status {status:02x}h"
