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
        demo: Annotated[bool, typer.Option("--demo", help="Run the two-application scenario once it is up, and print the figures.")] = False,
        demo_mib: Annotated[int, typer.Option("--demo-mib", help="MiB each demo application writes and reads.")] = 64,
        metrics: Annotated[str, typer.Option("--host-metrics", help="Host Prometheus metrics HOST:PORT.")] = "127.0.0.1:9101",
        controller_metrics: Annotated[str, typer.Option("--controller-metrics", help="Controller Prometheus metrics HOST:PORT.")] = "127.0.0.1:9102",
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
    ) -> None:
        """Start manager, controller and host on loopback with two demo applications;
        keep them running until Ctrl-C, restarting any that dies."""
        from difs.allinone import UpConfig, UpError, bring_up, summary

        cfg = UpConfig(data_dir=data_dir, manager_listen=manager, portal=portal, nbd=nbd,
                       app_size=size, log_level=log_level, host_metrics=metrics,
                       controller_metrics=controller_metrics)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        typer.echo("difs up: starting the all-in-one cluster on loopback")
        try:
            cluster = bring_up(cfg, lambda msg: typer.echo(f"  {msg}"),
                               report=lambda msg: typer.echo(f"difs up: {msg}"))
        except UpError as exc:
            typer.echo(f"difs up: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        try:
            typer.echo(summary(cluster))
            if demo:
                _demo(cluster, demo_mib)
        except KeyboardInterrupt:
            typer.echo("difs up: stopping")
            cluster.stop()
            raise typer.Exit(130) from None
        # from here on Ctrl-C (like SIGTERM) asks for a clean stop
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        if demo:
            typer.echo("\nstill running for your own clients; Ctrl-C stops everything.")
        # a child that dies from here on is reported and restarted; only a stop request ends
        # the loop (the handlers just set the event: nothing is reaped or restarted after it)
        try:
            while not stop.wait(0.2):
                cluster.supervise()
        except KeyboardInterrupt:
            pass
        finally:  # whatever ends the loop, no child outlives difs up
            typer.echo("difs up: stopping")
            cluster.stop()
        typer.echo("difs up: stopped")


def _demo(cluster, demo_mib: int) -> None:
    from difs.allinone import UpError, demo_table, mixed_figures, run_demo

    typer.echo(f"\ndemo: both applications at once, each writes then reads back {demo_mib} MiB "
               "through the host")
    try:
        result = run_demo(cluster, size_mib=demo_mib, say=lambda m: typer.echo(m))
        typer.echo(demo_table(result))
        problems = mixed_figures(result.apps)
        if problems:
            raise UpError("the applications' figures are mixed: " + "; ".join(problems))
    except UpError as exc:
        typer.echo(f"difs up: demo failed: {exc}", err=True)
        cluster.stop()
        raise typer.Exit(1) from None
