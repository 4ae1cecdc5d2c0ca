"""The host's session adapter against a real target core on loopback: pipelining up to the
target's window, NOP-Out keepalive, command timeouts with ABORT TASK, and CHAP on paths."""

from __future__ import annotations

import asyncio
import time

import pytest
from host_testtarget import BLOCK, TARGET, TestTarget, read16, write16

from difs.host.disk import AppDisk
from difs.host.pathgroup import PathGroup
from difs.host.paths import ChannelSpec, PathState
from difs.host.connection import IscsiSession, SessionTimers
from difs.host.errors import CommandTimedOut, PathFailed
from difs.iscsi.config import ChapCredentials, InitiatorConfig, TargetConfig
from difs.iscsi.constants import TmfFunction, TmfResponse
from difs.policy.fast import AUTH, MUTUAL_AUTH, Requirement

INITIATOR = "iqn.2026-11.io.difs:test.host"
QUIET = SessionTimers(nop_interval=None, command_timeout=None, login_timeout=3.0)


def run(coro, timeout: float = 15.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(portal: str, timers: SessionTimers = QUIET) -> IscsiSession:
    config = InitiatorConfig(initiator_name=INITIATOR, isid=0x023D00000001, target_name=TARGET)
    return await IscsiSession.connect(portal, config, name="test/ch1", timers=timers)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_commands_pipeline_up_to_the_targets_window() -> None:
    async def main() -> None:
        target = TestTarget(command_window=4)
        session = await connect(await target.start())
        target.hold = {0x88}
        reads = [asyncio.create_task(session.execute(0, read16(i, 1), expected_in_length=BLOCK))
                 for i in range(10)]
        await wait_until(lambda: len(target.held) == 4)
        await asyncio.sleep(0.1)
        # four at the target at once (its window), the other six queued in the core
        assert len(target.held) == 4 and session.outstanding == 10
        assert session.peak_outstanding == 10
        target.hold_next = 0  # from now on answer everything
        target.release()
        done = await asyncio.gather(*reads)
        assert [r.status for r in done] == [0] * 10
        assert len(target.seen) == 10
        await session.logout()
        await target.close()

    run(main())


def test_idle_path_sends_keepalives_and_stays_up() -> None:
    async def main() -> None:
        target = TestTarget()
        timers = SessionTimers(nop_interval=0.2, nop_timeout=1.0, command_timeout=None)
        session = await connect(await target.start(), timers)
        await asyncio.sleep(0.9)
        assert session.keepalives >= 2 and session.is_up
        await session.logout()
        await target.close()

    run(main())


def test_silent_target_is_declared_down_by_the_keepalive() -> None:
    async def main() -> None:
        target = TestTarget()
        timers = SessionTimers(nop_interval=0.2, nop_timeout=0.4, command_timeout=None)
        session = await connect(await target.start(), timers)
        target.hold = {0x88}
        read = asyncio.create_task(session.execute(0, read16(0, 1), expected_in_length=BLOCK))
        await wait_until(lambda: target.held)
        target.silence()
        started = time.monotonic()
        with pytest.raises(PathFailed, match="NOP-Out ping timeout") as failure:
            await read
        assert not isinstance(failure.value, CommandTimedOut)
        assert time.monotonic() - started < 5.0  # 0.2 s silence + 0.4 s unanswered, on a busy box
        assert session.closed.done() and "NOP-Out" in session.closed.result()
        await target.close()

    run(main())


def test_timed_out_command_is_aborted_and_the_path_stays_up() -> None:
    async def main() -> None:
        target = TestTarget()
        timers = SessionTimers(nop_interval=None, command_timeout=0.3, abort_timeout=1.0)
        session = await connect(await target.start(), timers)
        target.hold = {0x88}
        with pytest.raises(CommandTimedOut, match="aborted"):
            await session.execute(0, read16(7, 1), expected_in_length=BLOCK)
        [tmf] = target.tmfs
        assert tmf.function == TmfFunction.ABORT_TASK and not target.held
        assert session.is_up and session.timeouts == 1
        target.hold = set()
        result = await session.execute(0, read16(7, 1), expected_in_length=BLOCK)
        assert result.status == 0 and session.outstanding == 0
        await session.logout()
        await target.close()

    run(main())


@pytest.mark.parametrize("answer", [None, TmfResponse.TASK_DOES_NOT_EXIST])
def test_abort_not_confirmed_drops_the_path(answer) -> None:
    async def main() -> None:
        target = TestTarget()
        target.tmf_response = answer
        timers = SessionTimers(nop_interval=None, command_timeout=0.3, abort_timeout=0.4)
        session = await connect(await target.start(), timers)
        target.hold = {0x8A}
        with pytest.raises(PathFailed) as failure:
            await session.execute(0, write16(0, 1), data_out=b"x" * BLOCK)
        assert not isinstance(failure.value, CommandTimedOut)
        expected = "not answered" if answer is None else "TASK_DOES_NOT_EXIST"
        assert expected in str(failure.value)
        assert session.closed.done() and not session.is_up
        await target.close()

    run(main())


def test_disk_resends_an_aborted_command_on_a_working_path() -> None:
    async def main() -> None:
        target = TestTarget()
        portal = await target.start()
        timers = SessionTimers(nop_interval=None, command_timeout=0.3, abort_timeout=1.0)
        group = PathGroup(controller="t", portal=portal, target=TARGET, initiator_name=INITIATOR,
                          channels=(ChannelSpec(0), ChannelSpec(1)), timers=timers)
        await group.start()
        disk = AppDisk(app="a", group=group, requirement=Requirement(), path_wait=2.0)
        await disk.open()
        await disk.write(0, memoryview(b"\x5e" * 4096), fua=False)
        target.hold, target.hold_next = {0x88}, 1  # the next read is not answered
        data = await disk.read(0, 4096)
        assert bytes(data) == b"\x5e" * 4096
        assert disk.resent == 1 and len(target.tmfs) == 1
        # the path that timed out was not given up: both are still up, no errors
        assert [p.state for p in group.paths] == [PathState.UP, PathState.UP]
        assert sum(p.errors for p in group.paths) == 0
        await group.close()
        await target.close()

    run(main())


CHAP = ChapCredentials("host-user", "host-secret-123")
MUTUAL = ChapCredentials("target-user", "target-secret-45")


@pytest.mark.parametrize("mutual", [False, True])
def test_chap_paths_record_their_authentication(mutual: bool) -> None:
    async def main() -> None:
        target = TestTarget(target=TargetConfig(name=TARGET, chap=CHAP,
                                                mutual_chap=MUTUAL if mutual else None))
        group = PathGroup(controller="t", portal=await target.start(), target=TARGET,
                          initiator_name=INITIATOR, channels=(ChannelSpec(0),), chap=CHAP,
                          mutual_chap=MUTUAL if mutual else None, timers=QUIET)
        await group.start()
        [path] = group.paths
        assert path.state is PathState.UP
        assert path.satisfies(Requirement(flags=AUTH))
        assert path.satisfies(Requirement(flags=AUTH | MUTUAL_AUTH)) is mutual
        await group.close()
        await target.close()

    run(main())


@pytest.mark.parametrize("host_chap, host_mutual", [
    (ChapCredentials("host-user", "wrong-secret-999"), None),
    (CHAP, ChapCredentials("target-user", "not-the-target-1")),
])
def test_wrong_chap_secret_keeps_the_path_down_and_says_why(host_chap, host_mutual) -> None:
    async def main() -> None:
        target = TestTarget(target=TargetConfig(name=TARGET, chap=CHAP, mutual_chap=MUTUAL))
        group = PathGroup(controller="t", portal=await target.start(), target=TARGET,
                          initiator_name=INITIATOR, channels=(ChannelSpec(0),), chap=host_chap,
                          mutual_chap=host_mutual, timers=QUIET)
        await group.start()
        [path] = group.paths
        assert path.state is PathState.DOWN and path.negotiated is None
        assert "authentication failed" in group.last_error[0]
        assert "--chap" in group.describe_down() or "--mutual-chap" in group.describe_down()
        await group.close()
        await target.close()

    run(main())


def test_logout_requested_by_the_target_drains_the_path_and_reconnects() -> None:
    async def main() -> None:
        target = TestTarget()
        group = PathGroup(controller="t", portal=await target.start(), target=TARGET,
                          initiator_name=INITIATOR, channels=(ChannelSpec(0),), timers=QUIET)
        await group.start()
        [path] = group.paths
        first = path.session
        target.hold = {0x88}
        read = asyncio.create_task(first.execute(0, read16(3, 1), expected_in_length=BLOCK))
        await wait_until(lambda: target.held)
        [conn] = target.connections
        conn.core.request_logout(2)
        conn.pump()
        # not chosen any more, but the command in flight is allowed to finish
        await wait_until(lambda: path.state is PathState.DOWN)
        assert first.draining and not first.closed.done()
        target.hold = set()
        target.release()
        assert (await read).status == 0
        await asyncio.wait_for(first.closed, 3)
        assert first.closed.result() == "logout"
        await wait_until(lambda: path.state is PathState.UP and path.session is not first)
        assert (await path.session.execute(0, read16(3, 1), expected_in_length=BLOCK)).status == 0
        await group.close()
        await target.close()

    run(main())
