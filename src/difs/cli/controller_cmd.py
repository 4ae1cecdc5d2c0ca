"""``difs controller``: placeholder until the controller adapter lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def controller() -> None:
        """Run a storage controller (iSCSI target)."""
        typer.echo("the controller is being built", err=True)
        raise typer.Exit(1)
