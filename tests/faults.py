"""Fault injection for iSCSI tests: a proxy that flips bits in PDUs in flight.

:class:`FaultProxy` is an :class:`~proxy.IscsiProxy` (it knows each connection's channel from
the ISID, and can cut, refuse and stall channels) that also cuts each direction's byte stream
into PDUs (RFC 7143 11.2: 48-byte BHS, TotalAHSLength words of AHS, a header digest when
negotiated, the data segment padded to 4 bytes, a data digest when negotiated and the segment
is not empty) and corrupts the PDUs a :class:`BitFlip` selects — *after* the sender computed
its digests, as a faulty NIC, switch or cable would.

Digests are learned per connection by reading the Login Response text (``HeaderDigest=`` /
``DataDigest=``); they apply from the first PDU after the final Login Response (T=1, NSG=FFP).
A test that knows better can set them per channel: ``proxy.digests[channel] = (True, False)``.

Usage::

    proxy = FaultProxy((ctl.host, ctl.port))
    flip = proxy.add(BitFlip(TO_TARGET, where="data", channel=0, opcodes={DATA_OUT}))
    ... run I/O through proxy.portal ...
    assert flip.fired == 1 and proxy.flips[0].opcode == DATA_OUT

Every flip done is recorded in ``proxy.flips`` (:class:`Flipped`: channel, direction, opcode,
ITT, which byte of the PDU, and for data which byte of the command's buffer).
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from proxy import IscsiProxy, _Link

TO_TARGET = "to_target"  # host -> controller
TO_HOST = "to_host"  # controller -> host

# opcodes (the low six bits of byte 0)
NOP_OUT, SCSI_COMMAND, DATA_OUT = 0x00, 0x01, 0x05
NOP_IN, SCSI_RESPONSE, LOGIN_RESPONSE, DATA_IN, R2T = 0x20, 0x21, 0x23, 0x25, 0x31

_BHS = 48
_POLL = 0.05
_FFP = 3  # NSG value: Full Feature Phase


@dataclass
class BitFlip:
    """Which PDUs to corrupt, and how.

    ``direction``: :data:`TO_TARGET` or :data:`TO_HOST`. ``where``: ``"data"`` (a bit of the
    data segment; PDUs without data never match) or ``"header"`` (a bit of the BHS).
    ``channel`` / ``opcodes``: restrict to one channel / these opcodes (``None``: any).
    Which matching PDUs: the ``nth`` one and every one after it (``rate`` is ``None``), or each
    with probability ``rate``; at most ``limit`` flips in all (``None``: no limit).
    ``byte`` / ``bit``: where inside the region (default: random, from ``seed``).
    """

    direction: str
    where: str = "data"
    channel: int | None = None
    opcodes: set[int] | frozenset[int] | None = None
    nth: int = 1
    rate: float | None = None
    limit: int | None = 1
    byte: int | None = None
    bit: int | None = None
    seed: int = 1
    #: matching PDUs seen, flips done
    seen: int = 0
    fired: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.direction not in (TO_TARGET, TO_HOST):
            raise ValueError(f"direction must be {TO_TARGET!r} or {TO_HOST!r}")
        if self.where not in ("data", "header"):
            raise ValueError("where must be 'data' or 'header'")
        self._rng = random.Random(self.seed)

    def matches(self, channel: int, direction: str, opcode: int, data_length: int) -> bool:
        return (direction == self.direction
                and (self.channel is None or channel == self.channel)
                and (self.opcodes is None or opcode in self.opcodes)
                and (self.where == "header" or data_length > 0))

    def decide(self) -> bool:
        """Count one matching PDU; True when it is to be corrupted."""
        self.seen += 1
        if self.limit is not None and self.fired >= self.limit:
            return False
        if self.rate is not None:
            return self._rng.random() < self.rate
        return self.seen >= self.nth

    def position(self, size: int) -> tuple[int, int]:
        byte = self.byte if self.byte is not None else self._rng.randrange(size)
        bit = self.bit if self.bit is not None else self._rng.randrange(8)
        return min(byte, size - 1), bit


@dataclass(frozen=True)
class Flipped:
    """One bit the proxy flipped."""

    channel: int
    direction: str
    opcode: int
    itt: int
    where: str
    #: offset of the flipped byte in the PDU, and the bit (0 = least significant)
    pdu_offset: int
    bit: int
    #: for data: offset of the byte in the command's data buffer (BufferOffset + index)
    buffer_offset: int | None
    #: the LBA of the READ/WRITE command the PDU belongs to, when the proxy saw its CDB
    lba: int | None = None

    @property
    def volume_offset(self) -> int | None:
        """Byte of the volume the flipped data bit belongs to (512-byte blocks, no PI)."""
        if self.lba is None or self.buffer_offset is None:
            return None
        return self.lba * 512 + self.buffer_offset


class _Connection:
    """What one proxied connection negotiated, shared by its two directions."""

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.full_feature = False
        self.header_digest = False
        self.data_digest = False

    def learn(self, pdu: bytearray | bytes, data_start: int, data_length: int) -> None:
        """Read a Login Response: digest keys, and whether the login is over."""
        text = bytes(pdu[data_start:data_start + data_length]).split(b"\x00")
        for pair in text:
            key, _, value = pair.partition(b"=")
            if key == b"HeaderDigest":
                self.header_digest = value == b"CRC32C"
            elif key == b"DataDigest":
                self.data_digest = value == b"CRC32C"
        flags = pdu[1]
        if flags & 0x80 and flags & 0x03 == _FFP and pdu[36] == 0:
            self.full_feature = True


class FaultProxy(IscsiProxy):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.faults: list[BitFlip] = []
        self.flips: list[Flipped] = []
        #: channel -> (header digest, data digest), overriding what the login said
        self.digests: dict[int, tuple[bool, bool]] = {}
        #: PDUs seen in Full Feature Phase, per (channel, direction, opcode)
        self.pdus: dict[tuple[int, str, int], int] = {}
        self._conns: dict[int, _Connection] = {}
        #: (connection, ITT) -> LBA of the READ/WRITE(10/16) commands seen
        self._lbas: dict[tuple[int, int], int] = {}
        self._fault_lock = threading.Lock()
        super().__init__(upstream)

    def add(self, fault: BitFlip) -> BitFlip:
        with self._fault_lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Stop injecting (what was flipped stays recorded in ``flips``)."""
        with self._fault_lock:
            self.faults.clear()

    def count(self, *, channel: int | None = None, direction: str | None = None,
              opcode: int | None = None) -> int:
        """PDUs seen in Full Feature Phase matching the given fields."""
        with self._fault_lock:
            return sum(n for (c, d, o), n in self.pdus.items()
                       if (channel is None or c == channel)
                       and (direction is None or d == direction)
                       and (opcode is None or o == opcode))

    # -- the byte streams -------------------------------------------------------------------

    def _connection(self, link: _Link) -> _Connection:
        with self._fault_lock:
            conn = self._conns.get(id(link))
            if conn is None:
                conn = self._conns[id(link)] = _Connection(link.channel)
            return conn

    def _digests(self, conn: _Connection) -> tuple[bool, bool]:
        if not conn.full_feature:
            return False, False
        return self.digests.get(conn.channel, (conn.header_digest, conn.data_digest))

    def _pipe(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        direction = TO_TARGET if src is link.client else TO_HOST
        conn = self._connection(link)
        buf = bytearray()
        forwarded = 0  # bytes at the head of buf already sent (the first BHS, by _serve)
        if direction == TO_TARGET and link.first:
            buf += link.first
            forwarded = len(link.first)
        try:
            while not link.dead:
                if link.frozen:
                    time.sleep(_POLL)
                    continue
                ready, _, _ = select.select([src], [], [], _POLL)
                if not ready or link.frozen:
                    continue
                data = src.recv(262144)
                if not data:
                    break
                buf += data
                start = 0
                while len(buf) - start >= _BHS:
                    end = self._frame(conn, direction, buf, start)
                    if end is None:
                        break
                    if end - start > forwarded:
                        dst.sendall(bytes(buf[start + forwarded:end]))
                    forwarded = 0
                    start = end
                if start:
                    del buf[:start]
        except (OSError, ValueError):  # ValueError: the other direction closed the socket
            pass
        if link.frozen and not link.dead:
            return
        link.dead = True
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _frame(self, conn: _Connection, direction: str, buf: bytearray,
               start: int) -> int | None:
        """End of the PDU at ``start`` once it is all in ``buf`` (corrupted if chosen)."""
        header_digest, data_digest = self._digests(conn)
        ahs = buf[start + 4] * 4
        data_length = int.from_bytes(buf[start + 5:start + 8], "big")
        data_start = start + _BHS + ahs + (4 if header_digest else 0)
        end = data_start + (data_length + 3 & ~3) + (4 if data_digest and data_length else 0)
        if len(buf) < end:
            return None
        opcode = buf[start] & 0x3F
        if not conn.full_feature:
            if opcode == LOGIN_RESPONSE:
                conn.learn(buf[start:end], data_start - start, data_length)
            return end
        with self._fault_lock:
            key = (conn.channel, direction, opcode)
            self.pdus[key] = self.pdus.get(key, 0) + 1
            if opcode == SCSI_COMMAND and direction == TO_TARGET:
                lba = _lba(buf[start + 32:start + 48])
                if lba is not None:
                    self._lbas[(id(conn), int.from_bytes(buf[start + 16:start + 20], "big"))] = lba
            for fault in self.faults:
                if fault.matches(conn.channel, direction, opcode, data_length) and fault.decide():
                    fault.fired += 1
                    self._flip(fault, conn, direction, opcode, buf, start, data_start,
                               data_length)
        return end

    def _flip(self, fault: BitFlip, conn: _Connection, direction: str, opcode: int,
              buf: bytearray, start: int, data_start: int, data_length: int) -> None:
        if fault.where == "header":
            index, bit = fault.position(_BHS)
            at = start + index
            buffer_offset = None
        else:
            index, bit = fault.position(data_length)
            at = data_start + index
            base = 0
            if opcode in (DATA_OUT, DATA_IN):
                base = int.from_bytes(buf[start + 40:start + 44], "big")
            buffer_offset = base + index
        itt = int.from_bytes(buf[start + 16:start + 20], "big")
        self.flips.append(Flipped(
            channel=conn.channel, direction=direction, opcode=opcode, itt=itt,
            where=fault.where, pdu_offset=at - start, bit=bit, buffer_offset=buffer_offset,
            lba=self._lbas.get((id(conn), itt))))
        buf[at] ^= 1 << bit


def _lba(cdb: bytes | bytearray) -> int | None:
    """LBA of a READ/WRITE(10) or (16) CDB."""
    if cdb[0] in (0x28, 0x2A):
        return int.from_bytes(cdb[2:6], "big")
    if cdb[0] in (0x88, 0x8A):
        return int.from_bytes(cdb[2:10], "big")
    return None
