"""``difs status``: the whole cluster on one screen — nodes, leases, applications, alarms.

What it shows is read from the manager's API in one pass (health, nodes, applications, recent
events) and reduced by :func:`cluster_status`, a pure function, to one document: the same
document ``--json`` prints, so scripts and the screen never disagree. ``--watch`` redraws it
every few seconds until Ctrl-C.

Alarms are what needs an operator: a node whose lease expired, an application that is not
compliant (with the reasons its compliance gives), a binding its host reports failed, the
manager's database down. The exit code says whether there are any (0: none, 1: some, 2: the
manager did not answer), like ``ceph health`` or a monitoring plugin would.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from difs.cli.common import client, console, emit, styled
from difs.cli.options import JsonOpt, ManagerOpt, TokenOpt
from difs.nodelink.client import DEFAULT_URL

#: how many of the latest events the screen shows
RECENT_EVENTS = 8


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _lease_left(node: dict[str, Any], now: datetime) -> float | None:
    expires = _parse_time(node.get("lease_expires_at"))
    return None if expires is None else round((expires - now).total_seconds(), 1)


def _reasons(app: dict[str, Any]) -> list[str]:
    return [f"{s['service']}: {s['observed']}" for s in app["compliance"].get("services", [])
            if s.get("state") == "non_compliant"]


def cluster_status(*, health: dict[str, Any], nodes: list[dict[str, Any]],
                   apps: list[dict[str, Any]], events: list[dict[str, Any]],
                   now: datetime) -> dict[str, Any]:
    """One document of the cluster's state and its alarms, from what the API returned."""
    node_rows = []
    alarms: list[dict[str, str]] = []
    if not health.get("database_up", True):
        alarms.append({"subject": "manager", "alarm": "database down",
                       "detail": health.get("database_error") or ""})
    for n in sorted(nodes, key=lambda n: (n["kind"], n["name"])):
        left = _lease_left(n, now)
        paths = n.get("paths") or []
        node_rows.append({
            "name": n["name"], "kind": n["kind"], "state": n["state"],
            "lease_left_seconds": left,
            "paths_up": sum(1 for p in paths if p.get("up")), "paths": len(paths),
        })
        if n["state"] == "expired":
            alarms.append({"subject": n["name"], "alarm": "lease expired",
                           "detail": f"{n['kind']} stopped advertising"})
    app_rows = []
    for a in sorted(apps, key=lambda a: a["name"]):
        binding = a.get("binding") or {}
        policy = a.get("policy") or {}
        compliance = a["compliance"]["state"]
        app_rows.append({
            "name": a["name"],
            "policy": policy.get("source") or ("inline" if policy else None),
            "summary": policy.get("summary") or [],
            "host": binding.get("host"),
            "binding": binding.get("state") if binding else None,
            "controllers": sorted({v["controller"] for v in a.get("volumes", [])}),
            "compliance": compliance,
            "reasons": _reasons(a),
        })
        if compliance == "non_compliant":
            alarms.append({"subject": a["name"], "alarm": "not compliant",
                           "detail": "; ".join(_reasons(a))})
        if binding.get("state") == "failed":
            alarms.append({"subject": a["name"], "alarm": "binding failed",
                           "detail": f"on {binding.get('host')}: "
                                     f"{binding.get('state_reason') or 'no reason given'}"})
    return {
        "manager": {"version": health.get("version"), "status": health.get("status"),
                    "database": health.get("database"),
                    "database_up": health.get("database_up", True)},
        "nodes": node_rows,
        "applications": app_rows,
        "alarms": alarms,
        "events": [{"at": e["at"], "kind": e["kind"], "subject": e["subject"],
                    "message": e["message"]} for e in events[-RECENT_EVENTS:]],
        "healthy": not alarms,
    }


def fetch(c) -> dict[str, Any]:
    return cluster_status(
        health=c.request("GET", "/healthz"), nodes=c.request("GET", "/nodes"),
        apps=c.request("GET", "/apps"),
        events=c.request("GET", "/events", params={"limit": RECENT_EVENTS, "latest": "true"}) or [],
        now=datetime.now(timezone.utc))


def _lease(left: float | None, state: str) -> str:
    if left is None:
        return "-"
    return f"{left:.0f}s left" if state == "alive" and left >= 0 else f"expired {-left:.0f}s ago"


def screen(status: dict[str, Any]) -> Group:
    """The rich rendering of :func:`cluster_status`'s document."""
    m = status["manager"]
    head = Text.from_markup(
        f"[bold]difs[/] manager {m['version']}, database {m['database']} "
        + ("[green]up[/]" if m["database_up"] else "[bold red]down[/]")
        + f"   {len(status['nodes'])} nodes, {len(status['applications'])} applications, "
        + (f"[bold red]{len(status['alarms'])} alarms[/]" if status["alarms"]
           else "[green]no alarms[/]"))
    nodes = Table(title="nodes", title_justify="left")
    for col in ("name", "kind", "state", "lease", "paths up"):
        nodes.add_column(col)
    for n in status["nodes"]:
        nodes.add_row(n["name"], n["kind"], styled(n["state"]),
                      _lease(n["lease_left_seconds"], n["state"]),
                      f"{n['paths_up']}/{n['paths']}" if n["kind"] == "host" else "")
    apps = Table(title="applications", title_justify="left")
    for col in ("name", "policy", "host", "binding", "controllers", "compliance"):
        apps.add_column(col)
    for a in status["applications"]:
        apps.add_row(a["name"], a["policy"] or "-", a["host"] or "-", a["binding"] or "-",
                     ", ".join(a["controllers"]) or "-", styled(a["compliance"]))
    parts: list[Any] = [head, nodes, apps]
    if status["alarms"]:
        alarms = Table(title="alarms", title_justify="left", title_style="bold red")
        for col in ("subject", "alarm", "detail"):
            alarms.add_column(col)
        for al in status["alarms"]:
            alarms.add_row(al["subject"], al["alarm"], Text(al["detail"]))
        parts.append(alarms)
    if status["events"]:
        events = Table(title="recent events", title_justify="left")
        for col in ("at", "kind", "message"):
            events.add_column(col)
        for e in status["events"]:
            events.add_row(e["at"][11:19], e["kind"], Text(e["message"]))
        parts.append(events)
    return Group(*parts)


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
        interval: Annotated[float, typer.Option("--interval", min=0.5, help="Seconds between refreshes with --watch.")] = 2.0,
        manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
    ) -> None:
        """The whole cluster at a glance: nodes and leases, applications and their compliance,
        alarms, recent events. Exit code 0: no alarm; 1: alarms; 2: the manager did not answer."""
        with client(manager, token) as c:
            if watch and not as_json:
                try:
                    with Live(screen(fetch(c)), console=console, auto_refresh=False) as live:
                        while True:
                            time.sleep(interval)
                            live.update(screen(fetch(c)), refresh=True)
                except KeyboardInterrupt:
                    raise typer.Exit(0) from None
            data = fetch(c)
        emit(data, as_json, lambda d: console.print(screen(d)))
        if not data["healthy"]:
            raise typer.Exit(1)
