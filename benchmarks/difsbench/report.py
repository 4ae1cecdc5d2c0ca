"""Tables (Markdown), the targets of issue 7, and the PNG chart."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from .perapp import APPS, Cell
from .suite import Figure


def _num(x: float, digits: int = 0) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _index(figures: list[Figure]) -> tuple[dict[tuple[str, str], Figure], list[tuple[str, str, str]]]:
    by = {(f.key, f.endpoint): f for f in figures}
    rows = list(dict.fromkeys((f.key, f.label, f.tool) for f in figures))
    return by, rows


def ratio(figures: list[Figure], key: str, num: str, den: str) -> float:
    by = {(f.key, f.endpoint): f for f in figures}
    a, b = by.get((key, num)), by.get((key, den))
    if a is None or b is None or not a.ok or not b.ok:
        return float("nan")
    return a.median / b.median


_FIELDS = {
    "iops": ("IOPS (min–max)", lambda f: f"{f.median:,.0f} ({min(f.iops):,.0f}–{max(f.iops):,.0f})"),
    "mb": ("MB/s", lambda f: _num(f.mb_s)),
    "lat": ("lat µs", lambda f: _num(f.latency)),
    "cpu": ("CPU µs/IO", lambda f: _num(f.cpu, 1)),
}


def comparison_table(figures: list[Figure], endpoints: list[str],
                     ratios: list[tuple[str, str, str]],
                     fields: tuple[str, ...] = ("iops", "mb", "lat", "cpu")) -> str:
    """One row per workload: per endpoint IOPS (min–max), MB/s, latency, CPU/IO (``fields``);
    then ratios given as (column title, numerator endpoint, denominator endpoint)."""
    by, rows = _index(figures)
    head = ["workload", "tool"]
    for e in endpoints:
        head += [f"{e} {_FIELDS[k][0]}" for k in fields]
    head += [title for title, _, _ in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for key, label, tool in rows:
        cells = [label, tool]
        for e in endpoints:
            f = by.get((key, e))
            if f is None:
                cells += ["n/a"] * len(fields)
            elif not f.ok:
                cells += ["failed"] + ["—"] * (len(fields) - 1)
            else:
                cells += [_FIELDS[k][1](f) for k in fields]
        for _, num, den in ratios:
            r = ratio(figures, key, num, den)
            cells.append("—" if math.isnan(r) else f"{r:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def perapp_table(cells: list[Cell]) -> str:
    a, b = list(APPS)
    head = ["shape", "mode", f"{a} ({APPS[a]}) MB/s together", f"{b} ({APPS[b]}) MB/s together",
            "host+controller CPU s/GiB together", f"{a} alone MB/s", f"{b} alone MB/s",
            f"{a} CPU s/GiB alone", f"{b} CPU s/GiB alone"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for c in cells:
        s = c.summary()
        lines.append("| " + " | ".join([
            c.shape, c.mode, _num(s["together_mb_s"].get(a)), _num(s["together_mb_s"].get(b)),
            _num(s["together_cpu_s_per_gib"], 2), _num(s["alone_mb_s"].get(a)),
            _num(s["alone_mb_s"].get(b)), _num(s["alone_cpu_s_per_gib"].get(a), 2),
            _num(s["alone_cpu_s_per_gib"].get(b), 2)]) + " |")
    return "\n".join(lines)


def perapp_claims(cells: list[Cell]) -> list[dict[str, object]]:
    """For each shape: what B (bronze) keeps under per-application policies vs host-wide."""
    out = []
    a, b = list(APPS)
    shapes = list(dict.fromkeys(c.shape for c in cells))
    for shape in shapes:
        per = next((c.summary() for c in cells if c.shape == shape and c.mode == "per-application"), None)
        wide = next((c.summary() for c in cells if c.shape == shape and c.mode == "host-wide"), None)
        if not per or not wide:
            continue

        def rel(x, y):
            return round(x / y, 3) if x and y else None

        out.append({
            "shape": shape,
            f"{b}_throughput_host_wide_vs_per_app": rel(wide["together_mb_s"].get(b),
                                                         per["together_mb_s"].get(b)),
            f"{a}_throughput_host_wide_vs_per_app": rel(wide["together_mb_s"].get(a),
                                                         per["together_mb_s"].get(a)),
            f"{b}_cpu_per_gib_host_wide_vs_per_app": rel(wide["alone_cpu_s_per_gib"].get(b),
                                                          per["alone_cpu_s_per_gib"].get(b)),
            "total_cpu_per_gib_host_wide_vs_per_app": rel(wide["together_cpu_s_per_gib"],
                                                          per["together_cpu_s_per_gib"]),
        })
    return out


def claims_table(claims: list[dict[str, object]]) -> str:
    """host-wide / per-application, per shape: below 1.00 means host-wide loses."""
    a, b = list(APPS)
    cols = [(f"{b} ({APPS[b]}) throughput", f"{b}_throughput_host_wide_vs_per_app"),
            (f"{a} ({APPS[a]}) throughput", f"{a}_throughput_host_wide_vs_per_app"),
            (f"{b} CPU per GiB (alone)", f"{b}_cpu_per_gib_host_wide_vs_per_app"),
            ("host+controller CPU per GiB (together)", "total_cpu_per_gib_host_wide_vs_per_app")]
    lines = ["| shape | " + " | ".join(t for t, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for c in claims:
        cells = [str(c["shape"])]
        for _, k in cols:
            v = c.get(k)
            cells.append("—" if v is None else f"{v:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_targets(figures: list[Figure]) -> list[dict[str, object]]:
    """Issue 7's targets, each with the measured value and whether it is met."""
    checks = []

    def add(name: str, value: float, goal: float, *, higher: bool, how: str) -> None:
        met = None if math.isnan(value) else (value >= goal if higher else value <= goal)
        checks.append({"target": name, "value": None if math.isnan(value) else round(value, 3),
                       "goal": goal, "met": met, "how": how})

    add("4K random read IOPS vs tgt (>= 1.0x)",
        ratio(figures, "4K randread QD32/iscsi-perf", "difs", "tgt"), 1.0, higher=True,
        how="iscsi-perf -m 32 -b 8 -r, difs controller / tgt")
    add("1M sequential read vs tgt (>= 1.5x)",
        ratio(figures, "1M seqread QD16/iscsi-perf", "difs", "tgt"), 1.5, higher=True,
        how="iscsi-perf -m 16 -b 2048, difs controller / tgt")
    for key, what in (("1M seqread QD16/qemu-img", "read"), ("1M seqwrite QD16/qemu-img", "write")):
        r = ratio(figures, key, "host digests", "host plain")
        add(f"header+data digests cost at 1M {what} (<= 10%)", 1 - r, 0.10, higher=False,
            how=f"qemu-img bench 1M {what} QD16 via difs host: digest channel vs plain channel")
    r = ratio(figures, "1M seqread QD16/iscsi-perf", "difs+hdigest", "difs")
    add("header digest (required by the volume) cost at 1M read (<= 10%)", 1 - r, 0.10,
        higher=False, how="iscsi-perf 1M seqread QD16: difs+hdigest vs difs")
    for key, what in (("1M seqread QD16/iscsi-perf", "read, iscsi-perf"),
                      ("1M seqread QD16/qemu-img", "read, qemu-img bench"),
                      ("1M seqwrite QD16/qemu-img", "write, qemu-img bench")):
        r = ratio(figures, key, "difs+pi", "difs")
        add(f"PI costs at 1M {what} (<= 20%)", 1 - r, 0.20, higher=False,
            how="difs+pi (pi1 volume; protect-0 client: the controller generates PI on write, "
                "checks and strips it on read) vs difs")
    for key, what in (("4K seqread QD32/qemu-img", "4K read QD32"),
                      ("4K seqwrite QD32/qemu-img", "4K write QD32"),
                      ("4K randread QD32/fio", "4K randread QD32 (fio; direct = qemu-nbd bridge)")):
        add(f"host path vs direct iSCSI, {what} (>= 0.70x)",
            ratio(figures, key, "host plain", "direct iSCSI"), 0.70, higher=True,
            how="NBD/TCP -> difs host -> difs controller vs the same client straight to the "
                "controller")
        add(f"host path (NBD over Unix socket) vs direct iSCSI, {what} (>= 0.70x)",
            ratio(figures, key, "host plain unix", "direct iSCSI"), 0.70, higher=True,
            how="as above, the application attached over the host's Unix socket")
    return checks


