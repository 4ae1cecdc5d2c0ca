"""``difs host``: serve applications' disks over NBD through policy-satisfying iSCSI paths."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from difs.cli.options import AppPolicyOpt, LogFormatOpt

_HELP = """Run a host: each application's volume is an NBD export named after it.

Example: difs host --app db=iscsi://127.0.0.1:3260/iqn.2026-11.io.difs:local.db/0 --policy db=silver

Then any NBD client is the application: qemu-img info nbd://127.0.0.1:10809/db

With --manager the host follows the applications bound to it and keeps the last
bindings in --state-dir: restarted while the manager is down, it starts them from
there, and follows the manager again once it answers.

Paths log in with CHAP when --chap is given (mutual with --mutual-chap), send a
NOP-Out when idle for --nop-interval seconds and are dropped (their commands
re-sent on another satisfying path) when the controller stops answering.
"""


def register(app: typer.Typer) -> None:
    @app.command(help=_HELP)
    def host(
        app_spec: Annotated[Optional[list[str]], typer.Option("--app", help="NAME=iscsi://HOST:PORT/IQN/LUN (repeatable).")] = None,
        policy: AppPolicyOpt = None,
        nbd: Annotated[str, typer.Option("--nbd", help="NBD listen address HOST:PORT.")] = "127.0.0.1:10809",
        nbd_unix: Annotated[Optional[str], typer.Option("--nbd-unix", help="Also serve NBD on this Unix socket.")] = None,
        nbd_max_connections: Annotated[int, typer.Option("--nbd-max-connections", min=1, help="NBD connections open at once; more are closed as soon as they are accepted.")] = 256,
        nbd_handshake_timeout: Annotated[float, typer.Option("--nbd-handshake-timeout", min=0, help="Seconds an NBD client has from connecting to choosing an export (0: no limit).")] = 10.0,
        nbd_handshake_idle: Annotated[float, typer.Option("--nbd-handshake-idle", min=0, help="Seconds an NBD client may take for one handshake step: its first bytes, each option (0: no limit).")] = 5.0,
        initiator_name: Annotated[str, typer.Option("--initiator-name", help="This host's iSCSI initiator name.")] = "iqn.2026-11.io.difs:host",
        selector: Annotated[str, typer.Option("--path-selector", help="least-outstanding or round-robin.")] = "least-outstanding",
        channels: Annotated[str, typer.Option("--channels", help="Channels per controller, in order: digests, header or plain, each optionally with :DSCP to mark its packets (e.g. digests:af41,plain).")] = "digests,plain",
        path_wait: Annotated[float, typer.Option("--path-wait", help="Seconds an I/O waits for a satisfying path before failing.")] = 30.0,
        chap: Annotated[Optional[str], typer.Option("--chap", envvar="DIFS_CHAP", help="USER:SECRET this host logs in with (CHAP), to every controller; USER:@FILE reads the secret from FILE.")] = None,
        mutual_chap: Annotated[Optional[str], typer.Option("--mutual-chap", envvar="DIFS_MUTUAL_CHAP", help="USER:SECRET the controller must answer with (mutual CHAP; needs --chap); USER:@FILE reads it from FILE.")] = None,
        nop_interval: Annotated[float, typer.Option("--nop-interval", help="Seconds a path may be silent before it sends a NOP-Out keepalive (0: off).")] = 5.0,
        nop_timeout: Annotated[float, typer.Option("--nop-timeout", help="Seconds the controller has to answer a keepalive before the path is dropped.")] = 5.0,
        command_timeout: Annotated[float, typer.Option("--command-timeout", help="Seconds before an unanswered command is aborted (ABORT TASK) and re-sent (0: off).")] = 30.0,
        abort_timeout: Annotated[float, typer.Option("--abort-timeout", help="Seconds the controller has to answer an ABORT TASK before the path is dropped.")] = 5.0,
        login_timeout: Annotated[float, typer.Option("--login-timeout", help="Seconds a path's login may take.")] = 15.0,
        manager: Annotated[Optional[str], typer.Option("--manager", envvar="DIFS_MANAGER", help="Manager URL: follow this host's bindings from it.")] = None,
        token: Annotated[Optional[str], typer.Option("--token", envvar="DIFS_NODE_TOKEN", help="This node's token (from `difs node register`).")] = None,
        name: Annotated[str, typer.Option("--name", help="This host's node name at the manager.")] = "host1",
        interval: Annotated[float, typer.Option("--interval", help="Seconds between advertisements / binding checks.")] = 5.0,
        state_dir: Annotated[Optional[str], typer.Option("--state-dir", help="Where the host keeps the last bindings the manager gave it (HMAC-protected), to start them when the manager is unreachable (default: var/host-NAME).")] = None,
        metrics: Annotated[Optional[str], typer.Option("--metrics", help="Serve Prometheus metrics on HOST:PORT.")] = None,
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
        log_format: LogFormatOpt = "text",
    ) -> None:
        import asyncio

        from difs.controller.run import install_uvloop
        from difs.host.agent import HostConfig, parse_iscsi_url, resolve_policy, serve
        from difs.host.errors import HostError
        from difs.host.pathgroup import ChapSecrets, CredentialBook, parse_chap
        from difs.host.paths import parse_channels
        from difs.host.selection import path_selector
        from difs.host.connection import SessionTimers
        from difs.util.credentials import resolve_user_secret
        from difs.util.logs import setup_logging

        setup_logging(level=log_level, fmt=log_format)
        apps = []
        policies: dict[str, str] = {}
        try:
            for spec in policy or []:
                app_name, sep, tier = spec.partition("=")
                if not sep:
                    raise HostError(f"--policy {spec!r}: write NAME=TIER")
                resolve_policy(tier)
                policies[app_name] = tier
            for spec in app_spec or []:
                app_name, sep, url = spec.partition("=")
                if not sep or not app_name:
                    raise HostError(f"--app {spec!r}: write NAME=iscsi://HOST:PORT/IQN/LUN")
                parse_iscsi_url(url)
                apps.append((app_name, url, policies.get(app_name)))
            unknown = set(policies) - {a[0] for a in apps}
            if unknown:
                raise HostError(f"--policy for unknown application(s) {sorted(unknown)}")
            path_selector(selector)
            channel_specs = parse_channels(channels)
            credentials = CredentialBook()
            if mutual_chap and not chap:
                raise HostError("--mutual-chap needs --chap too (this host proves itself first)")
            if chap:
                credentials = CredentialBook(default=ChapSecrets(
                    parse_chap(resolve_user_secret(chap, what="--chap"), option="--chap"),
                    parse_chap(resolve_user_secret(mutual_chap, what="--mutual-chap"),
                               option="--mutual-chap") if mutual_chap else None))
            timers = SessionTimers(nop_interval=nop_interval or None, nop_timeout=nop_timeout,
                                   command_timeout=command_timeout or None,
                                   abort_timeout=abort_timeout, login_timeout=login_timeout)
        except (HostError, ValueError) as exc:
            typer.echo(f"difs host: {exc}", err=True)
            raise typer.Exit(2) from None
        cfg = HostConfig(initiator_name=initiator_name, nbd_listen=nbd, nbd_unix=nbd_unix,
                         nbd_max_connections=nbd_max_connections,
                         nbd_handshake_timeout=nbd_handshake_timeout,
                         nbd_handshake_idle=nbd_handshake_idle,
                         selector=selector, path_wait=path_wait, applications=apps,
                         channels=channel_specs, manager=manager, token=token, node=name,
                         name=name, manager_interval=interval, state_dir=state_dir,
                         credentials=credentials,
                         timers=timers, metrics=metrics)
        if manager and not token:
            typer.echo("difs host: --manager needs this node's --token (DIFS_NODE_TOKEN); "
                       "get one with `difs node register NAME --kind host`", err=True)
            raise typer.Exit(2)
        install_uvloop()
        try:
            asyncio.run(serve(cfg))
        except (HostError, OSError) as exc:
            typer.echo(f"difs host: {exc}", err=True)
            raise typer.Exit(1) from None
