"""32-bit serial number arithmetic (RFC 1982), as required for CmdSN/StatSN/DataSN (RFC 7143 4.2.2).

``a < b`` in serial terms means ``b`` is ahead of ``a`` by less than 2**31 steps; the comparison is
undefined at exactly 2**31 apart, which we report as "not less" in both directions.
"""

from __future__ import annotations

SERIAL_MASK = 0xFFFFFFFF
_HALF = 1 << 31


def serial_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & SERIAL_MASK


def serial_lt(a: int, b: int) -> bool:
    """True if ``a`` precedes ``b``."""
    d = (b - a) & SERIAL_MASK
    return 0 < d < _HALF


def serial_gt(a: int, b: int) -> bool:
    """True if ``a`` follows ``b``."""
    return serial_lt(b, a)


def serial_le(a: int, b: int) -> bool:
    return a == b or serial_lt(a, b)


def serial_in_window(value: int, low: int, high: int) -> bool:
    """True if ``low <= value <= high`` in serial arithmetic.

    A window whose size would be 0 or more than 2**31 (e.g. ``high = low - 1``, the closed CmdSN
    window of RFC 7143 4.2.2.1) contains nothing.
    """
    size = (high - low + 1) & SERIAL_MASK
    if size == 0 or size > _HALF:
        return False
    return ((value - low) & SERIAL_MASK) < size
