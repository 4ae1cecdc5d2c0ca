"""A fault of a volume's store, seen through the controller adapter: the initiator gets the
one command's CHECK CONDITION (MEDIUM ERROR for EIO, HARDWARE ERROR for anything
unexpected), the connection and session carry on, and the controller logs it rate-limited
with the volume name (an unexpected failure with its traceback, once per exception type).

The store's file object is replaced by one raising at the store boundary (no sockets, no
disk): the real EIO and ENOSPC sources are in tests/integration/test_volume_storage_faults.py.
"""

from __future__ import annotations

import errno
import logging
import struct

from adapter_client import Client, lu_of, make_controller, run, sense_code

GOOD, CHECK_CONDITION = 0x00, 0x02
TUR = bytes(6)


def write10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)


def read10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def failing(store, method: str, exc: Exception, times: int = 1) -> None:
    """Make ``store.method`` raise ``exc`` ``times`` times, then work again."""
    real = getattr(store, method)
    left = [times]

    def fake(*args):
        if left[0]:
            left[0] -= 1
            raise exc
        return real(*args)
    setattr(store, method, fake)


def store_fault_records(caplog, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


def test_eio_is_medium_error_and_the_session_carries_on(tmp_path, caplog):
    async def main():
        ctl = make_controller(tmp_path)
        c = Client(ctl, "iqn.2024-01.test:eio")
        c.command(TUR)
        assert c.command(write10(0, 1), b"k" * 512).status == GOOD
        store = lu_of(ctl).store
        failing(store, "pread", OSError(errno.EIO, "Input/output error"), times=3)
        for _ in range(3):
            done = c.command(read10(0, 1), expected_in=512)
            assert (done.status, sense_code(done)) == (CHECK_CONDITION, (0x3, 0x11, 0x00))
        failing(store, "pwrite", OSError(errno.EIO, "Input/output error"))
        done = c.command(write10(1, 1), b"w" * 512)
        assert (done.status, sense_code(done)) == (CHECK_CONDITION, (0x3, 0x0C, 0x00))
        # the same connection reads what it wrote
        assert not c.transport.closing
        done = c.command(read10(0, 1), expected_in=512)
        assert done.status == GOOD and bytes(done.data) == b"k" * 512

    with caplog.at_level(logging.INFO, logger="difs.controller"):
        run(main())
    lines = store_fault_records(caplog, "volume I/O error")
    assert len(lines) == 1  # four faults in a burst: one line
    fields = lines[0].difs_fields
    assert fields["volume"] == "vol" and fields["error"].startswith("EIO")
    assert "UNRECOVERED READ ERROR" in fields["answer"]


def test_an_unexpected_store_failure_ends_only_its_command(tmp_path, caplog):
    async def main():
        ctl = make_controller(tmp_path)
        c = Client(ctl, "iqn.2024-01.test:bug")
        c.command(TUR)
        store = lu_of(ctl).store
        failing(store, "pwrite", RuntimeError("a bug under the store"), times=2)
        for _ in range(2):
            done = c.command(write10(0, 1), b"x" * 512)
            assert (done.status, sense_code(done)) == (CHECK_CONDITION, (0x4, 0x44, 0x00))
        assert not c.transport.closing and len(ctl._connections) == 1
        assert c.command(write10(0, 1), b"y" * 512).status == GOOD
        done = c.command(read10(0, 1), expected_in=512)
        assert bytes(done.data) == b"y" * 512

    with caplog.at_level(logging.INFO, logger="difs.controller"):
        run(main())
    traced = store_fault_records(caplog, "volume store failure traceback")
    assert len(traced) == 1 and traced[0].exc_info is not None  # the traceback, once
    assert traced[0].difs_fields["volume"] == "vol"
    assert len(store_fault_records(caplog, "volume store failure")) == 1


def test_a_flush_failing_at_shutdown_is_logged_and_the_store_still_closed(tmp_path, caplog):
    async def main():
        ctl = make_controller(tmp_path)
        store = lu_of(ctl).store
        failing(store, "flush", OSError(errno.EIO, "Input/output error"))
        await ctl.close()
        assert store.fd == -1  # closed all the same

    with caplog.at_level(logging.INFO, logger="difs.controller"):
        run(main())
    (line,) = store_fault_records(caplog, "volume flush failed at shutdown")
    assert line.difs_fields["volume"] == "vol"
