"""Where the time goes: py-spy profiles of the difs controller and host under load.

``py-spy record --native --format raw`` samples the running process (no restart, no
instrumentation; the target is paused ~50 µs per sample, 100 samples a second) and writes
collapsed stacks including C frames, so system calls (``pread64``, ``writev``) and
libc copies show up by name. The summary gives, as shares of all samples:

* *self*: the innermost frame, with the Python function that led to it when the
  frame is C (``writev [libc.so.6] ← IscsiSession._flush (difs/host/connection.py)``);
* *py*: the innermost Python function (its own time plus the C code it called);
* *total*: each difs function anywhere on the stack (entry points left out).

Samples of the event loop waiting in ``epoll_pwait`` are idle time: counted apart, left
out of the shares.

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


def _frame(frame: str) -> tuple[str, bool]:
    """``(name, is_python)`` for one raw py-spy frame ``func (file:line)``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), False
    path = m["file"]
    if path.endswith(".py") or "/" in path and ".py" in path:
        return f"{m['func']} ({_short(path)})", True
    func = m["func"]
    if func.startswith("0x"):
        func = "?"  # an unexported libc symbol: in practice memcpy/memset
    return f"{func} [{path}]", False


#: The event loop waiting for I/O: sampled with --native, left out of the shares.
_IDLE = ("epoll_wait [", "epoll_pwait [", "epoll_pwait2 [")

#: Python frames every sample passes through (the CLI and the event loop runner).
_ENTRY = ("typer/", "click/", "asyncio/runners.py", "difs/cli/", "<module> (difs)",
          "difs/controller/run.py", "run (asyncio")


@dataclass
class Profile:
    label: str
    process: str
    samples: int
    self_top: list[tuple[str, float]]  # innermost frame, and the Python function that called it
    python_top: list[tuple[str, float]]  # innermost Python frame (includes C code below it)
    total_top: list[tuple[str, float]]  # difs functions anywhere on the stack
    raw_path: str
    idle: int = 0  # samples waiting in epoll, left out of the shares

    @classmethod
    def from_summary(cls, d: dict) -> Profile:
        pairs = lambda xs: [tuple(x) for x in xs]  # noqa: E731
        return cls(d["label"], d["process"], d["samples"], pairs(d["self"]), pairs(d["python"]),
                   pairs(d["total"]), d["raw"], d.get("idle_samples", 0))

    def summary(self) -> dict[str, object]:
        return {"label": self.label, "process": self.process, "samples": self.samples,
                "idle_samples": self.idle,
                "self": self.self_top, "python": self.python_top, "total": self.total_top,
                "raw": self.raw_path}

    def markdown(self, top: int = 10) -> str:
        busy = 100 * self.samples / max(1, self.samples + self.idle)
        lines = [f"**{self.label} — {self.process}** ({self.samples} busy samples, {busy:.0f}% of "
                 "all; shares below are of busy samples)", "",
                 "| self % | innermost frame ← Python caller | py % | innermost Python function "
                 "| total % | difs function on the stack |", "|---:|---|---:|---|---:|---|"]
        for i in range(top):
            row = []
            for col in (self.self_top, self.python_top, self.total_top):
                if i < len(col):
                    row += [f"{col[i][1]:.1f}", f"`{col[i][0]}`"]
                else:
                    row += ["", ""]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)


def summarize(raw: Path, *, label: str, process: str, top: int = 25) -> Profile:
    self_counts: collections.Counter[str] = collections.Counter()
    py_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        if frames[-1][0].startswith(_IDLE):
            idle += n
            continue
        samples += n
        py = [name for name, is_py in frames if is_py]
        caller = py[-1] if py else "?"
        leaf, leaf_is_py = frames[-1]
        self_counts[leaf if leaf_is_py else f"{leaf} ← {caller}"] += n
        py_counts[caller] += n
        for name in set(py):
            if name.endswith("py)") and "(difs/" in name and not any(e in name for e in _ENTRY):
                total_counts[name] += n

    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * k / samples, 1)) for f, k in c.most_common(top)] if samples else []

    where = str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw)
    return Profile(label, process, samples, pct(self_counts), pct(py_counts), pct(total_counts),
                   where, idle)


def record(pyspy: str, pids: dict[str, int], seconds: float, out_dir: Path, label: str,
           load, *, native: bool = True) -> list[Profile]:
    """Sample every process in ``pids`` for ``seconds`` while ``load()`` runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    spies = {}
    for name, pid in pids.items():
        raw = out_dir / f"{slug}.{name}.txt"
        spies[name] = (raw, subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
             *(["--native", "--rate", "100"] if native else ["--nonblocking", "--rate", "200"]),
             "--format", "raw", "--output", str(raw)],
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
