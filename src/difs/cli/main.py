"""The ``difs`` command: one entry point, one sub-command per actor or object.

Sub-command modules register themselves on ``app`` here; each lives in its own
file so that the actors' commands can grow independently.
"""

from __future__ import annotations

import typer

from difs import __version__
from difs.cli import (
    app_cmds,
    controller_cmd,
    host_cmd,
    manager_cmds,
    node_cmds,
    policy_cmds,
    status_cmd,
    up_cmd,
    vm_cmds,
    volume_cmds,
)

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
    up_cmd.register(app)
    controller_cmd.register(app)
    host_cmd.register(app)
    manager_cmds.register(app)
    status_cmd.register(app)
    app.add_typer(policy_cmds.policy_app, name="policy")
    app.add_typer(policy_cmds.tier_app, name="tier")
    app.add_typer(app_cmds.app_app, name="app")
    app.add_typer(node_cmds.node_app, name="node")
    app.add_typer(volume_cmds.volume_app, name="volume")
    app.add_typer(vm_cmds.vm_app, name="vm")


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
