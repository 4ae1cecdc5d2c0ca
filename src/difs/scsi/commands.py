"""The command table: one :class:`CommandSpec` per supported operation code / service
action, with its handler, CDB length, CDB usage data and the rules execute() applies.

CDB usage data (SPC-4 6.35.3) is the bit map REPORT SUPPORTED OPERATION CODES returns
*and* the mask execute() checks every CDB against: a bit set in the CDB but clear in the
usage data is a reserved bit, rejected with INVALID FIELD IN CDB pointing at it.  The
CONTROL byte usage is 00h (no NACA, no LINK); its vendor-specific bits 7-6 are ignored.

Columns: ``ua_exempt`` - INQUIRY, REPORT LUNS and REQUEST SENSE do not report unit
attentions; ``res`` - reservation class (see :mod:`difs.scsi.reservations`); ``spc2_ok``
- allowed while another nexus holds an SPC-2 reservation; ``medium`` - needs the unit
started (START STOP UNIT).

Where the fields of a block command's CDB are (LBA, transfer length, protect field, FUA,
GROUP NUMBER) and how many bytes of Data-Out it describes is the CDB layout table,
:data:`difs.sam.cdb.LAYOUTS`, shared with the host; this table says which bits a CDB may
set.  The read/write/verify/write-same handlers come from :mod:`difs.scsi.rw` (one path for
plain and PI-formatted units).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from difs.sam import cdb as C
from difs.scsi import inquiry, modes, provisioning, reservations, rmw, sbc, spc, xcopy
from difs.scsi import sense as S
from difs.scsi.rw import HANDLERS as RW

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit

Handler = Callable[..., object]
_SIZED = frozenset(RW.values())


class CommandSpec:
    __slots__ = ("opcode", "sa", "name", "usage", "cdb_len", "handler", "reject_mask",
                 "ua_exempt", "res", "spc2_ok", "medium", "by_sa", "fill_transfer_length")

    def __init__(self, opcode: int, name: str, usage: bytes, handler: Handler | None, *,
                 sa: int | None = None, ua_exempt: bool = False, res: str = "A",
                 spc2_ok: bool = False, medium: bool = False) -> None:
        self.opcode = opcode
        self.sa = sa
        self.name = name
        self.usage = bytes(usage)
        self.cdb_len = len(usage)
        self.handler = handler
        allowed = bytearray(usage)
        allowed[-1] |= 0xC0  # vendor-specific CONTROL bits are ignored
        if sa is not None:
            allowed[1] |= 0x1F  # the service action is checked by dispatch
        self.reject_mask = ~int.from_bytes(allowed, "big") & ((1 << (8 * len(usage))) - 1)
        self.ua_exempt = ua_exempt
        self.res = res
        self.spc2_ok = spc2_ok
        self.medium = medium
        self.by_sa: dict[int, CommandSpec] | None = None
        #: a command with Data-Out whose handler leaves the result's transfer length to
        #: execute() (the handlers of the read/write path set it themselves)
        layout = C.LAYOUTS[opcode]
        self.fill_transfer_length = (handler is not None and layout is not None
                                     and layout.data_out is not C.NONE
                                     and handler not in _SIZED)

    def select(self, cdb) -> CommandSpec:
        """For an opcode with service actions: the spec of the CDB's service action."""
        assert self.by_sa is not None
        spec = self.by_sa.get(cdb[1] & 0x1F)
        if spec is None:
            raise S.invalid_field_in_cdb(1, 4)
        return spec

    def reserved_bit_error(self, cdb) -> S.ScsiError:
        allowed = self.usage
        last = self.cdb_len - 1
        for i in range(self.cdb_len):
            mask = allowed[i] | (0xC0 if i == last else 0) | (0x1F if i == 1 and self.sa is not None else 0)
            bad = cdb[i] & ~mask & 0xFF
            if bad:
                return S.invalid_field_in_cdb(i, bad.bit_length() - 1)
        return S.invalid_field_in_cdb(0)  # unreachable when called correctly

    def __repr__(self) -> str:
        return f"CommandSpec({self.name})"


def _group(opcode: int, name: str, cdb_len: int, members: list[CommandSpec]) -> CommandSpec:
    group = CommandSpec(opcode, name, bytes(cdb_len), None)
    group.by_sa = {m.sa: m for m in members}  # type: ignore[misc]
    return group


def _u(*values: int) -> bytes:
    return bytes(values)


FF = 0xFF
LBA4 = (FF, FF, FF, FF)
LBA8 = LBA4 + LBA4


