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
