from hypothesis import given
from hypothesis import strategies as st

from difs.iscsi.serial import serial_add, serial_gt, serial_in_window, serial_le, serial_lt


def test_wraparound():
    assert serial_lt(0xFFFFFFFF, 0)
    assert serial_gt(0, 0xFFFFFFFF)
    assert serial_add(0xFFFFFFFF, 2) == 1
    assert not serial_lt(0, 1 << 31) and not serial_gt(0, 1 << 31)
    assert serial_le(5, 5)


def test_window():
    assert serial_in_window(0, 0xFFFFFFFE, 3)
    assert not serial_in_window(4, 0xFFFFFFFE, 3)
    assert not serial_in_window(10, 10, 9)  # closed window (MaxCmdSN = ExpCmdSN - 1)
    assert serial_in_window(10, 10, 10)


@given(st.integers(0, 0xFFFFFFFF), st.integers(1, (1 << 31) - 1))
def test_add_is_greater(a, n):
    assert serial_gt(serial_add(a, n), a)
    assert serial_lt(a, serial_add(a, n))
