"""What a manager-driven controller serves, kept in its data directory.

In manager mode the volumes a controller serves, the LUN each sits at, the initiator it is
visible to and the policy it enforces all come from the manager (``GET
/controllers/NAME/volumes``). The manager's last answer is kept here, so that a controller
restarted while the manager is away serves exactly what it served before (the volumes' own
metadata holds their data, identity and policy; this file holds which of them are served,
where, and to whom)::

    DATA_DIR/manager-state.json
    {"format": 1, "controller": "ctl1", "volumes": [ControllerVolume, ...], "sha256": "..."}

``sha256`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the rest of the
document, so a torn or edited file is detected and refused as a whole — nothing of it is
served — with :class:`StateError` saying why. It is a checksum, not a signature: whoever can
write the data directory (0700, the controller's user) could rewrite both. The file is 0600
and replaced atomically (write a temporary file, fsync, rename, fsync the directory); it is
rewritten only when the manager's answer changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from difs.controller.errors import StateError, VolumeError
from difs.controller.volumes import check_volume_name, replace_private

FORMAT = 1
FILE_NAME = "manager-state.json"
MAX_LUN = 16383


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def encode_state(controller: str, volumes: list[dict[str, Any]]) -> str:
    body = {"format": FORMAT, "controller": controller, "volumes": volumes}
    doc = {**body, "sha256": hashlib.sha256(_canonical(body)).hexdigest()}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def decode_state(text: str, *, controller: str, source: Path) -> list[dict[str, Any]]:
    """The volumes of a persisted state, or StateError if it cannot be trusted."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{source}: not JSON, torn or edited ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sha256"), str):
        raise StateError(f"{source}: no checksum")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    if not hmac.compare_digest(hashlib.sha256(_canonical(body)).hexdigest(), doc["sha256"]):
        raise StateError(f"{source}: checksum mismatch, torn or edited")
    if body.get("format") != FORMAT:
        raise StateError(f"{source}: format {body.get('format')!r}, this difs reads {FORMAT}")
    if body.get("controller") != controller:
        raise StateError(f"{source}: written for controller {body.get('controller')!r}, "
                         f"not {controller!r}")
    return check_volumes(body.get("volumes"), source=source)


def check_volumes(volumes: Any, *, source: Path) -> list[dict[str, Any]]:
    """Each volume has what serving it needs: a valid name, a LUN, a size, initiators."""
    if not isinstance(volumes, list):
        raise StateError(f"{source}: 'volumes' is not a list")
    names, where = set(), set()
    for v in volumes:
        try:
            if not isinstance(v, dict):
                raise ValueError("not an object")
            check_volume_name(v.get("name") if isinstance(v.get("name"), str) else "")
            lun, size, inits = v.get("lun"), v.get("size_bytes"), v.get("allowed_initiators")
            if type(lun) is not int or not 0 <= lun <= MAX_LUN:
                raise ValueError(f"LUN {lun!r}")
            if type(size) is not int or size <= 0:
                raise ValueError(f"size {size!r}")
            if not isinstance(inits, list) or not all(isinstance(i, str) for i in inits):
                raise ValueError(f"allowed initiators {inits!r}")
            if not isinstance(v.get("policy"), (dict, type(None))):
                raise ValueError("policy is not an object")
        except (ValueError, VolumeError) as exc:
            raise StateError(f"{source}: volume {v.get('name') if isinstance(v, dict) else v!r}"
                             f": {exc}") from None
        if v["name"] in names or (inits[:1] and (inits[0], lun) in where):
            raise StateError(f"{source}: volume {v['name']!r} or its LUN {lun} is listed twice")
        names.add(v["name"])
        if inits:
            where.add((inits[0], lun))
    return volumes


class ServedState:
    """The persisted state of one controller's data directory."""

    def __init__(self, data_dir: Path, *, controller: str) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.controller = controller
        self._written: str | None = None  # what the file holds, once known

    def load(self) -> list[dict[str, Any]] | None:
        """The volumes last saved (None: no state saved yet); StateError if untrustworthy."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{self.path}: unreadable ({exc})") from None
        volumes = decode_state(text, controller=self.controller, source=self.path)
        self._written = text
        return volumes

    def save(self, volumes: list[dict[str, Any]]) -> bool:
        """Persist ``volumes`` unless the file already holds them; True if written."""
        text = encode_state(self.controller, volumes)
        if text == self._written:
            return False
        replace_private(self.path, text)
        self._written = text
        return True
