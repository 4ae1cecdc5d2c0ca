"""Short runs of every fuzz target (tests/fuzz/<target>.py) in the test suite.

* every seed and every kept crash input (``crash-*``, a fixed finding) passes its target;
* hypothesis feeds each target mutated seeds and arbitrary bytes (this part runs with or
  without atheris, so the targets are exercised everywhere);
* with atheris installed, each target runs coverage-guided for a few seconds in a
  subprocess (libFuzzer exits non-zero and saves the input on a finding). Longer runs:
  scripts/fuzz.sh (docs/testing.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzing import edits, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import CORPUS, TARGETS, load

TESTS = Path(__file__).resolve().parents[1]
ATHERIS = importlib.util.find_spec("atheris") is not None
#: seconds of coverage-guided fuzzing per target in the suite
ATHERIS_SECONDS = 3


def seeds(target: str) -> list[Path]:
    return sorted((CORPUS / target).iterdir())


@pytest.mark.parametrize("target", TARGETS)
def test_every_seed_and_kept_crash_passes(target):
    files = seeds(target)
    assert len(files) >= 5
    module = load(target)
    for path in files:
        module.TestOneInput(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_hypothesis_bytes(target):
    module = load(target)
    corpus = [p.read_bytes() for p in seeds(target)]

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.one_of(
        st.builds(mutate, st.sampled_from(corpus), edits),
        st.builds(lambda seed, head: head + seed[len(head):], st.sampled_from(corpus),
                  st.binary(min_size=1, max_size=2)),
        st.binary(max_size=512)))
    def run(data):
        module.TestOneInput(data)

    run()


@pytest.mark.slow
@pytest.mark.skipif(not ATHERIS, reason="atheris is not installed: the coverage-guided short "
                    "run is skipped (the hypothesis run above still exercises every target)")
@pytest.mark.parametrize("target", TARGETS)
def test_atheris_short_run(target, tmp_path):
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "corpus").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", target, str(tmp_path / "corpus"), str(CORPUS / target),
         f"-max_total_time={ATHERIS_SECONDS}", "-timeout=10", "-rss_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=120)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-4000:])
    assert "Done" in proc.stderr and "stat::number_of_executed_units" in proc.stderr
