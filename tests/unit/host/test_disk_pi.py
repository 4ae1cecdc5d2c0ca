"""Host-side T10 PI in AppDisk, against the real iSCSI target core with a PI-aware fake disk.

The fake disk (:class:`PiTarget`) is formatted with PI type 1 or 3 (or none), stores each
block's 8 PI bytes with it, checks received PI on WRPROTECT=001b the way SBC-4 asks, and
has knobs to corrupt the next Data-In in flight, to corrupt a stored block, or to answer the
next commands with a given sense. Two plain channels give the disk a second path to retry on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import struct

import pytest
from host_testtarget import TARGET, TestTarget

from difs.host.disk import AppDisk
from difs.host.pathgroup import PathGroup
from difs.host.paths import ChannelSpec
from difs.host.app_pi import (
    PROTECT_001,
    Capacity,
    Protection,
    parse_read_capacity16,
    path_requirement,
    protection_for,
)
from difs.host.errors import ProtectionUnavailable
from difs.host.connection import SessionTimers
from difs.integrity import PiCheckError, generate, interleave, split, verify
from difs.nbd.backend import NbdBackendError
from difs.policy.fast import DATA_DIGEST, PI, PI_TYPE1, PI_TYPE3, Requirement
from difs.sam.apptag import application_tag
from difs.sam.sense import parse_sense as sense_fields
from difs.sam.sense import sense_information

INITIATOR = "iqn.2026-11.io.difs:test.host"
QUIET = SessionTimers(nop_interval=None, command_timeout=None, login_timeout=3.0)
BLOCK = 512
BLOCKS = 8192  # 4 MiB
ESCAPE = b"\xff" * 8
PI1 = Requirement(flags=PI | PI_TYPE1)
PI3 = Requirement(flags=PI | PI_TYPE3)


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def aborted_sense(asc: int, ascq: int, lba: int | None = None) -> bytes:
    """Fixed-format ABORTED COMMAND sense, with INFORMATION when ``lba`` is given."""
    sense = bytearray(18)
    sense[0] = 0x70 | (0x80 if lba is not None else 0)
    sense[2] = 0x0B
    if lba is not None:
        sense[3:7] = (lba & 0xFFFFFFFF).to_bytes(4, "big")
    sense[7] = 10
    sense[12], sense[13] = asc, ascq
    return bytes(sense)


class PiTarget(TestTarget):
    """A target whose one LUN is formatted with PI ``pi_type`` (0: none)."""

    def __init__(self, *, pi_type: int = 1, app_tag: int | None = None) -> None:
        super().__init__()
        self.pi_type = pi_type
        self.app_tag = app_tag  # the tag the "controller" expects on writes (None: unchecked)
        self.pi: dict[int, bytes] = {}
        self.commands: list[tuple[object, bytes, int]] = []  # (connection core, cdb, data-out)
        self.flip_next_read = 0  # corrupt the Data-In of this many coming reads
        self.answer_next: list[bytes] = []  # answer the next commands with these senses

    def execute(self, core, task) -> None:
        cdb = bytes(task.cdb)
        self.commands.append((core, cdb, len(task.data_out or b"")))
        if self.answer_next and cdb[0] in (0x88, 0x8A):
            core.complete_command(task, status=2, sense=self.answer_next.pop(0))
            return
        if cdb[0] == 0x9E:
            b12 = ((self.pi_type - 1) << 1 | 1) if self.pi_type else 0
            core.complete_command(task, status=0, data_in=struct.pack(
                ">QIBB", BLOCKS - 1, BLOCK, b12, 0) + bytes(18))
        elif cdb[0] == 0x8A:
            self._write(core, task, cdb)
        elif cdb[0] == 0x88:
            self._read(core, task, cdb)
        else:
            core.complete_command(task, status=0)

    def _write(self, core, task, cdb: bytes) -> None:
        lba, count = struct.unpack_from(">QI", cdb, 2)
        protect = cdb[1] >> 5
        payload = bytes(task.data_out)
        if protect and not self.pi_type:
            core.complete_command(task, status=2, sense=bytes([0x70, 0, 5, 0, 0, 0, 0, 10])
                                  + bytes(4) + bytes([0x24, 0]) + bytes(4))
            return
        if protect:
            data, pi = split(payload)
            try:
                verify(data, pi, lba=lba, pi_type=self.pi_type, app_tag=self.app_tag)
            except PiCheckError as exc:
                core.complete_command(task, status=2,
                                      sense=aborted_sense(exc.asc, exc.ascq, exc.lba))
                return
            data, pi = bytes(data), bytes(pi)
        else:
            data = payload
            pi = generate(data, lba=lba, pi_type=self.pi_type) if self.pi_type else b""
        assert len(data) == count * BLOCK
        for i in range(count):
            self.blocks[lba + i] = data[i * BLOCK:(i + 1) * BLOCK]
            if self.pi_type:
                self.pi[lba + i] = pi[i * 8:(i + 1) * 8]
        core.complete_command(task, status=0, transfer_length=len(payload))

    def _read(self, core, task, cdb: bytes) -> None:
        lba, count = struct.unpack_from(">QI", cdb, 2)
        data = b"".join(self.blocks.get(lba + i, bytes(BLOCK)) for i in range(count))
        if cdb[1] >> 5:
            pi = b"".join(self.pi.get(lba + i, ESCAPE) for i in range(count))
            out = bytearray(interleave(data, pi))
        else:
            out = bytearray(data)
        if self.flip_next_read:
            self.flip_next_read -= 1
            out[len(out) // 3] ^= 0x10  # a bit flipped in flight
        core.complete_command(task, status=0, data_in=bytes(out))

    def reads(self) -> list[tuple[object, bytes, int]]:
        return [c for c in self.commands if c[1][0] == 0x88]

    def writes(self) -> list[tuple[object, bytes, int]]:
        return [c for c in self.commands if c[1][0] == 0x8A]


async def open_disk(target: PiTarget, requirement: Requirement, *, app: str = "app1",
                    channels: int = 2) -> tuple[AppDisk, PathGroup]:
    portal = await target.start()
    group = PathGroup(controller="t", portal=portal, target=TARGET, initiator_name=INITIATOR,
                      channels=tuple(ChannelSpec(i) for i in range(channels)), timers=QUIET)
    await group.start()
    disk = AppDisk(app=app, group=group, requirement=requirement, path_wait=2.0)
    await disk.open()
    return disk, group


def pattern(n: int, seed: int = 7) -> bytes:
    return bytes((i * seed + i // 512) & 0xFF for i in range(n))


# -- pure pieces ------------------------------------------------------------------------


def test_application_tag_is_stable_16_bit_and_never_the_escape() -> None:
    assert application_tag("app1") == application_tag("app1")
    assert application_tag("app1") != application_tag("app2")
    tags = {application_tag(f"vm-{i}") for i in range(70000)}
    assert 0xFFFF not in tags and max(tags) == 0xFFFE  # the escape maps to FFFEh
    assert all(0 <= t <= 0xFFFE for t in tags)


def test_read_capacity16_decodes_protection() -> None:
    data = struct.pack(">QIBB", 2047, 512, 0b101, 0x00) + bytes(18)  # PROT_EN, P_TYPE 010b
    assert parse_read_capacity16(data) == Capacity(2048, 512, pi_type=3)
    assert parse_read_capacity16(struct.pack(">QIBB", 9, 4096, 0, 0)).pi_type == 0
    assert parse_read_capacity16(struct.pack(">QIBB", 9, 512, 1, 0x10)).pi_exponent == 1
    with pytest.raises(NbdBackendError):
        parse_read_capacity16(b"\x00" * 8)


def test_protection_for_refuses_what_the_volume_cannot_do() -> None:
    plain = Capacity(100, 512, pi_type=0)
    assert protection_for(Requirement(flags=DATA_DIGEST), plain, app="a", volume="v") is None
    with pytest.raises(ProtectionUnavailable, match="volume iqn.x:vol1 LUN 0 is not formatted"):
        protection_for(PI1, plain, app="a", volume="iqn.x:vol1 LUN 0")
    with pytest.raises(ProtectionUnavailable, match="PI type 3.*requires type 1"):
        protection_for(PI1, Capacity(100, 512, pi_type=3), app="a", volume="v")
    with pytest.raises(ProtectionUnavailable, match="4096-byte blocks"):
        protection_for(PI1, Capacity(100, 4096, pi_type=1), app="a", volume="v")
    p = protection_for(PI3, Capacity(100, 512, pi_type=3), app="a", volume="v", app_tag=0x1234)
    assert (p.pi_type, p.app_tag) == (3, 0x1234)


def test_path_requirement_drops_only_the_pi_bits() -> None:
    req = Requirement(flags=PI | PI_TYPE1 | DATA_DIGEST, dscp=10, isolation_tag="blue")
    path_req = path_requirement(req)
    assert path_req.flags & ~0x20 == DATA_DIGEST  # ISOLATED stays with the tag
    assert (path_req.dscp, path_req.isolation_tag) == (10, "blue")
    assert req.service_class & PI  # the CDB still says PI


def test_protection_round_trip_and_detection() -> None:
    prot = Protection(pi_type=1, app_tag=0x4242)
    data = pattern(4096)
    wire = bytearray(prot.protect(data, 100))
    assert len(wire) == Protection.wire_length(4096) == 8 * 520
    assert bytes(prot.unprotect(wire, 100)) == data
    with pytest.raises(PiCheckError) as exc:
        prot.unprotect(wire, 101)  # the right data from the wrong place
    assert exc.value.kind == "ref" and exc.value.lba == 101
    wire[520 * 3 + 7] ^= 1
    with pytest.raises(PiCheckError) as exc:
        prot.unprotect(wire, 100)
    assert exc.value.kind == "guard" and exc.value.lba == 103
    with pytest.raises(ValueError):
        Protection(pi_type=1, app_tag=0xFFFF)


def test_sense_fields_and_information_fixed_and_descriptor() -> None:
    fixed = aborted_sense(0x10, 0x03, lba=0x1234)
    assert sense_fields(fixed) == (0x0B, 0x10, 0x03)
    assert sense_information(fixed) == 0x1234
    assert sense_information(aborted_sense(0x47, 0x05)) is None  # VALID bit clear
    descriptor = bytes([0x72, 0x0B, 0x10, 0x01, 0, 0, 0, 12, 0x00, 0x0A, 0x80, 0]) \
        + (2**40 + 5).to_bytes(8, "big")
    assert sense_fields(descriptor) == (0x0B, 0x10, 0x01)
    assert sense_information(descriptor) == 2**40 + 5
    assert sense_fields(b"") == (0, 0, 0)


# -- AppDisk against the PI target ---------------------------------------------------------


def test_writes_carry_interleaved_pi_and_reads_verify_it() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1, app_tag=application_tag("app1"))
        disk, group = await open_disk(target, PI1)
        assert disk.protection.pi_type == 1 and disk.protection.app_tag == application_tag("app1")
        assert disk.size == BLOCKS * BLOCK
        data = pattern(8192)
        await disk.write(4096, memoryview(data), fua=False)
        _, cdb, out_len = target.writes()[-1]
        assert cdb[1] & 0xE0 == PROTECT_001 and cdb[14] == PI1.service_class
        lba, count = struct.unpack_from(">QI", cdb, 2)
        assert (lba, count, out_len) == (8, 16, 16 * 520)  # blocks in the CDB, 520 B each
        # the stored PI is exactly what the host generated (type 1: ref tag = LBA)
        stored = b"".join(target.pi[8 + i] for i in range(16))
        assert stored == generate(data, lba=8, pi_type=1, app_tag=application_tag("app1"))
        back = await disk.read(4096, 8192)
        assert bytes(back) == data
        _, cdb, _ = target.reads()[-1]
        assert cdb[1] & 0xE0 == PROTECT_001
        # never-written blocks carry the escape tuple and read as zeros
        assert bytes(await disk.read(1 << 20, 4096)) == bytes(4096)
        assert disk.pi_generated_blocks == 16 and disk.pi_checked_blocks == 24
        assert disk.pi_errors == disk.pi_rejected == 0
        await group.close()
        await target.close()

    run(main())


def test_large_transfers_split_with_the_right_reference_tags() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, PI1)
        data = pattern((2 << 20) + 4096, seed=13)
        await disk.write(512, memoryview(data), fua=True)
        assert len(target.writes()) == 3
        assert all(cdb[1] & 0x08 for _, cdb, _ in target.writes())  # FUA kept
        assert bytes(await disk.read(512, len(data))) == data
        assert disk.pi_checked_blocks == len(data) // 512
        await group.close()
        await target.close()

    run(main())


def test_type3_volume() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=3, app_tag=application_tag("db"))
        disk, group = await open_disk(target, PI3, app="db")
        data = pattern(4096, seed=3)
        await disk.write(0, memoryview(data), fua=False)
        assert {struct.unpack(">HHI", target.pi[i])[1:] for i in range(8)} == \
            {(application_tag("db"), 0)}
        assert bytes(await disk.read(0, 4096)) == data
        await group.close()
        await target.close()

    run(main())


def test_pi_policy_on_a_plain_volume_is_refused_naming_the_volume() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=0)
        with pytest.raises(ProtectionUnavailable) as exc:
            await open_disk(target, PI1)
        assert f"volume {TARGET} LUN 0 is not formatted with protection information" \
            in exc.value.message
        assert "app1" in exc.value.message
        assert not target.writes() and not target.reads()
        await target.close()

    run(main())


def test_no_pi_policy_on_a_pi_volume_sends_plain_io() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, Requirement())
        assert disk.protection is None
        await disk.write(0, memoryview(pattern(4096)), fua=False)
        assert bytes(await disk.read(0, 4096)) == pattern(4096)
        assert all(cdb[1] & 0xE0 == 0 and n in (0, 4096)
                   for _, cdb, n in target.writes() + target.reads())
        assert disk.pi_generated_blocks == disk.pi_checked_blocks == 0
        await group.close()
        await target.close()

    run(main())


def test_data_in_corrupted_in_flight_is_caught_and_retried_on_another_path(caplog) -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, PI1)
        data = pattern(65536, seed=5)
        await disk.write(0, memoryview(data), fua=False)
        target.flip_next_read = 1
        before = len(target.reads())
        assert bytes(await disk.read(0, 65536)) == data
        reads = target.reads()[before:]
        assert len(reads) == 2 and reads[0][0] is not reads[1][0]  # another connection
        assert disk.pi_errors == 1 and disk.failed == 0
        await group.close()
        await target.close()

    with caplog.at_level(logging.WARNING, logger="difs.host"):
        run(main())
    [record] = [r for r in caplog.records if r.getMessage() == "PI check failed"]
    fields = record.difs_fields
    assert fields["app"] == "app1" and fields["check"] == "guard" and fields["found_by"] == "host"
    assert fields["action"] == "retrying on another path"


def test_corruption_that_persists_is_an_io_error_never_wrong_data(caplog) -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, PI1, channels=1)  # one path: retried on it
        await disk.write(0, memoryview(pattern(8192)), fua=False)
        block = bytearray(target.blocks[5])
        block[100] ^= 0x01  # corruption at rest
        target.blocks[5] = bytes(block)
        with pytest.raises(NbdBackendError) as exc:
            await disk.read(0, 8192)
        assert exc.value.error == errno.EIO
        assert "guard check failed at LBA 5" in exc.value.message
        assert len(target.reads()) == 2 and disk.pi_errors == 2 and disk.failed == 1
        # the other blocks still read
        assert bytes(await disk.read(0, 2048)) == pattern(8192)[:2048]
        await group.close()
        await target.close()

    with caplog.at_level(logging.WARNING, logger="difs.host"):
        run(main())
    [final] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert final.getMessage() == "PI check failed"
    fields = final.difs_fields
    assert (fields["app"], fields["lba"], fields["check"]) == ("app1", 5, "guard")
    assert fields["action"] == "I/O error to the application"


def test_controller_pi_rejection_is_retried_once_then_eio() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1)
        disk, group = await open_disk(target, PI1)
        data = pattern(4096, seed=9)
        target.answer_next = [aborted_sense(0x10, 0x01, lba=3)]
        await disk.write(0, memoryview(data), fua=False)  # retried, stored
        assert disk.pi_rejected == 1 and bytes(await disk.read(0, 4096)) == data
        target.answer_next = [aborted_sense(0x10, 0x02, lba=1), aborted_sense(0x10, 0x02, lba=1)]
        with pytest.raises(NbdBackendError) as exc:
            await disk.write(0, memoryview(data), fua=False)
        assert "app check failed at LBA 1" in exc.value.message
        assert disk.pi_rejected == 3
        await group.close()
        await target.close()

    run(main())


def test_wrong_application_tag_is_rejected_by_the_target() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1, app_tag=0x0001)  # expects another application's tag
        disk, group = await open_disk(target, PI1)
        with pytest.raises(NbdBackendError, match="app check failed"):
            await disk.write(0, memoryview(pattern(512)), fua=False)
        assert 0 not in target.blocks
        await group.close()
        await target.close()

    run(main())


def test_crc_error_abort_is_resent() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=0)
        disk, group = await open_disk(target, Requirement())
        target.answer_next = [aborted_sense(0x47, 0x05)] * 2
        await disk.write(0, memoryview(pattern(4096)), fua=False)
        assert disk.aborted_retries == 2 and bytes(await disk.read(0, 4096)) == pattern(4096)
        target.answer_next = [aborted_sense(0x47, 0x05)] * 4
        with pytest.raises(NbdBackendError, match="47h/05h"):
            await disk.write(0, memoryview(pattern(4096)), fua=False)
        await group.close()
        await target.close()

    run(main())


def test_zeroing_a_pi_disk_writes_protected_zeros() -> None:
    async def main() -> None:
        target = PiTarget(pi_type=1, app_tag=application_tag("app1"))
        disk, group = await open_disk(target, PI1)
        await disk.write(0, memoryview(pattern(3 << 20)), fua=False)
        await disk.write_zeroes(4096, (2 << 20) + 8192, may_trim=True, fua=False)
        await disk.trim(0, 4096)  # a hint: nothing is unmapped behind the PI's back
        assert not [c for c in target.commands if c[1][0] == 0x93]  # no WRITE SAME
        back = bytes(await disk.read(0, 3 << 20))
        assert back[:4096] == pattern(4096)
        assert back[4096:(2 << 20) + 12288] == bytes((2 << 20) + 8192)
        assert back[(2 << 20) + 12288:] == pattern(3 << 20)[(2 << 20) + 12288:]
        await group.close()
        await target.close()

    run(main())


def test_policy_update_to_pi_needs_a_pi_volume() -> None:
    async def main() -> None:
        plain = PiTarget(pi_type=0)
        disk, group = await open_disk(plain, Requirement())
        with pytest.raises(ProtectionUnavailable):
            disk.set_requirement(PI1)
        assert disk.requirement == Requirement() and disk.protection is None
        await group.close()
        await plain.close()

        formatted = PiTarget(pi_type=1)
        disk, group = await open_disk(formatted, Requirement())
        await disk.write(0, memoryview(pattern(4096)), fua=False)
        disk.set_requirement(PI1)
        assert disk.protection is not None
        await disk.write(4096, memoryview(pattern(4096)), fua=False)
        assert formatted.writes()[-1][1][1] & 0xE0 == PROTECT_001
        disk.set_requirement(Requirement())
        assert disk.protection is None
        await group.close()
        await formatted.close()

    run(main())
