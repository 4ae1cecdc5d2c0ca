"""The benchmark runs, and the fast path beats the per-block reference at 1 MiB."""

from __future__ import annotations

from difs.integrity.bench import run


def test_fast_path_is_faster_than_reference_at_1mib() -> None:
    rows = {(name, size): secs for name, size, secs in run(rounds=2)}
    assert {size for _, size in rows} == {4096, 1 << 20}
    mib = 1 << 20
    # measured margin is 4-5x; 1.5x leaves room for a noisy shared machine
    assert rows["generate (fast)", mib] * 1.5 < rows["generate (reference)", mib]
    assert rows["verify (fast)", mib] * 1.5 < rows["verify (reference)", mib]
