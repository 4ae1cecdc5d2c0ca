"""Primary commands (SPC-4) other than INQUIRY, MODE and reservations: TEST UNIT READY,
REQUEST SENSE, REPORT SUPPORTED OPERATION CODES, REPORT SUPPORTED TASK MANAGEMENT
FUNCTIONS, START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.sense import (
    ASC_LU_NOT_READY_INIT_REQUIRED,
    NOT_READY,
    NO_SENSE,
    UNIT_ATTENTION,
    build_sense,
)
from difs.sam.status import GOOD
from difs.sam.cdb import U16, U32
from difs.scsi import sense as S
from difs.scsi.result import ScsiResult

if TYPE_CHECKING:
    from difs.scsi.commands import CommandSpec
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus

#: nominal / recommended command timeouts reported with RCTD=1 (seconds)
NOMINAL_TIMEOUT = 1
RECOMMENDED_TIMEOUT = 30


def test_unit_ready(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    return ScsiResult(GOOD)


def request_sense(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    desc = bool(cdb[1] & 0x01)
    alloc = cdb[4]
    ua = lu.pop_unit_attention(nexus)
    if ua is not None:
        data = build_sense(UNIT_ATTENTION, *ua, descriptor=desc)
    elif lu.stopped:
        data = build_sense(NOT_READY, *ASC_LU_NOT_READY_INIT_REQUIRED, descriptor=desc)
    else:
        data = build_sense(NO_SENSE, 0, 0, descriptor=desc)
    return ScsiResult(GOOD, data[:alloc])


# --- REPORT SUPPORTED OPERATION CODES --------------------------------------------------


def _timeouts() -> bytes:
    return U16.pack(0x0A) + b"\x00\x00" + U32.pack(NOMINAL_TIMEOUT) + U32.pack(RECOMMENDED_TIMEOUT)


def _all_commands(lu: LogicalUnit, rctd: bool) -> bytes:
    out = bytearray()
    for spec in lu.supported_commands():
        flags = (0x02 if rctd else 0) | (0x01 if spec.sa is not None else 0)
        out += bytes((spec.opcode, 0)) + U16.pack(spec.sa or 0) + bytes((0, flags))
        out += U16.pack(spec.cdb_len)
        if rctd:
            out += _timeouts()
    return U32.pack(len(out)) + bytes(out)


def _one_command(spec: CommandSpec | None, rctd: bool) -> bytes:
    if spec is None:
        return bytes((0, 0x01, 0, 0))  # SUPPORT 001b: not supported
    flags = (0x80 if rctd else 0) | 0x03  # CTDP, SUPPORT 011b
    out = bytes((0, flags)) + U16.pack(spec.cdb_len) + spec.usage
    if rctd:
        out += _timeouts()
    return out


def report_supported_opcodes(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    rctd = bool(cdb[2] & 0x80)
    options = cdb[2] & 0x07
    opcode = cdb[3]
    sa = U16.unpack_from(cdb, 4)[0]
    alloc = U32.unpack_from(cdb, 6)[0]
    if options == 0:
        data = _all_commands(lu, rctd)
    elif options in (1, 2, 3):
        group = lu.command_group(opcode)
        if options == 1:
            if group is not None and group.by_sa is not None:
                raise S.invalid_field_in_cdb(2, 2)
            spec = group
        else:
            if group is not None and group.by_sa is None:
                if options == 2:
                    raise S.invalid_field_in_cdb(2, 2)
                spec = group if sa == 0 else None
            else:
                spec = group.by_sa.get(sa) if group is not None else None
                if sa > 0x1F:
                    spec = None
        data = _one_command(spec, rctd)
    else:
        raise S.invalid_field_in_cdb(2, 2)
    return ScsiResult(GOOD, data[:alloc])


def report_supported_tmfs(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    repd = cdb[2] & 0x80
    alloc = U32.unpack_from(cdb, 6)[0]
    # ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LU RESET, (no QUERY TASK), TARGET RESET
    data = bytearray(16 if repd else 4)
    data[0] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02  # ATS ATSS CACAS LURS TRS
    if repd:
        data[3] = 0x0C  # additional data length
    return ScsiResult(GOOD, bytes(data[:alloc]))


# --- START STOP UNIT / PREVENT ALLOW MEDIUM REMOVAL -----------------------------------


def start_stop_unit(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    power_condition = cdb[4] >> 4
    loej = cdb[4] & 0x02
    start = cdb[4] & 0x01
    if power_condition not in (0x0, 0x1, 0x2, 0x3, 0x7, 0xA, 0xB):
        raise S.invalid_field_in_cdb(4, 7)
    if power_condition:
        return ScsiResult(GOOD)  # power conditions are accepted and have no effect
    if loej:
        # the medium is not removable
        raise S.invalid_field_in_cdb(4, 1)
    if not start:
        lu.store.flush()
    lu.stopped = not start
    return ScsiResult(GOOD)


def prevent_allow(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lu.prevent = cdb[4] & 0x03
    return ScsiResult(GOOD)
