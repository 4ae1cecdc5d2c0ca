"""The outcome of one SCSI command: status, data-in and sense.

``ScsiResult`` is built once per I/O, so it is a plain ``__slots__`` class (no dataclass
machinery on the hot path).  ``data`` is already limited to the command's allocation
length (or, for READ, is exactly the blocks asked for); the iSCSI layer computes residuals
from its Expected Data Transfer Length against ``len(result.data)`` for data-in commands,
and against :meth:`LogicalUnit.transfer_length_bytes` for data-out commands.
"""

from __future__ import annotations

from difs.sam.status import CHECK_CONDITION, GOOD
from difs.scsi.sense import ScsiError

_EMPTY = b""


class ScsiResult:
    __slots__ = ("status", "data", "sense")

    def __init__(self, status: int, data: bytes | memoryview = _EMPTY, sense: bytes = _EMPTY) -> None:
        self.status = status
        self.data = data
        self.sense = sense

    @property
    def good(self) -> bool:
        return self.status == GOOD

    def __repr__(self) -> str:
        extra = f" sense={bytes(self.sense).hex()}" if self.sense else ""
        return f"ScsiResult(status={self.status:#04x}, data={len(self.data)} bytes{extra})"

    @classmethod
    def from_error(cls, err: ScsiError, *, descriptor: bool = False) -> ScsiResult:
        if err.status != CHECK_CONDITION:
            return cls(err.status)
        return cls(CHECK_CONDITION, _EMPTY, err.sense(descriptor=descriptor))
