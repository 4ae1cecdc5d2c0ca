"""``difs volume ...``: volumes and storage containers, with capacity accounting."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difs.cli.common import client, console, emit, human_size, parse_size, table
from difs.cli.options import JsonOpt, ManagerOpt, TokenOpt
from difs.nodelink.client import DEFAULT_URL

volume_app = typer.Typer(help="Volumes and storage containers.", no_args_is_help=True)


def _vol_rows(d: list[dict[str, Any]]) -> None:
    table("Volumes", ["name", "id", "application", "size", "controller/container", "LUN", "policy v", "class", "initiators"], [
        [v["name"], v["id"], v["application"], human_size(v["size_bytes"]), f"{v['controller']}/{v['container']}",
         v["lun"], v["policy_version"], v["service_class"], ", ".join(v["allowed_initiators"]) or "-"] for v in d])


@volume_app.command("list")
def list_(
    app: Annotated[str | None, typer.Option("--app", help="Only this application's volumes.")] = None,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """List volumes."""
    with client(manager, token) as c:
        data = c.request("GET", "/volumes", params={"application": app} if app else None)
    emit(data, as_json, _vol_rows)


@volume_app.command("show")
def show(ref: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Show a volume (by id or name)."""
    with client(manager, token) as c:
        data = c.request("GET", f"/volumes/{ref}")
    emit(data, as_json, lambda v: _vol_rows([v]))


@volume_app.command("create")
def create(
    app: Annotated[str, typer.Argument(help="The application the volume belongs to.")],
    size: Annotated[str, typer.Option("--size", help="4096, 512M, 10G ...")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Add a volume to an application (placed where its policy can be met)."""
    with client(manager, token) as c:
        data = c.request("POST", "/volumes", json={"application": app, "size_bytes": parse_size(size),
                                                   **({"name": name} if name else {})})
    emit(data, as_json, lambda v: _vol_rows([v]))


@volume_app.command("resize")
def resize(ref: str, size: Annotated[str, typer.Option("--size")], manager: ManagerOpt = DEFAULT_URL,
           token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Grow a volume (volumes never shrink)."""
    with client(manager, token) as c:
        data = c.request("PATCH", f"/volumes/{ref}", json={"size_bytes": parse_size(size)})
    emit(data, as_json, lambda v: _vol_rows([v]))


@volume_app.command("delete")
def delete(ref: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Delete a volume (its application must not be bound)."""
    with client(manager, token) as c:
        c.request("DELETE", f"/volumes/{ref}")
    console.print(f"volume {ref} deleted")


def _cont_rows(d: list[dict[str, Any]]) -> None:
    table("Containers", ["controller", "name", "capacity", "allocated", "free", "volumes", "PI", "source"], [
        [x["controller"], x["name"], human_size(x["capacity_bytes"]), human_size(x["allocated_bytes"]),
         human_size(x["free_bytes"]), x["volumes"], ",".join(map(str, x["pi_types"])) or "-",
         x["source"] + ("" if x["advertised"] or x["source"] == "declared" else " (gone)")] for x in d])


@volume_app.command("containers")
def containers(manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List storage containers with capacity accounting."""
    with client(manager, token) as c:
        data = c.request("GET", "/containers")
    emit(data, as_json, _cont_rows)


@volume_app.command("container-create")
def container_create(
    controller: str, name: str, capacity: Annotated[str, typer.Option("--capacity")],
    pi: Annotated[list[int] | None, typer.Option("--pi", help="PI type the container stores (repeat).")] = None,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Declare a storage container on a controller."""
    with client(manager, token) as c:
        data = c.request("POST", "/containers", json={"controller": controller, "name": name,
                                                      "capacity_bytes": parse_size(capacity), "pi_types": pi or []})
    emit(data, as_json, lambda x: _cont_rows([x]))


@volume_app.command("container-resize")
def container_resize(controller: str, name: str, capacity: Annotated[str, typer.Option("--capacity")],
                     manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Change a container's capacity (never below what its volumes use)."""
    with client(manager, token) as c:
        data = c.request("PATCH", f"/containers/{controller}/{name}", json={"capacity_bytes": parse_size(capacity)})
    emit(data, as_json, lambda x: _cont_rows([x]))


@volume_app.command("container-delete")
def container_delete(controller: str, name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Delete an empty container."""
    with client(manager, token) as c:
        c.request("DELETE", f"/containers/{controller}/{name}")
    console.print(f"container {controller}/{name} deleted")
