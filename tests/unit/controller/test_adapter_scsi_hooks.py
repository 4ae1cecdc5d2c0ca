"""The controller adapter tells the SCSI core what the transport saw: I_T nexus loss
(logout, connection loss, session reinstatement), LUN / target resets, write residuals,
ABORT TASK races, persistent reservations with APTPL across a restart, and one logical
unit behind every portal.

No sockets: ``IscsiConnection`` objects get a fake transport, and difs' own sans-I/O
initiator core (``InitiatorConnection``) plays the initiator.
"""

from __future__ import annotations

import os
import struct

from adapter_client import Client, lu_of, make_controller, run, sense_code, settle

from difs.iscsi.constants import TmfFunction, TmfResponse
from difs.iscsi.initiator_events import CommandComplete, TaskManagementComplete

INIT1 = "iqn.2024-01.test:one"
INIT2 = "iqn.2024-01.test:two"
GOOD, CHECK_CONDITION, RESERVATION_CONFLICT = 0x00, 0x02, 0x18

TUR = bytes(6)
RESERVE6 = bytes((0x16, 0, 0, 0, 0, 0))
RELEASE6 = bytes((0x17, 0, 0, 0, 0, 0))


def write10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)


def read10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def pr_out(sa: int, key: int = 0, sark: int = 0, *, aptpl: bool = False, pr_type: int = 0):
    params = struct.pack(">QQ4xBx2x", key, sark, 0x01 if aptpl else 0)
    return struct.pack(">BBBxxIB", 0x5F, sa, pr_type, len(params), 0), params


PR_IN_READ_KEYS = struct.pack(">BBxxxxxHB", 0x5E, 0, 1024, 0)


# --- I_T nexus loss ----------------------------------------------------------------------


