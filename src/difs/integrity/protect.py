"""What each RDPROTECT / WRPROTECT / VRPROTECT value asks of the device server (SBC-4).

The 3-bit protect field of READ/WRITE/VERIFY (and WRITE AND VERIFY, WRITE SAME, COMPARE AND
WRITE, ORWRITE...) says whether PI travels with the data and which PI fields the device
server checks.  For a logical unit formatted with protection (PROT_EN=1):

=====  ===========================  =========================  ===============================
value  WRPROTECT (PI received)      RDPROTECT (stored PI)      VRPROTECT (stored PI, BYTCHK=0)
=====  ===========================  =========================  ===============================
000b   no PI in Data-Out; device    checked: guard, app*, ref  guard, app*, ref
       server *generates* PI        PI *stripped* (not sent)
001b   guard, app*, ref             guard, app*, ref; PI sent  guard, app*, ref
010b   app*, ref (no guard)         app*, ref; PI sent         app*, ref
011b   nothing checked              nothing; PI sent           nothing
100b   guard only                   guard only; PI sent        guard only
101b   guard, app*, ref             guard, app*, ref; PI sent  guard, app*, ref
11xb   reserved: ILLEGAL REQUEST, INVALID FIELD IN CDB
=====  ===========================  =========================  ===============================

``app*``: the application tag is checked only when the device server knows the expected
value — ATO=1 in the Control mode page and an expected tag (32-byte CDB's EXPECTED LOGICAL
BLOCK APPLICATION TAG and mask, or, in difs, the volume's policy).  ``ref`` is checked for
protection types 1 and 2 only; a type 3 reference tag belongs to the application.

VERIFY with BYTCHK != 0 (compare with Data-Out): with VRPROTECT=000b no PI is transferred and
the stored PI is checked as above; with 001b-101b the Data-Out carries PI and the checks of
the table apply to that received PI before the byte-by-byte comparison.

On a logical unit formatted *without* protection information any non-zero protect value is
ILLEGAL REQUEST / INVALID FIELD IN CDB; zero means plain data.  The same checks are what
Linux's LIO target applies (``sbc_set_prot_op_checks``).

Usage::

    rule = wrprotect_rule(cdb_wrprotect, pi_type=lu.pi_type)   # raises InvalidProtectField
    if rule.transfers_pi:
        data, pi = split(data_out)
        verify(data, pi, lba=lba, pi_type=lu.pi_type, app_tag=expected,
               **rule.checks(ato=lu.ato, app_tag_known=expected is not None))
    elif rule.generates_pi:
        pi = generate(data, lba=lba, pi_type=lu.pi_type, app_tag=volume_app_tag)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difs.integrity.errors import InvalidProtectField

__all__ = ["ProtectRule", "rdprotect_rule", "vrprotect_rule", "wrprotect_rule"]

Field = Literal["RDPROTECT", "WRPROTECT", "VRPROTECT"]


@dataclass(frozen=True, slots=True)
class ProtectRule:
    """The device server's duties for one protect field value (build with the functions)."""

    field: Field
    value: int
    #: PI travels with the data: Data-In for reads, Data-Out for writes / VERIFY BYTCHK != 0
    transfers_pi: bool
    check_guard: bool
    #: check the application tag *if* ATO=1 and the expected tag is known (see :meth:`checks`)
    check_app: bool
    #: check the reference tag (always False for type 3 and for unprotected units)
    check_ref: bool
    #: the checks apply to the PI stored with the data (read/verify) rather than received PI
    checks_stored_pi: bool
    #: WRPROTECT=000b on a protected unit: the device server generates the PI it stores
    generates_pi: bool = False
    #: RDPROTECT=000b on a protected unit: stored PI is checked and not returned
    strips_pi: bool = False

    def checks(self, *, ato: bool, app_tag_known: bool) -> dict[str, bool]:
        """Keyword arguments for :func:`difs.integrity.pi.verify` under this rule."""
        return {
            "check_guard": self.check_guard,
            "check_app": self.check_app and ato and app_tag_known,
            "check_ref": self.check_ref,
        }

    @property
    def checks_anything(self) -> bool:
        return self.check_guard or self.check_app or self.check_ref


# value -> (check_guard, check_app, check_ref) for values 1..5, common to the three fields
_CHECKS = {
    1: (True, True, True),
    2: (False, True, True),
    3: (False, False, False),
    4: (True, False, False),
    5: (True, True, True),
}


def _base(field: Field, value: int, pi_type: int) -> tuple[bool, bool, bool] | None:
    """Validate; ``None`` for an unprotected unit with value 0, else the checks for 1..5."""
    if not 0 <= value <= 7:
        raise ValueError(f"{field} is a 3-bit field, got {value}")
    if pi_type not in (0, 1, 2, 3):
        raise ValueError(f"pi_type must be 0 (unprotected) or 1..3, got {pi_type}")
    if pi_type == 0:
        if value:
            raise InvalidProtectField(field, value, "logical unit has no protection information")
        return None
    if value >= 6:
        raise InvalidProtectField(field, value, "reserved value")
    return _CHECKS.get(value, (True, True, True))  # 000b checks like 001b where it checks


def _plain(field: Field) -> ProtectRule:
    return ProtectRule(field, 0, transfers_pi=False, check_guard=False, check_app=False,
                       check_ref=False, checks_stored_pi=False)


def wrprotect_rule(value: int, *, pi_type: int) -> ProtectRule:
    """Rule for a WRPROTECT value on a unit with protection ``pi_type`` (0 = none)."""
    base = _base("WRPROTECT", value, pi_type)
    if base is None:
        return _plain("WRPROTECT")
    if value == 0:
        return ProtectRule("WRPROTECT", 0, transfers_pi=False, check_guard=False,
                           check_app=False, check_ref=False, checks_stored_pi=False,
                           generates_pi=True)
    guard, app, ref = base
    return ProtectRule("WRPROTECT", value, transfers_pi=True, check_guard=guard, check_app=app,
                       check_ref=ref and pi_type != 3, checks_stored_pi=False)


def rdprotect_rule(value: int, *, pi_type: int) -> ProtectRule:
    """Rule for a RDPROTECT value on a unit with protection ``pi_type`` (0 = none)."""
    base = _base("RDPROTECT", value, pi_type)
    if base is None:
        return _plain("RDPROTECT")
    guard, app, ref = base
    return ProtectRule("RDPROTECT", value, transfers_pi=value != 0, check_guard=guard,
                       check_app=app, check_ref=ref and pi_type != 3, checks_stored_pi=True,
                       strips_pi=value == 0)


def vrprotect_rule(value: int, *, pi_type: int, bytchk: int = 0) -> ProtectRule:
    """Rule for a VRPROTECT value; ``bytchk`` is the VERIFY command's BYTCHK field."""
    base = _base("VRPROTECT", value, pi_type)
    if base is None:
        return _plain("VRPROTECT")
    guard, app, ref = base
    received = bool(bytchk) and value != 0
    return ProtectRule("VRPROTECT", value, transfers_pi=received, check_guard=guard,
                       check_app=app, check_ref=ref and pi_type != 3,
                       checks_stored_pi=not received)
