"""The soak's report: one JSON document, rendered as Markdown (also printed)."""

from __future__ import annotations

from collections import Counter

MIB = 1 << 20


def _mib(x: int | None) -> str:
    return "—" if x is None else f"{x / MIB:,.1f}"


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _table(head: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---"] * right_from + ["---:"] * (len(head) - right_from)
    return ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def outcome(online: Counter, final: Counter, unverified: list[str]) -> dict:
    """The pass/fail figures: flushed data lost and corrupt sectors, online or at the end."""
    lost = online.get("lost-flushed", 0) + final.get("lost-flushed", 0)
    corrupt = online.get("corrupt", 0) + final.get("corrupt", 0)
    reasons = []
    if lost:
        reasons.append(f"{lost} sector(s) of flushed data lost")
    if corrupt:
        reasons.append(f"{corrupt} corrupt sector(s)")
    if unverified:
        reasons.append(f"{len(unverified)} application(s) could not be read back: "
                       + ", ".join(unverified))
    return {"flushed_sectors_lost": lost, "corrupt_sectors": corrupt,
            "unflushed_sectors_lost": online.get("lost-unflushed", 0)
            + final.get("lost-unflushed", 0),
            "apps_unverified": unverified, "pass": not reasons, "reasons": reasons}


def render(doc: dict) -> str:
    cfg, io, out = doc["config"], doc["io"], doc["outcome"]
    lines = [
        f"# difs soak {doc['started']}",
        "",
        f"**{'PASS' if out['pass'] else 'FAIL'}**"
        + ("" if out["pass"] else ": " + "; ".join(out["reasons"])),
        "",
        f"{cfg['apps']} applications ({cfg['app_size_mib']} MiB each; "
        f"{', '.join(f'{k} {v}' for k, v in doc['cluster']['policies'].items())}) on "
        f"{cfg['hosts']} hosts and {cfg['controllers']} controllers "
        f"(volumes placed by the manager: "
        f"{', '.join(f'{k} {v}' for k, v in doc['cluster']['placement'].items())}); "
        f"{doc['cluster']['proxied_host']} reaches the controllers through fault proxies. "
        f"{io['seconds']:.0f} s of I/O, a fault every {cfg['fault_every']:.0f} s "
        f"({cfg['fault_order']}, seed {cfg['seed']}), restarts after {cfg['restart_delay']} s. "
        f"difs {doc['machine']['difs_commit']}, {doc['machine']['cores']} cores, load "
        f"{' '.join(doc['machine']['loadavg_at_start'])} at start.",
        "",
        "## I/O",
        "",
        f"Throttled to {cfg['rate_per_app']:g} I/O/s per application "
        f"({cfg['rate_per_app'] * cfg['apps']:g}/s in all); achieved "
        f"**{io['ios_per_s']:.1f} I/O/s** ({io['mb_per_s']:.2f} MB/s): "
        + ", ".join(f"{k} {v:,}" for k, v in io["ops"].items())
        + f"; {io['flushed_writes']:,} writes made durable by an acknowledged flush, "
        f"{io['in_doubt_writes']:,} acknowledged but left unflushed by a lost connection.",
        "",
        "## Data",
        "",
        *_table(["", "sectors"], [
            ["flushed data lost (must be 0)", out["flushed_sectors_lost"]],
            ["corrupt (must be 0)", out["corrupt_sectors"]],
            ["unflushed writes lost (allowed)", out["unflushed_sectors_lost"]],
            ["read back and checked at the end", doc["verification"]["sectors"]],
        ]),
        "",
        f"While running, reads found: {_counts(doc['online'])}. At the end: "
        f"{_counts(doc['verification']['verdicts'])}; applications not read back: "
        f"{', '.join(out['apps_unverified']) or 'none'}"
        f" ({doc['verification']['seconds']:.0f} s to read back everything).",
    ]
    examples = doc["verification"]["examples"] + doc["online_examples"]
    if examples:
        lines += ["", "Examples: " + "; ".join(examples[:10])]
    lines += ["", "## Errors seen by applications", ""]
    if doc["errors"]:
        lines += _table(["kind", "count"], [[k, f"{v:,}"] for k, v in
                                            sorted(doc["errors"].items(), key=lambda kv: -kv[1])])
        lines += ["", f"{doc['apps_with_errors']} of {cfg['apps']} applications saw at least "
                  "one error."]
    else:
        lines.append("None.")
    lines += ["", "## Faults and recovery", "", *_faults_table(doc["faults"])]
    lines += ["", "## Processes", "", *_process_table(doc["processes"])]
    lines += ["", f"Settling after the run (every unit up, every node alive): "
              f"{_s(doc['settle_s'])} s.", ""]
    return "\n".join(lines)


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.items()) or "nothing but current data"


def _faults_table(faults: list[dict]) -> list[str]:
    rows = []
    for f in faults:
        rec = f["app_recovery_s"]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(f["errors"].items(),
                                                           key=lambda kv: -kv[1])) or "—"
        missing = f["apps_not_recovered"]
        rows.append([
            f"{f['at_s']:.0f}", f["kind"], f["target"], f["affected_apps"],
            f"{_s(rec['min'])} / {_s(rec['median'])} / {_s(rec['max'])}",
            ", ".join(missing) if missing else "—",  # no successful I/O before the next fault
            _s(f["manager_recovery_s"]) if f["manager_recovery_s"] is not None
            else "not before the next fault", f["apps_with_errors"], errors, _detail(f["detail"]),
        ])
    return _table(["at s", "fault", "target", "apps affected",
                   "app recovery s (min / median / max)", "not recovered",
                   "manager: leases renewed s", "apps with errors", "errors (until next fault)",
                   "detail"], rows, right_from=3)


def _detail(detail: dict) -> str:
    parts = []
    for k, v in detail.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} {vv}" for kk, vv in v.items())
        parts.append(f"{k}: {v}")
    return "; ".join(parts) or "—"


def _process_table(procs: list[dict]) -> list[str]:
    rows = [[p["name"], p["restarts"], p["unexpected_exits"], _mib(p["rss_start"]),
             _mib(p["rss_end"]), _mib(p["rss_peak"]), f"{p['cpu_s']:.1f}"] for p in procs]
    return _table(["process", "restarts", "exits not caused by the soak", "RSS start MiB",
                   "RSS end MiB", "RSS peak MiB", "CPU s"], rows)
