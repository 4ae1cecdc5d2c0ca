"""``difs node ...``: register nodes (issuing their tokens), list them, advertise, events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from difs.cli.common import client, console, emit, fail, styled, table
from difs.cli.options import JsonOpt, ManagerOpt, TokenOpt
from difs.nodelink.client import DEFAULT_URL

node_app = typer.Typer(help="Nodes: hosts, controllers and switches, their capabilities and leases.", no_args_is_help=True)


@node_app.command("register")
def register(
    name: str,
    kind: Annotated[str, typer.Option("--kind", help="host, controller or switch.")],
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register a node and print its token (shown once: give it to the node)."""
    with client(manager, token) as c:
        data = c.request("POST", "/nodes", json={"name": name, "kind": kind})
    emit(data, as_json, lambda d: (console.print(f"{kind} {name} registered; its token (shown once):"),
                                   print(d["token"])))


@node_app.command("token")
def rotate(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Issue a new token to a node (the old one stops working)."""
    with client(manager, token) as c:
        data = c.request("POST", f"/nodes/{name}/token")
    emit(data, as_json, lambda d: print(d["token"]))


def _caps(n: dict[str, Any]) -> str:
    s = n.get("services") or {}
    out = []
    i = s.get("integrity") or {}
    if i.get("header_digest"):
        out.append("HD")
    if i.get("data_digest"):
        out.append("DD")
    if i.get("pi_types"):
        out.append("PI" + "/".join(str(t) for t in i["pi_types"]))
    sec = s.get("security") or {}
    out += sec.get("authentication") or []
    if sec.get("tls"):
        out.append("TLS")
    q = s.get("qos") or {}
    if q.get("reservation"):
        out.append("reservation" + (f"<={q['max_iops']}" if q.get("max_iops") else ""))
    if (s.get("isolation") or {}).get("exclusive"):
        out.append("masking")
    return " ".join(out) or "-"


@node_app.command("list")
def list_(manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List nodes with their state, lease and capabilities."""
    with client(manager, token) as c:
        data = c.request("GET", "/nodes")
    emit(data, as_json, lambda d: table("Nodes", ["name", "kind", "state", "lease until", "capabilities", "containers/paths"], [
        [n["name"], n["kind"], styled(n["state"]), (n["lease_expires_at"] or "-")[:19], _caps(n),
         ", ".join(n["containers"]) or ", ".join(f"{p['controller']}#{p['channel']}" for p in n["paths"]) or "-"]
        for n in d]))


@node_app.command("show")
def show(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Show a node's latest advertisement."""
    with client(manager, token) as c:
        data = c.request("GET", f"/nodes/{name}")
    emit(data, True if as_json else False, lambda d: (console.print(f"[bold]{d['kind']} {d['name']}[/] {styled(d['state'])}"),
                                                     console.print_json(json.dumps(d))))


@node_app.command("delete")
def delete(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Forget a node (it must hold no volumes and run no applications)."""
    with client(manager, token) as c:
        c.request("DELETE", f"/nodes/{name}")
    console.print(f"node {name} deleted")


@node_app.command("advertise")
def advertise(
    name: str,
    file: Annotated[Path, typer.Option("--file", help="The advertisement as JSON.")],
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Send an advertisement for a node (with that node's own token) — for scripts and tests."""
    try:
        adv = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read {file}: {exc}")
    with client(manager, token) as c:
        data = c.advertise(name, adv)
    emit(data, as_json, lambda d: console.print(f"{name} is {d['state']} until {d['lease_expires_at']}"))


@node_app.command("events")
def events(
    kind: Annotated[str | None, typer.Option("--kind", help="Kind prefix, e.g. node. or compliance.")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Only about this node/app/volume.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Recent events: registrations, lease expiries, policy and compliance changes."""
    params: dict[str, Any] = {"limit": 1000}
    if kind:
        params["kind"] = kind
    if subject:
        params["subject"] = subject
    with client(manager, token) as c:
        data = c.request("GET", "/events", params=params)[-limit:]
    emit(data, as_json, lambda d: table("Events", ["id", "at", "kind", "message"],
                                        [[e["id"], e["at"][:19], e["kind"], e["message"]] for e in d]))
