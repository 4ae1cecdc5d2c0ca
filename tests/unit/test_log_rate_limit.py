"""RateLimitedEvent: one line per interval for an event a flood repeats, with the count."""

from __future__ import annotations

import logging

from difs.util.logs import RateLimitedEvent


def test_one_line_per_interval_and_the_next_line_carries_the_count(caplog):
    now = [100.0]
    event = RateLimitedEvent(logging.getLogger("t"), "refused", interval=10.0,
                             clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for _ in range(500):
            event(peer="p")
        now[0] += 10.0
        event(peer="q")
    records = [r for r in caplog.records if r.name == "t"]
    assert [r.getMessage() for r in records] == ["refused", "refused"]
    assert records[0].difs_fields == {"peer": "p"}
    assert records[1].difs_fields == {"peer": "q", "suppressed": 499}
    assert event.count == 501 and event.suppressed == 0


def test_a_burst_of_lines_per_interval_then_one_with_the_count(caplog):
    now = [0.0]
    event = RateLimitedEvent(logging.getLogger("t"), "resent", interval=10.0, burst=3,
                             clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for _ in range(1000):
            event(n=1)
        now[0] += 10.0
        event(n=2)
    records = [r for r in caplog.records if r.name == "t"]
    assert len(records) == 4
    assert records[-1].difs_fields == {"n": 2, "suppressed": 997}


def test_rate_limited_log_limits_each_event_and_level_on_its_own(caplog):
    from difs.util.logs import RateLimitedLog

    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), interval=10.0, burst=2,
                             clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for _ in range(100):
            limited("a", logging.WARNING, x=1)
            limited("b", logging.ERROR, x=2)
    records = [r for r in caplog.records if r.name == "t"]
    assert [(r.getMessage(), r.levelno) for r in records] == [
        ("a", logging.WARNING), ("b", logging.ERROR), ("a", logging.WARNING),
        ("b", logging.ERROR)]
