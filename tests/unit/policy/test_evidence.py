"""The evidence contract nodes report and the latency histogram both keep per I/O."""

import pytest
from pydantic import ValidationError

from difs.policy.evidence import (
    LATENCY_BOUNDS_MS,
    HostEvidenceReport,
    LatencyRecorder,
    PathEvidence,
    SessionEvidence,
    SessionServices,
)


def test_recorder_buckets_by_upper_bound_and_sums():
    r = LatencyRecorder()
    r.record(40_000)  # 0.04 ms -> first bucket
    r.record(50_000)  # exactly 0.05 ms -> first bucket (le)
    r.record(50_001)  # just above -> second
    r.record(10 * 1_000_000_000)  # 10 s -> the overflow bucket
    assert r.counts[0] == 2 and r.counts[1] == 1 and r.counts[-1] == 1
    assert r.total == 4
    h = r.since(None)
    assert h.total == 4 and h.sum_ms == pytest.approx((140_001 + 10e9) / 1e6)


def test_since_is_the_window_delta():
    r = LatencyRecorder()
    r.record(2_000_000)
    before = r.snapshot()
    r.record(2_000_000)
    r.record(200_000)
    h = r.since(before)
    assert h.total == 2
    assert h.counts[LATENCY_BOUNDS_MS.index(2.5)] == 1
    assert h.counts[LATENCY_BOUNDS_MS.index(0.25)] == 1
    assert h.mean_ms == pytest.approx(1.1)
    assert h.quantile_ms(0.5) == 0.25 and h.quantile_ms(1.0) == 2.5


def test_cumulative_buckets_end_with_inf_holding_all():
    r = LatencyRecorder()
    for ns in (10_000, 3_000_000, 9_000_000_000):
        r.record(ns)
    buckets, total_s = r.cumulative_seconds()
    assert buckets[0] == ("5e-05", 1)
    assert buckets[-1] == ("+Inf", 3)
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)
    assert total_s == pytest.approx(9.003010)


def test_empty_histogram_has_no_mean_or_quantile():
    h = LatencyRecorder().since(None)
    assert h.mean_ms is None and h.quantile_ms(0.99) is None


def test_histogram_with_wrong_bucket_count_is_refused():
    with pytest.raises(ValidationError):
        SessionEvidence.model_validate({
            "volume": "v", "initiator": "iqn.2026-01.x:y", "channel": 1,
            "services": {}, "latency": {"counts": [1, 2], "sum_ms": 1.0}})


def test_unknown_fields_and_negative_counts_are_refused():
    with pytest.raises(ValidationError):
        SessionServices.model_validate({"header_digest": True, "sneaky": 1})
    with pytest.raises(ValidationError):
        PathEvidence.model_validate({"application": "a", "controller": "c", "channel": 0,
                                     "services": {}, "ios": -1})


def test_a_host_report_names_each_path_once():
    entry = {"application": "a", "controller": "c", "channel": 0, "services": {}}
    with pytest.raises(ValidationError, match="one entry"):
        HostEvidenceReport.model_validate({"window_seconds": 1.0, "paths": [entry, entry]})
    ok = HostEvidenceReport.model_validate({"window_seconds": 1.0, "paths": [entry]})
    assert ok.paths[0].services.authentication == "none"
