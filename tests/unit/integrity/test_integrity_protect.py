"""RDPROTECT / WRPROTECT / VRPROTECT: every value 0..7 on protected and unprotected units."""

from __future__ import annotations

import pytest

from difs.integrity import InvalidProtectField, rdprotect_rule, vrprotect_rule, wrprotect_rule

# value -> (transfers_pi, check_guard, check_app, check_ref) on a type 1 unit (SBC-4 tables)
WRITE = {
    0: (False, False, False, False),
    1: (True, True, True, True),
    2: (True, False, True, True),
    3: (True, False, False, False),
    4: (True, True, False, False),
    5: (True, True, True, True),
}
READ = {
    0: (False, True, True, True),
    1: (True, True, True, True),
    2: (True, False, True, True),
    3: (True, False, False, False),
    4: (True, True, False, False),
    5: (True, True, True, True),
}


def flags(rule):
    return (rule.transfers_pi, rule.check_guard, rule.check_app, rule.check_ref)


@pytest.mark.parametrize("value", range(6))
def test_wrprotect_type1(value: int) -> None:
    rule = wrprotect_rule(value, pi_type=1)
    assert (rule.field, rule.value) == ("WRPROTECT", value)
    assert flags(rule) == WRITE[value]
    assert rule.generates_pi == (value == 0)
    assert not rule.strips_pi and not rule.checks_stored_pi


@pytest.mark.parametrize("value", range(6))
def test_rdprotect_type1(value: int) -> None:
    rule = rdprotect_rule(value, pi_type=1)
    assert flags(rule) == READ[value]
    assert rule.strips_pi == (value == 0)
    assert rule.checks_stored_pi and not rule.generates_pi


@pytest.mark.parametrize("value", range(6))
@pytest.mark.parametrize("bytchk", [0, 1])
def test_vrprotect_type1(value: int, bytchk: int) -> None:
    rule = vrprotect_rule(value, pi_type=1, bytchk=bytchk)
    transfers, guard, app, ref = READ[value]
    assert flags(rule) == (bool(bytchk) and value != 0, guard, app, ref)
    assert rule.checks_stored_pi == (not bytchk or value == 0)


@pytest.mark.parametrize("fn", [wrprotect_rule, rdprotect_rule, vrprotect_rule])
@pytest.mark.parametrize("value", range(6))
def test_type3_never_checks_ref_and_type2_does(fn, value: int) -> None:
    assert not fn(value, pi_type=3).check_ref
    assert fn(value, pi_type=2).check_ref == fn(value, pi_type=1).check_ref


@pytest.mark.parametrize("fn", [wrprotect_rule, rdprotect_rule, vrprotect_rule])
@pytest.mark.parametrize("value", [6, 7])
@pytest.mark.parametrize("pi_type", [1, 2, 3])
def test_reserved_values_are_invalid_field(fn, value: int, pi_type: int) -> None:
    with pytest.raises(InvalidProtectField) as ei:
        fn(value, pi_type=pi_type)
    assert (ei.value.sense_key, ei.value.asc, ei.value.ascq) == (0x05, 0x24, 0x00)
    assert ei.value.value == value and "reserved" in str(ei.value)


@pytest.mark.parametrize("fn", [wrprotect_rule, rdprotect_rule, vrprotect_rule])
@pytest.mark.parametrize("value", range(8))
def test_unprotected_unit(fn, value: int) -> None:
    if value == 0:
        rule = fn(0, pi_type=0)
        assert not (rule.transfers_pi or rule.checks_anything or rule.generates_pi
                    or rule.strips_pi)
    else:
        with pytest.raises(InvalidProtectField, match="no protection information"):
            fn(value, pi_type=0)


def test_app_tag_is_checked_only_with_ato_and_a_known_tag() -> None:
    rule = wrprotect_rule(1, pi_type=1)
    assert rule.checks(ato=True, app_tag_known=True) == {
        "check_guard": True, "check_app": True, "check_ref": True}
    assert not rule.checks(ato=False, app_tag_known=True)["check_app"]
    assert not rule.checks(ato=True, app_tag_known=False)["check_app"]
    assert wrprotect_rule(4, pi_type=1).checks(ato=True, app_tag_known=True) == {
        "check_guard": True, "check_app": False, "check_ref": False}


def test_rules_are_frozen_and_field_must_fit_3_bits() -> None:
    rule = rdprotect_rule(1, pi_type=1)
    with pytest.raises(AttributeError):
        rule.check_guard = False  # type: ignore[misc]
    with pytest.raises(ValueError):
        rdprotect_rule(8, pi_type=1)
