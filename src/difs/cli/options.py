"""The options more than one ``difs`` command takes, declared once.

* Talking to the manager: ``--manager URL`` (or ``DIFS_MANAGER``, default
  http://127.0.0.1:8600), ``--token`` (or ``DIFS_TOKEN``; on the manager's own machine the
  admin token file in the data dir is used when neither is given) and ``--json``
  (:data:`ManagerOpt`, :data:`TokenOpt`, :data:`JsonOpt`).
* A policy by name: ``difs app``'s ``--tier`` / ``--policy`` (:data:`TierOpt`,
  :data:`PolicyOpt`), and the ad hoc ``--policy KEY=TIER|FILE.json`` of ``difs controller``
  (per volume, :data:`VolumePolicyOpt`) and ``difs host`` (per application,
  :data:`AppPolicyOpt`).
* The service flags of the ``policy``, ``tier`` and ``app`` commands (``--data-digest --pi 1
  --auth mutual_chap --reservation-iops 500 ...``, ``--services JSON``, ``--file``): a
  command decorated with :func:`with_service_flags` declares ``flags: ServiceFlags =
  SERVICE_FLAGS`` where they belong in its ``--help``, and receives them as one
  :class:`ServiceFlags`, which :meth:`ServiceFlags.build` turns into a services document.

Typer needs one parameter per option; these ``Annotated`` aliases keep signatures short.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from difs.cli.common import fail

ManagerOpt = Annotated[str, typer.Option("--manager", envvar="DIFS_MANAGER", help="Manager URL.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="DIFS_TOKEN", help="Admin or node token (default: the local admin token file)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="text or json.")]

TierOpt = Annotated[str | None, typer.Option("--tier", help="Use this tier (gold, silver, bronze, ...).")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="Use this catalogue policy.")]


def _policy_spec(key: str, then: str) -> str:
    return f"{key}=TIER (gold, silver, bronze) or {key}=FILE.json (a policy document){then}"


VolumePolicyOpt = Annotated[list[str] | None, typer.Option("--policy", help=_policy_spec(
    "VOLUME", ": stored in the volume's metadata and enforced on every I/O."))]
AppPolicyOpt = Annotated[list[str] | None, typer.Option("--policy", help=_policy_spec(
    "NAME", "; default bronze."))]


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
            except (OSError, ValueError, RecursionError) as exc:
                fail(f"cannot read {self.file}: {exc}")
            services = doc.get("services", doc) if isinstance(doc, dict) else fail(f"{self.file} is not a JSON object")
        if self.services_json is not None:
            try:
                services = json.loads(self.services_json)
            except (ValueError, RecursionError) as exc:
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


def clean_services(services: dict[str, Any]) -> dict[str, Any]:
    """Drop ``null`` services and fields (the API returns documents in full); keep the rest as given,
    so the manager judges unknown names."""
    out = {}
    for name, section in services.items():
        if isinstance(section, dict):
            out[name] = {k: v for k, v in section.items() if v is not None}
        elif section is not None:
            out[name] = section
    return out


#: (parameter, type, option, default, help) of every service flag, in ``--help`` order;
#: the ``--services`` parameter is ServiceFlags' ``services_json``
_SERVICE_FLAGS: tuple[tuple[str, Any, str, Any, str], ...] = (
    ("file", Path | None, "--file", None, "JSON file: the services, or a policy document."),
    ("services", str | None, "--services", None, "The services as JSON."),
    ("header_digest", bool, "--header-digest", False, "Require CRC32C header digests."),
    ("data_digest", bool, "--data-digest", False, "Require CRC32C data digests."),
    ("pi", int | None, "--pi", None, "Require T10 PI of this type (1 or 3)."),
    ("auth", str | None, "--auth", None, "none, chap or mutual_chap."),
    ("tls", bool, "--tls", False, "Require TLS 1.3 on the path."),
    ("at_host_encryption", bool, "--at-host-encryption", False, "Require AES-XTS at the host."),
    ("reservation_iops", int | None, "--reservation-iops", None, "Reserved IOPS."),
    ("limit_iops", int | None, "--limit-iops", None, "IOPS limit."),
    ("reservation_bps", int | None, "--reservation-bps", None, "Reserved bytes/s."),
    ("limit_bps", int | None, "--limit-bps", None, "Bytes/s limit."),
    ("weight", int | None, "--weight", None, "Proportional share 1..10000."),
    ("latency_ms", float | None, "--latency-ms", None, "Latency target in ms."),
    ("dscp", str | None, "--dscp", None, "DSCP 0..63 or a class (af41, ef, cs1...)."),
    ("exclusive", bool, "--exclusive", False, "Only the bound host's initiator sees the volume."),
    ("isolation_tag", str | None, "--isolation-tag", None, "Isolation domain tag."),
    ("vlan", int | None, "--vlan", None, "VLAN 1..4094."),
)

#: the default of a command's ``flags`` parameter: where :func:`with_service_flags` puts them
SERVICE_FLAGS = ServiceFlags()


def with_service_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` every service flag as an option, in place of its ``flags`` parameter;
    it is called with them gathered in one :class:`ServiceFlags`."""
    sig = inspect.signature(command, eval_str=True)
    params = list(sig.parameters.values())
    at = [p.name for p in params].index("flags")
    flags = [inspect.Parameter(name, params[at].kind, default=default,
                               annotation=Annotated[type_, typer.Option(option, help=help)])
             for name, type_, option, default, help in _SERVICE_FLAGS]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name, *_ in _SERVICE_FLAGS}
        given["services_json"] = given.pop("services")
        return command(**kwargs, flags=ServiceFlags(**given))

    signature = sig.replace(parameters=params[:at] + flags + params[at + 1:])
    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return run