def test_logout_releases_the_spc2_reservation(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        for c in (one, two):
            c.command(TUR)  # power-on unit attention
            c.command(TUR)
        assert one.command(RESERVE6).status == GOOD
        assert two.command(RESERVE6).status == RESERVATION_CONFLICT
        one.logout()
        await settle()
        assert two.command(RESERVE6).status == GOOD
        assert two.command(RELEASE6).status == GOOD

    run(main())


def test_connection_loss_releases_the_reservation_and_reports_nexus_loss(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        for c in (one, two):
            c.command(TUR)
        assert one.command(RESERVE6).status == GOOD
        one.drop()
        await settle()
        assert not ctl._nexuses.get(one.conn.session)
        assert two.command(RESERVE6).status == GOOD
        again = Client(ctl, INIT1)          # same initiator port, new session
        done = again.command(TUR)
        assert done.status == CHECK_CONDITION
        assert sense_code(done) == (0x6, 0x29, 0x07)  # I_T NEXUS LOSS OCCURRED

    run(main())


def test_reinstatement_loses_the_old_nexus_once(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        for c in (one, two):
            c.command(TUR)
        assert one.command(RESERVE6).status == GOOD
        # the same initiator port logs in again while its old connection is still up
        new = Client(ctl, INIT1)
        assert sense_code(new.command(TUR)) == (0x6, 0x29, 0x07)
        assert new.command(RESERVE6).status == GOOD   # the old reservation is gone
        await settle()                                # the old connection closes now
        assert one.transport.closing
        # ... and its late close did not release the new session's reservation
        assert two.command(RESERVE6).status == RESERVATION_CONFLICT
        assert new.command(RELEASE6).status == GOOD

    run(main())


# --- task management ---------------------------------------------------------------------


def test_lun_reset_releases_reservation_and_queues_unit_attention(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        for c in (one, two):
            c.command(TUR)
        assert one.command(RESERVE6).status == GOOD
        assert one.tmf(TmfFunction.LOGICAL_UNIT_RESET) == TmfResponse.FUNCTION_COMPLETE
        for c in (one, two):
            assert sense_code(c.command(TUR)) == (0x6, 0x29, 0x03)
        assert two.command(RESERVE6).status == GOOD

    run(main())


def test_target_warm_reset(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        for c in (one, two):
            c.command(TUR)
        assert one.command(RESERVE6).status == GOOD
        assert one.tmf(TmfFunction.TARGET_WARM_RESET) == TmfResponse.FUNCTION_COMPLETE
        assert sense_code(two.command(TUR)) == (0x6, 0x29, 0x00)
        assert two.command(RESERVE6).status == GOOD

    run(main())


def test_target_cold_reset_closes_every_connection_after_answering(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        for c in (one, two):
            c.command(TUR)
        assert one.command(RESERVE6).status == GOOD
        assert one.tmf(TmfFunction.TARGET_COLD_RESET) == TmfResponse.FUNCTION_COMPLETE
        assert one.transport.closing and two.transport.closing
        await settle()
        assert not ctl._connections and not ctl._nexuses
        three = Client(ctl, INIT2)
        assert sense_code(three.command(TUR)) == (0x6, 0x29, 0x00)  # as after power on
        assert three.command(RESERVE6).status == GOOD

    run(main())


def test_abort_of_a_task_already_answered_is_task_does_not_exist(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one = Client(ctl, INIT1)
        one.command(TUR)
        itt = one.core.submit_command(0, write10(0, 8), data_out=bytes(4096))
        tmf = one.core.abort_task(itt)
        one.pump()      # both requests reach the target in one read
        done = [e for e in one.events if isinstance(e, CommandComplete) and e.itt == itt]
        answer = [e for e in one.events if isinstance(e, TaskManagementComplete) and e.itt == tmf]
        assert done and done[0].status == GOOD
        assert answer[0].response == TmfResponse.TASK_DOES_NOT_EXIST

    run(main())


# --- residuals -----------------------------------------------------------------------------


def test_write_residuals_use_the_scsi_transfer_length(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one = Client(ctl, INIT1)
        one.command(TUR)
        over = one.command(write10(0, 2), data_out=b"a" * 512)      # EDTL 512 < 1024
        assert over.status == GOOD and over.overflow and over.residual == 512
        under = one.command(write10(2, 1), data_out=b"b" * 1024)    # EDTL 1024 > 512
        assert under.status == GOOD and under.underflow and under.residual == 512
        exact = one.command(write10(3, 1), data_out=b"c" * 512)
        assert not exact.overflow and not exact.underflow
        data = one.command(read10(0, 4), expected_in=2048).data
        assert bytes(data) == b"a" * 512 + bytes(512) + b"b" * 512 + b"c" * 512

    run(main())


# --- one logical unit behind every portal ---------------------------------------------------


def test_every_session_reaches_the_same_logical_unit_and_target_port(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one, two = Client(ctl, INIT1), Client(ctl, INIT2)
        assert one.conn.scsi is two.conn.scsi
        inquiry83 = bytes((0x12, 1, 0x83, 1, 0, 0))
        pages = []
        for c in (one, two):
            c.command(TUR)
            pages.append(bytes(c.command(inquiry83, expected_in=256).data))
        assert pages[0] == pages[1]
        assert one.conn.nexus.relative_port == 1
        assert b"\x00\x00\x00\x01" in pages[0]   # relative target port 1

    run(main())


# --- persistent reservations survive a restart with APTPL ----------------------------------


def test_aptpl_registrations_survive_a_controller_restart(tmp_path):
    async def main():
        ctl = make_controller(tmp_path)
        one = Client(ctl, INIT1)
        one.command(TUR)
        cdb, params = pr_out(0, sark=0xABCD, aptpl=True)                 # REGISTER, APTPL
        assert one.command(cdb, params).status == GOOD
        cdb, params = pr_out(1, key=0xABCD, pr_type=1)                   # RESERVE, WE
        assert one.command(cdb, params).status == GOOD
        saved = tmp_path / "volumes" / "vol.reservations"
        assert saved.exists()
        await ctl.close()

        ctl = make_controller(tmp_path)                                   # restart
        lu = lu_of(ctl)
        assert list(lu.reservations.registrations.values()) == [0xABCD]
        assert lu.reservations.pr_type == 1
        two = Client(ctl, INIT2)
        two.command(TUR)
        keys = bytes(two.command(PR_IN_READ_KEYS, expected_in=1024).data)
        assert struct.unpack_from(">II", keys) [1] == 8 and keys[8:16] == (0xABCD).to_bytes(8, "big")
        assert two.command(write10(0, 1), data_out=bytes(512)).status == RESERVATION_CONFLICT
        # registering without APTPL drops the saved state
        one = Client(ctl, INIT1)
        one.command(TUR)
        cdb, params = pr_out(0, key=0xABCD, sark=0xABCD)
        assert one.command(cdb, params).status == GOOD
        assert not saved.exists()
        await ctl.close()

    run(main())


# --- volumes ------------------------------------------------------------------------------


def test_thin_volume_is_sparse_and_thick_is_allocated(tmp_path):
    async def main():
        thin = make_controller(tmp_path / "thin")
        assert lu_of(thin).thin
        thick = make_controller(tmp_path / "thick", thin=False)
        assert lu_of(thick).provisioning == "resource"     # space reserved, UNMAP zeroes
        blocks = {name: os.stat(tmp_path / name / "volumes" / "vol.img").st_blocks * 512
                  for name in ("thin", "thick")}
        assert blocks["thin"] < (1 << 20) <= (4 << 20) <= blocks["thick"]
        for ctl in (thin, thick):
            await ctl.close()

    run(main())


def test_read_only_volume_refuses_writes(tmp_path):
    async def main():
        ctl = make_controller(tmp_path, read_only=True)
        one = Client(ctl, INIT1)
        one.command(TUR)
        done = one.command(write10(0, 1), data_out=bytes(512))
        assert done.status == CHECK_CONDITION and sense_code(done)[:2] == (0x7, 0x27)
        await ctl.close()

    run(main())
