"""The ``difs`` command: one entry point, one sub-command per actor or object.

Sub-command modules register themselves on ``app`` here; each lives in its own
file so that the actors' commands can grow independently.
"""

from __future__ import annotations

import typer

from difs import __version__

app = typer.Typer(
    name="difs",
    help="Per-application data-in-flight services over standard iSCSI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"difs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """difs: per-application data-in-flight services over standard iSCSI."""


def _register() -> None:
    from difs.cli import controller_cmd, host_cmd, up_cmd

    up_cmd.register(app)
    controller_cmd.register(app)
    host_cmd.register(app)
    try:
        from difs.cli import manager_cmds
    except ImportError:  # pragma: no cover - while the manager is being built
        return
    manager_cmds.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
