"""The application-tag rule: which T10 PI application tag an application's blocks carry.

A contract between two processes: the host writes ``application_tag(NAME)`` into the PI of
every block application ``NAME`` writes (and checks it on read); a controller serving a
manager-placed volume expects the same tag of its application. Both import it from here, so
the rule cannot drift on one side (``tests/unit/sam/test_sam_apptag.py`` pins its values).

The tag is the first 16 bits (big-endian) of BLAKE2s(name as UTF-8, digest size 2), with FFFFh
— the SBC-4 escape that turns the application-tag check off — mapped to FFFEh. It comes from
the name, not the policy, so a policy update does not make stored blocks fail their check, and
it is the same on every host and after every restart.
"""

from __future__ import annotations

import hashlib


def application_tag(name: str) -> int:
    """The 16-bit application tag difs puts in the PI of application ``name`` (never FFFFh)."""
    tag = int.from_bytes(hashlib.blake2s(name.encode(), digest_size=2).digest(), "big")
    return 0xFFFE if tag == 0xFFFF else tag  # FFFFh: the escape (integrity.pi)
