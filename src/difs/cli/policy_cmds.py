"""``difs policy ...`` and ``difs tier ...``: the policy catalogue.

Services are given as flags (``--data-digest --pi 1 --auth mutual_chap
--reservation-iops 500 ...``), as JSON (``--services '{"qos": {...}}'``) or
from a file (``--file policy.json``, either the services or a whole policy
document); ``--from NAME`` starts from an existing policy or tier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from difs.cli.manager_cmds import JsonOpt, ManagerOpt, TokenOpt, client, console, emit, fail, table
from difs.nodelink.client import DEFAULT_URL

policy_app = typer.Typer(help="Policies: named sets of data-in-flight services.", no_args_is_help=True)
tier_app = typer.Typer(help="Tiers: named policies (gold, silver, bronze and your own).", no_args_is_help=True)


class ServiceFlags:
    """The service flags shared by policy, tier and app commands."""

    def __init__(
        self,
        *,
        file: Path | None = None,
        services_json: str | None = None,
        header_digest: bool = False,
        data_digest: bool = False,
        pi: int | None = None,
        auth: str | None = None,
        tls: bool = False,
        at_host_encryption: bool = False,
        reservation_iops: int | None = None,
        limit_iops: int | None = None,
        reservation_bps: int | None = None,
        limit_bps: int | None = None,
        weight: int | None = None,
        latency_ms: float | None = None,
        dscp: str | None = None,
        exclusive: bool = False,
        isolation_tag: str | None = None,
        vlan: int | None = None,
    ) -> None:
        self.__dict__.update(locals())
        del self.__dict__["self"]

    def given(self) -> bool:
        return any(v not in (None, False) for v in self.__dict__.values())

    def build(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The services document: ``base`` (from --from), then file/JSON, then flags on top."""
        services: dict[str, Any] = json.loads(json.dumps(base or {}))
        if self.file is not None:
            try:
                doc = json.loads(self.file.read_text())
            except (OSError, ValueError) as exc:
                fail(f"cannot read {self.file}: {exc}")
            services = doc.get("services", doc) if isinstance(doc, dict) else fail(f"{self.file} is not a JSON object")
        if self.services_json is not None:
            try:
                services = json.loads(self.services_json)
            except ValueError as exc:
                fail(f"--services is not valid JSON: {exc}", "e.g. --services '{\"integrity\": {\"data_digest\": true}}'")

        def put(service: str, key: str, value: Any) -> None:
            section = services.get(service) or {}
            section[key] = value
            services[service] = section

        f = self
        if f.header_digest:
            put("integrity", "header_digest", True)
        if f.data_digest:
            put("integrity", "data_digest", True)
        if f.pi is not None:
            put("integrity", "protection_information", f.pi)
        if f.auth is not None:
            put("security", "authentication", f.auth)
        if f.tls:
            put("security", "tls", True)
        if f.at_host_encryption:
            put("security", "at_host_encryption", True)
        for key, value in (
            ("reservation_iops", f.reservation_iops),
            ("limit_iops", f.limit_iops),
            ("reservation_bytes_per_second", f.reservation_bps),
            ("limit_bytes_per_second", f.limit_bps),
            ("weight", f.weight),
            ("latency_target_ms", f.latency_ms),
            ("dscp", f.dscp),
        ):
            if value is not None:
                put("qos", key, value)
        if f.exclusive:
            put("isolation", "exclusive", True)
        if f.isolation_tag is not None:
            put("isolation", "tag", f.isolation_tag)
        if f.vlan is not None:
            put("isolation", "vlan", f.vlan)
        return services


