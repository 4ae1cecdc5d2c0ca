"""An application's disk: the NBD backend that turns its I/O into tagged SCSI commands.

Every command carries the application's *service class* in the CDB GROUP NUMBER
field (READ/WRITE(16) byte 14), so the controller can check the tag against the
volume's policy. Every command goes over a path chosen by the path selector
among the paths whose negotiated services satisfy the application's policy —
never over one that does not. When the chosen path breaks, the command is sent
again on another satisfying path; when no satisfying path is available the I/O
waits (bounded by ``path_wait`` seconds), then fails with EIO and a log line
naming the unmet requirement. It is never downgraded.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import struct

from difs.host.pathgroup import PathGroup
from difs.host.selection import PathSelector, choose, path_selector
from difs.host.session import CommandTimedOut, PathFailed
from difs.iscsi.initiator_events import CommandComplete
from difs.nbd.backend import NbdBackend, NbdBackendError
from difs.policy.fast import Requirement, describe_flags
from difs.util.logs import log_event

log = logging.getLogger("difs.host")

_RW16 = struct.Struct(">BBQIBB")  # opcode, flags, LBA, blocks, group, control
_SYNC16 = _RW16
_READ16, _WRITE16, _SYNC_CACHE16, _WRITE_SAME16 = 0x88, 0x8A, 0x91, 0x93
_FUA = 0x08
_WS_UNMAP = 0x08
_GOOD, _CHECK_CONDITION = 0x00, 0x02
#: Largest single SCSI transfer the disk issues (bigger requests are split).
MAX_TRANSFER = 1 << 20
_MAX_WRITE_SAME_BLOCKS = 0xFFFF


_MAX_UNIT_ATTENTIONS = 8
#: A command the controller aborted for not answering in time is sent again this many times.
_MAX_TIMEOUTS = 3


def is_unit_attention(sense: bytes) -> bool:
    if len(sense) >= 3 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F == 0x06
    return len(sense) >= 2 and sense[0] & 0x7F in (0x72, 0x73) and sense[1] & 0x0F == 0x06


def sense_text(sense: bytes) -> str:
    if len(sense) >= 14 and sense[0] & 0x7F in (0x70, 0x71):
        return f"sense key {sense[2] & 0x0F:x}h asc/ascq {sense[12]:02x}h/{sense[13]:02x}h"
    if len(sense) >= 4 and sense[0] & 0x7F in (0x72, 0x73):
        return f"sense key {sense[1] & 0x0F:x}h asc/ascq {sense[2]:02x}h/{sense[3]:02x}h"
    return "no sense data"


class AppDisk(NbdBackend):
    """One application's view of its volume, through the host's paths."""

    def __init__(self, *, app: str, group: PathGroup, requirement: Requirement, lun: int = 0,
                 selector: PathSelector | None = None, path_wait: float = 30.0) -> None:
        self.app = app
        self.group = group
        self.requirement = requirement
        self.service_class = requirement.service_class
        self.lun = lun
        self.selector = selector or path_selector("least-outstanding")
        self.path_wait = path_wait
        self.size = 0
        self.block_size = 512
        self.preferred_block_size = 4096
        self.description = f"difs application {app}"
        self.can_multi_conn = True
        self.ios = 0
        self.bytes = 0
        self.resent = 0
        self.failed = 0
        #: channel -> [ios, bytes] carried for this application (reported to the manager)
        self.per_path: dict[int, list[int]] = {}

    def set_requirement(self, requirement: Requirement) -> None:
        """A policy update: later I/O is tagged and routed by the new requirement."""
        self.requirement = requirement
        self.service_class = requirement.service_class

    # -- SCSI over the chosen path ------------------------------------------------

    async def _run(self, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                   expected_in_length: int = 0) -> CommandComplete:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.path_wait
        group = self.group
        attentions = timeouts = 0
        while True:
            path = choose(self.selector, requirement=self.requirement, paths=group.paths)
            if path is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.failed += 1
                    need = ", ".join(describe_flags(self.requirement.flags)) or "nothing"
                    down = group.describe_down()
                    log_event(log, "no satisfying path", level=logging.ERROR, app=self.app,
                              target=group.target, requires=need, waited=self.path_wait,
                              paths=down)
                    raise NbdBackendError(
                        errno.EIO, f"no available path satisfies {self.app}'s policy ({need})"
                        + (f"; {down}" if down else ""))
                try:
                    await asyncio.wait_for(group.changed(), remaining)
                except asyncio.TimeoutError:
                    pass
                continue
            path.outstanding += 1
            try:
                result = await path.session.execute(self.lun, cdb, data_out=data_out,
                                                    expected_in_length=expected_in_length)
            except CommandTimedOut as exc:
                # aborted at the controller: it did not run, the path works; send it again
                timeouts += 1
                if timeouts > _MAX_TIMEOUTS:
                    self.failed += 1
                    log_event(log, "command timed out", level=logging.ERROR, app=self.app,
                              path=path.name(), opcode=f"{cdb[0]:02x}", tries=timeouts)
                    raise NbdBackendError(errno.EIO, str(exc)) from None
                self.resent += 1
                log_event(log, "command aborted after a timeout, re-sending",
                          level=logging.WARNING, app=self.app, path=path.name(), reason=str(exc))
                continue
            except PathFailed as exc:
                self.resent += 1
                log_event(log, "path failed, re-sending", level=logging.WARNING, app=self.app,
                          path=path.name(), reason=str(exc))
                group.mark_failed(path)
                continue
            finally:
                path.outstanding -= 1
            moved = len(data_out) if data_out is not None else expected_in_length
            path.ios += 1
            path.bytes += moved
            counts = self.per_path.get(path.spec.channel)
            if counts is None:
                counts = self.per_path[path.spec.channel] = [0, 0]
            counts[0] += 1
            counts[1] += moved
            if result.status == _CHECK_CONDITION and is_unit_attention(result.sense) \
                    and attentions < _MAX_UNIT_ATTENTIONS:
                # A new session's first command reports power-on/reset: the
                # condition is cleared by reporting it; send the command again.
                attentions += 1
                continue
            if result.status != _GOOD:
                self.failed += 1
                log_event(log, "command failed", level=logging.WARNING, app=self.app,
                          path=path.name(), opcode=f"{cdb[0]:02x}", status=f"{result.status:02x}",
                          sense=sense_text(result.sense))
                raise NbdBackendError(errno.EIO, f"{sense_text(result.sense)}")
            return result

    async def open(self) -> None:
        """Learn the volume's size and block size (READ CAPACITY 16)."""
        cdb = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)
        result = await self._run(cdb, expected_in_length=32)
        data = bytes(result.data)
        last_lba, block = struct.unpack_from(">QI", data)
        self.block_size = block
        self.size = (last_lba + 1) * block

    def _cdb(self, opcode: int, flags: int, offset: int, length: int) -> bytes:
        return _RW16.pack(opcode, flags, offset // self.block_size, length // self.block_size,
                          self.service_class, 0)

    # -- NbdBackend ------------------------------------------------------------------

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        self.ios += 1
        self.bytes += length
        if length <= MAX_TRANSFER:
            result = await self._run(self._cdb(_READ16, 0, offset, length),
                                     expected_in_length=length)
            return result.data
        parts = await asyncio.gather(*(
            self._run(self._cdb(_READ16, 0, offset + o, min(MAX_TRANSFER, length - o)),
                      expected_in_length=min(MAX_TRANSFER, length - o))
            for o in range(0, length, MAX_TRANSFER)))
        return b"".join(bytes(p.data) for p in parts)

    async def write(self, offset: int, data: memoryview, *, fua: bool) -> None:
        self.ios += 1
        length = len(data)
        self.bytes += length
        flags = _FUA if fua else 0
        if length <= MAX_TRANSFER:
            await self._run(self._cdb(_WRITE16, flags, offset, length), data_out=data)
            return
        await asyncio.gather(*(
            self._run(self._cdb(_WRITE16, flags, offset + o, min(MAX_TRANSFER, length - o)),
                      data_out=data[o:o + MAX_TRANSFER])
            for o in range(0, length, MAX_TRANSFER)))

    async def flush(self) -> None:
        await self._run(_SYNC16.pack(_SYNC_CACHE16, 0, 0, 0, self.service_class, 0))

    async def _write_same(self, offset: int, length: int, flags: int) -> None:
        block = self.block_size
        step = _MAX_WRITE_SAME_BLOCKS * block
        zero = bytes(block)
        await asyncio.gather(*(
            self._run(_RW16.pack(_WRITE_SAME16, flags, (offset + o) // block,
                                 min(step, length - o) // block, self.service_class, 0),
                      data_out=zero)
            for o in range(0, length, step)))

    async def trim(self, offset: int, length: int) -> None:
        await self._write_same(offset, length, _WS_UNMAP)

    async def write_zeroes(self, offset: int, length: int, *, may_trim: bool, fua: bool,
                           fast: bool = False) -> None:
        await self._write_same(offset, length, _WS_UNMAP if may_trim else 0)
        if fua:
            await self.flush()
