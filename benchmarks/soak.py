#!/usr/bin/env python3
"""The soak: a difs cluster of real processes under mixed I/O and a fault every 30 seconds.

    .venv/bin/python benchmarks/soak.py                      # 64 applications, 10 minutes
    .venv/bin/python benchmarks/soak.py --apps 8 --duration 90 --fault-every 15

One manager (SQLite), two controllers and two hosts, as ``difs`` processes on loopback;
``--apps`` applications over the two hosts, each an NBD client writing self-describing
sectors, reading them back and flushing. Every ``--fault-every`` seconds a fault: SIGKILL
of a controller, a host or the manager, a path cut, a burst of bit flips on a digest path,
a node restarted while the manager is down. The soak restarts what it killed, as a
supervisor would. At the end every application's volume is read back and checked.

Results go to benchmarks/results/soak-<timestamp>/ (results.json, results.md, logs/).
Exit status 0 only when no flushed data was lost and nothing was corrupt (and every
application could be read back). See benchmarks/README.md, "The soak".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from difsbench.procs import ROOT, loadavg, machine  # noqa: E402
from difssoak import report  # noqa: E402
from difsbench.procs import cpu_seconds  # noqa: E402
from difssoak.cluster import Cluster, SoakError, memory  # noqa: E402
from difssoak.driver import AppDriver, open_export, verify  # noqa: E402
from difssoak.faultplan import CONTROLS, KINDS, FaultRunner  # noqa: E402

from difs.nbd.client import NbdClientError  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", type=int, default=64, help="applications (over the hosts)")
    ap.add_argument("--duration", type=float, default=600, help="seconds of I/O")
    ap.add_argument("--fault-every", type=float, default=30, help="seconds between faults")
    ap.add_argument("--fault-order", choices=("rotate", "random"), default="rotate",
                    help="faults in a fixed rotation, or drawn at random (with --seed)")
    ap.add_argument("--faults", default=",".join(KINDS),
                    help="the fault kinds to use, in rotation order (default: all); "
                         f"also {', '.join(CONTROLS)}: flips on the plain channel, which the "
                         "soak must report as corruption (a check of the soak itself)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--controllers", type=int, default=2)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--app-size", type=int, default=16, metavar="MIB")
    ap.add_argument("--rate", type=float, default=4.0, metavar="IOPS",
                    help="I/Os per second per application (throttle: the machine is shared)")
    ap.add_argument("--policies", default="bronze,silver,integrity",
                    help="policies handed out in turn (integrity: digests + T10 PI)")
    ap.add_argument("--restart-delay", type=float, default=2.0,
                    help="seconds before the supervisor restarts a dead process")
    ap.add_argument("--manager-down", type=float, default=10.0,
                    help="seconds the manager stays down in node-restart-while-manager-down")
    ap.add_argument("--cut-seconds", type=float, default=5.0, help="length of a path cut")
    ap.add_argument("--burst-seconds", type=float, default=5.0, help="length of a flip burst")
    ap.add_argument("--flip-rate", type=float, default=0.1,
                    help="share of data PDUs flipped during a burst (headers: a quarter)")
    ap.add_argument("--tail", type=float, default=60.0,
                    help="seconds the I/O may go on after --duration for the last fault's "
                         "applications and the manager to recover")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="the nodes' advertisement / sync interval (seconds)")
    ap.add_argument("--log-level", default="info", help="of the difs processes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--keep-volumes", action="store_true",
                    help="keep the volumes and the manager's database after the run")
    args = ap.parse_args()
    args.faults = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = set(args.faults) - set(KINDS) - set(CONTROLS)
    if unknown or not args.faults:
        ap.error(f"--faults: unknown {sorted(unknown)}; the kinds are {', '.join(KINDS)}")
    return args


def main() -> int:
    args = parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = args.out / f"soak-{stamp}"
    work = outdir / "logs"
    work.mkdir(parents=True)
    say = lambda text: print(f"soak: {text}", flush=True)  # noqa: E731
    desc = machine()
    say(f"difs {desc['difs_commit']}, load {' '.join(desc['loadavg_at_start'])}; results in "
        f"{outdir}")
    cluster = Cluster(work, controllers=args.controllers, hosts=args.hosts,
                      interval=args.interval, restart_delay=args.restart_delay,
                      log_level=args.log_level)
    try:
        doc = soak(args, cluster, desc, say)
    except SoakError as exc:
        say(f"could not run: {exc}")
        return 2
    finally:
        cluster.close()
        if not args.keep_volumes:
            for proc in cluster.procs.values():
                shutil.rmtree(work / proc.name, ignore_errors=True)
    doc["started"] = stamp
    (outdir / "results.json").write_text(json.dumps(doc, indent=2, default=str))
    md = report.render(doc)
    (outdir / "results.md").write_text(md)
    print(md)
    return 0 if doc["outcome"]["pass"] else 1


def soak(args: argparse.Namespace, cluster: Cluster, desc: dict, say) -> dict:
    bring_up(args, cluster, say)
    stop = threading.Event()
    drivers = {a.name: AppDriver(a.name, a.nbd_port, args.app_size << 20, rate=args.rate,
                                 seed=args.seed * 1000 + i, stop=stop)
               for i, a in enumerate(cluster.apps)}
    rss_start, cpu_start = memory_now(cluster), cpu_seconds(os.getpid())
    cluster.reset_peaks()
    runner, seconds, end = run_io(args, cluster, drivers, stop, say)
    say("I/O stopped; waiting for every unit to be up and every node alive")
    settle_s = settle(cluster, timeout=120)
    rss_end, cpu_soak = memory_now(cluster), cpu_seconds(os.getpid()) - cpu_start
    say("reading back every application's volume")
    verifications, verify_s = read_back(cluster, drivers)
    runner.attribute(end)
    doc = build_doc(args, cluster, desc, drivers, runner, verifications, seconds=seconds,
                    settle_s=settle_s, rss=(rss_start, rss_end), cpu_soak=cpu_soak)
    doc["verification"]["seconds"] = verify_s
    return doc


def bring_up(args: argparse.Namespace, cluster: Cluster, say) -> None:
    say(f"starting the manager, {args.controllers} controllers, {args.hosts} hosts")
    cluster.start()
    say(f"creating {args.apps} applications of {args.app_size} MiB")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    cluster.create_apps(args.apps, args.app_size << 20, policies)
    for app in cluster.apps:
        cluster.wait_for(f"{app.name}'s export on {app.host}", lambda a=app: served(a),
                         timeout=120)


def run_io(args: argparse.Namespace, cluster: Cluster, drivers: dict[str, AppDriver],
           stop: threading.Event, say) -> tuple[FaultRunner, float, float]:
    """The applications' I/O with the faults; returns the runner, the seconds of I/O and
    when it stopped."""
    say(f"I/O for {args.duration:.0f} s, a fault every {args.fault_every:.0f} s")
    t0 = time.monotonic()
    for d in drivers.values():
        d.start()
    runner = FaultRunner(cluster, drivers, seed=args.seed, order=args.fault_order,
                         kinds=args.faults, cut_seconds=args.cut_seconds,
                         burst_seconds=args.burst_seconds, flip_rate=args.flip_rate,
                         manager_down=args.manager_down)
    runner.run(t0, args.duration, args.fault_every, stop, say, tail=args.tail)
    stop.wait(max(0.0, t0 + args.duration - time.monotonic()))
    stop.set()
    end = time.monotonic()
    stop_drivers(drivers)
    return runner, end - t0, end


def read_back(cluster: Cluster, drivers: dict[str, AppDriver]) -> tuple[list, float]:
    """Every application's volume read back and judged (four at a time); and how long."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda a: verify(a.name, a.nbd_port, drivers[a.name].model,
                                             deadline=t0 + 120), cluster.apps))
    return out, time.monotonic() - t0


