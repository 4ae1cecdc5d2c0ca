"""``difs manager`` (the management server) and the shared plumbing of the user commands.

``register(app)`` adds the ``manager`` command and the ``policy``, ``tier``,
``app``, ``node`` and ``volume`` groups (each in its own ``*_cmds.py``). The
user commands talk to the manager over HTTP: ``--manager URL`` (or
``DIFS_MANAGER``, default http://127.0.0.1:8600) and ``--token`` (or
``DIFS_TOKEN``; on the manager's own machine the admin token file in the data
dir is used when neither is given). ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from difs.manager.client import DEFAULT_URL, ManagerClient, ManagerError, ManagerUnreachable
from difs.manager.config import default_data_dir

console = Console()
err_console = Console(stderr=True)

ManagerOpt = Annotated[str, typer.Option("--manager", envvar="DIFS_MANAGER", help="Manager URL.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="DIFS_TOKEN", help="Admin or node token (default: the local admin token file)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]

_HINTS = {
    401: "give the admin token with --token or DIFS_TOKEN (the manager keeps it in <data dir>/admin-token)",
    403: "this needs another token: the admin token, or the token of the node concerned",
    404: "check the name (list them with the matching `list` command)",
    412: "someone changed it meanwhile: read it again and retry",
}


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err_console.print(f"[dim]hint:[/] {hint}", highlight=False)
    raise typer.Exit(code)


def _local_admin_token() -> str | None:
    path = default_data_dir() / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@contextmanager
def client(manager: str, token: str | None) -> Iterator[ManagerClient]:
    """A client whose errors become one clear message and an exit code."""
    c = ManagerClient(manager or DEFAULT_URL, token=token or _local_admin_token())
    try:
        yield c
    except ManagerUnreachable as exc:
        fail(str(exc), "is the manager running? start it with `difs manager` (or point --manager / DIFS_MANAGER at it)", 2)
    except ManagerError as exc:
        p = exc.problem
        lines = [f"{p.get('title', 'error')} ({exc.status}): {p.get('detail', '')}"]
        for e in p.get("errors") or []:
            lines.append(f"  - {e}")
        detail = str(p.get("detail", ""))
        for u in p.get("unmet") or []:
            lines.append(f"  - unmet {u.get('service')}: {u.get('reason')}")
        for r in p.get("rejected") or []:
            lines.append(f"  - {r.get('kind')} {r.get('candidate')}: {'; '.join(r.get('reasons', []))}")
        if p.get("unmet") or p.get("rejected"):  # the detail already has the reasons inline
            lines[0] = f"{p.get('title', 'error')} ({exc.status}): {detail.split(':')[0]}:"
        hint = _HINTS.get(exc.status)
        if p.get("type", "").endswith("infeasible"):
            hint = "choose a policy the fleet can meet, or add capable nodes (see `difs node list`)"
        fail("\n".join(lines), hint)
    finally:
        c.close()


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        render(data)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console.print(t)


STATE_STYLE = {"compliant": "green", "non_compliant": "bold red", "unknown": "yellow",
               "alive": "green", "expired": "bold red", "registered": "yellow"}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """``4096``, ``512M``, ``10G``, ``1GiB``, ``2T`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", text.lower())
    if m is None:
        raise typer.BadParameter(f"{text!r} is not a size: use e.g. 4096, 512M, 10G, 1T")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def register(app: typer.Typer) -> None:
    from difs.cli import app_cmds, node_cmds, policy_cmds, volume_cmds

    app.command("manager")(manager)
    app.add_typer(policy_cmds.policy_app, name="policy")
    app.add_typer(policy_cmds.tier_app, name="tier")
    app.add_typer(app_cmds.app_app, name="app")
    app.add_typer(node_cmds.node_app, name="node")
    app.add_typer(volume_cmds.volume_app, name="volume")


def manager(
    db: Annotated[str | None, typer.Option("--db", envvar="DIFS_DB", help="Database URL (default: SQLite file in the data dir; postgresql://... for PostgreSQL).")] = None,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve the API and dashboard on.")] = "127.0.0.1:8600",
    admin_token: Annotated[str | None, typer.Option("--admin-token", envvar="DIFS_ADMIN_TOKEN", help="Admin token (default: kept in <data dir>/admin-token, created on first start).", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", envvar="DIFS_DATA_DIR", help="Where the default database and admin token live.")] = None,
    sweep_interval: Annotated[float, typer.Option("--sweep-interval", min=0.1, help="Seconds between lease expiry sweeps.")] = 5.0,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body accepted (e.g. 1M); larger ones get 413 before they are read.")] = "1M",
    limit_concurrency: Annotated[int, typer.Option("--limit-concurrency", min=1, help="Connections open at once; more are closed as soon as they are accepted.")] = 1000,
    keep_alive_timeout: Annotated[float, typer.Option("--keep-alive-timeout", min=0.1, help="Seconds a connection has to send a whole request (after connecting or after its last response) before it is closed.")] = 5.0,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the management server (REST API, dashboard at /, metrics at /metrics)."""
    from pydantic import SecretStr

    from difs.manager import serve

    from difs.manager.app import create_app
    from difs.manager.config import Settings, default_database_url, load_or_create_admin_token

    from difs.util.logs import setup_logging

    setup_logging(level=log_level)  # one line per event; rate-limited lines carry their counts
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    directory = data_dir or default_data_dir()
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        fail(f"--listen {listen!r} is not HOST:PORT", "e.g. --listen 127.0.0.1:8600")
    host = host.strip("[]") or "127.0.0.1"
    if admin_token:
        token = SecretStr(admin_token)
        where = "given on the command line / DIFS_ADMIN_TOKEN"
    else:
        token = load_or_create_admin_token(directory)
        where = f"in {directory / 'admin-token'}"
    url = db or default_database_url(directory)
    try:
        app = create_app(Settings(database_url=url, admin_token=token, sweep_interval_seconds=sweep_interval,
                                  max_body_bytes=parse_size(max_body)))
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # a database we cannot open or migrate
        fail(f"cannot open the database: {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
             "check --db (sqlite:///path/manager.db or postgresql://user@host/db) and that the server is up")
    safe_url = url.split("@")[-1] if "@" in url else url
    logging.getLogger("difs.manager").info(
        "manager on http://%s:%s (database %s; admin token %s)", host, port_text, safe_url, where
    )
    serve.run(app, host=host, port=int(port_text), log_level=log_level.lower(),
              limit_concurrency=limit_concurrency, keep_alive_timeout=keep_alive_timeout)
