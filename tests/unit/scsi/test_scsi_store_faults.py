"""A fault of the backing store ends only the command it happened in, with the answer a
real array gives: a full file system (ENOSPC, EDQUOT, EFBIG) is DATA PROTECT 27h/07h SPACE
ALLOCATION FAILED WRITE PROTECT (SBC-4 4.7.3.6), EIO is MEDIUM ERROR (11h/00h on a read,
0Ch/00h on a command that writes), anything else HARDWARE ERROR 44h/00h; the logical unit
keeps serving, and ``on_store_fault`` is told (exception, answer, CDB)."""

from __future__ import annotations

import errno

import pytest
from scsi_cdbs import (
    assert_check,
    assert_good,
    read10,
    rw16,
    sync_cache10,
    tur,
    verify10,
    write10,
)

from difs.sam.sense import (
    ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    DATA_PROTECT,
    HARDWARE_ERROR,
    MEDIUM_ERROR,
    sense_text,
)
from difs.scsi import sense as S

BS = 512
SPACE = ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT


class Faults:
    """Makes chosen store methods raise, once each, and records what the LU reported."""

    def __init__(self, fx) -> None:
        self.fx = fx
        self.reported: list[tuple[Exception, S.ScsiError, bytes]] = []
        fx.lu.on_store_fault = lambda exc, err, cdb: self.reported.append((exc, err, bytes(cdb)))

    def once(self, method: str, exc: Exception) -> None:
        store = self.fx.store
        real = getattr(store, method)

        def failing(*args):
            setattr(store, method, real)
            raise exc
        setattr(store, method, failing)


@pytest.fixture
def faults(fx):
    return Faults(fx)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_full_disk_on_write_is_space_allocation_failed(fx, faults, code):
    assert_good(fx.run(write10(0, 2), b"a" * 2 * BS))
    faults.once("pwrite", OSError(code, "no space"))
    sense = assert_check(fx.run(write10(8, 2), b"b" * 2 * BS), DATA_PROTECT, *SPACE)
    assert "SPACE ALLOCATION FAILED WRITE PROTECT" in sense_text(sense)
    # that command only: the unit still reads what it acknowledged, and writes again
    assert fx.run(read10(0, 2)).data == b"a" * 2 * BS
    assert_good(fx.run(write10(8, 2), b"b" * 2 * BS))
    assert fx.run(read10(8, 2)).data == b"b" * 2 * BS
    (exc, err, cdb), = faults.reported
    assert exc.errno == code and cdb[0] == 0x2A
    assert (err.sense_key, err.asc, err.ascq) == (DATA_PROTECT, *SPACE)


def test_full_disk_on_write_same_and_flush(fx, faults):
    fx.lu.write_cache = False  # every write is flushed: SYNCHRONIZE CACHE's path too
    faults.once("pwrite", OSError(errno.ENOSPC, "no space"))
    ws16 = rw16(0x93, 0, 4)
    assert_check(fx.run(ws16, b"c" * BS), DATA_PROTECT, *SPACE)
    faults.once("flush", OSError(errno.ENOSPC, "no space"))
    assert_check(fx.run(sync_cache10()), DATA_PROTECT, *SPACE)
    assert_good(fx.run(ws16, b"c" * BS))


def test_eio_on_read_is_unrecovered_read_error(fx, faults):
    faults.once("pread", OSError(errno.EIO, "I/O error"))
    assert_check(fx.run(read10(0, 1)), MEDIUM_ERROR, 0x11, 0x00)
    faults.once("pread", OSError(errno.EIO, "I/O error"))
    assert_check(fx.run(verify10(0, 1, bytchk=1), bytes(BS)), MEDIUM_ERROR, 0x11, 0x00)
    assert_good(fx.run(read10(0, 1)))


def test_eio_on_a_command_that_writes_is_write_error(fx, faults):
    faults.once("pwrite", OSError(errno.EIO, "I/O error"))
    assert_check(fx.run(write10(0, 1), bytes(BS)), MEDIUM_ERROR, 0x0C, 0x00)
    # SYNCHRONIZE CACHE carries no Data-Out, but an EIO of its flush is a write error
    faults.once("flush", OSError(errno.EIO, "I/O error"))
    assert_check(fx.run(sync_cache10()), MEDIUM_ERROR, 0x0C, 0x00)
    assert_good(fx.run(sync_cache10()))
    assert [err.asc for _, err, _ in faults.reported] == [0x0C, 0x0C]


@pytest.mark.parametrize("exc", [RuntimeError("bug in a store"), OSError(errno.EBADF, "bad fd"),
                                 ValueError("odd"), KeyError("x")])
def test_anything_else_is_hardware_error_for_that_command_only(fx, faults, exc):
    faults.once("pwrite", exc)
    sense = assert_check(fx.run(write10(0, 1), bytes(BS)), HARDWARE_ERROR, 0x44, 0x00)
    assert "INTERNAL TARGET FAILURE" in sense_text(sense)
    faults.once("pread", exc)
    assert_check(fx.run(read10(0, 1)), HARDWARE_ERROR, 0x44, 0x00)
    assert_good(fx.run(tur()))
    assert_good(fx.run(read10(0, 1)))
    assert [e for e, _, _ in faults.reported] == [exc, exc]


def test_a_failed_write_still_reports_its_transfer_length(fx, faults):
    """The iSCSI layer computes the residual of a failed write from it."""
    faults.once("pwrite", OSError(errno.ENOSPC, "no space"))
    result = fx.run(write10(0, 3), bytes(3 * BS))
    assert_check(result, DATA_PROTECT, *SPACE)
    assert result.transfer_length == 3 * BS


def test_descriptor_sense_when_d_sense_is_set(fx, faults):
    fx.lu.d_sense = True
    faults.once("pwrite", OSError(errno.ENOSPC, "no space"))
    sense = assert_check(fx.run(write10(0, 1), bytes(BS)), DATA_PROTECT, *SPACE)
    assert sense[0] == 0x72


def test_store_error_table():
    assert S.store_error(OSError(errno.ENOSPC, "x"), write=False).sense_key == DATA_PROTECT
    assert (S.store_error(OSError(errno.EIO, "x"), write=False).asc,
            S.store_error(OSError(errno.EIO, "x"), write=True).asc) == (0x11, 0x0C)
    assert S.store_error(OSError(errno.EROFS, "x"), write=True).sense_key == HARDWARE_ERROR
    assert S.store_error(ZeroDivisionError(), write=True).sense_key == HARDWARE_ERROR
