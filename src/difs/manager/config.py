"""Manager settings: where the database is, the admin token, lease and sweep timing, QoS headroom."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr


#: the share of a controller's advertised capacity that reservations may not take
DEFAULT_QOS_HEADROOM = 0.1


def default_data_dir() -> Path:
    """``$DIFS_DATA_DIR``, else ``$XDG_DATA_HOME/difs``, else ``~/.local/share/difs``."""
    if env := os.environ.get("DIFS_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "difs"


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'manager.db'}"


def load_or_create_admin_token(data_dir: Path) -> SecretStr:
    """The admin token kept in ``<data_dir>/admin-token`` (mode 0600), created on first use."""
    path = data_dir / "admin-token"
    if path.exists():
        return SecretStr(path.read_text().strip())
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return SecretStr(token)


@dataclass(frozen=True)
class Settings:
    database_url: str
    admin_token: SecretStr
    #: how often the server expires leases without a request (the compliance of the applications
    #: on a node whose lease ran out is re-evaluated then)
    sweep_interval_seconds: float = 5.0
    #: evidence windows nodes reported longer ago than this no longer count as observations
    stats_fresh_seconds: float = 120.0
    #: request bodies larger than this are refused (413) before they are read
    max_body_bytes: int = 1 << 20
    #: at start, how long to wait for a database that is unreachable before giving up
    db_wait_seconds: float = 0.0
    #: admission control keeps this share (0..1) of each controller's capacity free of reservations
    qos_headroom: float = DEFAULT_QOS_HEADROOM
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.admin_token.get_secret_value()) < 8:
            raise ValueError("the admin token must be at least 8 characters long")
        if not 0.0 <= self.qos_headroom < 1.0:
            raise ValueError(f"the QoS headroom is a share of capacity, 0 <= h < 1, not {self.qos_headroom}")
