"""Who is calling: the admin (users, the CLI) or a node (with its own token).

Tokens are bearer tokens. The admin token is compared in constant time; node
tokens are 32 random bytes, stored only as their SHA-256 and looked up by it.
No token ever reaches a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from difs.manager.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    is_admin: bool
    node_id: str | None = None
    node_name: str | None = None
    node_kind: str | None = None

    @property
    def label(self) -> str:
        return "admin" if self.is_admin else f"{self.node_kind} {self.node_name}"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden(f"{self.label} may not do this: it needs the admin token")

    def require_self_or_admin(self, node_name: str) -> None:
        if not self.is_admin and self.node_name != node_name:
            raise Forbidden(f"{self.label} may only act for itself, not for {node_name}")


ADMIN = Principal(is_admin=True)


def new_node_token() -> str:
    return "difs-node-" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_admin_token(given: str, admin_token: str) -> bool:
    return hmac.compare_digest(given.encode(), admin_token.encode())
