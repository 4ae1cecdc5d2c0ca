"""``difs manager``: run the management server (REST API, dashboard, metrics).

The user commands that talk to it (``policy``, ``tier``, ``app``, ``node``, ``volume``) are
in their own ``*_cmds.py``, on the plumbing of :mod:`difs.cli.common` and the options of
:mod:`difs.cli.options`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from difs.cli.common import fail, parse_size
from difs.manager.config import default_data_dir


def register(app: typer.Typer) -> None:
    app.command("manager")(manager)


def manager(
    db: Annotated[str | None, typer.Option("--db", envvar="DIFS_DB", help="Database URL (default: SQLite file in the data dir; postgresql://... for PostgreSQL).")] = None,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve the API and dashboard on.")] = "127.0.0.1:8600",
    admin_token: Annotated[str | None, typer.Option("--admin-token", envvar="DIFS_ADMIN_TOKEN", help="Admin token (default: kept in <data dir>/admin-token, created on first start).", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", envvar="DIFS_DATA_DIR", help="Where the default database and admin token live.")] = None,
    sweep_interval: Annotated[float, typer.Option("--sweep-interval", min=0.1, help="Seconds between lease expiry sweeps.")] = 5.0,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body accepted (e.g. 1M); larger ones get 413 before they are read.")] = "1M",
    limit_concurrency: Annotated[int, typer.Option("--limit-concurrency", min=1, help="Connections open at once; more are closed as soon as they are accepted.")] = 1000,
    keep_alive_timeout: Annotated[float, typer.Option("--keep-alive-timeout", min=0.1, help="Seconds a connection has to send a whole request (after connecting or after its last response) before it is closed.")] = 5.0,
    db_wait: Annotated[float, typer.Option("--db-wait", min=0, help="Seconds to wait at start for a database that is unreachable (retried with backoff, each retry logged) before giving up.")] = 60.0,
    qos_headroom: Annotated[float, typer.Option("--qos-headroom", min=0.0, max=0.99, help="Share of each controller's advertised capacity (IOPS and bytes/s) that reservations may not take: admission control refuses a placement or policy change past it.")] = 0.1,
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
                                  max_body_bytes=parse_size(max_body), db_wait_seconds=db_wait,
                                  qos_headroom=qos_headroom))
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