def _base_specs(lu: LogicalUnit) -> list[CommandSpec]:
    """Every command this logical unit supports (depends on its features)."""
    cs = CommandSpec
    specs = [
        cs(C.TEST_UNIT_READY, "TEST UNIT READY", _u(0x00, 0, 0, 0, 0, 0), spc.test_unit_ready,
           medium=True),
        cs(C.REQUEST_SENSE, "REQUEST SENSE", _u(0x03, 0x01, 0, 0, FF, 0), spc.request_sense,
           ua_exempt=True, spc2_ok=True),
        cs(C.READ_6, "READ(6)", _u(0x08, 0x1F, FF, FF, FF, 0), RW[C.READ_6], res="R",
           medium=True),
        cs(C.WRITE_6, "WRITE(6)", _u(0x0A, 0x1F, FF, FF, FF, 0), RW[C.WRITE_6], res="W",
           medium=True),
        cs(C.INQUIRY, "INQUIRY", _u(0x12, 0x01, FF, FF, FF, 0), inquiry.inquiry,
           ua_exempt=True, spc2_ok=True),
        cs(C.MODE_SELECT_6, "MODE SELECT(6)", _u(0x15, 0x11, 0, 0, FF, 0), modes.mode_select6,
           res="W"),
        cs(C.RESERVE_6, "RESERVE(6)", _u(0x16, 0, 0, 0, 0, 0), reservations.reserve, res="W"),
        cs(C.RELEASE_6, "RELEASE(6)", _u(0x17, 0, 0, 0, 0, 0), reservations.release, res="W",
           spc2_ok=True),
        cs(C.MODE_SENSE_6, "MODE SENSE(6)", _u(0x1A, 0x08, FF, FF, FF, 0), modes.mode_sense6,
           res="R"),
        cs(C.START_STOP_UNIT, "START STOP UNIT", _u(0x1B, 0x01, 0, 0x0F, 0xF7, 0),
           spc.start_stop_unit, res="W"),
        cs(C.PREVENT_ALLOW_MEDIUM_REMOVAL, "PREVENT ALLOW MEDIUM REMOVAL",
           _u(0x1E, 0, 0, 0, 0x03, 0), spc.prevent_allow, res="W"),
        cs(C.READ_CAPACITY_10, "READ CAPACITY(10)", _u(0x25, 0, *LBA4, 0, 0, 0x01, 0),
           sbc.read_capacity10, medium=True),
        cs(C.READ_10, "READ(10)", _u(0x28, 0xFE, *LBA4, 0x3F, FF, FF, 0), RW[C.READ_10], res="R",
           medium=True),
        cs(C.WRITE_10, "WRITE(10)", _u(0x2A, 0xFA, *LBA4, 0x3F, FF, FF, 0), RW[C.WRITE_10],
           res="W", medium=True),
        cs(C.WRITE_AND_VERIFY_10, "WRITE AND VERIFY(10)", _u(0x2E, 0xF6, *LBA4, 0x3F, FF, FF, 0),
           RW[C.WRITE_AND_VERIFY_10], res="W", medium=True),
        cs(C.VERIFY_10, "VERIFY(10)", _u(0x2F, 0xF6, *LBA4, 0x3F, FF, FF, 0), RW[C.VERIFY_10],
           res="R", medium=True),
        cs(C.PRE_FETCH_10, "PRE-FETCH(10)", _u(0x34, 0x02, *LBA4, 0x3F, FF, FF, 0),
           sbc.pre_fetch10, res="R", medium=True),
        cs(C.SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)", _u(0x35, 0x06, *LBA4, 0x3F, FF, FF, 0),
           sbc.synchronize_cache10, res="W", medium=True),
        cs(C.READ_DEFECT_DATA_10, "READ DEFECT DATA(10)", _u(0x37, 0, 0x1F, 0, 0, 0, 0, FF, FF, 0),
           sbc.read_defect_data10, res="R", medium=True),
        cs(C.WRITE_SAME_10, "WRITE SAME(10)",
           _u(0x41, 0xE8, *LBA4, 0x3F, FF, FF, 0),
           RW[C.WRITE_SAME_10], res="W", medium=True),
        cs(C.MODE_SELECT_10, "MODE SELECT(10)", _u(0x55, 0x11, 0, 0, 0, 0, 0, FF, FF, 0),
           modes.mode_select10, res="W"),
        cs(C.RESERVE_10, "RESERVE(10)", _u(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0), reservations.reserve,
           res="W"),
        cs(C.RELEASE_10, "RELEASE(10)", _u(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0), reservations.release,
           res="W", spc2_ok=True),
        _group(C.PERSISTENT_RESERVE_IN, "PERSISTENT RESERVE IN", 10, [
            cs(C.PERSISTENT_RESERVE_IN, f"PERSISTENT RESERVE IN ({name})",
               _u(0x5E, sa, 0, 0, 0, 0, 0, FF, FF, 0), reservations.persistent_reserve_in, sa=sa)
            for sa, name in ((0, "READ KEYS"), (1, "READ RESERVATION"),
                             (2, "REPORT CAPABILITIES"), (3, "READ FULL STATUS"))
        ]),
        _group(C.PERSISTENT_RESERVE_OUT, "PERSISTENT RESERVE OUT", 10, [
            cs(C.PERSISTENT_RESERVE_OUT, f"PERSISTENT RESERVE OUT ({name})",
               _u(0x5F, sa, FF, 0, 0, FF, FF, FF, FF, 0), reservations.persistent_reserve_out,
               sa=sa)
            for sa, name in ((0, "REGISTER"), (1, "RESERVE"), (2, "RELEASE"), (3, "CLEAR"),
                             (4, "PREEMPT"), (5, "PREEMPT AND ABORT"),
                             (6, "REGISTER AND IGNORE EXISTING KEY"))
        ]),
        cs(C.MODE_SENSE_10, "MODE SENSE(10)", _u(0x5A, 0x18, FF, FF, 0, 0, 0, FF, FF, 0),
           modes.mode_sense10, res="R"),
        cs(C.COMPARE_AND_WRITE, "COMPARE AND WRITE", _u(0x89, 0xFA, *LBA8, 0, 0, 0, FF, 0x3F, 0),
           rmw.compare_and_write, res="W", medium=True),
        cs(C.ORWRITE_16, "ORWRITE(16)", _u(0x8B, 0xFA, *LBA8, *LBA4, 0x3F, 0), rmw.orwrite16,
           res="W", medium=True),
        cs(C.WRITE_SAME_16, "WRITE SAME(16)",
           _u(0x93, 0xE9, *LBA8, *LBA4, 0x3F, 0),
           RW[C.WRITE_SAME_16], res="W", medium=True),
        _group(C.EXTENDED_COPY, "EXTENDED COPY", 16, [
            cs(C.EXTENDED_COPY, "EXTENDED COPY(LID1)", _u(0x83, 0x00, *bytes(8), *LBA4, 0, 0),
               xcopy.extended_copy, sa=0x00, res="W", medium=True),
        ]),
        _group(C.RECEIVE_COPY_RESULTS, "RECEIVE COPY RESULTS", 16, [
            cs(C.RECEIVE_COPY_RESULTS, f"RECEIVE COPY RESULTS ({name})",
               _u(0x84, sa, FF, *bytes(7), *LBA4, 0, 0), xcopy.receive_copy_results, sa=sa)
            for sa, name in ((0x00, "COPY STATUS"), (0x03, "OPERATING PARAMETERS"))
        ]),
        cs(C.READ_16, "READ(16)", _u(0x88, 0xFE, *LBA8, *LBA4, 0x3F, 0), RW[C.READ_16], res="R",
           medium=True),
        cs(C.WRITE_16, "WRITE(16)", _u(0x8A, 0xFA, *LBA8, *LBA4, 0x3F, 0), RW[C.WRITE_16], res="W",
           medium=True),
        cs(C.WRITE_AND_VERIFY_16, "WRITE AND VERIFY(16)", _u(0x8E, 0xF6, *LBA8, *LBA4, 0x3F, 0),
           RW[C.WRITE_AND_VERIFY_16], res="W", medium=True),
        cs(C.VERIFY_16, "VERIFY(16)", _u(0x8F, 0xF6, *LBA8, *LBA4, 0x3F, 0), RW[C.VERIFY_16],
           res="R", medium=True),
        cs(C.PRE_FETCH_16, "PRE-FETCH(16)", _u(0x90, 0x02, *LBA8, *LBA4, 0x3F, 0),
           sbc.pre_fetch16, res="R", medium=True),
        cs(C.SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)", _u(0x91, 0x06, *LBA8, *LBA4, 0x3F, 0),
           sbc.synchronize_cache16, res="W", medium=True),
        _group(C.SERVICE_ACTION_IN_16, "SERVICE ACTION IN(16)", 16, [
            cs(C.SERVICE_ACTION_IN_16, "READ CAPACITY(16)",
               _u(0x9E, C.SAI_READ_CAPACITY_16, *LBA8, *LBA4, 0x01, 0), sbc.read_capacity16,
               sa=C.SAI_READ_CAPACITY_16, medium=True),
            cs(C.SERVICE_ACTION_IN_16, "GET LBA STATUS",
               _u(0x9E, C.SAI_GET_LBA_STATUS, *LBA8, *LBA4, 0, 0), provisioning.get_lba_status,
               sa=C.SAI_GET_LBA_STATUS, res="R", medium=True),
        ]),
        _group(C.MAINTENANCE_IN, "MAINTENANCE IN", 12, [
            cs(C.MAINTENANCE_IN, "REPORT SUPPORTED OPERATION CODES",
               _u(0xA3, C.MI_REPORT_SUPPORTED_OPCODES, 0x87, FF, FF, FF, *LBA4, 0, 0),
               spc.report_supported_opcodes, sa=C.MI_REPORT_SUPPORTED_OPCODES, spc2_ok=True),
            cs(C.MAINTENANCE_IN, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
               _u(0xA3, C.MI_REPORT_SUPPORTED_TMFS, 0x80, 0, 0, 0, *LBA4, 0, 0),
               spc.report_supported_tmfs, sa=C.MI_REPORT_SUPPORTED_TMFS, spc2_ok=True),
        ]),
        cs(C.READ_12, "READ(12)", _u(0xA8, 0xFE, *LBA4, *LBA4, 0x3F, 0), RW[C.READ_12], res="R",
           medium=True),
        cs(C.WRITE_12, "WRITE(12)", _u(0xAA, 0xFA, *LBA4, *LBA4, 0x3F, 0), RW[C.WRITE_12], res="W",
           medium=True),
        cs(C.WRITE_AND_VERIFY_12, "WRITE AND VERIFY(12)", _u(0xAE, 0xF6, *LBA4, *LBA4, 0x3F, 0),
           RW[C.WRITE_AND_VERIFY_12], res="W", medium=True),
        cs(C.VERIFY_12, "VERIFY(12)", _u(0xAF, 0xF6, *LBA4, *LBA4, 0x3F, 0), RW[C.VERIFY_12],
           res="R", medium=True),
        cs(C.READ_DEFECT_DATA_12, "READ DEFECT DATA(12)", _u(0xB7, 0x1F, *LBA4, *LBA4, 0, 0),
           sbc.read_defect_data12, res="R", medium=True),
    ]
    if lu.max_atomic_blocks:
        specs.append(cs(C.WRITE_ATOMIC_16, "WRITE ATOMIC(16)",
                        _u(0x9C, 0xF8, *LBA8, FF, FF, FF, FF, 0x3F, 0), sbc.write_atomic16,
                        res="W", medium=True))
    if lu.lbpme:
        specs.append(cs(C.UNMAP, "UNMAP", _u(0x42, 0, 0, 0, 0, 0, 0x3F, FF, FF, 0),
                        provisioning.unmap, res="W", medium=True))
    # REPORT LUNS is answered by the target when there is one; a lone LU answers itself.
    from difs.scsi.lun_map import report_luns

    specs.append(cs(C.REPORT_LUNS, "REPORT LUNS", _u(0xA0, 0, FF, 0, 0, 0, *LBA4, 0, 0),
                    report_luns, ua_exempt=True, spc2_ok=True))
    return specs