# Typer needs explicit parameters; these Annotated aliases keep the signatures short.
FileOpt = Annotated[Path | None, typer.Option("--file", help="JSON file: the services, or a policy document.")]
ServicesOpt = Annotated[str | None, typer.Option("--services", help="The services as JSON.")]
HdOpt = Annotated[bool, typer.Option("--header-digest", help="Require CRC32C header digests.")]
DdOpt = Annotated[bool, typer.Option("--data-digest", help="Require CRC32C data digests.")]
PiOpt = Annotated[int | None, typer.Option("--pi", help="Require T10 PI of this type (1 or 3).")]
AuthOpt = Annotated[str | None, typer.Option("--auth", help="none, chap or mutual_chap.")]
TlsOpt = Annotated[bool, typer.Option("--tls", help="Require TLS 1.3 on the path.")]
XtsOpt = Annotated[bool, typer.Option("--at-host-encryption", help="Require AES-XTS at the host.")]
ResIopsOpt = Annotated[int | None, typer.Option("--reservation-iops", help="Reserved IOPS.")]
LimIopsOpt = Annotated[int | None, typer.Option("--limit-iops", help="IOPS limit.")]
ResBpsOpt = Annotated[int | None, typer.Option("--reservation-bps", help="Reserved bytes/s.")]
LimBpsOpt = Annotated[int | None, typer.Option("--limit-bps", help="Bytes/s limit.")]
WeightOpt = Annotated[int | None, typer.Option("--weight", help="Proportional share 1..10000.")]
LatOpt = Annotated[float | None, typer.Option("--latency-ms", help="Latency target in ms.")]
DscpOpt = Annotated[str | None, typer.Option("--dscp", help="DSCP 0..63 or a class (af41, ef, cs1...).")]
ExclOpt = Annotated[bool, typer.Option("--exclusive", help="Only the bound host's initiator sees the volume.")]
TagOpt = Annotated[str | None, typer.Option("--isolation-tag", help="Isolation domain tag.")]
VlanOpt = Annotated[int | None, typer.Option("--vlan", help="VLAN 1..4094.")]


def _flags(**kw: Any) -> ServiceFlags:
    return ServiceFlags(**kw)


def show_policy(p: dict[str, Any]) -> None:
    console.print(f"[bold]{p['kind']} {p['name']}[/]  version {p['version']}  service class {p['service_class']}"
                  + ("  (built in)" if p.get("builtin") else ""))
    if p.get("description"):
        console.print(f"  {p['description']}")
    console.print("  requires: " + (", ".join(p["summary"]) or "nothing (best effort)"))


