#!/usr/bin/env python3
"""Side-by-side benchmarks: difs against tgt, same machine, same clients, one run.

    .venv/bin/python benchmarks/run.py            # full run (a few minutes)
    .venv/bin/python benchmarks/run.py --quick    # 1 repetition of 3 s each

Every target serves an identical backing file (same random content, page cache
warmed the same way) on its own loopback port. Every workload is run against
every target in turn, repeated, and reported as the median with min/max, the
difs/tgt ratio, and the target process's CPU time per I/O (from /proc).

Results go to benchmarks/results/<timestamp>/ as results.json, results.md and
chart.png (when matplotlib is installed), with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INITIATOR = "iqn.2026-11.io.difs.bench:client"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# -- targets -------------------------------------------------------------------


class Target:
    name: str
    pid: int
    url: str

    def stop(self) -> None:
        ...  # abstract


class Tgt(Target):
    """tgt 1.0.x (Debian package tgt), a C user-space target: the peer to beat."""

    def __init__(self, workdir: Path, image: Path) -> None:
        self.name = "tgt"
        self.port = free_port()
        self.control = free_port()
        iqn = "iqn.2001-04.com.example:bench"
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        adm = ["tgtadm", "-C", str(self.control), "--lld", "iscsi"]
        subprocess.run([*adm, "--op", "new", "--mode", "target", "--tid", "1", "-T", iqn], check=True)
        subprocess.run([*adm, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
                        "-b", str(image)], check=True)
        subprocess.run([*adm, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"], check=True)
        self.pid = self.proc.pid
        self.url = f"iscsi://127.0.0.1:{self.port}/{iqn}/1"

    def stop(self) -> None:
        subprocess.run(["tgtadm", "-C", str(self.control), "--op", "delete", "--mode", "system"],
                       capture_output=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Difs(Target):
    """A difs controller process serving ``image`` as volume ``bench``."""

    def __init__(self, name: str, workdir: Path, image: Path, extra: list[str]) -> None:
        sys.path.insert(0, str(ROOT / "src"))
        from difs.controller.volumes import VolumeDirectory

        self.name = name
        self.port = free_port()
        data = workdir / name
        volumes = VolumeDirectory(data)
        volumes.ensure("bench", image.stat().st_size)
        shutil.copyfile(image, volumes.data_path("bench"))
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/difs"), "controller", "--portal", f"127.0.0.1:{self.port}",
             "--data-dir", str(data), "--name", "bench", "--volume", "bench", "--log-level",
             "warning", *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("iscsi://"):
            raise RuntimeError(f"difs controller did not start ({name})")
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- workloads ---------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    tool: str
    block: int  # bytes per I/O

    def command(self, url: str, duration: float) -> list[str]:
        ...  # abstract

    def parse(self, out: str, elapsed: float) -> tuple[float, int]:
        """(IOPS, number of I/Os) from the tool's output."""
        ...  # abstract


class IscsiPerf(Workload):
    def __init__(self, name: str, depth: int, blocks: int, random: bool) -> None:
        super().__init__(name, "iscsi-perf", blocks * 512)
        self.depth, self.blocks, self.random = depth, blocks, random

    def command(self, url: str, duration: float) -> list[str]:
        cmd = ["iscsi-perf", "-i", INITIATOR, "-m", str(self.depth), "-b", str(self.blocks)]
        if self.random:
            cmd.append("-r")
        return ["timeout", "-s", "INT", str(duration), *cmd, url]

    def parse(self, out: str, elapsed: float) -> tuple[float, int]:
        averages = re.findall(r"iops average (\d+)", out)
        if not averages:
            raise RuntimeError(f"iscsi-perf printed no figures:\n{out[-2000:]}")
        iops = float(averages[-1])
        return iops, int(iops * elapsed)


class QemuImgBench(Workload):
    def __init__(self, name: str, depth: int, size: int, write: bool, count: int) -> None:
        super().__init__(name, "qemu-img bench", size)
        self.depth, self.size, self.write, self.count = depth, size, write, count

    def command(self, url: str, duration: float) -> list[str]:
        cmd = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-i", "threads", "-c",
               str(self.count), "-d", str(self.depth), "-s", str(self.size)]
        if self.write:
            cmd += ["-w", "--pattern=0xa5"]
        return [*cmd, url.replace("/bench/", f"/bench/")]

    def parse(self, out: str, elapsed: float) -> tuple[float, int]:
        match = re.search(r"Run completed in ([\d.]+) seconds", out)
        if not match:
            raise RuntimeError(f"qemu-img bench printed no figures:\n{out[-2000:]}")
        return self.count / float(match.group(1)), self.count


