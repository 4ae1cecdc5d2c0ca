"""``difs app ...``: applications and their entry in the central depository.

``create`` places the volume and stores the policy (addDIFS); ``set-policy``
changes it live (updateDIFS, refused with the reasons when it cannot be met; a change
that needs the data on a new volume is a migration, followed until it ends, or
``--abort``-ed);
``get-policy`` / ``remove-policy`` are getDIFS / deleteDIFS; ``show`` gives the
placement, binding (with the state its host reports) and compliance: expected vs observed
per service and the evidence it was judged on (``--json`` carries the same).

Exit codes beyond the common ones (1: refused or failed, 2: manager unreachable):
``create --dry-run`` exits 1 when no placement exists; ``start`` exits 1 when the
host reports the application failed (with its reason) and 3 when the host has not
reported it running within ``--timeout``; ``set-policy`` exits 1 when a migration is
aborted or fails (with its reason).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from difs.cli.common import client, console, emit, err_console, fail, human_size, parse_size, styled, table
from difs.cli.options import (
    SERVICE_FLAGS,
    JsonOpt,
    ManagerOpt,
    PolicyOpt,
    ServiceFlags,
    TierOpt,
    TokenOpt,
    clean_services,
    with_service_flags,
)
from difs.nodelink.client import DEFAULT_URL

app_app = typer.Typer(help="Applications: create, place, set their policy, see compliance.", no_args_is_help=True)


def _choice(tier: str | None, policy: str | None, flags: ServiceFlags, *, required: bool) -> dict[str, Any]:
    given = [x for x in (tier, policy) if x is not None]
    if len(given) > 1 or (given and flags.given()):
        fail("give one of --tier, --policy or service flags", "e.g. --tier gold, or --data-digest --pi 1")
    if given:
        return {"policy": given[0]}
    if flags.given():
        return {"services": clean_services(flags.build())}
    if required:
        fail("say which policy: --tier NAME, --policy NAME or service flags", "e.g. `--tier silver`")
    return {}


def binding_state(b: dict[str, Any]) -> str:
    """What the host reports of a binding: ``running``, ``failed: why``, ... ."""
    state = b.get("state")
    if state is None:
        return "not reported by the host yet"
    return f"{state}: {b['state_reason']}" if b.get("state_reason") else state


def render_app(a: dict[str, Any]) -> None:
    pol = a.get("policy")
    console.print(f"[bold]application {a['name']}[/]  compliance {styled(a['compliance']['state'])}")
    if pol:
        console.print(f"  policy: {pol.get('source') or 'inline'} version {pol['version']}, service class "
                      f"{pol['service_class']}: {', '.join(pol['summary']) or 'nothing required'}")
    else:
        console.print("  policy: none")
    if a.get("placement"):
        ch = a["placement"]["choice"]
        console.print(f"  placed on {ch['controller']}/{ch['container']}" + (f", reachable by host {ch['host']}" if ch.get("host") else ""))
        for r in a["placement"]["rejected"]:
            console.print(f"    not {r['kind']} {r['candidate']}: {'; '.join(r['reasons'])}", highlight=False)
    b = a.get("binding")
    console.print(f"  bound to host {b['host']} ({b['initiator_iqn']}), {binding_state(b)}" if b
                  else "  not bound to a host", highlight=False)
    if a["volumes"]:
        table(None, ["volume", "id", "size", "controller/container", "LUN", "policy v", "allowed initiators"],
              [[v["name"], v["id"], human_size(v["size_bytes"]), f"{v['controller']}/{v['container']}", v["lun"],
                v["policy_version"], ", ".join(v["allowed_initiators"]) or "-"] for v in a["volumes"]])
    render_compliance(a["compliance"], title=None)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"<={v:g} ms"


def render_compliance(comp: dict[str, Any], *, title: str | None) -> None:
    """Expected vs observed per service, then the evidence it was judged on (one line per
    controller session x volume and per host path)."""
    if comp["services"]:
        table(title, ["service", "expected", "observed", "state"],
              [[s["service"], s["expected"], s["observed"], styled(s["state"])] for s in comp["services"]])
    fresh = comp.get("fresh_seconds")
    evidence = comp.get("evidence") or []
    if not evidence:
        if fresh is not None:
            console.print(f"  no evidence from the data path in the last {fresh:g} s", highlight=False)
        return
    table(f"Evidence (windows reported in the last {fresh:g} s; age when judged)" if fresh is not None else "Evidence",
          ["reported by", "path", "services settled", "I/Os", "bytes", "refused", "p50", "p99", "window", "age"],
          [[f"{e['side']} {e['node']}",
            f"{e['controller']}#{e['channel']}" + (f" {e['volume']} from {e['initiator']}" if e["side"] == "controller" else ""),
            ", ".join(e["services"]) or "none", e["ios"], human_size(e["bytes"]), e["refused"],
            _ms(e["p50_ms"]), _ms(e["p99_ms"]), f"{e['window_seconds']:g} s", f"{e['age_seconds']:.0f} s"]
           for e in evidence])


@app_app.command("create")
@with_service_flags
def create(
    name: str,
    size: Annotated[str, typer.Option("--size", help="Volume size: 4096, 512M, 10G ...")],
    tier: TierOpt = None, policy: PolicyOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Place where this host can reach.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show where it would go and why.")] = False,
    flags: ServiceFlags = SERVICE_FLAGS,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create an application with a policy (tier, policy or flags) and a volume of --size."""
    body = {"size_bytes": parse_size(size), **_choice(tier, policy, flags, required=False),
            **({"host": host} if host else {})}
    with client(manager, token) as c:
        if dry_run:
            data = c.request("POST", "/placement", json=body)
            emit(data, as_json, _render_placement)
            if not data["feasible"]:
                raise typer.Exit(1)
            return
        data = c.request("POST", "/apps", json={"name": name, **body})
    emit(data, as_json, render_app)