def build_command_table(lu: LogicalUnit) -> list[CommandSpec | None]:
    table: list[CommandSpec | None] = [None] * 256
    for spec in _base_specs(lu):
        table[spec.opcode] = spec
    return table


def supported(table: list[CommandSpec | None]) -> list[CommandSpec]:
    """Every spec, service actions expanded, sorted by (opcode, service action)."""
    out: list[CommandSpec] = []
    for spec in table:
        if spec is None:
            continue
        if spec.by_sa is not None:
            out.extend(spec.by_sa[sa] for sa in sorted(spec.by_sa))
        else:
            out.append(spec)
    return out


def data_out_length(lu: LogicalUnit, cdb) -> int:
    """Bytes of Data-Out ``cdb`` describes on ``lu`` (0 for commands without Data-Out, and
    for a CDB too short to hold its length field): the data-out rule of the CDB layout
    table (:func:`difs.sam.cdb.data_out_length`).  On a PI-formatted unit a non-zero
    WRPROTECT / VRPROTECT (with BYTCHK=01b) means each block travels with its 8 bytes of
    PI (see :mod:`difs.scsi.protection`)."""
    try:
        return C.data_out_length(cdb, lu.block_size, pi_formatted=bool(lu.pi_type))
    except (IndexError, ValueError, struct.error):
        return 0
