"""The controller's configuration: a TOML file, command-line flags, or both.

Example file (every key optional except a volume's name)::

    [controller]
    name = "ctl1"
    portals = ["127.0.0.1:3260", "127.0.0.2:3260"]
    data_dir = "/var/lib/difs/ctl1"

    [[volume]]
    name = "db1"
    size = "10G"                      # needed only to create it
    allowed_initiators = ["iqn.2026-11.io.difs:host1"]
    chap = { user = "db1", secret = "s3cret-16-chars!" }   # or secret_file = "/etc/difs/db1.chap"
    mutual_chap = { user = "ctl1", secret = "other-16-chars!!" }
    require_header_digest = true
    require_data_digest = false
    pi_type = 1                       # formatted with T10 PI type 1 (or 3) when created
    app_tag = 0x0d1f                  # expected PI application tag (optional)
    policy = "silver"                 # a tier, or a policy document FILE.json

Flags given on the command line are added to (volumes) or override (portals,
data dir, name) what the file says. Validation errors name the offending key.
"""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from difs.controller.errors import ConfigError
from difs.util.credentials import read_secret_file, resolve_user_secret
from difs.util.units import parse_portal, parse_size

IQN_PREFIX = "iqn.2026-11.io.difs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Chap(_Strict):
    """CHAP credentials; in TOML the secret may be ``secret_file = PATH`` (read at load)."""

    user: str = Field(min_length=1, max_length=255)
    secret: str = Field(min_length=1, max_length=255, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _secret_file(cls, value: object) -> object:
        if isinstance(value, dict) and "secret_file" in value:
            value = dict(value)
            if "secret" in value:
                raise ValueError("give secret or secret_file, not both")
            value["secret"] = read_secret_file(value.pop("secret_file"), what="chap.secret_file")
        return value

    @classmethod
    def parse(cls, text: str, *, flag: str) -> Chap:
        """``USER:SECRET``, or ``USER:@PATH`` with the secret in the file at PATH."""
        user, sep, secret = resolve_user_secret(text, what=flag).partition(":")
        if not sep or not user or not secret:
            raise ConfigError(f"{flag} {text!r}: write USER:SECRET")
        return cls(user=user, secret=secret)


class VolumeConfig(_Strict):
    name: str
    size: int | None = None
    read_only: bool = False
    thin: bool = True
    allowed_initiators: list[str] | None = None
    chap: Chap | None = None
    mutual_chap: Chap | None = None
    require_header_digest: bool = False
    require_data_digest: bool = False
    #: T10 PI type to format the volume with when it is created (None: as it is / none)
    pi_type: Literal[1, 3] | None = None
    app_tag: int | None = Field(None, ge=0, le=0xFFFE)
    #: a tier name or the path of a policy document (JSON), stored in the volume's metadata
    policy: str | None = None

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value


class ControllerConfig(_Strict):
    name: str = Field(default_factory=lambda: socket.gethostname().split(".")[0].lower() or "difs")
    portals: list[str] = ["127.0.0.1:3260"]
    #: the portals the manager hands to hosts, when they reach this controller at another
    #: address than it listens on (NAT, a proxy, a load balancer); empty: ``portals``
    advertise_portals: list[str] = []
    data_dir: Path = Path("var/controller")
    iqn_prefix: str = IQN_PREFIX
    volumes: list[VolumeConfig] = []
    nop_interval: float | None = 30.0
    #: HOST:PORT of the Prometheus metrics endpoint (None: no metrics server)
    metrics: str | None = None
    #: open iSCSI connections at most, in all and from one peer address (more are closed at
    #: once); seconds a connection has to complete its login
    max_connections: int = Field(1024, ge=1)
    max_connections_per_address: int = Field(128, ge=1)
    login_timeout: float = Field(15.0, gt=0)
    #: what the controller can do in all, for QoS (None: calibrated on the data directory
    #: at first start, see difs.controller.capacity)
    capacity_iops: int | None = Field(None, ge=1, le=100_000_000)
    capacity_bytes_per_second: int | None = Field(None, ge=1, le=1 << 50)

    @field_validator("portals")
    @classmethod
    def _portals(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one portal is needed")
        for portal in value:
            parse_portal(portal)
        return value

    @field_validator("advertise_portals")
    @classmethod
    def _advertised(cls, value: list[str]) -> list[str]:
        for portal in value:
            parse_portal(portal)
        return value

    def target_name(self, volume: str) -> str:
        return f"{self.iqn_prefix}:{self.name}.{volume}"

    def with_volume(self, volume: VolumeConfig) -> ControllerConfig:
        if any(v.name == volume.name for v in self.volumes):
            raise ConfigError(f"volume {volume.name!r} is configured twice")
        return self.model_copy(update={"volumes": [*self.volumes, volume]})


def load_config(path: Path | None) -> ControllerConfig:
    """Read and validate a TOML configuration file (or the defaults)."""
    if path is None:
        return ControllerConfig()
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    section = dict(raw.pop("controller", {}))
    section["volumes"] = raw.pop("volume", [])
    if raw:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(raw))}; "
                          "expected [controller] and [[volume]]")
    try:
        return ControllerConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def resolve_policy(spec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tier name (gold, silver, bronze) or a policy document FILE.json -> (the
    ``PolicyServices`` document as stored in ``VolumeMeta.policy``, its name and version)."""
    from difs.policy.document import PolicyValidationError, validate_policy
    from difs.policy.tiers import DEFAULT_TIERS

    if spec in DEFAULT_TIERS:
        doc = DEFAULT_TIERS[spec]
    elif spec.endswith(".json"):
        try:
            doc = validate_policy(json.loads(Path(spec).read_text()))
        except (OSError, ValueError, RecursionError) as exc:  # too deep nesting: RecursionError
            detail = exc if isinstance(exc, (OSError, PolicyValidationError)) else f"not JSON: {exc}"
            raise ConfigError(f"policy file {spec}: {detail}") from None
    else:
        raise ConfigError(f"unknown tier {spec!r}; known: {', '.join(DEFAULT_TIERS)} "
                          "(or a policy document FILE.json)")
    services = doc.services.normalized().model_dump(mode="json", exclude_none=True)
    return services, {"policy_name": doc.name, "policy_version": doc.version}


def policy_pi_type(services: dict[str, Any] | None) -> int:
    """The PI type a policy (``PolicyServices`` document) requires, 0 for none."""
    integrity = (services or {}).get("integrity") or {}
    return int(integrity.get("protection_information") or 0)
