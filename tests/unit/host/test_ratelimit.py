"""The host's per-application token bucket (pure, with the time given)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difs.host.ratelimit import BURST_SECONDS, RateLimit


def test_unlimited_always_goes():
    r = RateLimit()
    assert [r.admit(5.0, 1 << 20) for _ in range(1000)] == [5.0] * 1000


def test_iops_limit_spaces_ios_at_its_pace_after_a_short_burst():
    r = RateLimit(limit_iops=100)  # 10 ms per I/O, 50 ms of burst
    times = [r.admit(0.0, 4096) for _ in range(10)]
    assert times[:6] == [0.0] * 6  # the first, and 50 ms worth ahead of the pace
    assert times[6:] == pytest.approx([0.01, 0.02, 0.03, 0.04])


def test_bytes_limit_counts_the_size():
    r = RateLimit(limit_bytes_per_second=1 << 20)
    assert r.admit(0.0, 1 << 20) == 0.0  # an empty bucket takes one I/O of any size
    assert r.admit(0.0, 4096) == pytest.approx(1.0 - BURST_SECONDS)  # then it waits for the second
    assert r.admit(10.0, 4096) == 10.0  # long idle: back to an empty bucket


def test_both_limits_hold_at_once():
    r = RateLimit(limit_iops=1000, limit_bytes_per_second=100_000)
    big = [r.admit(0.0, 10_000) for _ in range(3)]  # 0.1 s of bytes each: bytes hold them
    assert big == pytest.approx([0.0, 0.05, 0.15])
    # a small I/O held by bytes booked its time in the IOPS bucket too: no catch-up burst after it
    r = RateLimit(limit_iops=10, limit_bytes_per_second=1_000_000)
    assert [r.admit(0.0, 1) for _ in range(3)] == pytest.approx([0.0, 0.05, 0.15])


def test_idle_time_banks_no_more_than_the_burst():
    r = RateLimit(limit_iops=1000)
    r.admit(0.0, 1)
    at_once = sum(1 for _ in range(1000) if r.admit(3600.0, 1) <= 3600.0)
    assert 1 + int(BURST_SECONDS * 1000) - 1 <= at_once <= 1 + int(BURST_SECONDS * 1000)  # (rounding)


def test_a_changed_limit_is_a_new_bucket_with_its_own_pace():
    slow = RateLimit(limit_iops=10)
    assert max(slow.admit(0.0, 1) for _ in range(20)) > 1.5
    fast = RateLimit(limit_iops=10_000)
    assert max(fast.admit(0.0, 1) for _ in range(20)) < 0.01


@pytest.mark.parametrize("kw", [{"limit_iops": 0}, {"limit_bytes_per_second": -1}])
def test_limits_are_positive(kw):
    with pytest.raises(ValueError, match="must be positive"):
        RateLimit(**kw)


@settings(max_examples=200, deadline=None)
@given(
    iops=st.integers(1, 5000),
    bps=st.integers(1000, 10**8),
    ios=st.lists(st.tuples(st.floats(0, 0.5), st.integers(0, 1 << 20)), min_size=1, max_size=300),
)
def test_no_window_gets_more_than_the_limit_plus_the_burst(iops, bps, ios):
    """Whatever arrives when, the I/Os sent in any window [t, t + T) are at most
    limit * (T + burst) plus one I/O, in IOPS and in bytes."""
    r = RateLimit(limit_iops=iops, limit_bytes_per_second=bps)
    now, sent = 0.0, []
    for gap, size in ios:
        now += gap
        at = r.admit(now, size)
        assert at >= now
        sent.append((at, size))
    sent.sort()
    for i, (start, _) in enumerate(sent):
        n = nbytes = 0
        largest = 0
        for at, size in sent[i:]:
            n += 1
            nbytes += size
            largest = max(largest, size)
            span = at - start  # the window [start, at] holds these I/Os
            assert n <= iops * (span + BURST_SECONDS) + 1 + 1e-6
            assert nbytes <= bps * (span + BURST_SECONDS) + largest + 1e-6
