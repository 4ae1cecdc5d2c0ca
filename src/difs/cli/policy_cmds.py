"""``difs policy ...`` and ``difs tier ...``: the policy catalogue.

Services are given as flags (``--data-digest --pi 1 --auth mutual_chap
--reservation-iops 500 ...``), as JSON (``--services '{"qos": {...}}'``) or
from a file (``--file policy.json``, either the services or a whole policy
document); ``--from NAME`` starts from an existing policy or tier.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difs.cli.common import client, console, emit, fail, table
from difs.cli.options import (
    SERVICE_FLAGS,
    JsonOpt,
    ManagerOpt,
    ServiceFlags,
    TokenOpt,
    clean_services,
    with_service_flags,
)
from difs.nodelink.client import DEFAULT_URL, ManagerError

policy_app = typer.Typer(help="Policies: named sets of data-in-flight services.", no_args_is_help=True)
tier_app = typer.Typer(help="Tiers: named policies (gold, silver, bronze and your own).", no_args_is_help=True)


def show_policy(p: dict[str, Any]) -> None:
    console.print(f"[bold]{p['kind']} {p['name']}[/]  version {p['version']}  service class {p['service_class']}"
                  + ("  (built in)" if p.get("builtin") else ""))
    if p.get("description"):
        console.print(f"  {p['description']}")
    console.print("  requires: " + (", ".join(p["summary"]) or "nothing (best effort)"))


def _make_group(group: typer.Typer, kind: str, plural: str) -> None:
    @group.command("list")
    def list_(manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        with client(manager, token) as c:
            data = c.request("GET", f"/{plural}")
        emit(data, as_json, lambda d: table(
            plural.capitalize(), ["name", "version", "class", "requires", "description"],
            [[p["name"] + (" *" if p.get("builtin") else ""), p["version"], p["service_class"],
              ", ".join(p["summary"]) or "-", p["description"]] for p in d]))

    @group.command("show")
    def show(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        with client(manager, token) as c:
            data = c.request("GET", f"/{plural}/{name}")
        emit(data, as_json, show_policy)

    @group.command("create")
    @with_service_flags
    def create(
        name: str,
        description: Annotated[str, typer.Option("--description", "-d")] = "",
        from_: Annotated[str | None, typer.Option("--from", help="Start from this policy or tier.")] = None,
        flags: ServiceFlags = SERVICE_FLAGS,
        manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
    ) -> None:
        with client(manager, token) as c:
            base = None
            if from_ is not None:
                src = _lookup(c, from_)
                base = src["services"]
                description = description or src["description"]
            data = c.request("POST", f"/{plural}", json={"name": name, "description": description, "services": clean_services(flags.build(base))})
        emit(data, as_json, show_policy)

    @group.command("update")
    @with_service_flags
    def update(
        name: str,
        description: Annotated[str | None, typer.Option("--description", "-d")] = None,
        if_version: Annotated[int | None, typer.Option("--if-version", help="Only if still at this version.")] = None,
        flags: ServiceFlags = SERVICE_FLAGS,
        manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
    ) -> None:
        with client(manager, token) as c:
            body: dict[str, Any] = {}
            if flags.given():
                current = c.request("GET", f"/{plural}/{name}")
                body["services"] = clean_services(flags.build(current["services"]))
            if description is not None:
                body["description"] = description
            headers = {"If-Match": f'"{if_version}"'} if if_version is not None else None
            data = c.request("PUT", f"/{plural}/{name}", json=body, headers=headers)
        emit(data, as_json, show_policy)

    @group.command("delete")
    def delete(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
        with client(manager, token) as c:
            c.request("DELETE", f"/{plural}/{name}")
        console.print(f"{kind} {name} deleted")

    list_.__doc__ = f"List {plural}."
    show.__doc__ = f"Show one {kind}."
    create.__doc__ = f"Create a {kind} (flags, --services JSON, --file, or --from another)."
    update.__doc__ = f"Change a {kind}: flags apply on top of its current services (a new version)."
    delete.__doc__ = f"Delete a {kind}."


def _lookup(c: Any, name: str) -> dict[str, Any]:
    for plural in ("tiers", "policies"):
        try:
            return c.request("GET", f"/{plural}/{name}")
        except ManagerError as exc:
            if exc.status != 404:
                raise
    fail(f"no policy or tier named {name!r}", "list them with `difs policy list` and `difs tier list`")


_make_group(policy_app, "policy", "policies")
_make_group(tier_app, "tier", "tiers")
