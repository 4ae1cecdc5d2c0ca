"""The LUN map of one SCSI target (one iSCSI target name) and the commands it answers
itself: REPORT LUNS for any LUN, and INQUIRY / REQUEST SENSE to a LUN that does not exist.

* REPORT LUNS works on every LUN, including a missing LUN 0 (SPC-4 6.33);
* INQUIRY to a missing LUN returns standard data with peripheral qualifier 011b and
  device type 1Fh (no logical unit);
* REQUEST SENSE to a missing LUN returns LOGICAL UNIT NOT SUPPORTED sense data, GOOD;
* anything else to a missing LUN is CHECK CONDITION, ILLEGAL REQUEST 25h/00h.

Adding or removing a LUN queues REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) on the other
LUs for every nexus they know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.sense import (
    ASC_LU_NOT_SUPPORTED,
    ASC_POWER_ON_RESET_OR_BDR,
    ASC_REPORTED_LUNS_DATA_CHANGED,
    ILLEGAL_REQUEST,
    build_sense,
)
from difs.sam.status import GOOD
from difs.sam import cdb as C
from difs.sam.cdb import U16, U32
from difs.scsi import sense as S
from difs.scsi.inquiry import standard_inquiry
from difs.scsi.result import ScsiResult
from difs.scsi.sense import ScsiError

if TYPE_CHECKING:
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus


def encode_lun(lun: int) -> bytes:
    """SAM-5 single-level LUN: peripheral addressing below 256, flat space up to 16383."""
    if lun < 256:
        return bytes((0, lun)) + bytes(6)
    if lun < 0x4000:
        return bytes((0x40 | (lun >> 8), lun & 0xFF)) + bytes(6)
    raise ValueError(f"LUN {lun} cannot be encoded")


def decode_lun(raw: bytes) -> int:
    """Inverse of :func:`encode_lun` for the 8-byte LUN field of an iSCSI PDU."""
    method = raw[0] >> 6
    if method == 0:
        return raw[1]
    if method == 1:
        return ((raw[0] & 0x3F) << 8) | raw[1]
    return -1


def report_luns_data(luns: list[int], select: int) -> bytes:
    if select not in (0x00, 0x01, 0x02):
        raise S.invalid_field_in_cdb(2)
    entries = b"" if select == 0x01 else b"".join(encode_lun(n) for n in sorted(luns))
    return U32.pack(len(entries)) + bytes(4) + entries


def report_luns(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    """REPORT LUNS received by a logical unit (no target around it: it is LUN 0)."""
    target = lu.target
    luns = sorted(target.luns) if target is not None else [0]
    return _report_luns(luns, cdb)


def _report_luns(luns: list[int], cdb) -> ScsiResult:
    alloc = U32.unpack_from(cdb, 6)[0]
    return ScsiResult(GOOD, report_luns_data(luns, cdb[2])[:alloc])


class ScsiTarget:
    """The logical units of one target, by LUN."""

    def __init__(self, luns: dict[int, LogicalUnit] | None = None) -> None:
        self.luns: dict[int, LogicalUnit] = {}
        for lun, lu in (luns or {}).items():
            self.add_lun(lun, lu, announce=False)

    def add_lun(self, lun: int, lu: LogicalUnit, *, announce: bool = True) -> None:
        encode_lun(lun)  # validates the number
        if lun in self.luns:
            raise ValueError(f"LUN {lun} already exists")
        self.luns[lun] = lu
        lu.target = self
        if announce:
            self._announce(exclude=lu)

    def remove_lun(self, lun: int) -> LogicalUnit:
        lu = self.luns.pop(lun)
        lu.target = None
        self._announce(exclude=None)
        return lu

    def _announce(self, exclude: LogicalUnit | None) -> None:
        for other in self.luns.values():
            if other is not exclude:
                other.establish_unit_attention(ASC_REPORTED_LUNS_DATA_CHANGED)

    # --- commands ---------------------------------------------------------------------

    def execute(self, lun: int, cdb: bytes | memoryview, data_out: bytes | memoryview | None,
                nexus: Nexus) -> ScsiResult:
        lu = self.luns.get(lun)
        if lu is not None:
            return lu.execute(cdb, data_out, nexus)
        try:
            return self._execute_missing(cdb, nexus)
        except ScsiError as err:
            return ScsiResult.from_error(err)

    def _execute_missing(self, cdb, nexus: Nexus) -> ScsiResult:
        if not len(cdb):
            raise S.invalid_opcode()
        op = cdb[0]
        if op == C.REPORT_LUNS and len(cdb) >= 12:
            return _report_luns(sorted(self.luns), cdb)
        if op == C.INQUIRY and len(cdb) >= 6:
            alloc = U16.unpack_from(cdb, 3)[0]
            if cdb[1] & 0x01:
                data = bytes((0x7F, cdb[2], 0, 0))
            elif cdb[2]:
                raise S.invalid_field_in_cdb(2)
            else:
                data = standard_inquiry(None, present=False)
            return ScsiResult(GOOD, data[:alloc])
        if op == C.REQUEST_SENSE and len(cdb) >= 6:
            data = build_sense(ILLEGAL_REQUEST, *ASC_LU_NOT_SUPPORTED,
                               descriptor=bool(cdb[1] & 0x01))
            return ScsiResult(GOOD, data[:cdb[4]])
        raise S.lu_not_supported()

    # --- events from the transport ----------------------------------------------------

    def nexus_lost(self, nexus: Nexus) -> None:
        for lu in self.luns.values():
            lu.nexus_lost(nexus)

    def reset(self, *, cold: bool = False) -> None:
        """TARGET WARM RESET (every LU queues 29h/00h POWER ON, RESET, OR BUS DEVICE
        RESET OCCURRED) or TARGET COLD RESET (every LU behaves as after power on)."""
        for lu in self.luns.values():
            if cold:
                lu.power_on()
            else:
                lu.reset(code=ASC_POWER_ON_RESET_OR_BDR)

    def find_lu_by_designator(self, designator: bytes) -> LogicalUnit | None:
        """The LU whose VPD 83h LU designators include ``designator`` (header included,
        as an EXTENDED COPY identification descriptor carries it)."""
        from difs.scsi.inquiry import lu_designators

        want = bytes(designator)
        for lu in self.luns.values():
            for d in lu_designators(lu):
                if d[1] & 0x0F == want[1] & 0x0F and d[4:] == want[4:4 + len(d) - 4] and \
                        d[3] == want[3] and d[0] & 0x0F == want[0] & 0x0F:
                    return lu
        return None
