"""The host's persisted bindings: what it needs to start its applications without the manager.

A host that follows a manager keeps the last bindings the manager gave it (each
application's policy and version, its volume's controller, portals, target and LUN)
in ``<state dir>/bindings.json``. When the host starts and the manager cannot be
reached, it starts those applications from this file; once the manager answers,
the manager's bindings win.

The file is written atomically (a temporary file in the same directory, fsync,
rename, fsync of the directory) with mode 0600, and carries an HMAC-SHA256 of its
body under a key kept beside it (``state.key``, 32 random bytes, 0600, made on the
first save). A file that is torn, edited, written for another manager or node, or
whose key is gone is refused whole (:class:`StateRefused`): nothing of it is applied.

File layout (JSON)::

    {"format": 1, "hmac": "<hex>",
     "body": {"manager": URL, "node": NAME, "saved_at": ISO-8601,
              "bindings": [ {application, policy, policy_version, volumes: [...]}, ... ]}}

The HMAC covers the body serialised with sorted keys and no spaces.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from difs.host.errors import HostError

STATE_FILE = "bindings.json"
KEY_FILE = "state.key"
FORMAT = 1

#: the fields of a binding (as the manager sends it) that starting an application needs
PERSISTED_FIELDS = ("application", "host", "initiator_iqn", "policy", "policy_version",
                    "service_class", "volumes")


class StateRefused(HostError):
    """The persisted bindings cannot be trusted or do not belong to this host: none is used."""


def default_state_dir(node: str) -> Path:
    """``var/host-NODE`` under the working directory (like the controller's ``var/controller``)."""
    return Path("var") / f"host-{node}"


def persisted(bindings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The part of the manager's bindings that is kept (no report fields such as state)."""
    return [{k: b[k] for k in PERSISTED_FIELDS if k in b} for b in bindings]


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _key(directory: Path, *, create: bool) -> bytes | None:
    path = directory / KEY_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
        key = secrets.token_bytes(32)
        _write_atomic(path, key.hex().encode() + b"\n")
        return key
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise StateRefused(f"{path} is not a 32-byte hex key: the persisted bindings cannot be "
                           "checked (remove both files to start over)")
    return key


class BindingStore:
    """The persisted bindings of one host (node) following one manager."""

    def __init__(self, directory: Path, *, manager: str, node: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.manager = manager
        self.node = node

    def save(self, bindings: list[dict[str, Any]]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = _key(self.directory, create=True)
        assert key is not None
        body = {"manager": self.manager, "node": self.node,
                "saved_at": datetime.now(UTC).isoformat(), "bindings": persisted(bindings)}
        doc = {"format": FORMAT, "hmac": _mac(key, body), "body": body}
        _write_atomic(self.path, json.dumps(doc, indent=1).encode() + b"\n")

    def load(self) -> list[dict[str, Any]] | None:
        """The persisted bindings; None when there are none. Raises :class:`StateRefused`."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateRefused(f"{self.path} cannot be read: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
            body, mac = doc["body"], doc["hmac"]
            if doc.get("format") != FORMAT:
                raise StateRefused(f"{self.path} has format {doc.get('format')!r}, not {FORMAT}")
        except (ValueError, KeyError, TypeError):
            raise StateRefused(f"{self.path} is not a whole bindings file (torn or edited)") from None
        key = _key(self.directory, create=False)
        if key is None:
            raise StateRefused(f"{self.path}: its key {self.directory / KEY_FILE} is missing, "
                               "so it cannot be checked")
        if not isinstance(mac, str) or not hmac.compare_digest(_mac(key, body), mac):
            raise StateRefused(f"{self.path} failed its integrity check (torn or edited)")
        if body.get("manager") != self.manager or body.get("node") != self.node:
            raise StateRefused(f"{self.path} was written for node {body.get('node')!r} of manager "
                               f"{body.get('manager')!r}, not {self.node!r} of {self.manager!r}")
        bindings = body.get("bindings")
        if not isinstance(bindings, list) or not all(isinstance(b, dict) for b in bindings):
            raise StateRefused(f"{self.path} holds no list of bindings")
        return bindings
