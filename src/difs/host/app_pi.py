"""Host-side T10 Protection Information: what an application's disk does for a PI policy.

For an application whose policy asks for protection information (``integrity.
protection_information`` = 1 or 3, the :data:`~difs.policy.fast.PI` requirement flag) the
host is the *application client* of SBC-4: it generates PI on every write and verifies PI
on every read, so the data is covered from the moment it leaves the application until the
moment it comes back — across the network (whatever the path negotiated) and at rest.

* **open** — :func:`parse_read_capacity16` reads PROT_EN / P_TYPE from READ CAPACITY(16);
  :func:`protection_for` refuses a volume that cannot honour the policy
  (:class:`ProtectionUnavailable`, naming the volume): no PI at all, another PI type, or
  logical blocks other than 512 bytes.
* **write** — :meth:`Protection.protect`: one 8-byte tuple per 512-byte block (guard
  CRC16-T10DIF, application tag, reference tag), interleaved after each block; the WRITE(16)
  carries WRPROTECT=001b and its TRANSFER LENGTH stays in *blocks* while the Data-Out grows
  to 520 bytes per block.
* **read** — READ(16) with RDPROTECT=001b returns 520 bytes per block;
  :meth:`Protection.unprotect` splits and verifies guard, application tag and reference tag
  *before* the application sees a byte, raising :class:`~difs.integrity.PiCheckError`.

**The application tag** (:func:`difs.sam.apptag.application_tag`, the rule host and
controller share) is derived from the application's *name*: the first 16 bits of
BLAKE2s(name), with FFFFh (the SBC-4 "check nothing" escape) mapped to FFFEh. Taking it from
the name rather than from the policy keeps data written under one policy version readable
under the next (a policy update must not make stored blocks fail their application-tag
check), and it is stable across hosts and restarts, so an application that moves to another
host still reads its own blocks. A caller may pass an explicit tag. A controller that checks
application tags (a volume configured with an expected ``app_tag``) expects
``application_tag(NAME)`` for the application's volume (the same function). Blocks written
by another application client (e.g. QEMU with WRPROTECT=000b: the controller generates their
PI with the volume's tag, or 0) carry another tag, and fail this host's application-tag check
on read.

**Reference tag**: type 1 — the low 32 bits of each block's LBA (a block written to or read
from the wrong place fails); type 3 — the application owns it and difs writes 0 and does not
check it (the guard and application tag still are), as :mod:`difs.integrity.pi` documents.

Blocks whose tuple is an SBC-4 escape (application tag FFFFh: never written since the volume
was formatted, or unmapped) pass verification, as SBC-4 requires.

PI is end to end, so it does not depend on the path: every path carries it. The path
requirement of a PI application therefore drops the PI bits (:func:`path_requirement`); the
CDB's GROUP NUMBER still carries the PI bit of the service class, so the controller can check
that the I/O asks for what the volume's policy needs.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from difs.host.errors import ProtectionUnavailable
from difs.integrity import (
    generate,
    interleave,
    interleaved_size,
    split,
    verify,
)
from difs.nbd.backend import NbdBackendError
from difs.policy.fast import PI, PI_TYPE1, PI_TYPE3, Requirement
from difs.sam.apptag import application_tag

__all__ = [
    "PI_FLAGS",
    "PROTECT_001",
    "READ_CAPACITY16",
    "Capacity",
    "Protection",
    "ProtectionUnavailable",
    "parse_read_capacity16",
    "path_requirement",
    "protection_for",
    "required_pi_type",
]

#: Every requirement bit that says "protection information".
PI_FLAGS = PI | PI_TYPE1 | PI_TYPE3
#: RDPROTECT/WRPROTECT = 001b in byte 1 of READ(16)/WRITE(16): PI travels, all checks apply.
PROTECT_001 = 0x20
#: The logical block size PI works with in difs (8 bytes of PI per 512-byte block).
PI_BLOCK = 512

#: READ CAPACITY(16) asking for 32 bytes (SBC-4 5.20): size, block length, PROT_EN / P_TYPE
READ_CAPACITY16 = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)

_CAPACITY16 = struct.Struct(">QIBB")  # RETURNED LBA, BLOCK LENGTH, byte 12, byte 13


def required_pi_type(requirement: Requirement) -> int:
    """The PI type a requirement asks for: 1, 3, or 0 when it asks for none.

    A bare PI flag without a type (as a CDB's service class promises) means type 1."""
    flags = requirement.flags
    if not flags & PI_FLAGS:
        return 0
    if flags & PI_TYPE3 and not flags & PI_TYPE1:
        return 3
    return 1


def path_requirement(requirement: Requirement) -> Requirement:
    """What a *path* must offer for ``requirement``: PI is the disk's own work, not the path's."""
    if not requirement.flags & PI_FLAGS:
        return requirement
    return Requirement(flags=requirement.flags & ~PI_FLAGS,
                       dscp=requirement.dscp if requirement.dscp >= 0 else None,
                       vlan=requirement.vlan if requirement.vlan >= 0 else None,
                       isolation_tag=requirement.isolation_tag)


@dataclass(frozen=True, slots=True)
class Capacity:
    """What READ CAPACITY(16) says about a volume."""

    blocks: int
    block_size: int
    #: 0: not formatted with protection information; else its type (1, 2 or 3)
    pi_type: int
    #: P_I_EXPONENT: 2**n PI tuples per logical block (difs needs 0)
    pi_exponent: int = 0

    @property
    def size(self) -> int:
        return self.blocks * self.block_size


def parse_read_capacity16(data: bytes | bytearray | memoryview) -> Capacity:
    """Decode READ CAPACITY(16) parameter data (SBC-4 5.20.2)."""
    if len(data) < _CAPACITY16.size:
        raise NbdBackendError(errno.EIO, f"READ CAPACITY(16) returned {len(data)} bytes, "
                                         f"need {_CAPACITY16.size}")
    last_lba, block_size, b12, b13 = _CAPACITY16.unpack_from(data)
    pi_type = ((b12 >> 1) & 0x07) + 1 if b12 & 0x01 else 0
    return Capacity(blocks=last_lba + 1, block_size=block_size, pi_type=pi_type,
                    pi_exponent=b13 >> 4)


def protection_for(requirement: Requirement, capacity: Capacity, *, app: str, volume: str,
                   app_tag: int | None = None) -> Protection | None:
    """The PI work for ``app`` on ``volume``: ``None`` when its policy asks for no PI.

    Raises :class:`ProtectionUnavailable` (naming the volume and what it lacks) when the
    policy asks for PI the volume does not have."""
    want = required_pi_type(requirement)
    if not want:
        return None
    if capacity.pi_type == 0:
        raise ProtectionUnavailable(
            f"volume {volume} is not formatted with protection information, and {app}'s "
            f"policy requires T10 PI type {want}; create the volume with PI "
            f"(e.g. `difs controller --volume NAME:SIZE:pi{want}`) or choose a policy "
            "without protection_information")
    if capacity.pi_type != want:
        raise ProtectionUnavailable(
            f"volume {volume} is formatted with PI type {capacity.pi_type}, and {app}'s policy "
            f"requires type {want}")
    if capacity.block_size != PI_BLOCK or capacity.pi_exponent:
        raise ProtectionUnavailable(
            f"volume {volume} has {capacity.block_size}-byte blocks with 2^"
            f"{capacity.pi_exponent} PI tuples each; difs protects 512-byte blocks with one")
    return Protection(pi_type=want, app_tag=application_tag(app) if app_tag is None else app_tag)


class Protection:
    """Generates and verifies one application's PI (pure: the disk counts what it did)."""

    __slots__ = ("app_tag", "pi_type")

    def __init__(self, *, pi_type: int, app_tag: int) -> None:
        if pi_type not in (1, 3):
            raise ValueError(f"difs protects with PI type 1 or 3, not {pi_type}")
        if not 0 <= app_tag < 0xFFFF:
            raise ValueError(f"application tag must be 0..FFFEh (FFFFh is an escape), "
                             f"got {app_tag:#x}")
        self.pi_type = pi_type
        self.app_tag = app_tag

    def __repr__(self) -> str:
        return f"Protection(pi_type={self.pi_type}, app_tag={self.app_tag:#06x})"

    @staticmethod
    def wire_length(length: int) -> int:
        """Bytes on the wire for ``length`` bytes of data (8 more per 512-byte block)."""
        return interleaved_size(length // PI_BLOCK, block_size=PI_BLOCK)

    def protect(self, data: bytes | bytearray | memoryview, lba: int) -> bytearray | memoryview:
        """``data`` (whole blocks starting at ``lba``) with its PI interleaved."""
        pi = generate(data, lba=lba, pi_type=self.pi_type, app_tag=self.app_tag)
        return interleave(data, pi)

    def unprotect(self, wire: bytes | bytearray | memoryview, lba: int) -> bytearray | memoryview:
        """The data of an interleaved Data-In, after verifying every block's PI.

        Raises :class:`~difs.integrity.PiCheckError` for the first failing block, and
        ``ValueError`` when ``wire`` is not a whole number of 520-byte blocks."""
        data, pi = split(wire)
        verify(data, pi, lba=lba, pi_type=self.pi_type, app_tag=self.app_tag)
        return data
