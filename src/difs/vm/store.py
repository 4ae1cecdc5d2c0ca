"""Where VMs are kept: their definitions in one JSON file, each VM's run in its own directory.

``<data dir>/vms.json`` (0600) holds the definitions; ``<data dir>/vms/NAME/`` (0700) holds
the VM's ``state.json`` (its last or current run: state, pids, accelerator, disk, timings,
the guest's result), its serial ``console.log``, QEMU's ``qemu.log`` and the monitor's
``vm.log``.  The data dir is 0700; every write is atomic (a temporary file renamed over the
old one) under an exclusive lock, so two ``difs vm`` commands never lose each other's change.
No token or secret is ever written here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from difs.vm.errors import DefinitionError

WORKLOADS = ("verify", "persist-write", "persist-check", "steady")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass
class VmDefinition:
    name: str
    app: str
    workload: str = "verify"
    mib: int = 8
    memory_mib: int = 256
    seconds: int = 10  # steady's duration
    host: str = "host1"
    nbd: str = "127.0.0.1:10809"
    nbd_unix: str | None = None
    seed: str = field(default_factory=lambda: secrets.token_hex(4))  # persist-*'s pattern

    def check(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise DefinitionError(f"{self.name!r} is not a VM name: lower-case letters, digits "
                                  "and '-', at most 63, starting with a letter or digit")
        if self.workload not in WORKLOADS:
            raise DefinitionError(f"unknown workload {self.workload!r}: "
                                  f"one of {', '.join(WORKLOADS)}")
        for what, value, low, high in (("--mib", self.mib, 1, 1 << 20),
                                       ("--memory", self.memory_mib, 128, 1 << 16),
                                       ("--seconds", self.seconds, 1, 86400)):
            if not low <= value <= high:
                raise DefinitionError(f"{what} {value} is out of range {low}..{high}")


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def open_log(path: Path, mode: str = "ab"):
    """A log file of the VM's, created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically with ``data`` as JSON, 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError as exc:
        raise DefinitionError(f"{path} is not valid JSON ({exc}): fix or remove it") from None


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = _private_dir(data_dir)
        self.path = data_dir / "vms.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.data_dir / "vms.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _all(self) -> dict[str, dict[str, Any]]:
        return read_json(self.path, {}).get("vms", {})

    def list(self) -> list[VmDefinition]:
        return [VmDefinition(**d) for _, d in sorted(self._all().items())]

    def get(self, name: str) -> VmDefinition:
        found = self._all().get(name)
        if found is None:
            raise DefinitionError(f"no VM {name!r}: define it with "
                                  f"`difs vm define {name} --app APP`")
        return VmDefinition(**found)

    def define(self, vm: VmDefinition) -> None:
        vm.check()
        with self.locked():
            vms = self._all()
            if vm.name in vms:
                raise DefinitionError(f"VM {vm.name} is already defined")
            vms[vm.name] = asdict(vm)
            write_json(self.path, {"vms": vms})

    def vm_dir(self, name: str) -> Path:
        _private_dir(self.data_dir / "vms")
        return _private_dir(self.data_dir / "vms" / name)

    def state(self, name: str) -> dict[str, Any]:
        return read_json(self.data_dir / "vms" / name / "state.json", {"state": "defined"})

    def set_state(self, name: str, state: dict[str, Any]) -> None:
        with self.locked():
            write_json(self.vm_dir(name) / "state.json", state)

    def update_state(self, name: str, **changes: Any) -> dict[str, Any]:
        with self.locked():
            state = {**self.state(name), **changes}
            write_json(self.vm_dir(name) / "state.json", state)
        return state
