"""The outcome of one SCSI command: status, data-in, sense and the Data-Out it described.

``ScsiResult`` is built once per I/O, so it is a plain ``__slots__`` class (no dataclass
machinery on the hot path).  ``data`` is already limited to the command's allocation
length (or, for READ, is exactly the blocks asked for); the iSCSI layer computes residuals
from its Expected Data Transfer Length against ``len(result.data)`` for data-in commands,
and against ``result.transfer_length`` for data-out commands: the bytes of Data-Out the
CDB asked for (blocks x block size, + 8 bytes a block when PI travels; 0 for a command
without Data-Out), whether the command succeeded or not.
"""

from __future__ import annotations

from difs.sam.status import CHECK_CONDITION, GOOD
from difs.scsi.sense import ScsiError

_EMPTY = b""


class ScsiResult:
    __slots__ = ("status", "data", "sense", "transfer_length")

    def __init__(self, status: int, data: bytes | memoryview = _EMPTY, sense: bytes = _EMPTY,
                 transfer_length: int = 0) -> None:
        self.status = status
        self.data = data
        self.sense = sense
        self.transfer_length = transfer_length

    @property
    def good(self) -> bool:
        return self.status == GOOD

    def __repr__(self) -> str:
        extra = f" sense={bytes(self.sense).hex()}" if self.sense else ""
        if self.transfer_length:
            extra += f" transfer_length={self.transfer_length}"
        return f"ScsiResult(status={self.status:#04x}, data={len(self.data)} bytes{extra})"

    @classmethod
    def from_error(cls, err: ScsiError, *, descriptor: bool = False,
                   transfer_length: int = 0) -> ScsiResult:
        if err.status != CHECK_CONDITION:
            return cls(err.status, _EMPTY, _EMPTY, transfer_length)
        return cls(CHECK_CONDITION, _EMPTY, err.sense(descriptor=descriptor), transfer_length)
