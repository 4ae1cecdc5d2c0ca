"""``AppDisk._run`` carries out the retry rules' decisions: fake paths and sessions (no
sockets) answer from a script; the test watches which path each attempt took, what the group
was told, the disk's counters and the EIO it raises."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from difs.host.disk import AppDisk
from difs.host.paths import ChannelSpec, Path, PathState
from difs.host.errors import CommandTimedOut, PathFailed
from difs.iscsi.initiator_events import CommandComplete
from difs.nbd.backend import NbdBackendError
from difs.policy.fast import DATA_DIGEST, NegotiatedServices, Requirement

READ16 = bytes([0x88]) + bytes(15)


def answer(status: int = 0, sense: bytes = b"") -> CommandComplete:
    return CommandComplete(1, status, b"\x00" * 512, sense, 0, False, False)


def sense(key: int, asc: int, ascq: int) -> bytes:
    data = bytearray(18)
    data[0], data[2], data[7], data[12], data[13] = 0x70, key, 10, asc, ascq
    return bytes(data)


class Script:
    """What the controller does with each attempt, in order, and which path each took."""

    def __init__(self, *steps) -> None:
        self.steps = list(steps)
        self.taken: list[int] = []


class FakeSession:
    def __init__(self, channel: int, script: Script) -> None:
        self.channel = channel
        self.script = script
        self.aborted = False

    async def execute(self, lun, cdb, *, data_out=None, expected_in_length=0):
        self.script.taken.append(self.channel)
        step = self.script.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def abort(self) -> None:
        self.aborted = True


class FakeGroup:
    """What AppDisk asks of a PathGroup."""

    target = "iqn.2026-11.io.difs:t"

    def __init__(self, script: Script, channels: int = 2, *, up: bool = True) -> None:
        self.paths = []
        for channel in range(channels):
            path = Path(ChannelSpec(channel), controller="ctl", portal="p", target=self.target)
            path.negotiated = NegotiatedServices(data_digest=True)
            path.state = PathState.UP if up else PathState.DOWN
            path.session = FakeSession(channel, script)
            self.paths.append(path)
        self.failed: list[int] = []
        self._changed = asyncio.Event()
        #: channels whose faults the disk reported, and how long it is told to wait
        self.faults: list[int] = []
        self.resend_wait = 0.0

    def describe_down(self) -> str:
        down = [f"ch{p.channel}" for p in self.paths if p.state is not PathState.UP]
        return f"{', '.join(down)} down: refused" if down else ""

    async def changed(self) -> None:
        await self._changed.wait()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def fault(self, path: Path) -> float:
        self.faults.append(path.channel)
        return self.resend_wait

    def mark_failed(self, path: Path) -> None:
        self.failed.append(path.channel)
        path.state = PathState.DOWN
        self.notify()


def disk_over(group: FakeGroup, *, path_wait: float = 1.0) -> AppDisk:
    return AppDisk(app="db", group=group, requirement=Requirement(flags=DATA_DIGEST),
                   path_wait=path_wait)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_good_answer_is_returned_and_counted_on_its_path() -> None:
    script = Script(answer())
    group = FakeGroup(script)
    disk = disk_over(group)
    result = run(disk._run(READ16, expected_in_length=512))
    assert result.status == 0
    [channel] = script.taken
    assert disk.per_path == {channel: [1, 512]} and group.paths[channel].ios == 1
    assert (disk.resent, disk.failed) == (0, 0)
    assert all(p.outstanding == 0 for p in group.paths)


def test_broken_path_is_given_up_and_the_command_resent(caplog) -> None:
    script = Script(PathFailed("ctl/ch?: connection reset"), answer())
    group = FakeGroup(script)
    disk = disk_over(group)
    with caplog.at_level(logging.WARNING, logger="difs.host"):
        assert run(disk._run(READ16, expected_in_length=512)).status == 0
    first, second = script.taken
    assert group.failed == [first] and second != first
    assert disk.resent == 1 and disk.failed == 0
    assert [r.getMessage() for r in caplog.records] == ["path failed, re-sending"]


def test_aborted_command_goes_to_another_path() -> None:
    script = Script(answer(2, sense(0x0B, 0x47, 0x05)), answer())
    group = FakeGroup(script)
    disk = disk_over(group)
    assert run(disk._run(READ16, expected_in_length=512)).status == 0
    first, second = script.taken
    assert second != first and group.failed == []
    assert (disk.resent, disk.aborted_retries) == (1, 1)


def test_aborted_command_stays_on_the_only_path() -> None:
    script = Script(answer(2, sense(0x0B, 0x47, 0x05)), answer())
    disk = disk_over(FakeGroup(script, channels=1))
    assert run(disk._run(READ16, expected_in_length=512)).status == 0
    assert script.taken == [0, 0]


def test_unit_attention_is_sent_again_without_counting() -> None:
    script = Script(answer(2, sense(0x06, 0x29, 0x00)), answer())
    disk = disk_over(FakeGroup(script))
    assert run(disk._run(READ16, expected_in_length=512)).status == 0
    assert len(script.taken) == 2 and (disk.resent, disk.failed) == (0, 0)


def test_timeouts_are_resent_three_times_then_eio() -> None:
    script = Script(*(CommandTimedOut(f"ch: command {i} not answered") for i in range(4)))
    disk = disk_over(FakeGroup(script))
    with pytest.raises(NbdBackendError) as failure:
        run(disk._run(READ16, expected_in_length=512))
    assert failure.value.args[0] == errno.EIO
    assert failure.value.message == "ch: command 3 not answered"
    assert (disk.resent, disk.failed) == (3, 1) and len(script.taken) == 4


def test_host_pi_check_failure_is_retried_elsewhere_then_eio() -> None:
    from difs.integrity import PiCheckError

    def check(result):
        raise PiCheckError("guard", 7, expected=0x1234, found=0x4321)

    script = Script(answer(), answer())
    disk = disk_over(FakeGroup(script))
    with pytest.raises(NbdBackendError, match=r"T10 PI guard check failed at LBA 7 \(host\), "
                                              r"after 2 tries"):
        run(disk._run(READ16, expected_in_length=512, check=check))
    first, second = script.taken
    assert second != first and (disk.pi_errors, disk.failed) == (2, 1)


def test_other_answers_are_eio_with_the_sense() -> None:
    script = Script(answer(2, sense(0x05, 0x24, 0x00)))
    disk = disk_over(FakeGroup(script))
    with pytest.raises(NbdBackendError, match="asc/ascq 24h/00h") as failure:
        run(disk._run(READ16, expected_in_length=512))
    assert failure.value.args[0] == errno.EIO and disk.failed == 1


def test_task_set_full_is_waited_for_and_sent_again_on_the_same_disk() -> None:
    script = Script(answer(0x28), answer(0x08), answer())
    disk = disk_over(FakeGroup(script))
    result = run(disk._run(READ16, expected_in_length=512))
    assert result.status == 0 and len(script.taken) == 3
    assert (disk.failed, disk.resent) == (0, 0)


def test_no_path_waits_then_eio_naming_the_requirement() -> None:
    disk = disk_over(FakeGroup(Script(), up=False), path_wait=0.05)
    with pytest.raises(NbdBackendError, match=r"no available path satisfies db's policy "
                                              r"\(data digest\); ch0, ch1 down: refused"):
        run(disk._run(READ16, expected_in_length=512))
    assert disk.failed == 1


def test_a_path_that_comes_up_during_the_wait_is_used() -> None:
    script = Script(answer())
    group = FakeGroup(script, up=False)
    disk = disk_over(group, path_wait=5.0)

    async def main():
        io = asyncio.create_task(disk._run(READ16, expected_in_length=512))
        await asyncio.sleep(0.05)
        group.paths[1].state = PathState.UP
        group.notify()
        return await io

    assert run(main()).status == 0 and script.taken == [1]


def test_a_resend_after_a_digest_error_waits_for_the_paths_budget() -> None:
    """Issue 17 finding 5: the re-send after ABORTED COMMAND 47h/05h reports the fault to the
    group and waits as long as the path's re-send budget says, then goes."""
    script = Script(answer(2, sense(0x0B, 0x47, 0x05)), answer())
    group = FakeGroup(script, channels=1)
    group.resend_wait = 0.3
    disk = disk_over(group)

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await disk._run(READ16, expected_in_length=512)
        return loop.time() - start

    assert run(timed()) >= 0.3
    assert group.faults == [0] and script.taken == [0, 0] and disk.resent == 1


