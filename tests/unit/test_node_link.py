"""No exception ends a node link (issue 16): a round that fails with anything but
cancellation is logged (traceback once per distinct failure, repeats rate-limited) and the
next round runs on time."""

from __future__ import annotations

import asyncio
import logging

import pytest

from difs.nodelink.client import ManagerUnreachable
from difs.nodelink.link import NodeLink

log = logging.getLogger("difs.test.nodelink")


class FakeClient:
    def close(self) -> None:
        pass


class FlakyLink(NodeLink):
    """A link whose rounds raise what ``failures`` holds, in turn, then succeed."""

    def __init__(self, failures: list[BaseException | None]) -> None:
        super().__init__(FakeClient(), node="n1", log=log, interval=0.001)  # type: ignore[arg-type]
        self.failures = failures
        self.rounds = 0
        self.enough = asyncio.Event()

    async def exchange(self) -> None:
        self.rounds += 1
        if self.rounds >= len(self.failures):
            self.enough.set()
        failure = self.failures[min(self.rounds, len(self.failures)) - 1]
        if failure is not None:
            raise failure


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def test_any_exception_from_a_round_is_logged_and_the_link_keeps_ticking(caplog) -> None:
    boom = KeyError("name")
    failures: list[BaseException | None] = [
        boom, KeyError("name"), KeyError("name"), OSError(28, "No space left on device"),
        ManagerUnreachable("http://127.0.0.1:9", ConnectionRefusedError()), KeyError("name"),
        None, KeyError("name"), None]

    async def scenario() -> FlakyLink:
        link = FlakyLink(failures)
        link.start()
        await asyncio.wait_for(link.enough.wait(), 10)
        assert not link._task.done()  # still running after every kind of failure
        await link.close()
        assert link._task.cancelled()  # only cancellation ends it
        return link

    with caplog.at_level(logging.INFO, logger=log.name):
        link = asyncio.run(scenario())
    assert link.rounds >= len(failures)
    failed = records(caplog, "manager round failed; retrying next round")
    # one traceback per distinct failure: KeyError, OSError, and KeyError again after a good round
    assert [r.levelno for r in failed] == [logging.ERROR] * 3
    assert [r.exc_info[1] for r in failed][:2] == [boom, failures[3]]
    assert "KeyError" in caplog.text and "Traceback" in caplog.text
    # the repeats of the first KeyError: one rate-limited line, not one per round
    assert len(records(caplog, "manager round still failing")) == 1
    assert len(records(caplog, "manager round works again")) == 2
    assert len(records(caplog, "manager reachable again")) == 1


def test_a_distinct_failure_is_logged_in_full_only_once_while_it_repeats(caplog) -> None:
    async def scenario() -> FlakyLink:
        link = FlakyLink([RuntimeError("bug")] * 50)
        for _ in range(50):
            await link.tick()
        return link

    with caplog.at_level(logging.INFO, logger=log.name):
        link = asyncio.run(scenario())
    assert link.rounds == 50
    assert len(records(caplog, "manager round failed; retrying next round")) == 1
    assert len(records(caplog, "manager round still failing")) == 1  # 48 more are counted
    assert link._still_failing.count == 49


def test_cancellation_still_ends_a_round() -> None:
    async def scenario() -> None:
        link = FlakyLink([asyncio.CancelledError()])
        with pytest.raises(asyncio.CancelledError):
            await link.tick()

    asyncio.run(scenario())
