"""``difs up``: the all-in-one difs cluster on loopback — the first thing a new user runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        data_dir: Annotated[Path, typer.Option("--data-dir", "-d", help="Where the cluster keeps its state.")] = Path("var/up"),
        portal: Annotated[str, typer.Option("--portal", help="Controller portal HOST:PORT.")] = "127.0.0.1:3260",
        size: Annotated[str, typer.Option("--size", help="Size of the demo volume.")] = "1G",
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
    ) -> None:
        """Start the all-in-one cluster on loopback and keep it running until Ctrl-C."""
        from difs.controller.config import ControllerConfig, VolumeConfig
        from difs.controller.run import install_uvloop, serve
        from difs.controller.volumes import VolumeError
        from difs.util.logs import setup_logging
        from difs.util.units import parse_size

        setup_logging(level=log_level)
        try:
            cfg = ControllerConfig(name="local", portals=[portal], data_dir=data_dir / "controller",
                                   volumes=[VolumeConfig(name="demo", size=parse_size(size))])
        except ValueError as exc:
            typer.echo(f"difs up: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo("difs up: all-in-one cluster on loopback (Ctrl-C stops it)")
        install_uvloop()
        try:
            asyncio.run(serve(cfg))
        except VolumeError as exc:
            typer.echo(f"difs up: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            typer.echo(f"difs up: {exc}: is something else listening on {portal}? "
                       "Choose another with --portal HOST:PORT", err=True)
            raise typer.Exit(1) from None
