"""``difs up``: the all-in-one difs cluster on loopback — the first thing a new user runs."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        data_dir: Annotated[Path, typer.Option("--data-dir", "-d", help="Where the cluster keeps its state and logs.")] = Path("var/up"),
        manager: Annotated[str, typer.Option("--manager-listen", help="Manager HOST:PORT.")] = "127.0.0.1:8600",
        portal: Annotated[str, typer.Option("--portal", help="Controller portal HOST:PORT.")] = "127.0.0.1:3260",
        nbd: Annotated[str, typer.Option("--nbd", help="Host NBD server HOST:PORT.")] = "127.0.0.1:10809",
        size: Annotated[str, typer.Option("--size", help="Size of each demo application's disk.")] = "256M",
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
    ) -> None:
        """Start manager, controller and host on loopback with two demo applications;
        keep them running until Ctrl-C."""
        from difs.allinone import UpConfig, UpError, bring_up, summary

        cfg = UpConfig(data_dir=data_dir, manager_listen=manager, portal=portal, nbd=nbd,
                       app_size=size, log_level=log_level)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        typer.echo("difs up: starting the all-in-one cluster on loopback")
        try:
            cluster = bring_up(cfg, lambda msg: typer.echo(f"  {msg}"))
        except UpError as exc:
            typer.echo(f"difs up: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        typer.echo(summary(cluster))
        try:
            while not stop.is_set():
                stop.wait(0.5)
                cluster.check_alive()
        except KeyboardInterrupt:
            pass
        except UpError as exc:
            typer.echo(f"difs up: {exc}", err=True)
            cluster.stop()
            raise typer.Exit(1) from None
        typer.echo("difs up: stopping")
        cluster.stop()
        typer.echo("difs up: stopped")
