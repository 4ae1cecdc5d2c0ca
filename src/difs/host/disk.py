"""An application's disk: the NBD backend that turns its I/O into tagged SCSI commands.

Every command carries the application's *service class* in the CDB GROUP NUMBER
field (READ/WRITE(16) byte 14), so the controller can check the tag against the
volume's policy. Every command goes over a path chosen by the path selector
among the paths whose negotiated services satisfy the application's policy —
never over one that does not. When the chosen path breaks, the command is sent
again on another satisfying path; when no satisfying path is available the I/O
waits (bounded by ``path_wait`` seconds), then fails with EIO and a log line
naming the unmet requirement. It is never downgraded.

**Protection information.** For an application whose policy asks for T10 PI the disk
generates PI on every write (WRITE(16) with WRPROTECT=001b, 8 bytes after each 512-byte
block) and verifies it on every read (READ(16) with RDPROTECT=001b) before the application
sees a byte; see :mod:`difs.host.app_pi`. A PI check that fails — found by the host on
a read, or reported by the controller (ABORTED COMMAND 10h/01h-03h) — is retried once on
another satisfying path (the same one when it is the only one), then the request fails with
EIO and a log line naming the application, the LBA and the check. Never silently wrong data.

**Retries.** A command the controller answers with ABORTED COMMAND for another reason (e.g.
47h/05h: a Data-Out failed its data digest, so nothing was written) is sent again, on another
path when there is one, up to three times. Unit attentions are reported and the command sent
again; commands aborted after a timeout too. A re-send after a digest error or a PI check
failure waits for its path's re-send budget (``PathGroup.fault``): at once while the path
has tokens, then about 50 a second per path, however often it corrupts; repeated retry log
lines are rate-limited (5 per 10 s per event, the next line carrying the count). The rules are :mod:`difs.host.recovery`'s pure
``decide``; ``AppDisk._run`` only awaits and carries its decisions out.

Counters per application (read by the metrics collector and the manager link): ``ios``,
``bytes``, ``resent``, ``failed``, ``per_path``; PI work: ``pi_generated_blocks``,
``pi_checked_blocks``, ``pi_errors`` (checks that failed at the host), ``pi_rejected`` (PI
check failures the controller reported); ``aborted_retries`` (ABORTED COMMAND re-sent);
``qos_waits`` (I/Os held back by the application's limit).
Per path, ``tallies`` (channel -> :class:`~difs.host.evidence.PathTally`): the same work
attributed to the path that carried it, the bytes a data digest covered, the commands the
controller refused (CHECK CONDITION other than UNIT ATTENTION) and each command's latency
from its submission to its completion (``time.monotonic_ns``; PI generation included).

**Limit.** An application whose policy sets ``qos.limit_iops`` / ``limit_bytes_per_second``
has a :class:`~difs.host.ratelimit.RateLimit`: each read and write waits for the time it
names before its first command is sent, so the application never sends more than its
limit into the network. Without a limit the check is one attribute test.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from time import monotonic_ns

from difs.host.evidence import PathTally
from difs.host.pathgroup import PathGroup
from difs.host.ratelimit import RateLimit
from difs.host.paths import Path
from difs.host.app_pi import (
    PI_BLOCK,
    PROTECT_001,
    READ_CAPACITY16,
    Capacity,
    Protection,
    parse_read_capacity16,
    path_requirement,
    protection_for,
)
from difs.host.recovery import (
    Action,
    Attempts,
    Completed,
    Decision,
    NoPath,
    Outcome,
    PathBroke,
    PiVerifyFailed,
    Tally,
    TimedOut,
    decide,
)
from difs.host.selection import PathSelector, choose, path_selector
from difs.host.errors import CommandTimedOut, PathFailed
from difs.integrity import PiCheckError
from difs.iscsi.initiator_events import CommandComplete
from difs.nbd.backend import NbdBackend, NbdBackendError
from difs.policy.fast import DATA_DIGEST, Requirement
from difs.sam.sense import (
    ABORTED_COMMAND,
    ASC_PROTOCOL_SERVICE_CRC_ERROR,
    UNIT_ATTENTION,
    parse_sense,
    sense_information,
    sense_text,
)
from difs.sam.status import CHECK_CONDITION, GOOD
from difs.sam import cdb as C
from difs.util.logs import RateLimitedLog, log_event

log = logging.getLogger("difs.host")

_RW16 = _SYNC16 = C.RW16  # opcode, flags, LBA, blocks, group, control
_READ16, _WRITE16, _SYNC_CACHE16, _WRITE_SAME16 = (
    C.READ_16, C.WRITE_16, C.SYNCHRONIZE_CACHE_16, C.WRITE_SAME_16)
_FUA = C.FUA
_WS_UNMAP = C.WS_UNMAP
#: Largest single SCSI transfer the disk issues (bigger requests are split).
MAX_TRANSFER = 1 << 20
_MAX_WRITE_SAME_BLOCKS = 0xFFFF


def _limit_of(requirement: Requirement) -> RateLimit | None:
    if requirement.limit_iops is None and requirement.limit_bytes_per_second is None:
        return None
    return RateLimit(limit_iops=requirement.limit_iops,
                     limit_bytes_per_second=requirement.limit_bytes_per_second)


#: Concurrent commands when zeroing a range of a PI disk with ordinary writes.
_ZERO_BATCH = 8

class AppDisk(NbdBackend):
    """One application's view of its volume, through the host's paths.

    ``app_tag``: the application tag for its PI (default: derived from ``app``, see
    :func:`difs.sam.apptag.application_tag`)."""

    def __init__(self, *, app: str, group: PathGroup, requirement: Requirement, lun: int = 0,
                 selector: PathSelector | None = None, path_wait: float = 30.0,
                 app_tag: int | None = None) -> None:
        self.app = app
        self.group = group
        self.lun = lun
        self.selector = selector or path_selector("least-outstanding")
        self.path_wait = path_wait
        self.app_tag = app_tag
        self.size = 0
        self.block_size = 512
        self.preferred_block_size = 4096
        self.description = f"difs application {app}"
        self.can_multi_conn = True
        #: what READ CAPACITY(16) said (None before open)
        self.capacity: Capacity | None = None
        #: the PI this application's policy asks for on this volume (None: no PI)
        self.protection: Protection | None = None
        self.requirement = requirement
        self.service_class = requirement.service_class
        #: what a path must offer (the requirement without PI: the disk does PI itself)
        self.path_requirement = path_requirement(requirement)
        self.ios = 0
        self.bytes = 0
        self.resent = 0
        self.failed = 0
        self.aborted_retries = 0
        self.pi_generated_blocks = 0
        self.pi_checked_blocks = 0
        self.pi_errors = 0
        self.pi_rejected = 0
        self.qos_waits = 0
        #: the policy's limit at this host (None: unlimited)
        self.limit = _limit_of(requirement)
        #: channel -> [ios, bytes] carried for this application (reported to the manager)
        self.per_path: dict[int, list[int]] = {}
        #: channel -> this application's evidence on that path (``counts`` is per_path's list)
        self.tallies: dict[int, PathTally] = {}
        #: the retry rules' log lines, at most 5 per event per 10 s (a fault flood repeats them)
        self._log = RateLimitedLog(log, interval=10.0, burst=5)

    @property
    def volume(self) -> str:
        return f"{self.group.target} LUN {self.lun}"

    def set_requirement(self, requirement: Requirement) -> None:
        """A policy update: later I/O is tagged, routed and protected by the new requirement.

        Raises :class:`~difs.host.app_pi.ProtectionUnavailable` (and changes nothing) when
        the new policy asks for PI the volume does not have."""
        protection = self.protection
        if self.capacity is not None:
            protection = protection_for(requirement, self.capacity, app=self.app,
                                        volume=self.volume, app_tag=self.app_tag)
        self.protection = protection
        self.requirement = requirement
        self.service_class = requirement.service_class
        self.path_requirement = path_requirement(requirement)
        old = self.limit
        if old is None or (old.limit_iops, old.limit_bytes_per_second) != (
                requirement.limit_iops, requirement.limit_bytes_per_second):
            self.limit = _limit_of(requirement)  # a new limit is a new bucket

    async def _hold(self, size: int) -> None:
        """Wait until the application's limit lets an I/O of ``size`` bytes go."""
        now = asyncio.get_running_loop().time()
        at = self.limit.admit(now, size)  # type: ignore[union-attr]
        if at > now:
            self.qos_waits += 1
            await asyncio.sleep(at - now)

    def retarget(self, other: AppDisk) -> None:
        """A migration's switch (no request in flight): serve ``other``'s volume from now on,
        with its requirement and protection (:mod:`difs.host.migrate`)."""
        self.group, self.lun, self.capacity, self.protection = other.group, other.lun, other.capacity, other.protection
        self.requirement, self.service_class = other.requirement, other.service_class
        self.path_requirement = other.path_requirement

    # -- SCSI over the chosen path ------------------------------------------------

    def _choose(self, avoid: Path | None) -> Path | None:
        paths = self.group.paths
        if avoid is not None:
            others = [p for p in paths if p is not avoid]
            path = choose(self.selector, requirement=self.path_requirement, paths=others)
            if path is not None:
                return path
        return choose(self.selector, requirement=self.path_requirement, paths=paths)

    async def _run(self, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                   expected_in_length: int = 0,
                   check: Callable[[CommandComplete], bytes | memoryview] | None = None,
                   start: int = 0, pi_blocks: int = 0,
                   tallied: bool = True) -> CommandComplete:
        """Run ``cdb`` on a satisfying path until it succeeds or must fail (EIO).

        ``check``, given the GOOD result, returns the data the application gets (it replaces
        ``result.data``) or raises :class:`PiCheckError`. What follows an attempt that did not
        simply succeed is :func:`difs.host.recovery.decide`'s call; this loop only awaits and
        carries it out. ``start``: when the application submitted it (``monotonic_ns``,
        default now); ``pi_blocks``: PI tuples the host generated in ``data_out``;
        ``tallied=False``: the disk's own command (READ CAPACITY at open), not the
        application's I/O — counted on the path, not in the application's evidence."""
        start = start or monotonic_ns()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.path_wait
        attempts: Attempts | None = None
        avoid: Path | None = None
        while True:
            path = self._choose(avoid)
            avoid = None
            tally = None
            if path is None:
                outcome: Outcome | None = NoPath(deadline - loop.time(),
                                                 self.path_requirement.flags,
                                                 self.group.describe_down())
            else:
                tally = (self.tallies.get(path.spec.channel) or self._tally(path.spec.channel)
                         if tallied else PathTally([0, 0]))
                path.outstanding += 1
                try:
                    result = await path.session.execute(self.lun, cdb, data_out=data_out,
                                                        expected_in_length=expected_in_length)
                except CommandTimedOut as exc:
                    outcome = TimedOut(str(exc))
                except PathFailed as exc:
                    outcome = PathBroke(str(exc))
                else:
                    outcome = None
                finally:
                    path.outstanding -= 1
                if outcome is None:
                    moved = len(data_out) if data_out is not None else expected_in_length
                    path.ios += 1
                    path.bytes += moved
                    counts = tally.counts
                    counts[0] += 1
                    counts[1] += moved
                    if path.negotiated.flags & DATA_DIGEST:
                        tally.digest_bytes += moved
                    if result.status == GOOD:  # the usual case: done, no decision to make
                        if check is None:
                            tally.pi_generated += pi_blocks
                            tally.latency.record(monotonic_ns() - start)
                            return result
                        try:
                            result.data = check(result)
                        except PiCheckError as exc:
                            tally.pi_failed(exc.kind)
                            outcome = PiVerifyFailed(exc.kind, exc.lba, str(exc))
                        else:
                            tally.pi_checked += len(result.data) // PI_BLOCK
                            tally.latency.record(monotonic_ns() - start)
                            return result
                    else:
                        outcome = self._completed(result)
                        self._refused(outcome, tally, path)
            if attempts is None:
                attempts = Attempts(app=self.app, volume=self.volume, target=self.group.target,
                                    opcode=cdb[0], path_wait=self.path_wait)
            decision = decide(outcome, attempts, path.name() if path is not None else "")
            self._carry_out(decision, tally)
            action = decision.action
            if action is Action.WAIT_FOR_PATH:
                try:
                    await asyncio.wait_for(self.group.changed(), outcome.remaining)
                except TimeoutError:
                    pass
            elif action is Action.RETRY_ELSEWHERE:
                avoid = path
                if wait := self.group.fault(path):
                    await asyncio.sleep(wait)
            elif action is Action.PATH_DOWN:
                self.group.mark_failed(path)
            elif action is Action.RETRY_LATER:
                await asyncio.sleep(decision.delay)

    def _tally(self, channel: int) -> PathTally:
        counts = self.per_path.get(channel)
        if counts is None:
            counts = self.per_path[channel] = [0, 0]
        tally = self.tallies[channel] = PathTally(counts)
        return tally

    @staticmethod
    def _refused(outcome: Completed, tally: PathTally, path: Path) -> None:
        """Count a CHECK CONDITION (a unit attention reports an event, it refuses nothing)."""
        if outcome.status == CHECK_CONDITION and outcome.key != UNIT_ATTENTION:
            tally.rejected += 1
            if outcome.key == ABORTED_COMMAND and (outcome.asc, outcome.ascq) \
                    == ASC_PROTOCOL_SERVICE_CRC_ERROR:
                path.refused_digests += 1

    @staticmethod
    def _completed(result: CommandComplete) -> Completed:
        """The answer as the retry rules read it (its sense parsed here, once)."""
        sense = result.sense
        key, asc, ascq = parse_sense(sense)
        return Completed(result.status, key, asc, ascq, sense_information(sense),
                         sense_text(sense))

    def _carry_out(self, decision: Decision, on_path: PathTally | None = None) -> None:
        """Count (for the application, and on the path the attempt took), log and (FAIL)
        raise what ``decision`` says; the loop does the rest."""
        tally = decision.tally
        if tally:
            self.resent += Tally.RESENT in tally
            self.failed += Tally.FAILED in tally
            self.aborted_retries += Tally.ABORTED_RETRY in tally
            self.pi_errors += Tally.PI_ERROR in tally
            self.pi_rejected += Tally.PI_REJECTED in tally
            if on_path is not None:
                on_path.resent += Tally.RESENT in tally
                on_path.failed += Tally.FAILED in tally
                on_path.pi_rejected += Tally.PI_REJECTED in tally
        line = decision.log
        if line is not None:
            self._log(line.event, line.level, **line.fields)
        if decision.action is Action.FAIL:
            raise NbdBackendError(decision.app_errno, decision.error)

    async def open(self) -> None:
        """Learn the volume's size, block size and protection (READ CAPACITY 16).

        Raises :class:`~difs.host.app_pi.ProtectionUnavailable` when the application's
        policy asks for PI and the volume is not formatted with it (the application must
        not start: its policy cannot be honoured)."""
        result = await self._run(READ_CAPACITY16, expected_in_length=32, tallied=False)
        capacity = parse_read_capacity16(result.data)
        self.protection = protection_for(self.requirement, capacity, app=self.app,
                                         volume=self.volume, app_tag=self.app_tag)
        self.capacity = capacity
        self.block_size = capacity.block_size
        self.size = capacity.size

    def _cdb(self, opcode: int, flags: int, offset: int, length: int) -> bytes:
        return _RW16.pack(opcode, flags, offset // self.block_size, length // self.block_size,
                          self.service_class, 0)

    # -- one SCSI command's worth -------------------------------------------------------

    def _read_command(self, offset: int, length: int) -> Awaitable[CommandComplete]:
        protection = self.protection
        if protection is None:
            return self._run(self._cdb(_READ16, 0, offset, length), expected_in_length=length)
        lba = offset // PI_BLOCK
        wire = protection.wire_length(length)
        return self._run(self._cdb(_READ16, PROTECT_001, offset, length), expected_in_length=wire,
                         check=functools.partial(self._verify, protection, lba, wire))

    def _verify(self, protection: Protection, lba: int, wire: int,
                result: CommandComplete) -> bytes | memoryview:
        data = result.data
        if len(data) != wire:
            self.failed += 1
            log_event(log, "short protected read", level=logging.ERROR, app=self.app,
                      volume=self.volume, lba=lba, expected=wire, got=len(data))
            raise NbdBackendError(errno.EIO, f"{self.app}: read at LBA {lba} returned "
                                             f"{len(data)} of {wire} bytes")
        self.pi_checked_blocks += wire // (PI_BLOCK + 8)
        return protection.unprotect(data, lba)

    def _write_command(self, offset: int, data: bytes | memoryview,
                       flags: int) -> Awaitable[CommandComplete]:
        protection = self.protection
        if protection is None:
            return self._run(self._cdb(_WRITE16, flags, offset, len(data)), data_out=data)
        start = monotonic_ns()
        lba = offset // PI_BLOCK
        wire = protection.protect(data, lba)
        blocks = len(data) // PI_BLOCK
        self.pi_generated_blocks += blocks
        return self._run(self._cdb(_WRITE16, flags | PROTECT_001, offset, len(data)),
                         data_out=wire, start=start, pi_blocks=blocks)

    # -- NbdBackend ------------------------------------------------------------------

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        if self.limit is not None:
            await self._hold(length)
        self.ios += 1
        self.bytes += length
        if length <= MAX_TRANSFER:
            return (await self._read_command(offset, length)).data
        parts = await asyncio.gather(*(
            self._read_command(offset + o, min(MAX_TRANSFER, length - o))
            for o in range(0, length, MAX_TRANSFER)))
        return b"".join(bytes(p.data) for p in parts)

    async def write(self, offset: int, data: memoryview, *, fua: bool) -> None:
        if self.limit is not None:
            await self._hold(len(data))
        self.ios += 1
        length = len(data)
        self.bytes += length
        flags = _FUA if fua else 0
        if length <= MAX_TRANSFER:
            await self._write_command(offset, data, flags)
            return
        await asyncio.gather(*(
            self._write_command(offset + o, data[o:o + MAX_TRANSFER], flags)
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

    async def _write_zero_blocks(self, offset: int, length: int) -> None:
        """Zero a range of a PI disk with ordinary protected writes.

        WRITE SAME would leave the PI to the controller (WRPROTECT=000b: its own
        application tag) or to its reading of SBC-4's reference-tag rules; plain WRITEs
        carry exactly the PI this host verifies on read."""
        zero = memoryview(bytes(min(length, MAX_TRANSFER)))
        chunks = [(o, min(MAX_TRANSFER, length - o)) for o in range(0, length, MAX_TRANSFER)]
        for i in range(0, len(chunks), _ZERO_BATCH):
            await asyncio.gather(*(self._write_command(offset + o, zero[:n], 0)
                                   for o, n in chunks[i:i + _ZERO_BATCH]))

    async def trim(self, offset: int, length: int) -> None:
        if self.protection is not None:
            return  # a hint; unmapping would hand the blocks' PI to the controller
        await self._write_same(offset, length, _WS_UNMAP)

    async def write_zeroes(self, offset: int, length: int, *, may_trim: bool, fua: bool,
                           fast: bool = False) -> None:
        if self.protection is not None:
            if fast:
                raise NbdBackendError(errno.ENOTSUP, "no fast zeroing with PI")
            await self._write_zero_blocks(offset, length)
        else:
            await self._write_same(offset, length, _WS_UNMAP if may_trim else 0)
        if fua:
            await self.flush()