def workloads(quick: bool) -> list[Workload]:
    scale = 1 if not quick else 4
    return [
        IscsiPerf("4K randread QD32", 32, 8, True),
        IscsiPerf("1M seqread QD16", 16, 2048, False),
        IscsiPerf("4K read QD1", 1, 8, True),
        QemuImgBench("4K write QD32", 32, 4096, True, 200_000 // scale),
        QemuImgBench("4K read QD32 (qemu)", 32, 4096, False, 200_000 // scale),
        QemuImgBench("1M write QD16", 16, 1 << 20, True, 4000 // scale),
    ]


@dataclass
class Result:
    target: str
    workload: str
    runs: list[float] = field(default_factory=list)  # IOPS per run
    cpu_us_per_io: list[float] = field(default_factory=list)
    block: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def mb_s(self) -> float:
        return self.median * self.block / 1e6


def run_one(target: Target, workload: Workload, duration: float) -> tuple[float, float]:
    cpu0 = cpu_seconds(target.pid)
    start = time.monotonic()
    proc = subprocess.run(workload.command(target.url, duration), capture_output=True, text=True,
                          timeout=duration * 20 + 120)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(target.pid) - cpu0
    out = proc.stdout + proc.stderr
    iops, ios = workload.parse(out, elapsed)
    return iops, (cpu / ios * 1e6) if ios else float("nan")


def machine() -> dict[str, object]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    tgt = subprocess.run(["tgtd", "-V"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "tgt": tgt,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def render_table(results: list[Result], targets: list[str]) -> str:
    by = {(r.target, r.workload): r for r in results}
    names = list(dict.fromkeys(r.workload for r in results))
    head = "| workload | " + " | ".join(
        f"{t} IOPS (min–max) | {t} MB/s | {t} CPU µs/IO" for t in targets) + " | " + " | ".join(
        f"{t}/tgt" for t in targets if t != "tgt") + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(targets) + len(targets) - 1)]
    for w in names:
        cells = [w]
        for t in targets:
            r = by.get((t, w))
            if r is None or not r.runs:
                cells += ["—", "—", "—"]
                continue
            cells += [f"{r.median:,.0f} ({min(r.runs):,.0f}–{max(r.runs):,.0f})", f"{r.mb_s:,.0f}",
                      f"{statistics.median(r.cpu_us_per_io):.1f}"]
        base = by.get(("tgt", w))
        for t in targets:
            if t == "tgt":
                continue
            r = by.get((t, w))
            cells.append(f"{r.median / base.median:.2f}x" if r and base and r.runs and base.runs else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(results: list[Result], targets: list[str], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(dict.fromkeys(r.workload for r in results))
    by = {(r.target, r.workload): r for r in results}
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(targets)
    for i, t in enumerate(targets):
        base = [by[("tgt", w)].median if ("tgt", w) in by else 1 for w in names]
        vals = [by[(t, w)].median / b if (t, w) in by else 0 for w, b in zip(names, base)]
        ax.bar([x + i * width for x in range(len(names))], vals, width, label=t)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(names))], names,
                  rotation=20, ha="right")
    ax.set_ylabel("IOPS relative to tgt")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one 3-second repetition per figure")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per iscsi-perf run")
    ap.add_argument("--size", default="512M", help="backing file size per target")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--only", action="append", default=[], help="run only workloads matching")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.duration = 1, 3.0
    for tool in ("tgtd", "tgtadm", "iscsi-perf", "qemu-img"):
        if shutil.which(tool) is None:
            print(f"benchmarks: {tool} is missing; run ./scripts/setup.sh", file=sys.stderr)
            return 2
    size = int(args.size.rstrip("M")) << 20
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = args.out / stamp
    work = outdir / "work"
    work.mkdir(parents=True)
    image = work / "image.raw"
    print(f"benchmarks: writing a {args.size} random backing image", flush=True)
    with open(image, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    specs = [("tgt", None), ("difs", []), ("difs+hdigest", ["--require-digest", "bench=header"])]
    targets: list[Target] = []
    results: list[Result] = []
    try:
        for name, extra in specs:
            if extra is None:
                copy = work / "tgt.raw"
                shutil.copyfile(image, copy)
                targets.append(Tgt(work, copy))
            else:
                targets.append(Difs(name, work, image, extra))
        for t in targets:  # warm the page cache the same way for everyone
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "null", t.url.replace(
                "iscsi://", "iscsi://"), "null-co://"], capture_output=True, timeout=300)
        loads = [w for w in workloads(args.quick)
                 if not args.only or any(o.lower() in w.name.lower() for o in args.only)]
        total = len(loads) * len(targets) * args.repeat
        done = 0
        for w in loads:
            for t in targets:
                res = Result(t.name, w.name, block=w.block)
                for _ in range(args.repeat):
                    done += 1
                    iops, cpu = run_one(t, w, args.duration)
                    res.runs.append(iops)
                    res.cpu_us_per_io.append(cpu)
                    print(f"[{done}/{total}] {w.name:<22} {t.name:<14} {iops:>10,.0f} IOPS "
                          f"{iops * w.block / 1e6:>8,.0f} MB/s  {cpu:6.1f} µs CPU/IO", flush=True)
                results.append(res)
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(work, ignore_errors=True)
    names = [t.name for t in targets]
    table = render_table(results, names)
    doc = {"machine": machine(), "when": stamp, "repeat": args.repeat, "duration": args.duration,
           "results": [asdict(r) | {"median": r.median, "mb_s": r.mb_s} for r in results]}
    (outdir / "results.json").write_text(json.dumps(doc, indent=2))
    md = f"# difs benchmarks {stamp}\n\nMachine: {doc['machine']}\n\n{table}\n"
    (outdir / "results.md").write_text(md)
    has_chart = chart(results, names, outdir / "chart.png")
    print("\n" + table)
    print(f"\nresults: {outdir}/results.md, results.json" + (", chart.png" if has_chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
