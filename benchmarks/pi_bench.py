#!/usr/bin/env python3
"""Measure PI generate/verify speed: ``.venv/bin/python benchmarks/pi_bench.py [--rounds N]``.

Prints MB/s (10**6 bytes of *data* per second) for the fast path and for the per-block
reference, at 4 KiB and 1 MiB, plus interleave/split.  Candidates run in alternating rounds
and the best round counts, which keeps a noisy shared machine from favouring one of them.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from difs.integrity.crc import block_guards, block_guards_reference
from difs.integrity.pi import generate, generate_reference, verify, verify_reference
from difs.integrity.wire import interleave, split


def _best(cands: dict[str, Callable[[], object]], rounds: int, inner: int) -> dict[str, float]:
    best = dict.fromkeys(cands, float("inf"))
    for _ in range(rounds):
        for name, fn in cands.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / inner)
    return best


def run(rounds: int = 20) -> list[tuple[str, int, float]]:
    """``[(name, size, seconds per call)]`` for every candidate and size."""
    rows = []
    for size in (4096, 1 << 20):
        data = os.urandom(size)
        pi = generate(data, lba=1000, pi_type=1, app_tag=7)
        inter = bytes(interleave(data, pi))
        kw = {"lba": 1000, "pi_type": 1, "app_tag": 7}
        cands = {
            "guards (fast)": lambda: block_guards(data),
            "guards (reference loop)": lambda: block_guards_reference(data),
            "generate (fast)": lambda: generate(data, **kw),
            "generate (reference)": lambda: generate_reference(data, **kw),
            "verify (fast)": lambda: verify(data, pi, **kw),
            "verify (reference)": lambda: verify_reference(data, pi, **kw),
            "interleave": lambda: interleave(data, pi),
            "split": lambda: split(inter),
        }
        inner = 2000 if size == 4096 else 10
        for name, secs in _best(cands, rounds, inner).items():
            rows.append((name, size, secs))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    print(f"{'operation':26s} {'size':>8s} {'time':>10s} {'MB/s':>8s}")
    for name, size, secs in run(args.rounds):
        label = "4 KiB" if size == 4096 else "1 MiB"
        print(f"{name:26s} {label:>8s} {secs * 1e6:8.1f}us {size / secs / 1e6:8.0f}")


if __name__ == "__main__":
    main()
