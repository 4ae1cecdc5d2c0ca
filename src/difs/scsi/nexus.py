"""Identity of an I_T nexus (SAM-5): one initiator port talking to one target port.

The iSCSI layer creates one :class:`Nexus` per session (not per I/O) and passes it with
every command.  Two nexus objects are equal when they name the same initiator port and
target port, whatever their ``id``: a session reinstated by the same initiator port is the
same I_T nexus for reservations and unit attentions.

``Nexus`` subclasses ``tuple`` so hashing and comparison run in C on the hot path.
For iSCSI the port names are ``"<iqn>,i,0x<ISID>"`` and ``"<iqn>,t,0x<TPGT>"``.
"""

from __future__ import annotations


class Nexus(tuple):
    """(initiator_port, target_port) with a small informational ``id``."""

    id: int
    relative_port: int

    def __new__(cls, initiator_port: str, target_port: str = "", id: int = 0,
                relative_port: int = 1) -> Nexus:
        self = tuple.__new__(cls, (initiator_port, target_port))
        self.id = id
        self.relative_port = relative_port
        return self

    def __getnewargs__(self):  # pragma: no cover - pickling support
        return (self[0], self[1], self.id, self.relative_port)

    @property
    def initiator_port(self) -> str:
        return self[0]

    @property
    def target_port(self) -> str:
        return self[1]

    @property
    def initiator_name(self) -> str:
        """The initiator's iSCSI name, without the ``,i,0x<ISID>`` suffix."""
        return self[0].split(",", 1)[0]

    @property
    def target_name(self) -> str:
        """The target's iSCSI name, without the ``,t,0x<TPGT>`` suffix."""
        return self[1].split(",", 1)[0]

    @property
    def isid(self) -> str:
        parts = self[0].split(",")
        return parts[2] if len(parts) >= 3 else ""

    def transport_id(self) -> bytes:
        """iSCSI TransportID (SPC-4 7.6.4.6), format 01b: name + ",i,0x" + ISID."""
        if self.isid:
            body = f"{self.initiator_name},i,0x{self.isid.removeprefix('0x')}".encode()
            fmt = 0x40
        else:
            body = self.initiator_name.encode()
            fmt = 0x00
        body += b"\x00"
        body += b"\x00" * (-len(body) % 4)
        if len(body) < 20:
            body += b"\x00" * (20 - len(body))
        return bytes((fmt | 0x05, 0)) + len(body).to_bytes(2, "big") + body

    def __repr__(self) -> str:
        return f"Nexus({self[0]!r}, {self[1]!r}, id={self.id})"
