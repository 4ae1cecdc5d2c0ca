"""Where the time goes: py-spy profiles of the difs controller and host under load.

``py-spy record --format raw`` samples the running process (no restart, no
instrumentation; ``--nonblocking`` so the target is never paused) and writes
collapsed stacks. The summary keeps, per function, the share of samples in which
it is the innermost Python frame (*self*) and in which it is anywhere on the stack
(*total*); idle time in the event loop's poll is not sampled.

py-spy is installed into the project's venv on first use (``pip install py-spy``).
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .procs import ROOT, VENV_BIN, BenchError

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def ensure_pyspy() -> str | None:
    exe = VENV_BIN / "py-spy"
    if exe.exists():
        return str(exe)
    print("benchmarks: py-spy is not installed; installing it into the venv "
          f"({sys.executable} -m pip install py-spy)", flush=True)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"],
                         capture_output=True, text=True)
    if out.returncode or not exe.exists():
        print(f"benchmarks: could not install py-spy, skipping profiles:\n{out.stderr[-800:]}",
              flush=True)
        return None
    return str(exe)


def _short(path: str) -> str:
    for marker in ("/src/difs/", "/site-packages/", "/lib/python3"):
        if marker in path:
            return ("difs/" if marker == "/src/difs/" else "") + path.split(marker, 1)[1]
    return path


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['func']} ({_short(m['file'])})"


@dataclass
class Profile:
    label: str
    process: str
    samples: int
    self_top: list[tuple[str, float]]
    total_top: list[tuple[str, float]]
    raw_path: str

    def summary(self) -> dict[str, object]:
        return {"label": self.label, "process": self.process, "samples": self.samples,
                "self": self.self_top, "total": self.total_top, "raw": self.raw_path}

    def markdown(self, top: int = 12) -> str:
        lines = [f"**{self.label} — {self.process}** ({self.samples} samples)", "",
                 "| self % | function | | total % | function |", "|---:|---|---|---:|---|"]
        for i in range(top):
            s = self.self_top[i] if i < len(self.self_top) else ("", "")
            t = self.total_top[i] if i < len(self.total_top) else ("", "")
            sp = f"{s[1]:.1f}" if s[0] else ""
            tp = f"{t[1]:.1f}" if t[0] else ""
            lines.append(f"| {sp} | `{s[0]}` | | {tp} | `{t[0]}` |")
        return "\n".join(lines)


def summarize(raw: Path, *, label: str, process: str, top: int = 25) -> Profile:
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            total_counts[f] += n
    pct = lambda c: [(f, round(100 * k / samples, 1)) for f, k in c.most_common(top)]  # noqa: E731
    return Profile(label, process, samples, pct(self_counts) if samples else [],
                   pct(total_counts) if samples else [], str(raw.relative_to(ROOT))
                   if raw.is_relative_to(ROOT) else str(raw))


def record(pyspy: str, pids: dict[str, int], seconds: float, out_dir: Path, label: str,
           load) -> list[Profile]:
    """Sample every process in ``pids`` for ``seconds`` while ``load()`` runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    spies = {}
    for name, pid in pids.items():
        raw = out_dir / f"{slug}.{name}.txt"
        spies[name] = (raw, subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
             "--nonblocking", "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    error: list[BaseException] = []

    def drive() -> None:
        try:
            load()
        except BaseException as exc:  # reported after the profilers finish
            error.append(exc)

    t = threading.Thread(target=drive)
    t.start()
    profiles = []
    for name, (raw, proc) in spies.items():
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode or not raw.exists():
            raise BenchError(f"py-spy on {name} failed ({proc.returncode}): {err[-800:]}")
        profiles.append(summarize(raw, label=label, process=name))
    t.join()
    if error:
        raise BenchError(f"load for profile {label!r} failed: {error[0]}")
    return profiles
