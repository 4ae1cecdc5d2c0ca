"""Errors raised by the Protection Information library, each carrying its SCSI wire code.

Exception tree::

    Exception
     └── PiError                    sense key / ASC / ASCQ as attributes
         ├── PiCheckError           ABORTED COMMAND, 10h/01h guard, 10h/02h application tag,
         │                          10h/03h reference tag; ``lba`` = failing LBA, which goes
         │                          into the INFORMATION field of the sense data
         └── InvalidProtectField    ILLEGAL REQUEST, 24h/00h INVALID FIELD IN CDB: a reserved
                                    RDPROTECT/WRPROTECT/VRPROTECT value, or a non-zero value on
                                    a logical unit formatted without protection information

Both expose ``sense_key``, ``asc``, ``ascq`` and ``information`` with the same names and
meaning as :class:`difs.scsi.sense.ScsiError`, so the SCSI layer turns them into a CHECK
CONDITION in one line (this package does not import ``difs.scsi``: the host uses it too; the
codes come from :mod:`difs.sam.sense`, below both)::

    except PiError as e:
        raise ScsiError(e.sense_key, e.asc, e.ascq, information=e.information) from e

(for :class:`InvalidProtectField` add the field pointer: CDB byte 1 bit 7 for 10/12/16-byte
CDBs, byte 10 bit 7 for 32-byte CDBs).  Misuse by the caller (buffers whose lengths do not
match, an unknown ``pi_type``) raises plain :class:`ValueError`: that is a bug in the caller,
not a fault of the peer.
"""

from __future__ import annotations

from typing import Literal

from difs.sam.sense import (
    ABORTED_COMMAND,
    ASC_INVALID_FIELD_IN_CDB,
    ASC_NAMES,
    ILLEGAL_REQUEST,
    PI_CHECK_ASC,
)

CheckKind = Literal["guard", "app", "ref"]

_CHECK_NAME = {kind: ASC_NAMES[asc].lower() for kind, asc in PI_CHECK_ASC.items()}


class PiError(Exception):
    """Base of the errors that carry a SCSI sense key and ASC/ASCQ."""

    sense_key: int
    asc: int
    ascq: int
    information: int | None = None


class PiCheckError(PiError):
    """A protection information check failed for logical block ``lba``.

    ``kind`` is ``"guard"``, ``"app"`` or ``"ref"``; ``lba`` is the first failing logical
    block of the transfer (also available as ``information``); ``expected`` and ``found`` are
    the values compared (the computed/expected guard or tag, and the one in the PI tuple).
    """

    sense_key = ABORTED_COMMAND

    def __init__(self, kind: CheckKind, lba: int, *, expected: int = 0, found: int = 0) -> None:
        if kind not in PI_CHECK_ASC:
            raise ValueError(f"unknown PI check kind {kind!r}")
        self.kind: CheckKind = kind
        self.lba = lba
        self.information = lba
        self.asc, self.ascq = PI_CHECK_ASC[kind]
        self.expected = expected
        self.found = found
        super().__init__(
            f"{_CHECK_NAME[kind]} at LBA {lba}: expected {expected:#x}, found {found:#x}"
        )

    def __reduce__(self):  # keep pickling (e.g. across a process pool) working
        return (_rebuild_check_error, (self.kind, self.lba, self.expected, self.found))


def _rebuild_check_error(kind: CheckKind, lba: int, expected: int, found: int) -> PiCheckError:
    return PiCheckError(kind, lba, expected=expected, found=found)


class InvalidProtectField(PiError):
    """A RDPROTECT/WRPROTECT/VRPROTECT value the device server must reject."""

    sense_key = ILLEGAL_REQUEST
    asc, ascq = ASC_INVALID_FIELD_IN_CDB

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={value:03b}b: {reason}")