def targets_table(checks: list[dict[str, object]]) -> str:
    lines = ["| target | measured | met? | how |", "|---|---:|---|---|"]
    for c in checks:
        v = c["value"]
        shown = "—" if v is None else (f"{v * 100:.1f}%" if "cost" in c["target"] else f"{v:.2f}x")
        met = {True: "yes", False: "**no**", None: "—"}[c["met"]]
        lines.append(f"| {c['target']} | {shown} | {met} | {c['how']} |")
    return "\n".join(lines)


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    print(f"benchmarks: matplotlib is not installed; installing it for the chart "
          f"({sys.executable} -m pip install matplotlib; --no-chart skips this)", flush=True)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
                         capture_output=True, text=True)
    if out.returncode:
        print(f"benchmarks: could not install matplotlib, no chart:\n{out.stderr[-800:]}",
              flush=True)
        return False
    import importlib
    importlib.invalidate_caches()
    return True


def chart(target_figs: list[Figure], host_figs: list[Figure], cells: list[Cell],
          path: Path) -> bool:
    if not ensure_matplotlib():
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (target_figs, host_figs, cells) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.5), squeeze=False)
    axes = list(axes[0])
    if target_figs:
        ax = axes.pop(0)
        _ratio_bars(ax, target_figs, [e for e in dict.fromkeys(f.endpoint for f in target_figs)
                                      if e != "tgt"], "tgt")
        ax.set_title("difs controller vs tgt (IOPS ratio)")
    if host_figs:
        ax = axes.pop(0)
        _ratio_bars(ax, host_figs, ["host plain", "host plain unix", "host digests"], "direct iSCSI")
        ax.axhline(0.7, color="red", linewidth=0.8, linestyle="--")
        ax.set_title("through the difs host (NBD) vs direct iSCSI")
    if cells:
        ax = axes.pop(0)
        a, b = list(APPS)
        labels = [f"{c.shape}\n{c.mode}" for c in cells]
        va = [c.summary()["together_mb_s"].get(a) or 0 for c in cells]
        vb = [c.summary()["together_mb_s"].get(b) or 0 for c in cells]
        xs = range(len(cells))
        ax.bar([x - 0.2 for x in xs], va, 0.4, label=f"{a} ({APPS[a]})")
        ax.bar([x + 0.2 for x in xs], vb, 0.4, label=f"{b} ({APPS[b]})")
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_ylabel("MB/s, both running at once")
        ax.set_title("two applications on one host")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _ratio_bars(ax, figures: list[Figure], numerators: list[str], base: str) -> None:
    by, rows = _index(figures)
    width = 0.8 / max(1, len(numerators))
    for i, e in enumerate(numerators):
        vals = []
        for key, _, _ in rows:
            r = ratio(figures, key, e, base)
            vals.append(0 if math.isnan(r) else r)
        ax.bar([x + i * width for x in range(len(rows))], vals, width, label=e)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([x + width * (len(numerators) - 1) / 2 for x in range(len(rows))],
                  [f"{label}\n{tool}" for _, label, tool in rows], rotation=35, ha="right",
                  fontsize=8)
    ax.set_ylabel(f"IOPS relative to {base}")
    ax.legend()