def memory_now(cluster: Cluster) -> dict[str, int | None]:
    return {**cluster.rss(), "soak": memory(os.getpid())[0]}


def served(app) -> bool:
    try:
        open_export(app.nbd_port, app.name, timeout=5).close()
    except (NbdClientError, OSError, EOFError):
        return False
    return True


def stop_drivers(drivers: dict[str, AppDriver], timeout: float = 30) -> None:
    """Wait for the applications to finish their last I/O; unblock the ones that hang."""
    deadline = time.monotonic() + timeout
    for d in drivers.values():
        d.join(max(0.0, deadline - time.monotonic()))
    for d in drivers.values():
        if d.is_alive() and d.client is not None:
            d.client.sock.close()
            d.join(5)


def settle(cluster: Cluster, timeout: float) -> float | None:
    t0 = time.monotonic()
    try:
        cluster.wait_for("the cluster to settle", lambda: cluster.all_running() and all(
            n["state"] == "alive" for n in cluster.nodes()), timeout=timeout, fail_on_exit=False)
    except SoakError:
        return None
    return time.monotonic() - t0


def build_doc(args, cluster: Cluster, desc: dict, drivers: dict[str, AppDriver], runner,
              verifications, *, seconds: float, settle_s: float | None, rss, cpu_soak) -> dict:
    stats = [d.stats for d in drivers.values()]
    ops = sum((s.ops for s in stats), Counter())
    errors = sum((s.errors for s in stats), Counter())
    online = sum((s.online for s in stats), Counter())
    final = sum((Counter(v.verdicts) for v in verifications), Counter())
    unverified = [v.app for v in verifications if v.error is not None]
    rss_start, rss_end = rss
    processes = [{"name": p.name, "role": p.role, "restarts": p.restarts,
                  "unexpected_exits": len(p.unexpected), "rss_start": rss_start.get(p.name),
                  "rss_end": rss_end.get(p.name), "rss_peak": p.rss_peak or None,
                  "cpu_s": round(p.cpu_s, 1)} for p in cluster.procs.values()]
    processes.append({"name": "soak (drivers, proxies, relay)", "role": "soak", "restarts": 0,
                      "unexpected_exits": 0, "rss_start": rss_start["soak"],
                      "rss_end": rss_end["soak"],
                      "rss_peak": memory(os.getpid())[1],
                      "cpu_s": round(cpu_soak, 1)})
    return {
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "app_size_mib": args.app_size, "rate_per_app": args.rate},
        "machine": desc | {"loadavg_at_end": loadavg()},
        "cluster": {
            "placement": dict(Counter(a.controller for a in cluster.apps)),
            "policies": dict(Counter(a.policy for a in cluster.apps)),
            "proxied_host": cluster.proxied_host,
            "apps": [vars(a) for a in cluster.apps],
        },
        "io": {"seconds": seconds, "ops": dict(ops), "ios_per_s": sum(ops.values()) / seconds,
               "mb_per_s": sum(s.bytes for s in stats) / seconds / 1e6,
               "flushed_writes": sum(s.flushed_writes for s in stats),
               "in_doubt_writes": sum(s.in_doubt_writes for s in stats)},
        "errors": dict(errors),
        "apps_with_errors": sum(1 for s in stats if s.errors),
        "errors_by_app": {n: dict(d.stats.errors) for n, d in drivers.items() if d.stats.errors},
        "online": dict(online),
        "online_examples": [f"{n} {e}" for n, d in drivers.items() for e in d.stats.examples][:10],
        "verification": {
            "sectors": sum(v.sectors for v in verifications), "verdicts": dict(final),
            "examples": [f"{v.app} {e}" for v in verifications for e in v.examples][:10],
            "errors": {v.app: v.error for v in verifications if v.error},
        },
        "faults": [r.summary() for r in runner.records],
        "processes": processes,
        "unexpected_exits": {p.name: p.unexpected for p in cluster.procs.values() if p.unexpected},
        "settle_s": settle_s,
        "outcome": report.outcome(online, final, unverified),
    }


if __name__ == "__main__":
    sys.exit(main())
