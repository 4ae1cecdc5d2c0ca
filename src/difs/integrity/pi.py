"""T10 Protection Information tuples: generate and verify them for a run of logical blocks.

One 8-byte tuple protects each logical block (SBC-4 4.22, "type 1/2/3 protection")::

    byte 0-1  LOGICAL BLOCK GUARD              CRC-16/T10-DIF of the block's data, big-endian
    byte 2-3  LOGICAL BLOCK APPLICATION TAG    owned by the application client (difs: the
                                               application's tag), big-endian
    byte 4-7  LOGICAL BLOCK REFERENCE TAG      big-endian; see below

Reference tag per protection type (what :func:`generate` writes, what :func:`verify` checks):

========  ===============================================  ===================================
type      generated                                        checked (``check_ref=True``)
========  ===============================================  ===================================
1         low 32 bits of the block's LBA (``lba + i``)     equal to ``(lba + i) mod 2**32``
2         ``ref_tag + i`` (``ref_tag`` = EXPECTED INITIAL   equal to ``(ref_tag + i) mod 2**32``
          LOGICAL BLOCK REFERENCE TAG of the 32-byte CDB;  (same default)
          default: low 32 bits of ``lba``)
3         ``ref_tag`` for every block, default 0: the      never: SBC-4 leaves it to the
          application owns it                              application (as Linux and LIO do)
========  ===============================================  ===================================

Type 3 defaults to reference tag 0, not FFFF_FFFFh, so that an application tag of FFFFh alone
never turns a generated tuple into the type 3 "check nothing" escape.

Escapes (SBC-4): a tuple whose application tag is FFFFh disables every check of its block
for types 1 and 2; for type 3 it takes application tag FFFFh *and* reference tag FFFF_FFFFh.

:func:`verify` checks the blocks in LBA order and, within a block, guard then application tag
then reference tag; it raises :class:`~difs.integrity.errors.PiCheckError` for the first
failure (so the INFORMATION field names the lowest failing LBA, and the ASCQ the first failed
check of that block).  The application tag is compared under ``app_tag_mask`` (the mask of a
32-byte CDB's LOGICAL BLOCK APPLICATION TAG MASK field), only when the caller knows the
expected value (``app_tag`` not ``None``).

Speed: guards come from :func:`difs.integrity.crc.block_guards`; the tag checks are numpy
comparisons over all blocks at once (a handful of vector operations for 2048 blocks), with a
plain-Python path for short transfers where numpy's per-call overhead would dominate.
:func:`generate_reference` / :func:`verify_reference` are straightforward per-block versions
kept as oracles for the property tests.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from difs.integrity.crc import (
    Buffer,
    as_byte_view,
    block_count,
    block_guards,
    block_guards_list,
    crc16_t10dif,
)
from difs.integrity.errors import PiCheckError

__all__ = [
    "APP_TAG_ESCAPE",
    "PI_DTYPE",
    "PI_SIZE",
    "PI_TYPES",
    "REF_TAG_ESCAPE",
    "generate",
    "generate_reference",
    "pack_tuple",
    "tuples",
    "unpack_tuple",
    "verify",
    "verify_reference",
]

PI_SIZE = 8
PI_TYPES = (1, 2, 3)
APP_TAG_ESCAPE = 0xFFFF
REF_TAG_ESCAPE = 0xFFFFFFFF
_U32 = 0xFFFFFFFF

#: numpy view of a run of PI tuples: ``np.frombuffer(pi, PI_DTYPE)`` (zero-copy)
PI_DTYPE = np.dtype([("guard", ">u2"), ("app", ">u2"), ("ref", ">u4")])

_TUPLE = struct.Struct(">HHI")

# Up to this many blocks plain Python beats numpy's fixed per-call costs (~1 us each).
_SMALL_BLOCKS = 16


@functools.lru_cache(maxsize=_SMALL_BLOCKS + 1)
def _tuples_struct(n: int) -> struct.Struct:
    return struct.Struct(">" + "HHI" * n)


def pack_tuple(guard: int, app_tag: int, ref_tag: int) -> bytes:
    """The 8 wire bytes of one PI tuple."""
    return _TUPLE.pack(guard, app_tag, ref_tag)


def unpack_tuple(raw: Buffer, offset: int = 0) -> tuple[int, int, int]:
    """``(guard, app_tag, ref_tag)`` of the tuple at ``offset`` in ``raw``."""
    return _TUPLE.unpack_from(raw, offset)


def tuples(pi: Buffer) -> np.ndarray:
    """A zero-copy structured view (fields ``guard``, ``app``, ``ref``) of a run of tuples."""
    mv = as_byte_view(pi)
    block_count(len(mv), PI_SIZE)
    return np.frombuffer(mv, dtype=PI_DTYPE)


def repeated_pi(guard: int, app_tag: int, ref_tag: int, n: int, *, increment: bool) -> bytes:
    """``n`` tuples with the same guard and application tag; the reference tag increments
    per block (types 1/2) or stays constant (type 3)."""
    out = np.empty(n, dtype=PI_DTYPE)
    out["guard"] = guard
    out["app"] = app_tag
    if increment:
        out["ref"] = (np.arange(n, dtype=np.uint64) + ref_tag) & 0xFFFFFFFF
    else:
        out["ref"] = ref_tag
    return out.tobytes()


def _check_type(pi_type: int) -> None:
    if pi_type not in PI_TYPES:
        raise ValueError(f"protection type must be 1, 2 or 3, got {pi_type!r}")


def _first_ref(pi_type: int, lba: int, ref_tag: int | None) -> int:
    """Reference tag of the first block (types 1 and 2) or of every block (type 3)."""
    if pi_type == 1:
        if ref_tag is not None:
            raise ValueError("type 1 reference tags are the LBA; do not pass ref_tag")
        return lba & _U32
    if pi_type == 2:
        return (lba if ref_tag is None else ref_tag) & _U32
    return 0 if ref_tag is None else ref_tag & _U32


@functools.lru_cache(maxsize=8)
def _offsets(n: int) -> np.ndarray:
    a = np.arange(n, dtype=np.uint32)
    a.flags.writeable = False
    return a


def _ref_tags(pi_type: int, first: int, n: int) -> np.ndarray | int:
    if pi_type == 3:
        return first
    return _offsets(n) + np.uint32(first)  # uint32 arithmetic wraps modulo 2**32


def generate(
    data: Buffer,
    *,
    lba: int,
    pi_type: int,
    app_tag: int = 0,
    ref_tag: int | None = None,
    block_size: int = 512,
) -> bytes:
    """PI tuples (8 bytes per block, in block order) for ``data`` starting at ``lba``.

    ``app_tag`` goes into every tuple.  ``ref_tag``: see the module table (type 1: must be
    ``None``; type 2: initial reference tag, default ``lba``; type 3: constant, default 0).
    """
    _check_type(pi_type)
    first = _first_ref(pi_type, lba, ref_tag)
    app_tag &= 0xFFFF
    mv = as_byte_view(data)
    n = block_count(len(mv), block_size)
    if n <= _SMALL_BLOCKS:
        values = [app_tag] * (3 * n)
        values[0::3] = block_guards_list(mv, n, block_size)
        if pi_type == 3:
            values[2::3] = [first] * n
        elif first + n <= _U32 + 1:
            values[2::3] = range(first, first + n)
        else:
            values[2::3] = [(first + i) & _U32 for i in range(n)]
        return _tuples_struct(n).pack(*values)
    out = np.empty(n, dtype=PI_DTYPE)
    out["guard"] = block_guards(mv, block_size=block_size)
    out["app"] = app_tag
    out["ref"] = _ref_tags(pi_type, first, n)
    return out.tobytes()


def verify(
    data: Buffer,
    pi: Buffer,
    *,
    lba: int,
    pi_type: int,
    app_tag: int | None = None,
    app_tag_mask: int = 0xFFFF,
    ref_tag: int | None = None,
    check_guard: bool = True,
    check_app: bool = True,
    check_ref: bool = True,
    block_size: int = 512,
) -> None:
    """Check ``pi`` against ``data`` (blocks starting at ``lba``); raise on the first failure.

    ``app_tag``: expected application tag, compared under ``app_tag_mask``; ``None`` means
    not known, and the application tag is then not checked.  ``ref_tag``: type 2 only, the
    expected initial reference tag (default ``lba``).  ``check_*`` select the checks (see
    :mod:`difs.integrity.protect` for what each RD/WR/VRPROTECT value asks).  Raises
    :class:`PiCheckError`; ``ValueError`` if the lengths of ``data`` and ``pi`` disagree.
    """
    _check_type(pi_type)
    mv = as_byte_view(data)
    n = block_count(len(mv), block_size)
    piv = as_byte_view(pi)
    if len(piv) != n * PI_SIZE:
        raise ValueError(f"{n} blocks need {n * PI_SIZE} bytes of PI, got {len(piv)}")
    mask = app_tag_mask & 0xFFFF
    do_app = check_app and app_tag is not None and mask != 0
    want_app = (app_tag or 0) & mask
    do_ref = check_ref and pi_type != 3
    first_ref = _first_ref(pi_type, lba, ref_tag)
    if not (check_guard or do_app or do_ref) or n == 0:
        return
    if n <= _SMALL_BLOCKS:
        _verify_small(mv, piv, n, block_size, lba, pi_type, check_guard,
                      do_app, want_app, mask, do_ref, first_ref)
        return

    t = np.frombuffer(piv, dtype=PI_DTYPE)
    bad_guard = bad_app = bad_ref = None
    if check_guard:
        guards = block_guards(mv, block_size=block_size)
        bad_guard = t["guard"] != guards
    if do_app:
        bad_app = (t["app"] & mask) != want_app
    if do_ref:
        expected_ref = _ref_tags(pi_type, first_ref, n)
        bad_ref = t["ref"] != expected_ref
    bad = None
    for b in (bad_guard, bad_app, bad_ref):
        if b is not None:
            bad = b if bad is None else bad | b
    if not bad.any():
        return
    escaped = t["app"] == APP_TAG_ESCAPE
    if pi_type == 3:
        escaped &= t["ref"] == REF_TAG_ESCAPE
    bad &= ~escaped
    if not bad.any():
        return
    i = int(np.argmax(bad))
    g, a, r = (int(x) for x in t[i])
    if bad_guard is not None and bad_guard[i]:
        raise PiCheckError("guard", lba + i, expected=int(guards[i]), found=g)
    if bad_app is not None and bad_app[i]:
        raise PiCheckError("app", lba + i, expected=want_app, found=a & mask)
    raise PiCheckError("ref", lba + i, expected=int(expected_ref[i]), found=r)


def _verify_small(mv, piv, n, block_size, lba, pi_type, check_guard,
                  do_app, want_app, mask, do_ref, first_ref) -> None:
    guards = block_guards_list(mv, n, block_size) if check_guard else None
    for i, (g, a, r) in enumerate(_TUPLE.iter_unpack(piv)):
        if a == APP_TAG_ESCAPE and (pi_type != 3 or r == REF_TAG_ESCAPE):
            continue
        if guards is not None:
            crc = guards[i]
            if crc != g:
                raise PiCheckError("guard", lba + i, expected=crc, found=g)
        if do_app and (a & mask) != want_app:
            raise PiCheckError("app", lba + i, expected=want_app, found=a & mask)
        if do_ref:
            want = (first_ref + i) & _U32
            if r != want:
                raise PiCheckError("ref", lba + i, expected=want, found=r)


# --- reference implementations (test oracles: obvious, per block, no numpy) ----------------


def generate_reference(
    data: Buffer,
    *,
    lba: int,
    pi_type: int,
    app_tag: int = 0,
    ref_tag: int | None = None,
    block_size: int = 512,
) -> bytes:
    """Same contract as :func:`generate`, one block at a time."""
    _check_type(pi_type)
    mv = as_byte_view(data)
    n = block_count(len(mv), block_size)
    first = _first_ref(pi_type, lba, ref_tag)
    out = bytearray()
    for i in range(n):
        guard = crc16_t10dif(bytes(mv[i * block_size : (i + 1) * block_size]))
        ref = first if pi_type == 3 else (first + i) & _U32
        out += pack_tuple(guard, app_tag & 0xFFFF, ref)
    return bytes(out)


def verify_reference(
    data: Buffer,
    pi: Buffer,
    *,
    lba: int,
    pi_type: int,
    app_tag: int | None = None,
    app_tag_mask: int = 0xFFFF,
    ref_tag: int | None = None,
    check_guard: bool = True,
    check_app: bool = True,
    check_ref: bool = True,
    block_size: int = 512,
) -> None:
    """Same contract as :func:`verify`, one block at a time."""
    _check_type(pi_type)
    mv = as_byte_view(data)
    n = block_count(len(mv), block_size)
    piv = as_byte_view(pi)
    if len(piv) != n * PI_SIZE:
        raise ValueError(f"{n} blocks need {n * PI_SIZE} bytes of PI, got {len(piv)}")
    mask = app_tag_mask & 0xFFFF
    first = _first_ref(pi_type, lba, ref_tag)
    for i in range(n):
        g, a, r = unpack_tuple(piv, i * PI_SIZE)
        if pi_type == 3:
            if a == APP_TAG_ESCAPE and r == REF_TAG_ESCAPE:
                continue
        elif a == APP_TAG_ESCAPE:
            continue
        if check_guard:
            crc = crc16_t10dif(bytes(mv[i * block_size : (i + 1) * block_size]))
            if crc != g:
                raise PiCheckError("guard", lba + i, expected=crc, found=g)
        if check_app and app_tag is not None and mask and (a & mask) != (app_tag & mask):
            raise PiCheckError("app", lba + i, expected=app_tag & mask, found=a & mask)
        if check_ref and pi_type != 3:
            want = (first + i) & _U32
            if r != want:
                raise PiCheckError("ref", lba + i, expected=want, found=r)