def _make_group(group: typer.Typer, kind: str, plural: str) -> None:
    @group.command("list")
    def list_(manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        with client(manager, token) as c:
            data = c.request("GET", f"/{plural}")
        emit(data, as_json, lambda d: table(
            plural.capitalize(), ["name", "version", "class", "requires", "description"],
            [[p["name"] + (" *" if p.get("builtin") else ""), p["version"], p["service_class"],
              ", ".join(p["summary"]) or "-", p["description"]] for p in d]))

    @group.command("show")
    def show(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        with client(manager, token) as c:
            data = c.request("GET", f"/{plural}/{name}")
        emit(data, as_json, show_policy)

    @group.command("create")
    def create(
        name: str,
        description: Annotated[str, typer.Option("--description", "-d")] = "",
        from_: Annotated[str | None, typer.Option("--from", help="Start from this policy or tier.")] = None,
        file: FileOpt = None, services: ServicesOpt = None, header_digest: HdOpt = False, data_digest: DdOpt = False,
        pi: PiOpt = None, auth: AuthOpt = None, tls: TlsOpt = False, at_host_encryption: XtsOpt = False,
        reservation_iops: ResIopsOpt = None, limit_iops: LimIopsOpt = None, reservation_bps: ResBpsOpt = None,
        limit_bps: LimBpsOpt = None, weight: WeightOpt = None, latency_ms: LatOpt = None, dscp: DscpOpt = None,
        exclusive: ExclOpt = False, isolation_tag: TagOpt = None, vlan: VlanOpt = None,
        manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
    ) -> None:
        flags = _flags(file=file, services_json=services, header_digest=header_digest, data_digest=data_digest, pi=pi,
                       auth=auth, tls=tls, at_host_encryption=at_host_encryption, reservation_iops=reservation_iops,
                       limit_iops=limit_iops, reservation_bps=reservation_bps, limit_bps=limit_bps, weight=weight,
                       latency_ms=latency_ms, dscp=dscp, exclusive=exclusive, isolation_tag=isolation_tag, vlan=vlan)
        with client(manager, token) as c:
            base = None
            if from_ is not None:
                src = _lookup(c, from_)
                base = src["services"]
                description = description or src["description"]
            data = c.request("POST", f"/{plural}", json={"name": name, "description": description, "services": _clean(flags.build(base))})
        emit(data, as_json, show_policy)

    @group.command("update")
    def update(
        name: str,
        description: Annotated[str | None, typer.Option("--description", "-d")] = None,
        if_version: Annotated[int | None, typer.Option("--if-version", help="Only if still at this version.")] = None,
        file: FileOpt = None, services: ServicesOpt = None, header_digest: HdOpt = False, data_digest: DdOpt = False,
        pi: PiOpt = None, auth: AuthOpt = None, tls: TlsOpt = False, at_host_encryption: XtsOpt = False,
        reservation_iops: ResIopsOpt = None, limit_iops: LimIopsOpt = None, reservation_bps: ResBpsOpt = None,
        limit_bps: LimBpsOpt = None, weight: WeightOpt = None, latency_ms: LatOpt = None, dscp: DscpOpt = None,
        exclusive: ExclOpt = False, isolation_tag: TagOpt = None, vlan: VlanOpt = None,
        manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False,
    ) -> None:
        flags = _flags(file=file, services_json=services, header_digest=header_digest, data_digest=data_digest, pi=pi,
                       auth=auth, tls=tls, at_host_encryption=at_host_encryption, reservation_iops=reservation_iops,
                       limit_iops=limit_iops, reservation_bps=reservation_bps, limit_bps=limit_bps, weight=weight,
                       latency_ms=latency_ms, dscp=dscp, exclusive=exclusive, isolation_tag=isolation_tag, vlan=vlan)
        with client(manager, token) as c:
            body: dict[str, Any] = {}
            if flags.given():
                current = c.request("GET", f"/{plural}/{name}")
                body["services"] = _clean(flags.build(current["services"]))
            if description is not None:
                body["description"] = description
            headers = {"If-Match": f'"{if_version}"'} if if_version is not None else None
            data = c.request("PUT", f"/{plural}/{name}", json=body, headers=headers)
        emit(data, as_json, show_policy)

    @group.command("delete")
    def delete(name: str, manager: ManagerOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
        with client(manager, token) as c:
            c.request("DELETE", f"/{plural}/{name}")
        console.print(f"{kind} {name} deleted")

    list_.__doc__ = f"List {plural}."
    show.__doc__ = f"Show one {kind}."
    create.__doc__ = f"Create a {kind} (flags, --services JSON, --file, or --from another)."
    update.__doc__ = f"Change a {kind}: flags apply on top of its current services (a new version)."
    delete.__doc__ = f"Delete a {kind}."


def _clean(services: dict[str, Any]) -> dict[str, Any]:
    """Drop ``null`` services and fields (the API returns documents in full); keep the rest as given,
    so the manager judges unknown names."""
    out = {}
    for name, section in services.items():
        if isinstance(section, dict):
            out[name] = {k: v for k, v in section.items() if v is not None}
        elif section is not None:
            out[name] = section
    return out


def _lookup(c: Any, name: str) -> dict[str, Any]:
    from difs.nodelink.client import ManagerError

    for plural in ("tiers", "policies"):
        try:
            return c.request("GET", f"/{plural}/{name}")
        except ManagerError as exc:
            if exc.status != 404:
                raise
    fail(f"no policy or tier named {name!r}", "list them with `difs policy list` and `difs tier list`")


_make_group(policy_app, "policy", "policies")
_make_group(tier_app, "tier", "tiers")