def test_a_flood_of_retries_logs_a_few_lines_not_one_per_retry(caplog) -> None:
    """Every command's re-send used to log its own line (215,000 lines in a fault flood)."""
    crc = answer(2, sense(0x0B, 0x47, 0x05))
    script = Script(*([crc, answer()] * 200))
    disk = disk_over(FakeGroup(script, channels=1))

    async def many() -> None:
        for _ in range(200):
            await disk._run(READ16, expected_in_length=512)

    with caplog.at_level(logging.WARNING, logger="difs.host"):
        run(many())
    lines = [r for r in caplog.records if "re-sending" in r.getMessage()]
    assert disk.resent == 200 and len(lines) == 5


def test_a_limited_application_waits_for_its_limit_and_counts_the_waits() -> None:
    from difs.host.ratelimit import BURST_SECONDS

    n, iops = 60, 400
    script = Script(*[answer() for _ in range(2 * n)])
    limited = AppDisk(app="db", group=FakeGroup(script), requirement=Requirement(limit_iops=iops))
    free = AppDisk(app="web", group=FakeGroup(script), requirement=Requirement())

    async def timed(disk: AppDisk) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(disk.read(0, 512) for _ in range(n)))
        return loop.time() - start

    run(timed(free))
    assert free.limit is None and free.qos_waits == 0
    took = run(timed(limited))
    assert took >= (n - 1) / iops - BURST_SECONDS - 0.005
    # (fewer when the loop is slow and the clock moves on between two reads: a busy machine)
    assert 0 < limited.qos_waits <= n - 1 - BURST_SECONDS * iops
    # a live change to another limit is a new bucket; removing it removes the wait
    limited.set_requirement(Requirement(limit_bytes_per_second=1 << 30))
    assert limited.limit.limit_bytes_per_second == 1 << 30 and limited.limit.limit_iops is None
    limited.set_requirement(Requirement())
    assert limited.limit is None


def test_the_policys_limits_reach_the_requirement() -> None:
    from difs.policy import PolicyServices

    req = Requirement.from_policy(PolicyServices.model_validate(
        {"qos": {"limit_iops": 100, "limit_bytes_per_second": 4096, "dscp": "af41"}}))
    assert (req.limit_iops, req.limit_bytes_per_second, req.dscp) == (100, 4096, 34)
    assert req == Requirement(dscp=34)  # limits are not path properties
