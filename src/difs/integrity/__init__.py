"""T10 Protection Information (PI): pure, fast, shared by the controller and the host.

Nothing here does I/O.  Pieces:

=====================  ======================================================================
module                 what it gives
=====================  ======================================================================
``pi``                 the 8-byte tuple (guard CRC16-T10DIF, application tag, reference tag);
                       :func:`generate` and :func:`verify` for a run of blocks (types 1/2/3,
                       SBC-4 escapes), plus per-block reference versions used as test oracles
``crc``                CRC-16/T10-DIF over many blocks at once (:func:`block_guards`)
``wire``               :func:`interleave` / :func:`split`: data+PI as SCSI transfers it when
                       RDPROTECT/WRPROTECT != 0 (each block followed by its 8 PI bytes)
``protect``            what each RDPROTECT/WRPROTECT/VRPROTECT value asks of the device server
                       (:func:`wrprotect_rule` ...) as a frozen :class:`ProtectRule`
``layout``             how the controller stores PI with data so they agree after a crash
                       (data file + PI file + intent log) and the pure helpers for it
``errors``             :class:`PiCheckError` (ABORTED COMMAND 10h/01h-03h, INFORMATION = LBA),
                       :class:`InvalidProtectField` (ILLEGAL REQUEST 24h/00h)
=====================  ======================================================================

Their speeds: ``.venv/bin/python benchmarks/pi_bench.py``.

Typical use::

    from difs.integrity import generate, verify, interleave, split, PiCheckError

    pi = generate(data, lba=lba, pi_type=1, app_tag=app.tag)      # host, before WRITE
    wire = interleave(data, pi)                                   # Data-Out with WRPROTECT=1
    data, pi = split(wire)                                        # controller
    try:
        verify(data, pi, lba=lba, pi_type=1, app_tag=volume.app_tag)
    except PiCheckError as e:                                     # e.sense_key/asc/ascq/lba
        ...
"""

from difs.integrity.crc import block_guards, crc16_t10dif
from difs.integrity.errors import InvalidProtectField, PiCheckError, PiError
from difs.integrity.pi import (
    APP_TAG_ESCAPE,
    PI_DTYPE,
    PI_SIZE,
    REF_TAG_ESCAPE,
    generate,
    pack_tuple,
    repeated_pi,
    tuples,
    unpack_tuple,
    verify,
)
from difs.integrity.protect import ProtectRule, rdprotect_rule, vrprotect_rule, wrprotect_rule
from difs.integrity.wire import interleave, interleaved_size, split

__all__ = [
    "APP_TAG_ESCAPE",
    "PI_DTYPE",
    "PI_SIZE",
    "REF_TAG_ESCAPE",
    "InvalidProtectField",
    "PiCheckError",
    "PiError",
    "ProtectRule",
    "block_guards",
    "crc16_t10dif",
    "generate",
    "interleave",
    "interleaved_size",
    "pack_tuple",
    "rdprotect_rule",
    "repeated_pi",
    "split",
    "tuples",
    "unpack_tuple",
    "verify",
    "vrprotect_rule",
    "wrprotect_rule",
]
