"""benchmarks/pi_bench.py runs, and the fast path beats the per-block reference at 1 MiB."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "pi_bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("pi_bench", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_bench().run


def test_fast_path_is_faster_than_reference_at_1mib() -> None:
    rows = {(name, size): secs for name, size, secs in run(rounds=2)}
    assert {size for _, size in rows} == {4096, 1 << 20}
    mib = 1 << 20
    # measured margin is 4-5x; 1.5x leaves room for a noisy shared machine
    assert rows["generate (fast)", mib] * 1.5 < rows["generate (reference)", mib]
    assert rows["verify (fast)", mib] * 1.5 < rows["verify (reference)", mib]
