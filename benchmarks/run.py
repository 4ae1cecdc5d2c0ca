#!/usr/bin/env python3
"""Side-by-side benchmarks: difs against tgt, same machine, same clients, one run.

    .venv/bin/python benchmarks/run.py              # full run, ~12 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick      # one short run per figure, ~4 minutes
    .venv/bin/python benchmarks/run.py --sections targets --only randread

Sections (all by default):

* ``targets`` — tgt, the difs controller, and the difs controller with a volume that
  requires header digests, each serving an identical copy of one random image
  (page cache warmed the same way), driven by iscsi-perf, qemu-img bench and fio;
* ``host`` — the same shapes through a difs host's NBD side (plain channel, and the
  CRC32C header+data digest channel) against the same client straight to the
  controller over iSCSI;
* ``apps`` — the per-application claim: two applications (silver, bronze) at once
  on one host, per-application policies vs the same services applied host-wide;
* ``profile`` — py-spy profiles of the controller and host under load (full run only,
  or ``--profile``).

Results go to benchmarks/results/<timestamp>/ (results.json, results.md, chart.png,
profiles/, logs/), with the machine description; benchmarks/results/latest points at
the newest. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from difsbench import perapp, profiling, report  # noqa: E402
from difsbench.procs import (  # noqa: E402
    ROOT,
    BenchError,
    loadavg,
    machine,
    random_image,
    wait_idle,
    warm,
)
from difsbench.suite import Figure, Progress, count_runs, run_suite  # noqa: E402
from difsbench.targets import (  # noqa: E402
    DifsController,
    DifsHost,
    Endpoint,
    QemuNbd,
    Stack,
    Tgt,
)
from difsbench.workloads import (  # noqa: E402
    FioNbd,
    IscsiPerf,
    QemuImgBench,
    host_workloads,
    target_workloads,
)

SECTIONS = ("targets", "host", "apps", "profile")

#: difs controller variants compared with tgt: (column name, extra `difs controller` args).
DIFS_VARIANTS: list[tuple[str, list[str]]] = [
    ("difs", []),
    ("difs+hdigest", ["--require-digest", "bench=header"]),
]

# >>> PI slot (issue 7: "PI-formatted volume"; target: PI costs <= 20% at 1 MiB) >>>
# The `--volume` suffix that formats volume `bench` with T10 PI type 1; the runner adds a
# "difs+pi" column (image written through the controller, so every block is checked).
PI_VOLUME: str | None = ":pi1"
# <<< PI slot <<<

TOOLS = ("tgtd", "tgtadm", "iscsi-perf", "qemu-img", "qemu-nbd", "fio")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--quick", action="store_true",
                    help="1 run of 2 s per figure, 256M images, no profiles (~4 min)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    ap.add_argument("--size", default="512M", help="backing image size (M or G)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--only", action="append", default=[],
                    help="only workloads whose label or tool contains this (repeatable)")
    ap.add_argument("--profile", action="store_true", help="profile even with --quick")
    ap.add_argument("--profile-seconds", type=float, default=8.0)
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the load average to fall below 0.5")
    ap.add_argument("--no-chart", action="store_true", help="do not draw (or install matplotlib)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--render", type=Path, metavar="RESULTS_DIR",
                    help="only rebuild results.md (and chart.png) from RESULTS_DIR/results.json")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.duration = 1, 2.0
        if args.size == "512M":
            args.size = "256M"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; use {','.join(SECTIONS)}")
    if args.quick and not args.profile and "profile" in args.sections:
        args.sections.remove("profile")
    return args


def parse_size(text: str) -> int:
    unit = {"M": 20, "G": 30}[text[-1].upper()]
    return int(float(text[:-1]) * (1 << unit))


def selected(workloads, only: list[str]):
    if not only:
        return workloads
    return [w for w in workloads if any(o.lower() in w.describe().lower() for o in only)]


def render_only(outdir: Path, *, no_chart: bool) -> int:
    doc = json.loads((outdir / "results.json").read_text())
    target_figs = [Figure.from_summary(d) for d in doc["targets"]]
    host_figs = [Figure.from_summary(d) for d in doc["host"]]
    cells = [perapp.Cell.from_summary(d) for d in doc["apps"]]
    profiles = [profiling.Profile.from_summary(d) for d in doc["profiles"]]
    checks = report.check_targets(target_figs + host_figs)
    doc["checks"] = checks
    doc["apps_claims"] = report.perapp_claims(cells)
    md = render_markdown(doc, target_figs, host_figs, cells, checks, profiles)
    (outdir / "results.md").write_text(md)
    (outdir / "results.json").write_text(json.dumps(doc, indent=2))
    if not no_chart:
        report.chart(target_figs, host_figs, cells, outdir / "chart.png")
    print(md)
    return 0


def main() -> int:
    args = parse_args()
    if args.render:
        return render_only(args.render, no_chart=args.no_chart)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"benchmarks: missing {', '.join(missing)}: run ./scripts/setup.sh (Debian "
              "packages tgt, libiscsi-bin, qemu-utils, qemu-block-extra, fio)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = args.out / stamp
    work, logs = outdir / "work", outdir / "logs"
    work.mkdir(parents=True)
    logs.mkdir()
    size = parse_size(args.size)
    wait_idle(args.wait_idle)
    desc = machine()
    print(f"benchmarks: {desc['cpu']} x{desc['cores']}, load {' '.join(desc['loadavg_at_start'])}, "
          f"difs {desc['difs_commit']}; results in {outdir}", flush=True)
    print(f"benchmarks: writing a {args.size} random backing image", flush=True)
    image = work / "image.raw"
    random_image(image, size)

    t_loads = selected(target_workloads(), args.only)
    h_loads = selected(host_workloads(), args.only)
    target_figs, host_figs, cells, profiles = [], [], [], []
    stack = Stack()
    started = time.monotonic()
    try:
        # -- start everything first, so the progress total is known --------------------
        tgt_end: list[Endpoint] = []
        controller = None
        if "targets" in args.sections:
            tgt_copy = work / "tgt.raw"
            shutil.copyfile(image, tgt_copy)
            tgt = stack.add(Tgt("tgt", tgt_copy, logs))
            warm(tgt_copy)
            tgt_end.append(tgt.endpoint())
        variants = [(name, extra, "") for name, extra in DIFS_VARIANTS]
        if PI_VOLUME is not None:
            variants.append(("difs+pi", [], PI_VOLUME))
        for name, extra, flags in variants:
            if name != "difs" and "targets" not in args.sections:
                continue
            if name == "difs" and not ({"targets", "host", "profile"} & set(args.sections)):
                continue
            c = stack.add(DifsController(name, work, {"bench": image}, logs, extra,
                                         volume_flags=flags))
            warm(c.files["bench"])
            if name == "difs":
                controller = c
            if "targets" in args.sections:
                tgt_end.append(c.endpoint())
        for e in tgt_end:  # fio reaches iSCSI targets through a qemu-nbd bridge
            e.nbd_url = stack.add(QemuNbd(f"qemu-nbd-{e.name}", e.url, logs)).url
        host_end: list[Endpoint] = []
        host = None
        if {"host", "profile"} & set(args.sections):
            host = stack.add(DifsHost("host", [("plain", controller.urls["bench"], "bronze"),
                                               ("integrity", controller.urls["bench"], "silver")],
                                      "digests,plain", logs, unix=True))
            direct = controller.endpoint(name="direct iSCSI")
            direct.nbd_url = stack.add(QemuNbd("qemu-nbd-direct", direct.url, logs)).url
            host_end = [direct,
                        Endpoint("host plain", host.urls["plain"], [controller.pid, host.pid],
                                 note="bronze app, plain channel"),
                        Endpoint("host digests", host.urls["integrity"],
                                 [controller.pid, host.pid],
                                 note="silver app, CRC32C header+data digest channel"),
                        Endpoint("host plain unix", host.unix_url("plain"),
                                 [controller.pid, host.pid],
                                 note="bronze app, plain channel, NBD over a Unix socket")]
        total = 0
        if "targets" in args.sections:
            total += count_runs(t_loads, tgt_end, args.repeat)
        if "host" in args.sections:
            total += count_runs(h_loads, host_end, args.repeat)
        if "apps" in args.sections:
            total += perapp.count_perapp(args.repeat)
        progress = Progress(total)
        print(f"benchmarks: {total} runs of ~{args.duration:g} s (started in "
              f"{time.monotonic() - started:.0f} s)", flush=True)

        # -- measure ------------------------------------------------------------------
        if "targets" in args.sections:
            progress.note("targets: tgt vs difs controller, same image, same clients")
            target_figs = run_suite("targets", t_loads, tgt_end, repeat=args.repeat,
                                    duration=args.duration, progress=progress)
        if "host" in args.sections:
            progress.note("host: NBD -> difs host -> difs controller vs direct iSCSI")
            host_figs = run_suite("host", h_loads, host_end, repeat=args.repeat,
                                  duration=args.duration, progress=progress)
        if "apps" in args.sections:
            progress.note("apps: A (silver) and B (bronze) on one host, per-application vs "
                          "host-wide services")
            cells = perapp.run_perapp(work, image, logs, stack, repeat=args.repeat,
                                      duration=args.duration, progress=progress)
        if "profile" in args.sections:
            progress.note(f"profile: py-spy on the controller and host, "
                          f"{args.profile_seconds:g} s per load")
            profiles = run_profiles(controller, host, outdir / "profiles", args.profile_seconds)
    except BenchError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmarks: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)

    desc["loadavg_at_end"] = loadavg()
    checks = report.check_targets(target_figs + host_figs)
    doc = {
        "machine": desc, "when": stamp, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in vars(args).items()},
        "elapsed_s": round(time.monotonic() - started, 1),
        "targets": [f.summary() for f in target_figs],
        "host": [f.summary() for f in host_figs],
        "apps": [c.summary() for c in cells],
        "apps_claims": report.perapp_claims(cells),
        "crc32c_cpu_s_per_gib": perapp.crc32c_cost(),
        "checks": checks,
        "profiles": [p.summary() for p in profiles],
        "pi_slot": "PI-formatted volumes not measured yet" if PI_VOLUME is None else "measured",
    }
    (outdir / "results.json").write_text(json.dumps(doc, indent=2))
    md = render_markdown(doc, target_figs, host_figs, cells, checks, profiles)
    (outdir / "results.md").write_text(md)
    has_chart = False if args.no_chart else report.chart(target_figs, host_figs, cells,
                                                         outdir / "chart.png")
    latest = args.out / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(stamp)
    print("\n" + md)
    print(f"results: {outdir}/results.md, results.json" + (", chart.png" if has_chart else "")
          + f" ({doc['elapsed_s']:.0f} s)")
    return 0


def run_profiles(controller: DifsController, host: DifsHost, out: Path,
                 seconds: float) -> list[profiling.Profile]:
    pyspy = profiling.ensure_pyspy()
    if pyspy is None:
        return []
    c_url = controller.urls["bench"]
    loads = [
        ("controller, 4K randread QD32 (iscsi-perf)", {"controller": controller.pid},
         lambda: IscsiPerf(depth=32, blocks=8, random=True).run(c_url, seconds + 1, endpoint="p")),
        ("controller, 1M seqread QD16 (iscsi-perf)", {"controller": controller.pid},
         lambda: IscsiPerf(depth=16, blocks=2048, random=False).run(c_url, seconds + 1,
                                                                    endpoint="p")),
        ("host path, 4K randread QD32 (fio nbd, plain channel)",
         {"host": host.pid, "controller": controller.pid},
         lambda: FioNbd(depth=32, block=4096, write=False).run(host.urls["plain"], seconds + 1,
                                                               endpoint="p")),
        ("host path, 4K write QD32 (qemu-img bench, plain channel)",
         {"host": host.pid, "controller": controller.pid},
         lambda: [QemuImgBench(depth=32, size=4096, write=True).run(
             host.urls["plain"], seconds / 3, endpoint="p") for _ in range(4)]),
        ("host path, 1M seqread QD16 (qemu-img bench, digest channel)",
         {"host": host.pid, "controller": controller.pid},
         lambda: [QemuImgBench(depth=16, size=1 << 20, write=False).run(
             host.urls["integrity"], seconds / 3, endpoint="p") for _ in range(4)]),
    ]
    profiles = []
    for label, pids, load in loads:
        print(f"--- profiling: {label}", flush=True)
        try:
            got = profiling.record(pyspy, pids, seconds, out, label, load)
        except BenchError as exc:
            print(f"benchmarks: profile {label!r} failed: {exc}", file=sys.stderr, flush=True)
            continue
        for p in got:
            top = ", ".join(f"{f} {v:.0f}%" for f, v in p.self_top[:3])
            print(f"    {p.process}: {p.samples} samples; self: {top}", flush=True)
        profiles.extend(got)
    return profiles


def render_markdown(doc, target_figs, host_figs, cells, checks, profiles) -> str:
    m = doc["machine"]
    parts = [
        f"# difs benchmarks {doc['when']}",
        "",
        f"Machine: {m['cpu']} ×{m['cores']}, {m['memory_gib']} GiB, {m['os']}, kernel "
        f"{m['kernel']}, Python {m['python']}; tgt {m['tgt']}, libiscsi {m['libiscsi']}, "
        f"qemu-img {m['qemu_img']}, fio {m['fio']}; difs {m['difs_commit']}; load average "
        f"{' '.join(m['loadavg_at_start'])} at start, {' '.join(m['loadavg_at_end'])} at end.",
        f"Each figure: median of {doc['args']['repeat']} runs of ~{doc['args']['duration']:g} s "
        f"(min–max in brackets); CPU µs/IO = CPU time of the endpoint's own processes per I/O.",
        "",
        "## Targets of issue 7",
        "",
        report.targets_table(checks),
    ]
    if target_figs:
        endpoints = list(dict.fromkeys(f.endpoint for f in target_figs))
        ratios = [(f"{e}/tgt", e, "tgt") for e in endpoints if e != "tgt"]
        parts += ["", "## difs controller vs tgt (iSCSI, same image, same clients)", "",
                  report.comparison_table(target_figs, endpoints, ratios)]
    if host_figs:
        endpoints = list(dict.fromkeys(f.endpoint for f in host_figs))
        parts += ["", "## The host path: NBD -> difs host -> difs controller vs direct iSCSI", "",
                  "`direct iSCSI`: the client straight to the controller (fio through a "
                  "qemu-nbd bridge); `host plain`: a bronze application through the difs host, "
                  "plain channel; `host digests`: a silver application, CRC32C header+data "
                  "digest channel; `host plain unix`: as `host plain`, NBD over the host's Unix "
                  "socket (how a local VM would attach).", "",
                  report.comparison_table(host_figs, endpoints, [
                      ("host plain/direct", "host plain", "direct iSCSI"),
                      ("host plain unix/direct", "host plain unix", "direct iSCSI"),
                      ("host digests/direct", "host digests", "direct iSCSI"),
                      ("digests/plain", "host digests", "host plain")], fields=("iops", "cpu"))]
    if cells:
        parts += ["", "## Two applications on one host: per-application vs host-wide services", "",
                  "app-a is silver (digests), app-b is bronze (nothing). per-application: host "
                  "channels `digests,plain`; host-wide: host channels `digests` only.", "",
                  report.perapp_table(cells), "",
                  f"For scale: CRC32C of one GiB costs {doc['crc32c_cpu_s_per_gib']} CPU s here "
                  "(once on each side of a digest channel).", "",
                  "host-wide relative to per-application (same shape, same repetitions):", "",
                  report.claims_table(doc["apps_claims"])]
    if profiles:
        parts += ["", "## Profiles (py-spy, self = innermost frame, total = anywhere on the stack)",
                  ""]
        for p in profiles:
            parts += [p.markdown(), ""]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