def _render_placement(p: dict[str, Any]) -> None:
    if p["choice"]:
        ch = p["choice"]
        console.print(f"would place on {ch['controller']}/{ch['container']}" + (f" (host {ch['host']})" if ch["host"] else ""))
    else:
        console.print("[bold red]no placement possible[/]")
    table("Rejected candidates", ["kind", "candidate", "why"],
          [[r["kind"], r["candidate"], "; ".join(r["reasons"])] for r in p["rejected"]])


@app_app.command("list")
def list_(manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List applications with their policy, placement, host and compliance."""
    with client(manager, token) as c:
        data = c.request("GET", "/apps")
    emit(data, as_json, lambda d: table("Applications", ["name", "policy", "version", "volumes", "host", "state", "compliance"], [
        [a["name"], (a["policy"]["source"] or "inline") if a["policy"] else "-", a["policy"]["version"] if a["policy"] else "-",
         "; ".join(f"{v['controller']}/{v['container']} LUN {v['lun']}" for v in a["volumes"]),
         a["binding"]["host"] if a["binding"] else "-",
         binding_state(a["binding"]) if a["binding"] else "-", styled(a["compliance"]["state"])] for a in d]))


@app_app.command("show")
def show(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Show an application: policy, volumes and placement, binding, compliance per service."""
    with client(manager, token) as c:
        data = c.request("GET", f"/apps/{name}")
    emit(data, as_json, render_app)


@app_app.command("set-policy")
@with_service_flags
def set_policy(
    name: str, tier: TierOpt = None, policy: PolicyOpt = None,
    if_version: Annotated[int | None, typer.Option("--if-version", help="Only if the policy is still at this version.")] = None,
    abort: Annotated[bool, typer.Option("--abort", help="Abort the migration in progress (the application stays as it was).")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once a migration has started; do not follow it.")] = False,
    flags: ServiceFlags = SERVICE_FLAGS,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Set (addDIFS) or change (updateDIFS) an application's policy, live; refused with every reason
    if it cannot be met (nothing changes). A change that needs the data on a new volume is a
    migration: its progress is shown until it is done (exit 0), aborted or failed (exit 1)."""
    if abort:
        with client(manager, token) as c:
            data = c.request("DELETE", f"/apps/{name}/migration")
        emit(data, as_json, lambda m: console.print(
            f"migration of {name} aborted: it stays on {m['source_volume']} with its policy"))
        return
    body = {**_choice(tier, policy, flags, required=True), "migrate": True}
    headers = {"If-Match": f'"{if_version}"'} if if_version is not None else None
    with client(manager, token) as c:
        current = c.request("GET", f"/apps/{name}")
        method = "PUT" if current["policy"] is not None else "POST"
        data = c.request(method, f"/apps/{name}/policy", json=body, headers=headers)
        started = data.get("migration")
        if started is None:
            emit(data, as_json, lambda p: console.print(
                f"policy of {name} is now version {p['version']} (service class {p['service_class']}): "
                f"{', '.join(p['summary']) or 'nothing required'}"))
            return
        if not as_json:
            console.print(f"the data of {name} moves to a new volume ({started['target_volume']} on "
                          f"{started['target_controller']}): {'; '.join(started['reasons'])}")
        if no_wait:
            emit(started, as_json, lambda m: console.print(
                f"migration started; follow it with `difs app set-policy` output or GET /apps/{name}/migration"))
            return
        final = _follow_migration(c, name, quiet=as_json)
    if final["state"] == "done":
        emit(final, as_json, lambda m: console.print(
            f"policy of {name} is now version {m['policy_version']}: its data is on {m['target_volume']} "
            f"(I/O paused {m['pause_ms'] or 0:.1f} ms at the switch)"))
        return
    if as_json:
        emit(final, True, print)
    fail(f"migration of {name} {final['state']}: {final.get('error') or 'no reason given'}; "
         f"it stays on {final['source_volume']} with its policy")


def migration_line(m: dict[str, Any], rate: float | None) -> str:
    """``copy 42% (13.4 MiB of 32.0 MiB), 25.1 MiB/s, ETA 1 s``."""
    total = m["bytes_total"] or 1
    done = min(m["bytes_copied"], total)
    line = f"{m['phase'] or m['state']} {100 * done // total}% ({human_size(done)} of {human_size(total)})"
    if rate:
        line += f", {human_size(int(rate))}/s"
        if done < total:
            line += f", ETA {max(0, (total - done) / rate):.0f} s"
    return line


def _follow_migration(c: Any, name: str, *, quiet: bool, poll: float = 0.2) -> dict[str, Any]:
    """Poll the migration until it ends; a line on stderr whenever its phase or percent moves."""
    began, said = time.monotonic(), ""
    while True:
        m = c.request("GET", f"/apps/{name}/migration")
        elapsed = time.monotonic() - began
        rate = m["bytes_copied"] / elapsed if elapsed > 0.5 and m["bytes_copied"] else None
        line = migration_line(m, rate)
        if not quiet and line.split(",")[0] != said:
            err_console.print(line, highlight=False)
            said = line.split(",")[0]
        if m["state"] not in ("copying", "switching"):
            return m
        time.sleep(poll)


@app_app.command("get-policy")
def get_policy(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """getDIFS: the application's policy from the central depository."""
    with client(manager, token) as c:
        data = c.request("GET", f"/apps/{name}/policy")
    emit(data, as_json, lambda p: console.print(
        f"{name}: {p['source'] or 'inline'} version {p['version']}, service class {p['service_class']}: "
        f"{', '.join(p['summary']) or 'nothing required'}"))


@app_app.command("remove-policy")
def remove_policy(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """deleteDIFS: the application keeps running with no data-in-flight services."""
    with client(manager, token) as c:
        c.request("DELETE", f"/apps/{name}/policy")
    console.print(f"policy of {name} removed")


@app_app.command("delete")
def delete(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Delete an application and its volumes (it must not be bound)."""
    with client(manager, token) as c:
        c.request("DELETE", f"/apps/{name}")
    console.print(f"application {name} deleted")


@app_app.command("bind")
def bind(
    name: str,
    initiator: Annotated[str, typer.Option("--initiator", help="The host initiator's IQN.")],
    host: Annotated[str | None, typer.Option("--host", help="The host node (implied by a host token).")] = None,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Bind an application to a host: prints the protocol endpoint, volume ids and LUNs."""
    with client(manager, token) as c:
        data = c.bind(name, initiator_iqn=initiator, host=host)
    emit(data, as_json, lambda b: table(f"{name} bound to {b['host']}", ["volume", "target", "portals", "LUN"], [
        [v["volume_id"], v["target_iqn"], ", ".join(f"{p['address']}:{p['port']}" for p in v["portals"]), v["lun"]]
        for v in b["volumes"]]))


@app_app.command("unbind")
def unbind(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Unbind an application from its host (its LUNs disappear from that initiator)."""
    with client(manager, token) as c:
        c.unbind(name)
    console.print(f"application {name} unbound")


@app_app.command("start")
def start(
    name: str,
    host: Annotated[str, typer.Option("--host", help="The host node to run the application on.")],
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait for the host to report the application running (0: do not wait).")] = 60.0,
    manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Start an application on a host: bind its volumes to the host's initiator (the IQN the
    host advertises), then wait until the host reports it running (exit 0), failed (exit 1,
    with the reason) or --timeout passes (exit 3)."""
    with client(manager, token) as c:
        node = c.request("GET", f"/nodes/{host}")
        if node.get("kind") != "host":
            fail(f"{host} is a {node.get('kind')} node, not a host", "give a host's node name: `difs node list`")
        if not node.get("iqn"):
            fail(f"host {host} has not advertised its initiator name yet",
                 "start it with `difs host --manager ... --name " + host + "` and try again")
        data = c.bind(name, initiator_iqn=node["iqn"], host=host)
        if timeout > 0:
            data = _wait_for_host(c, name, host, timeout)
    if data.get("state") == "failed":
        fail(f"application {name} failed on host {host}: {data.get('state_reason')}",
             f"see `difs app show {name}` and the host's log")
    emit(data, as_json, lambda b: console.print(
        f"application {name} {'running' if b.get('state') == 'running' else 'bound'} on {b['host']}: "
        + ", ".join(f"{v['target_iqn']} LUN {v['lun']}" for v in b["volumes"])))


def _wait_for_host(c: Any, name: str, host: str, timeout: float) -> dict[str, Any]:
    """Poll the binding until its host reports it running or failed; progress on stderr."""
    deadline = time.monotonic() + timeout
    shown: str | None = ""
    while True:
        binding = c.request("GET", f"/apps/{name}")["binding"]
        if binding is None:
            fail(f"application {name} was unbound from {host} while starting")
        state = binding.get("state")
        if state != shown:
            err_console.print(f"{name} on {host}: {binding_state(binding)}", highlight=False)
            shown = state
        if state in ("running", "failed"):
            return binding
        if time.monotonic() >= deadline:
            fail(f"host {host} has not reported {name} running after {timeout:g}s "
                 f"(last: {binding_state(binding)})",
                 f"see `difs app show {name}` and the host's log", code=3)
        time.sleep(0.5)


@app_app.command("stop")
def stop(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Stop an application: unbind it; its host closes the NBD export and forgets its paths."""
    with client(manager, token) as c:
        c.unbind(name)
    console.print(f"application {name} stopped")


@app_app.command("compliance")
def compliance(name: Annotated[str | None, typer.Argument()] = None, manager: ManagerOpt = DEFAULT_URL,
               token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Compliance of one application (expected vs observed per service), or of all."""
    with client(manager, token) as c:
        data = c.request("GET", f"/apps/{name}/compliance" if name else "/compliance")
    def render(d: Any) -> None:
        for comp in d if isinstance(d, list) else [d]:
            render_compliance(comp, title=f"{comp['application']}: {comp['state']}")
    emit(data, as_json, render)
