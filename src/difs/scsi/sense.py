"""The SCSI device's errors: each carries its wire code (status, sense key, ASC/ASCQ).

Every fault a command can report is raised inside the device as a :class:`ScsiError`
carrying its wire code; :meth:`LogicalUnit.execute` turns it into a :class:`ScsiResult`
(status + sense bytes).  Nothing else may escape ``execute``: an exception of any other
type leaving the SCSI core is a bug.

Exception tree::

    Exception
     └── ScsiError                      status CHECK CONDITION, sense key/ASC/ASCQ,
         │                              optional INFORMATION and sense-key-specific
         │                              field pointer (SKSV)
         └── ReservationConflict        status RESERVATION CONFLICT, no sense data

What a fault of the backing store becomes (:func:`store_error`, applied by
:meth:`LogicalUnit.execute` to that one command; the session carries on)::

    OSError ENOSPC, EDQUOT, EFBIG   DATA PROTECT 27h/07h SPACE ALLOCATION FAILED WRITE
                                    PROTECT (what a thin-provisioned array answers when
                                    its pool is full, SBC-4 4.7.3.6)
    OSError EIO                     MEDIUM ERROR 11h/00h UNRECOVERED READ ERROR (a read)
                                    or 0Ch/00h WRITE ERROR (a command that writes)
    any other exception             HARDWARE ERROR 44h/00h INTERNAL TARGET FAILURE

Helpers below build the common errors with the field pointer SPC-4 asks for
(``invalid_field_in_cdb(byte, bit)`` points at the offending CDB byte/bit).

The codes and the sense builder are the shared wire vocabulary of :mod:`difs.sam`
(:mod:`difs.sam.status`, :mod:`difs.sam.sense`); :meth:`ScsiError.sense` builds fixed format
(response code 70h) unless descriptor format (72h) is requested.
"""

from __future__ import annotations

import errno

from difs.sam.sense import (
    ASC_INTERNAL_TARGET_FAILURE,
    ASC_INVALID_COMMAND_OPERATION_CODE,
    ASC_INVALID_FIELD_IN_CDB,
    ASC_INVALID_FIELD_IN_CIU,
    ASC_INVALID_FIELD_IN_PARAMETER_LIST,
    ASC_LBA_OUT_OF_RANGE,
    ASC_LU_NOT_SUPPORTED,
    ASC_MISCOMPARE_DURING_VERIFY,
    ASC_PARAMETER_LIST_LENGTH_ERROR,
    ASC_SOFTWARE_WRITE_PROTECTED,
    ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    ASC_UNRECOVERED_READ_ERROR,
    ASC_WRITE_ERROR,
    ASC_WRITE_PROTECTED,
    DATA_PROTECT,
    HARDWARE_ERROR,
    ILLEGAL_REQUEST,
    MEDIUM_ERROR,
    MISCOMPARE,
    NO_SENSE,
    UNIT_ATTENTION,
    build_sense,
)
from difs.sam.status import CHECK_CONDITION, RESERVATION_CONFLICT


class ScsiError(Exception):
    """A command failed with CHECK CONDITION and this sense.

    ``information`` is put in the INFORMATION field (VALID bit set) when given.  The
    sense-key-specific field pointer (SKSV=1) is given by ``field_byte`` (byte offset),
    ``field_bit`` (bit 0..7 or None), and ``in_cdb`` (C/D bit: CDB or parameter data).
    """

    status = CHECK_CONDITION

    def __init__(
        self,
        sense_key: int,
        asc: int,
        ascq: int,
        *,
        information: int | None = None,
        field_byte: int | None = None,
        field_bit: int | None = None,
        in_cdb: bool = True,
        message: str = "",
    ) -> None:
        self.sense_key = sense_key
        self.asc = asc
        self.ascq = ascq
        self.information = information
        self.field_byte = field_byte
        self.field_bit = field_bit
        self.in_cdb = in_cdb
        super().__init__(
            message or f"sense key {sense_key:#x} asc/ascq {asc:#04x}/{ascq:#04x}"
        )

    def sense(self, *, descriptor: bool = False) -> bytes:
        return build_sense(
            self.sense_key,
            self.asc,
            self.ascq,
            information=self.information,
            field_byte=self.field_byte,
            field_bit=self.field_bit,
            in_cdb=self.in_cdb,
            descriptor=descriptor,
        )


class ReservationConflict(ScsiError):
    """The command conflicts with a reservation held through another I_T nexus."""

    status = RESERVATION_CONFLICT

    def __init__(self, message: str = "reservation conflict") -> None:
        super().__init__(NO_SENSE, 0, 0, message=message)


# --- constructors for the common errors ------------------------------------------------


def invalid_opcode() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_COMMAND_OPERATION_CODE, field_byte=0,
                     message="invalid command operation code")


def invalid_field_in_cdb(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_CDB, field_byte=byte,
                     field_bit=bit, message=f"invalid field in CDB byte {byte}")


def invalid_field_in_parameter_list(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_PARAMETER_LIST, field_byte=byte,
                     field_bit=bit, in_cdb=False,
                     message=f"invalid field in parameter list byte {byte}")


def parameter_list_length_error() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_PARAMETER_LIST_LENGTH_ERROR,
                     message="parameter list length error")


def invalid_field_in_command_iu() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_CIU,
                     message="data-out length does not match the command")


def lba_out_of_range(lba: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_LBA_OUT_OF_RANGE, information=lba,
                     message="logical block address out of range")


def write_protected(software: bool = False) -> ScsiError:
    asc = ASC_SOFTWARE_WRITE_PROTECTED if software else ASC_WRITE_PROTECTED
    return ScsiError(DATA_PROTECT, *asc, message="write protected")


def miscompare(offset: int) -> ScsiError:
    return ScsiError(MISCOMPARE, *ASC_MISCOMPARE_DURING_VERIFY, information=offset,
                     message=f"miscompare at byte offset {offset}")


def lu_not_supported() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_LU_NOT_SUPPORTED,
                     message="logical unit not supported")


def unit_attention(asc: int, ascq: int) -> ScsiError:
    return ScsiError(UNIT_ATTENTION, asc, ascq, message=f"unit attention {asc:#04x}/{ascq:#04x}")


def medium_error(*, write: bool, lba: int | None = None) -> ScsiError:
    asc = ASC_WRITE_ERROR if write else ASC_UNRECOVERED_READ_ERROR
    return ScsiError(MEDIUM_ERROR, *asc, information=lba, message="medium error")


def space_allocation_failed() -> ScsiError:
    return ScsiError(DATA_PROTECT, *ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
                     message="space allocation failed")


def internal_target_failure() -> ScsiError:
    return ScsiError(HARDWARE_ERROR, *ASC_INTERNAL_TARGET_FAILURE,
                     message="internal target failure")


#: errno values that mean the space behind a volume ran out (a full file system, a quota,
#: a file-size limit): the answer of a thin-provisioned array whose pool is exhausted
SPACE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
#: errno values that mean the medium failed
MEDIUM_ERRNOS = frozenset((errno.EIO,))


def store_error(exc: BaseException, *, write: bool) -> ScsiError:
    """The CHECK CONDITION for an exception raised by the backing store during a command
    (``write``: the command writes the medium). See the table in the module docstring."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in SPACE_ERRNOS:
        err = space_allocation_failed()
    elif code in MEDIUM_ERRNOS:
        err = medium_error(write=write)
    else:
        err = internal_target_failure()
    err.args = (f"store error: {exc!r}",)
    return err
