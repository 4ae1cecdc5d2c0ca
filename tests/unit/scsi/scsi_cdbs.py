"""CDB builders and assertions shared by the SCSI unit tests."""

from __future__ import annotations

import struct

from difs.sam.sense import parse_sense
from difs.sam.status import CHECK_CONDITION, GOOD
from difs.scsi.result import ScsiResult


def read6(lba: int, n: int) -> bytes:
    return struct.pack(">BBHBB", 0x08, (lba >> 16) & 0x1F, lba & 0xFFFF, n & 0xFF, 0)


def write6(lba: int, n: int) -> bytes:
    return struct.pack(">BBHBB", 0x0A, (lba >> 16) & 0x1F, lba & 0xFFFF, n & 0xFF, 0)


def rw10(op: int, lba: int, n: int, flags: int = 0, group: int = 0, control: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba & 0xFFFFFFFF, group, n, control)


def rw12(op: int, lba: int, n: int, flags: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba & 0xFFFFFFFF, n, group, 0)


def rw16(op: int, lba: int, n: int, flags: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba & 0xFFFFFFFFFFFFFFFF, n, group, 0)


def read10(lba, n, flags=0):
    return rw10(0x28, lba, n, flags)


def write10(lba, n, flags=0):
    return rw10(0x2A, lba, n, flags)


def read16(lba, n, flags=0):
    return rw16(0x88, lba, n, flags)


def write16(lba, n, flags=0):
    return rw16(0x8A, lba, n, flags)


def inquiry(alloc: int = 255, evpd: int = 0, page: int = 0) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def tur() -> bytes:
    return bytes(6)


def request_sense(alloc: int = 252, desc: int = 0) -> bytes:
    return bytes((0x03, desc, 0, 0, alloc, 0))


def mode_sense6(page: int = 0x3F, pc: int = 0, dbd: int = 0, alloc: int = 255, subpage: int = 0) -> bytes:
    return bytes((0x1A, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0))


def mode_sense10(page: int = 0x3F, pc: int = 0, dbd: int = 0, llbaa: int = 0, alloc: int = 1024) -> bytes:
    flags = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return struct.pack(">BBBBBBBHB", 0x5A, flags, (pc << 6) | page, 0, 0, 0, 0, alloc, 0)


def mode_select6(length: int, pf: int = 1, sp: int = 0) -> bytes:
    return bytes((0x15, (0x10 if pf else 0) | sp, 0, 0, length, 0))


def mode_select10(length: int, pf: int = 1, sp: int = 0) -> bytes:
    return struct.pack(">BBBBBBBHB", 0x55, (0x10 if pf else 0) | sp, 0, 0, 0, 0, 0, length, 0)


def read_capacity10() -> bytes:
    return bytes(10).replace(b"\x00", b"\x25", 1)


def read_capacity16(alloc: int = 32) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x10, 0, alloc, 0, 0)


def report_luns(alloc: int = 4096, select: int = 0) -> bytes:
    return struct.pack(">BBBBBBIBB", 0xA0, 0, select, 0, 0, 0, alloc, 0, 0)


def rsoc(options: int = 0, opcode: int = 0, sa: int = 0, rctd: int = 0, alloc: int = 65535) -> bytes:
    return struct.pack(">BBBBHIBB", 0xA3, 0x0C, (0x80 if rctd else 0) | options, opcode, sa, alloc, 0, 0)


def sync_cache10(lba: int = 0, n: int = 0) -> bytes:
    return rw10(0x35, lba, n)


def verify10(lba, n, bytchk=0, flags=0):
    return rw10(0x2F, lba, n, flags | (bytchk << 1))


def assert_good(r: ScsiResult) -> ScsiResult:
    assert r.status == GOOD, f"expected GOOD, got {r!r}"
    return r


def assert_check(r: ScsiResult, key: int, asc: int | None = None, ascq: int | None = None) -> bytes:
    assert r.status == CHECK_CONDITION, f"expected CHECK CONDITION, got {r!r}"
    k, a, q = parse_sense(r.sense)
    assert k == key, f"sense key {k:#x} != {key:#x} ({r!r})"
    if asc is not None:
        assert a == asc, f"ASC {a:#04x} != {asc:#04x} ({r!r})"
    if ascq is not None:
        assert q == ascq, f"ASCQ {q:#04x} != {ascq:#04x} ({r!r})"
    return bytes(r.sense)
