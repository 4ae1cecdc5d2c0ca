"""``difs controller``: run a storage controller (an iSCSI target) on local disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from difs.cli.options import LogFormatOpt, VolumePolicyOpt
from difs.util.units import parse_portal, parse_size

_HELP = """Run a storage controller: an iSCSI target serving volumes from a data directory.

Ad hoc: difs controller --portal 127.0.0.1:3260 --data-dir DIR --volume NAME:SIZE

Each volume is its own target, IQN_PREFIX:CONTROLLER.VOLUME, LUN 0. At start the
controller prints one iscsi://HOST:PORT/IQN/LUN line per volume and portal.

A volume created with the pi1 or pi3 flag is formatted with T10 protection information
(512-byte blocks + 8 bytes of PI, stored with the data). --policy VOL=TIER|FILE.json gives
an ad hoc volume its data-in-flight policy: every I/O is checked against it and the
session it arrives on, and refused (DATA PROTECT 74h/71h) when the session lacks what the
policy requires (e.g. silver: CRC32C data digests, which libiscsi and QEMU cannot offer).
"""


VOLUME_FLAGS = {"ro", "thick", "pi1", "pi3"}


def _per_volume(values: list[str], flag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise typer.BadParameter(f"{value!r}: write VOLUME=VALUE", param_hint=flag)
        out.setdefault(name, []).append(rest)
    return out


def register(app: typer.Typer) -> None:
    @app.command(help=_HELP)
    def controller(
        config_file: Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")] = None,
        portal: Annotated[list[str] | None, typer.Option("--portal", "-p", help="HOST:PORT to listen on (repeatable). Default 127.0.0.1:3260.")] = None,
        advertise_portal: Annotated[list[str] | None, typer.Option("--advertise-portal", help="HOST:PORT the manager gives hosts to reach this controller (repeatable), when it differs from --portal (NAT, a proxy). Default: the --portal addresses.")] = None,
        data_dir: Annotated[Path | None, typer.Option("--data-dir", "-d", help="Where volumes live (created if absent).")] = None,
        name: Annotated[str | None, typer.Option("--name", help="Controller name, part of every target IQN.")] = None,
        volume: Annotated[list[str] | None, typer.Option("--volume", "-v", help="NAME[:SIZE[:ro][:thick][:pi1|:pi3]] to serve (repeatable); created with SIZE if absent (thin unless thick; formatted with T10 PI type 1 or 3 with pi1/pi3), kept if present.")] = None,
        allow: Annotated[list[str] | None, typer.Option("--allow", help="VOLUME=INITIATOR_IQN allowed to log in (repeatable; default: anyone).")] = None,
        chap: Annotated[list[str] | None, typer.Option("--chap", help="VOLUME=USER:SECRET the initiator must authenticate with; VOLUME=USER:@FILE reads the secret from FILE (not shown by ps).")] = None,
        mutual_chap: Annotated[list[str] | None, typer.Option("--mutual-chap", help="VOLUME=USER:SECRET the target answers with (mutual CHAP); VOLUME=USER:@FILE reads it from FILE.")] = None,
        require_digest: Annotated[list[str] | None, typer.Option("--require-digest", help="VOLUME=header|data|both: refuse sessions without CRC32C digests.")] = None,
        policy: VolumePolicyOpt = None,
        app_tag: Annotated[list[str] | None, typer.Option("--app-tag", help="VOLUME=N: the PI application tag the volume expects (checked on PI commands; generated PI carries it). 0..0xfffe.")] = None,
        metrics: Annotated[str | None, typer.Option("--metrics", help="HOST:PORT to serve Prometheus metrics on (per volume and session: commands, bytes, PI checks, refusals; digest work).")] = None,
        manager: Annotated[str | None, typer.Option("--manager", help="Manager URL: serve the volumes it places here, as LUNs of this controller's protocol endpoint.")] = None,
        token: Annotated[str | None, typer.Option("--token", envvar="DIFS_NODE_TOKEN", help="This node's token (from `difs node register NAME --kind controller`).")] = None,
        interval: Annotated[float, typer.Option("--interval", help="Seconds between advertisements / volume syncs.")] = 5.0,
        max_connections: Annotated[int | None, typer.Option("--max-connections", min=1, help="Open iSCSI connections at most (default 1024); more are closed at once.")] = None,
        max_connections_per_address: Annotated[int | None, typer.Option("--max-connections-per-address", min=1, help="Open iSCSI connections at most from one peer address (default 128).")] = None,
        login_timeout: Annotated[float | None, typer.Option("--login-timeout", min=0.001, help="Seconds a new connection has to complete its login before it is closed (default 15).")] = None,
        capacity_iops: Annotated[int | None, typer.Option("--capacity-iops", min=1, help="IOPS this controller can do in all, for QoS (default: calibrated on the data directory at first start and saved there).")] = None,
        capacity_bps: Annotated[str | None, typer.Option("--capacity-bytes-per-second", help="Bytes/s this controller can do in all, for QoS, e.g. 500M (default: calibrated).")] = None,
        log_format: LogFormatOpt = "text",
        log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")] = "info",
    ) -> None:
        from difs.controller.config import (
            Chap,
            ConfigError,
            VolumeConfig,
            load_config,
            resolve_policy,
        )
        from difs.controller.run import run
        from difs.controller.volumes import VolumeError, check_volume_name
        from difs.util.logs import setup_logging

        setup_logging(level=log_level, fmt=log_format)
        try:
            cfg = load_config(config_file)
            updates: dict = {}
            if portal:
                updates["portals"] = portal
            if advertise_portal:
                updates["advertise_portals"] = advertise_portal
            if data_dir is not None:
                updates["data_dir"] = data_dir
            if name:
                updates["name"] = name
            for key, value in (("max_connections", max_connections),
                               ("max_connections_per_address", max_connections_per_address),
                               ("login_timeout", login_timeout),
                               ("capacity_iops", capacity_iops),
                               ("capacity_bytes_per_second",
                                parse_size(capacity_bps) if capacity_bps else None)):
                if value is not None:
                    updates[key] = value
            if metrics:
                parse_portal(metrics)  # a bad HOST:PORT fails here, not after start
                updates["metrics"] = metrics
            if updates:
                cfg = type(cfg).model_validate({**cfg.model_dump(), **updates})
            allows = _per_volume(allow or [], "--allow")
            chaps = _per_volume(chap or [], "--chap")
            mutuals = _per_volume(mutual_chap or [], "--mutual-chap")
            digests = _per_volume(require_digest or [], "--require-digest")
            policies = _per_volume(policy or [], "--policy")
            tags = _per_volume(app_tag or [], "--app-tag")
            for spec in volume or []:
                parts = spec.split(":")
                vname = check_volume_name(parts[0])
                size = parse_size(parts[1]) if len(parts) > 1 and parts[1] else None
                flags = set(parts[2:])
                if flags - VOLUME_FLAGS:
                    raise typer.BadParameter(
                        f"{spec!r}: unknown flag(s) {sorted(flags - VOLUME_FLAGS)}; the flags are "
                        "ro (read-only), thick (space allocated up front), pi1 / pi3 (T10 "
                        "protection information type 1 or 3)", param_hint="--volume")
                if {"pi1", "pi3"} <= flags:
                    raise typer.BadParameter(f"{spec!r}: choose pi1 or pi3", param_hint="--volume")
                tag = None
                if vname in tags:
                    try:
                        tag = int(tags[vname][-1], 0)
                    except ValueError:
                        raise typer.BadParameter(f"{vname}={tags[vname][-1]}: write a number "
                                                 "0..0xfffe", param_hint="--app-tag") from None
                digest = (digests.get(vname) or ["none"])[-1]
                if digest not in ("none", "header", "data", "both"):
                    raise typer.BadParameter(f"{vname}={digest}: use header, data or both",
                                             param_hint="--require-digest")
                cfg = cfg.with_volume(VolumeConfig(
                    name=vname, size=size, read_only="ro" in flags, thin="thick" not in flags,
                    allowed_initiators=allows.get(vname),
                    chap=Chap.parse(chaps[vname][-1], flag="--chap") if vname in chaps else None,
                    mutual_chap=Chap.parse(mutuals[vname][-1], flag="--mutual-chap") if vname in mutuals else None,
                    require_header_digest=digest in ("header", "both"),
                    require_data_digest=digest in ("data", "both"),
                    pi_type=1 if "pi1" in flags else 3 if "pi3" in flags else None,
                    app_tag=tag,
                    policy=policies[vname][-1] if vname in policies else None,
                ))
            unknown = (set(allows) | set(chaps) | set(mutuals) | set(digests) | set(policies)
                       | set(tags)) - {v.name for v in cfg.volumes}
            if unknown:
                raise typer.BadParameter(f"no such volume(s) {sorted(unknown)}: add --volume NAME:SIZE")
            if not cfg.volumes and not manager:
                raise typer.BadParameter("no volumes to serve: add --volume NAME:SIZE (e.g. --volume demo:1G), a [[volume]] in --config, or --manager URL")
            if manager and not token:
                raise typer.BadParameter("--manager needs this node's --token (DIFS_NODE_TOKEN); get one with `difs node register NAME --kind controller`")
            for vc in cfg.volumes:
                if vc.policy is not None:
                    resolve_policy(vc.policy)  # a bad tier or file fails here, with its reason
        except (ConfigError, VolumeError, ValueError) as exc:
            typer.echo(f"difs controller: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            run(cfg, manager=manager, token=token, interval=interval)
        except VolumeError as exc:
            typer.echo(f"difs controller: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            typer.echo(f"difs controller: {exc} (is another target already listening there? "
                       "choose another --portal)", err=True)
            raise typer.Exit(1) from None
