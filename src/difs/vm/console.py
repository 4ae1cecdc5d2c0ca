"""The guest's serial console turned into a result (pure: text in, :class:`GuestResult` out).

The guest prints ``DIFS-<KIND> key=value ...`` lines (see ``guest/init`` and
``guest/workloads.sh``)::

    DIFS-BEGIN workload=verify mib=8 seed=1a2b uptime=0.91
    DIFS-IO direct=1
    DIFS-VERIFY bytes_written=8388608 bytes_read=8388608 verified=8388608 errors=0
    DIFS-KERNEL io_errors=0
    DIFS-END status=0 uptime=2.40

Kernel messages interleave with them on the same console (a line may carry a printk
timestamp before the marker, or be cut by one); the guest kernel's I/O errors are counted
from the console too (``I/O error`` / ``blk_update_request`` lines), and the larger of that
count and the guest's own ``dmesg`` count is the result's ``io_errors``.  A line that carries
a marker but does not parse is kept in ``malformed``, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_MARKER = re.compile(r"DIFS-([A-Z]+)((?: +[a-z_]+=[^\s=]*)*) *$")
_PAIR = re.compile(r"([a-z_]+)=([^\s=]*)")
_KERNEL_IO_ERROR = re.compile(r"I/O error|blk_update_request")
_COUNTS = ("bytes_written", "bytes_read", "verified", "errors")


@dataclass
class GuestResult:
    """What the guest said about its run; ``passed`` only with a complete, clean report."""

    workload: str | None = None
    mib: int | None = None
    direct_io: bool | None = None
    bytes_written: int | None = None
    bytes_read: int | None = None
    verified: int | None = None
    errors: int | None = None
    io_errors: int = 0
    kernel_io_error_lines: list[str] = field(default_factory=list)
    status: int | None = None
    boot_seconds: float | None = None  # guest uptime when the workload began
    uptime_seconds: float | None = None  # guest uptime when it finished
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # other DIFS-* lines
    malformed: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status is not None and self.errors is not None

    @property
    def passed(self) -> bool:
        return (self.complete and self.status == 0 and self.errors == 0 and self.io_errors == 0
                and not self.malformed and bool(self.verified) and self.verified == self.expected)

    @property
    def expected(self) -> int | None:
        """Bytes the workload should have verified (steady: what it read back and checked)."""
        if self.workload == "steady":
            return self.verified
        return self.mib * 2**20 if self.mib is not None else None

    def reason(self) -> str:
        """Why it did not pass (empty when it did)."""
        if self.passed:
            return ""
        if self.malformed:
            return f"malformed console line(s): {self.malformed[0]!r}"
        if not self.complete:
            return "the guest did not report a complete result (no DIFS-END / DIFS-VERIFY line)"
        why = []
        if self.errors:
            why.append(f"{self.errors} MiB failed to write, read or compare")
        if self.io_errors:
            why.append(f"the guest kernel saw {self.io_errors} I/O error(s)")
        if self.verified != self.expected:
            why.append(f"verified {self.verified} of {self.expected} bytes")
        if self.status:
            why.append(f"workload exit status {self.status}")
        return "; ".join(why) or "failed"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete, "passed": self.passed,
                "reason": self.reason()}


def _int(fields: dict[str, str], key: str) -> int:
    value = fields[key]
    if not value.isdigit():
        raise ValueError(f"{key}={value!r} is not a count")
    return int(value)


def _float(fields: dict[str, str], key: str) -> float | None:
    return float(fields[key]) if key in fields else None


def _apply(result: GuestResult, kind: str, fields: dict[str, str]) -> None:
    """Fold one parsed marker line into the result (KeyError/ValueError: malformed)."""
    if kind == "BEGIN":
        result.workload = fields["workload"]
        result.mib = _int(fields, "mib")
        result.boot_seconds = _float(fields, "uptime")
    elif kind == "IO":
        result.direct_io = fields["direct"] == "1"
    elif kind == "VERIFY":
        counts = {k: _int(fields, k) for k in _COUNTS}
        result.bytes_written, result.bytes_read = counts["bytes_written"], counts["bytes_read"]
        result.verified, result.errors = counts["verified"], counts["errors"]
    elif kind == "KERNEL":
        result.io_errors = max(result.io_errors, _int(fields, "io_errors"))
    elif kind == "END":
        result.status = _int(fields, "status")
        result.uptime_seconds = _float(fields, "uptime")
    else:
        result.extra[kind.lower()] = fields


def parse_console(text: str) -> GuestResult:
    """The result the guest printed in ``text`` (a whole console log)."""
    result = GuestResult()
    for raw in text.replace("\r", "").split("\n"):
        if _KERNEL_IO_ERROR.search(raw) and "DIFS-" not in raw:
            result.kernel_io_error_lines.append(raw.strip())
        at = raw.find("DIFS-")
        if at < 0:
            continue
        line = raw[at:].strip()
        match = _MARKER.fullmatch(line)
        try:
            if match is None:
                raise ValueError(line)
            _apply(result, match.group(1), dict(_PAIR.findall(match.group(2))))
        except (KeyError, ValueError):
            result.malformed.append(line)
    result.io_errors = max(result.io_errors, len(result.kernel_io_error_lines))
    return result
