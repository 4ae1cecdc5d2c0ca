"""Reservations: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (5.13, 6.15-6.16).

State lives in :class:`Reservations` (one per logical unit).  ``active`` is a plain
attribute so the hot path pays one attribute read when nothing restricts access.

Access rules applied by :meth:`Reservations.check` use each command's reservation class
from the command table (SPC-4 5.13.1 tables, SBC-4 4.17):

* ``"A"`` allowed under any persistent reservation (INQUIRY, READ CAPACITY, PR IN/OUT...);
* ``"R"`` read-type: allowed for non-holders under Write Exclusive types, conflict under
  Exclusive Access types;
* ``"W"`` write-type: conflict for non-holders under every type.

Under the *registrants only* and *all registrants* types every registered I_T nexus has
the holder's access.  An SPC-2 reservation held through another nexus conflicts with every
command whose spec does not set ``spc2_ok``.

Persistent reservation support: REGISTER, REGISTER AND IGNORE EXISTING KEY, RESERVE,
RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT (tasks are aborted by the transport, which sees
the unit attention), all six reservation types, LU scope, APTPL.  Not supported:
SPEC_I_PT, ALL_TG_PT, REGISTER AND MOVE (REPORT CAPABILITIES says so).

Persistence: :meth:`Reservations.state` is a JSON-serialisable dict; the LU calls
``on_persistent_change(state)`` after every change of registrations or reservation.  The
controller stores it when ``state["aptpl"]`` is true (and drops it otherwise) and passes it
back as ``persistent_state`` when it re-creates the LU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from difs.sam.sense import (
    ASC_INVALID_RELEASE_OF_PR,
    ASC_REGISTRATIONS_PREEMPTED,
    ASC_RESERVATIONS_PREEMPTED,
    ASC_RESERVATIONS_RELEASED,
    ILLEGAL_REQUEST,
)
from difs.sam.status import GOOD
from difs.sam.cdb import U16, U32, U64
from difs.scsi import sense as S
from difs.scsi.nexus import Nexus
from difs.scsi.result import ScsiResult
from difs.scsi.sense import ReservationConflict, ScsiError

if TYPE_CHECKING:
    from difs.scsi.commands import CommandSpec
    from difs.scsi.device import LogicalUnit

# persistent reservation types
WRITE_EXCLUSIVE = 1
EXCLUSIVE_ACCESS = 3
WRITE_EXCLUSIVE_RO = 5
EXCLUSIVE_ACCESS_RO = 6
WRITE_EXCLUSIVE_AR = 7
EXCLUSIVE_ACCESS_AR = 8
PR_TYPES = (WRITE_EXCLUSIVE, EXCLUSIVE_ACCESS, WRITE_EXCLUSIVE_RO, EXCLUSIVE_ACCESS_RO,
            WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR)
_WRITE_EXCLUSIVE_TYPES = (WRITE_EXCLUSIVE, WRITE_EXCLUSIVE_RO, WRITE_EXCLUSIVE_AR)
_REGISTRANT_TYPES = (WRITE_EXCLUSIVE_RO, EXCLUSIVE_ACCESS_RO, WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR)
_ALL_REGISTRANT_TYPES = (WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR)

# PERSISTENT RESERVE OUT service actions
PRO_REGISTER, PRO_RESERVE, PRO_RELEASE, PRO_CLEAR = 0, 1, 2, 3
PRO_PREEMPT, PRO_PREEMPT_AND_ABORT, PRO_REGISTER_AND_IGNORE, PRO_REGISTER_AND_MOVE = 4, 5, 6, 7
# PERSISTENT RESERVE IN service actions
PRI_READ_KEYS, PRI_READ_RESERVATION, PRI_REPORT_CAPABILITIES, PRI_READ_FULL_STATUS = 0, 1, 2, 3


class Reservations:
    """SPC-2 and persistent reservation state of one logical unit."""

    def __init__(self, lu: LogicalUnit, state: dict | None = None,
                 on_change: Callable[[dict], None] | None = None) -> None:
        self.lu = lu
        self.on_change = on_change
        self.holder: Nexus | None = None        # SPC-2 reservation
        self.registrations: dict[Nexus, int] = {}
        self.generation = 0
        self.pr_holder: Nexus | None = None     # None with a type set = all registrants
        self.pr_type = 0                        # 0: no persistent reservation
        self.aptpl = False
        self.active = False
        if state:
            self.load(state)

    # --- state ------------------------------------------------------------------------

    def _update(self) -> None:
        self.active = self.holder is not None or self.pr_type != 0

    def state(self) -> dict:
        """JSON-serialisable persistent reservation state."""
        return {
            "generation": self.generation,
            "aptpl": self.aptpl,
            "registrations": [
                {"initiator_port": nx.initiator_port, "target_port": nx.target_port, "key": key}
                for nx, key in self.registrations.items()
            ],
            "reservation": None if not self.pr_type else {
                "type": self.pr_type,
                "holder": None if self.pr_holder is None else
                [self.pr_holder.initiator_port, self.pr_holder.target_port],
            },
        }

    def load(self, state: dict) -> None:
        self.generation = int(state.get("generation", 0)) & 0xFFFFFFFF
        self.aptpl = bool(state.get("aptpl", False))
        self.registrations = {
            Nexus(r["initiator_port"], r["target_port"]): int(r["key"])
            for r in state.get("registrations", ())
        }
        resv = state.get("reservation")
        if resv:
            self.pr_type = int(resv["type"])
            holder = resv.get("holder")
            self.pr_holder = Nexus(holder[0], holder[1]) if holder else None
        self._update()

    def _changed(self) -> None:
        self._update()
        if self.on_change is not None:
            self.on_change(self.state())

    def _bump(self) -> None:
        self.generation = (self.generation + 1) & 0xFFFFFFFF

    def is_holder(self, nexus: Nexus) -> bool:
        if not self.pr_type:
            return False
        if self.pr_type in _ALL_REGISTRANT_TYPES:
            return nexus in self.registrations
        return self.pr_holder == nexus

    # --- access control ---------------------------------------------------------------

    def check(self, spec: CommandSpec, nexus: Nexus) -> None:
        holder = self.holder
        if holder is not None and holder != nexus and not spec.spc2_ok:
            raise ReservationConflict()
        pr_type = self.pr_type
        if not pr_type or spec.res == "A":
            return
        if pr_type in _REGISTRANT_TYPES:
            if nexus in self.registrations:
                return
        elif self.pr_holder == nexus:
            return
        if spec.res == "R" and pr_type in _WRITE_EXCLUSIVE_TYPES:
            return
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
        if self.registrations or self.pr_type:
            raise ReservationConflict()
        if self.holder is not None and self.holder != nexus:
            raise ReservationConflict()
        self.holder = nexus
        self._update()

    def release(self, nexus: Nexus) -> None:
        if self.registrations or self.pr_type:
            raise ReservationConflict()
        if self.holder == nexus:
            self.holder = None
            self._update()

    # --- PERSISTENT RESERVE OUT -------------------------------------------------------

    def _release_reservation(self, by: Nexus | None) -> None:
        pr_type = self.pr_type
        self.pr_type = 0
        self.pr_holder = None
        if pr_type in _REGISTRANT_TYPES:
            for nx in self.registrations:
                if nx != by:
                    self.lu.establish_unit_attention(ASC_RESERVATIONS_RELEASED, nexus=nx)

    def _unregister(self, nexus: Nexus) -> None:
        del self.registrations[nexus]
        if not self.pr_type:
            return
        if self.pr_type in _ALL_REGISTRANT_TYPES:
            if not self.registrations:
                self._release_reservation(nexus)
        elif self.pr_holder == nexus:
            self._release_reservation(nexus)

    def register(self, nexus: Nexus, key: int, sark: int, *, ignore: bool, aptpl: bool) -> None:
        current = self.registrations.get(nexus)
        if current is None:
            if not ignore and key != 0:
                raise ReservationConflict()
            if sark == 0:
                return
            self.registrations[nexus] = sark
        else:
            if not ignore and key != current:
                raise ReservationConflict()
            if sark == 0:
                self._unregister(nexus)
            else:
                self.registrations[nexus] = sark
        self.aptpl = aptpl
        self._bump()
        self._changed()

    def _registered_key(self, nexus: Nexus, key: int) -> None:
        if self.registrations.get(nexus) != key:
            raise ReservationConflict()

    def reserve_pr(self, nexus: Nexus, key: int, pr_type: int) -> None:
        self._registered_key(nexus, key)
        if self.pr_type:
            if self.is_holder(nexus) and self.pr_type == pr_type:
                return
            raise ReservationConflict()
        self.pr_type = pr_type
        self.pr_holder = None if pr_type in _ALL_REGISTRANT_TYPES else nexus
        self._changed()

    def release_pr(self, nexus: Nexus, key: int, pr_type: int) -> None:
        self._registered_key(nexus, key)
        if not self.pr_type or not self.is_holder(nexus):
            return
        if pr_type != self.pr_type:
            raise ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_RELEASE_OF_PR,
                            message="release with a different reservation type")
        self._release_reservation(nexus)
        self._changed()

    def clear(self, nexus: Nexus, key: int) -> None:
        self._registered_key(nexus, key)
        for nx in self.registrations:
            if nx != nexus:
                self.lu.establish_unit_attention(ASC_RESERVATIONS_PREEMPTED, nexus=nx)
        self.registrations.clear()
        self.pr_type = 0
        self.pr_holder = None
        self._bump()
        self._changed()

    def preempt(self, nexus: Nexus, key: int, sark: int, pr_type: int) -> None:
        self._registered_key(nexus, key)
        if not self.pr_type or self.pr_type in _ALL_REGISTRANT_TYPES and sark != 0:
            if sark == 0:
                raise S.invalid_field_in_parameter_list(8)
            victims = [nx for nx, k in self.registrations.items() if k == sark and nx != nexus]
            if not victims and not any(k == sark for k in self.registrations.values()):
                raise ReservationConflict()
            self._remove(victims)
        elif self.pr_type in _ALL_REGISTRANT_TYPES:  # SARK == 0: take over
            self._remove([nx for nx in self.registrations if nx != nexus])
            self.pr_type, self.pr_holder = pr_type, (
                None if pr_type in _ALL_REGISTRANT_TYPES else nexus)
        else:
            holder_key = self.registrations.get(self.pr_holder) if self.pr_holder else None
            if sark == holder_key:
                victims = [nx for nx, k in self.registrations.items() if k == sark and nx != nexus]
                self._remove(victims)
                changed = self.pr_type != pr_type
                self.pr_type = pr_type
                self.pr_holder = None if pr_type in _ALL_REGISTRANT_TYPES else nexus
                if changed:
                    for nx in self.registrations:
                        if nx != nexus:
                            self.lu.establish_unit_attention(ASC_RESERVATIONS_RELEASED, nexus=nx)
            else:
                if sark == 0:
                    raise S.invalid_field_in_parameter_list(8)
                victims = [nx for nx, k in self.registrations.items() if k == sark and nx != nexus]
                if not victims:
                    raise ReservationConflict()
                self._remove(victims)
        self._bump()
        self._changed()

    def _remove(self, victims: list[Nexus]) -> None:
        for nx in victims:
            self.registrations.pop(nx, None)
            self.lu.establish_unit_attention(ASC_REGISTRATIONS_PREEMPTED, nexus=nx)
        if self.pr_holder is not None and self.pr_holder not in self.registrations:
            self.pr_type, self.pr_holder = 0, None

    # --- PERSISTENT RESERVE IN --------------------------------------------------------

    def read_keys(self) -> bytes:
        keys = b"".join(U64.pack(k) for k in self.registrations.values())
        return U32.pack(self.generation) + U32.pack(len(keys)) + keys

    def read_reservation(self) -> bytes:
        if not self.pr_type:
            return U32.pack(self.generation) + U32.pack(0)
        key = 0
        if self.pr_type not in _ALL_REGISTRANT_TYPES and self.pr_holder is not None:
            key = self.registrations.get(self.pr_holder, 0)
        body = U64.pack(key) + bytes(4) + bytes((0, self.pr_type & 0x0F)) + bytes(2)
        return U32.pack(self.generation) + U32.pack(len(body)) + body

    @staticmethod
    def report_capabilities() -> bytes:
        buf = bytearray(8)
        U16.pack_into(buf, 0, 8)
        buf[2] = 0x10 | 0x01        # CRH, PTPL_C
        buf[3] = 0x80 | (1 << 4)    # TMV, ALLOW COMMANDS 001b
        buf[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02  # WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
        buf[5] = 0x01                # EX_AC_AR
        return bytes(buf)

    def read_full_status(self) -> bytes:
        out = bytearray()
        for nx, key in self.registrations.items():
            holder = self.is_holder(nx)
            tid = nx.transport_id()
            desc = bytearray(24)
            U64.pack_into(desc, 0, key)
            desc[12] = 0x01 if holder else 0x00
            desc[13] = self.pr_type & 0x0F if holder else 0
            U16.pack_into(desc, 18, nx.relative_port & 0xFFFF)
            U32.pack_into(desc, 20, len(tid))
            out += desc + tid
        return U32.pack(self.generation) + U32.pack(len(out)) + bytes(out)


# --- command handlers --------------------------------------------------------------------


def reserve(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lu.reservations.reserve(nexus)
    return ScsiResult(GOOD)


def release(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    lu.reservations.release(nexus)
    return ScsiResult(GOOD)


def persistent_reserve_in(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    sa = cdb[1] & 0x1F
    alloc = U16.unpack_from(cdb, 7)[0]
    res = lu.reservations
    if sa == PRI_READ_KEYS:
        data = res.read_keys()
    elif sa == PRI_READ_RESERVATION:
        data = res.read_reservation()
    elif sa == PRI_REPORT_CAPABILITIES:
        data = res.report_capabilities()
    elif sa == PRI_READ_FULL_STATUS:
        data = res.read_full_status()
    else:
        raise S.invalid_field_in_cdb(1, 4)
    return ScsiResult(GOOD, data[:alloc])


def persistent_reserve_out(lu: LogicalUnit, cdb, data_out, nexus: Nexus) -> ScsiResult:
    sa = cdb[1] & 0x1F
    scope, pr_type = cdb[2] >> 4, cdb[2] & 0x0F
    length = U32.unpack_from(cdb, 5)[0]
    if sa > PRO_REGISTER_AND_IGNORE:
        raise S.invalid_field_in_cdb(1, 4)  # REGISTER AND MOVE and reserved actions
    if length != 24:
        raise S.parameter_list_length_error()
    data = bytes(data_out or b"")
    if len(data) < 24:
        raise S.parameter_list_length_error()
    key, sark = U64.unpack_from(data, 0)[0], U64.unpack_from(data, 8)[0]
    flags = data[20]
    if flags & 0x08:
        raise S.invalid_field_in_parameter_list(20, 3)  # SPEC_I_PT not supported
    if flags & 0x04:
        raise S.invalid_field_in_parameter_list(20, 2)  # ALL_TG_PT not supported
    res = lu.reservations
    if sa in (PRO_REGISTER, PRO_REGISTER_AND_IGNORE):
        res.register(nexus, key, sark, ignore=sa == PRO_REGISTER_AND_IGNORE,
                     aptpl=bool(flags & 0x01))
        return ScsiResult(GOOD)
    if sa == PRO_CLEAR:
        res.clear(nexus, key)
        return ScsiResult(GOOD)
    if scope != 0:
        raise S.invalid_field_in_cdb(2, 7)
    if pr_type not in PR_TYPES:
        raise S.invalid_field_in_cdb(2, 3)
    if sa == PRO_RESERVE:
        res.reserve_pr(nexus, key, pr_type)
    elif sa == PRO_RELEASE:
        res.release_pr(nexus, key, pr_type)
    else:  # PREEMPT, PREEMPT AND ABORT
        res.preempt(nexus, key, sark, pr_type)
    return ScsiResult(GOOD)
