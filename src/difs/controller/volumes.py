"""Volumes on the controller's local disk.

A volume is a few files in the controller's data directory::

    DATA_DIR/volumes/NAME.img    the blocks (sparse file, punched on UNMAP, when thin;
                                 preallocated when thick) - a raw image either way
    DATA_DIR/volumes/NAME.json   its metadata: identity, size, flags, PI format, policy
    DATA_DIR/volumes/NAME.atomic one-record journal of WRITE ATOMIC (empty at rest)
    DATA_DIR/volumes/NAME.reservations
                                 persistent reservations registered with APTPL=1 (JSON,
                                 absent otherwise), so they survive a controller restart

and, for a volume formatted with T10 protection information (``pi_type`` 1 or 3, fixed
when the volume is created; see :mod:`difs.storage.pistore` for the crash-consistent
layout)::

    DATA_DIR/volumes/NAME.pi     8 bytes of PI per block, complemented (holes = escape PI)
    DATA_DIR/volumes/NAME.pilog  intent log of PI writes (empty after a flush); replayed
                                 when the volume is opened after a crash

The metadata is the volume's own record of what it is — its stable identity
(the UUID its SCSI designators derive from) and the data-in-flight policy that
the controller enforces on it — so a controller restarted without its manager
still knows both. Both JSON files are replaced atomically (write, fsync, rename, fsync dir).

The data directory (when created here) and ``volumes/`` are mode 0700; every volume file is
created 0600, and a volume file found more open than that (made by an older difs) is set to
0600 when the volume is opened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from difs.controller.storefaults import StoreFaultLog
from difs.scsi.device import LogicalUnit, LuIdentity
from difs.scsi.store import BlockStore
from difs.storage.filestore import FileStore
from difs.storage.pistore import FileIntentLog, PiStore
from difs.controller.errors import VolumeError
from difs.util.logs import log_event
from difs.util.units import format_size

log = logging.getLogger("difs.controller")
PI_TYPES = (0, 1, 3)

FORMAT_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


def check_volume_name(name: str) -> str:
    if not _NAME.match(name):
        raise VolumeError(
            f"invalid volume name {name!r}: use 1-63 lower-case letters, digits, '.' or '-', "
            "starting with a letter or digit (it becomes part of the target IQN)"
        )
    return name


@dataclass(frozen=True)
class VolumeMeta:
    name: str
    uuid: str
    size: int
    block_size: int = 512
    read_only: bool = False
    thin: bool = True
    policy: dict[str, Any] | None = None
    allowed_initiators: list[str] | None = None
    #: T10 protection type the volume is formatted with (0: none, 1 or 3)
    pi_type: int = 0
    #: expected application tag in PI (checked when set; generated PI carries it, or 0)
    app_tag: int | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return self.size // self.block_size

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> VolumeMeta:
        try:
            raw = json.loads(text)
            known = {f for f in cls.__dataclass_fields__}
            meta = cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise VolumeError(f"{source}: unreadable volume metadata ({exc}); restore it or "
                              "remove the volume's .json and .img to recreate it") from exc
        if meta.format_version > FORMAT_VERSION:
            raise VolumeError(f"{source}: written by a newer difs (format {meta.format_version})")
        return meta

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def volume_provisioning(meta: VolumeMeta) -> str:
    """The SCSI logical block provisioning of a volume: a thin volume is thin (UNMAP gives
    space back); a thick one is resource provisioned (its space stays reserved, UNMAP
    zeroes blocks in place)."""
    return "thin" if meta.thin else "resource"


class VolumeDirectory:
    """The volumes of one controller data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "volumes"
        Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)

    def data_path(self, name: str) -> Path:
        return self.root / f"{name}.img"

    def journal_path(self, name: str) -> Path:
        return self.root / f"{name}.atomic"

    def pi_path(self, name: str) -> Path:
        return self.root / f"{name}.pi"

    def pi_log_path(self, name: str) -> Path:
        return self.root / f"{name}.pilog"

    def open_store(self, meta: VolumeMeta) -> BlockStore:
        """The volume's blocks, with the atomic-write journal (replayed if needed); for a
        PI-formatted volume also its PI and intent log, replayed before the first I/O."""
        self._make_private(meta.name)
        data = FileStore.open(self.data_path(meta.name), size=meta.size,
                              journal=self.journal_path(meta.name))
        if not meta.pi_type:
            return data
        try:
            pi = FileStore.open(self.pi_path(meta.name), size=meta.num_blocks * 8)
            store = PiStore(data, pi, pi_type=meta.pi_type, app_tag=meta.app_tag,
                            log=FileIntentLog(self.pi_log_path(meta.name)),
                            block_size=meta.block_size)
        except BaseException:
            data.close()
            raise
        recovery = store.recover()
        if recovery.records:
            log_event(log, "PI intent log replayed", volume=meta.name,
                      records=recovery.records, rolled_forward=recovery.rolled_forward,
                      kept=recovery.kept, poisoned=len(recovery.poisoned))
        if recovery.poisoned:
            log_event(log, "torn blocks after a crash", level=logging.WARNING,
                      volume=meta.name, lbas=list(recovery.poisoned[:16]),
                      hint="they fail the guard check (ABORTED COMMAND 10h/01h) until rewritten")
        return store

    def _make_private(self, name: str) -> None:
        """Volume files made by an older difs with group/other access become 0600."""
        for path in (self.data_path(name), self.journal_path(name), self.pi_path(name),
                     self.pi_log_path(name), self.meta_path(name), self.reservations_path(name)):
            try:
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
            except FileNotFoundError:
                pass

    def open_unit(self, meta: VolumeMeta, *, device_name: str) -> tuple[LogicalUnit, BlockStore]:
        """The volume as a SCSI logical unit: its store, identity, provisioning, and its
        persistent reservations (reloaded, and saved again on every change while APTPL
        is set — before the PERSISTENT RESERVE OUT command's GOOD, SPC-4 5.13.3)."""
        name = meta.name
        store = self.open_store(meta)

        def save_reservations(state: dict) -> None:
            self.save_reservations(name, state if state.get("aptpl") else None)

        lu = LogicalUnit(
            store=store, identity=LuIdentity.from_uuid(meta.uuid, device_name=device_name),
            block_size=meta.block_size, read_only=meta.read_only,
            provisioning=volume_provisioning(meta),
            persistent_state=self.load_reservations(name),
            on_persistent_change=save_reservations, on_store_fault=StoreFaultLog(name))
        return lu, store

    def meta_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json"))

    def load(self, name: str) -> VolumeMeta:
        path = self.meta_path(check_volume_name(name))
        try:
            return VolumeMeta.from_json(path.read_text(), source=path)
        except FileNotFoundError:
            raise VolumeError(f"no volume {name!r} in {self.root}") from None

    def ensure(
        self, name: str, size: int | None, *, block_size: int = 512, read_only: bool = False,
        thin: bool = True, pi_type: int | None = None, app_tag: int | None = None,
        policy: dict[str, Any] | None = None, policy_info: dict[str, Any] | None = None,
    ) -> VolumeMeta:
        """Return volume ``name``, creating it with ``size`` bytes if absent.

        An existing volume is kept as it is; asking for a different size, or for a PI
        format it was not created with (``pi_type`` None: as it is), is an error rather
        than a silent resize or reformat.  ``policy`` (a ``PolicyServices`` document) and
        ``app_tag``, when given, replace what the metadata holds; ``policy_info`` goes to
        ``extra`` (e.g. ``policy_name``, ``policy_version``).
        """
        check_volume_name(name)
        if pi_type not in (None, *PI_TYPES):
            raise VolumeError(f"volume {name!r}: PI type must be 1 or 3, not {pi_type}")
        if app_tag is not None and not 0 <= app_tag < 0xFFFF:
            raise VolumeError(f"volume {name!r}: application tag must be 0..0xfffe")
        if self.meta_path(name).exists():
            meta = self.load(name)
            if size is not None and size != meta.size:
                raise VolumeError(
                    f"volume {name!r} exists with size {format_size(meta.size)}, not "
                    f"{format_size(size)}: omit the size to serve it as it is, or use a new name"
                )
            if pi_type is not None and pi_type != meta.pi_type:
                have = f"PI type {meta.pi_type}" if meta.pi_type else "no protection information"
                raise VolumeError(
                    f"volume {name!r} exists with {have}: the PI format is fixed when a volume "
                    "is created; omit the pi flag to serve it as it is, or use a new name")
            updated = replace(meta, read_only=read_only)
            if policy is not None:
                updated = replace(updated, policy=policy,
                                  extra={**updated.extra, **(policy_info or {})})
            if app_tag is not None:
                updated = replace(updated, app_tag=app_tag)
            if updated != meta:
                meta = updated
                self.save(meta)
            return meta
        if size is None:
            raise VolumeError(f"volume {name!r} does not exist: give its size, e.g. {name}:1G")
        if size <= 0 or size % block_size:
            raise VolumeError(
                f"volume {name!r}: size {size} must be a positive multiple of the "
                f"{block_size}-byte block size"
            )
        meta = VolumeMeta(name=name, uuid=str(uuid.uuid4()), size=size, block_size=block_size,
                          read_only=read_only, thin=thin, pi_type=pi_type or 0, app_tag=app_tag,
                          policy=policy, extra=dict(policy_info or {}))
        files = [(self.data_path(name), size)]
        if meta.pi_type:
            files.append((self.pi_path(name), meta.num_blocks * 8))
        for path, length in files:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, length)
                if not thin:
                    try:
                        os.posix_fallocate(fd, 0, length)
                    except OSError as exc:
                        raise VolumeError(f"volume {name!r}: cannot allocate "
                                          f"{format_size(length)} for a thick volume ({exc}); "
                                          "free space or make it thin") from None
                os.fsync(fd)
            finally:
                os.close(fd)
        self.save(meta)
        return meta

    def save(self, meta: VolumeMeta) -> None:
        self._replace(self.meta_path(meta.name), meta.to_json())

    # --- persistent reservations (APTPL) ---------------------------------------------

    def reservations_path(self, name: str) -> Path:
        return self.root / f"{name}.reservations"

    def load_reservations(self, name: str) -> dict | None:
        """The persistent reservation state saved with APTPL, or None."""
        path = self.reservations_path(name)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise VolumeError(f"{path}: unreadable reservation state ({exc}); remove it to "
                              "start without persistent reservations") from None
        if not isinstance(state, dict):
            raise VolumeError(f"{path}: reservation state is not a JSON object")
        return state

    def save_reservations(self, name: str, state: dict | None) -> None:
        """Persist ``state`` (atomically), or forget it when None."""
        path = self.reservations_path(name)
        if state is None:
            if path.exists():
                path.unlink()
                self._sync_dir()
            return
        self._replace(path, json.dumps(state, indent=2, sort_keys=True) + "\n")

    # --- atomic replacement -------------------------------------------------------

    def _replace(self, final: Path, text: str) -> None:
        replace_private(final, text)

    def _sync_dir(self) -> None:
        sync_dir(self.root)


def replace_private(final: Path, text: str) -> None:
    """Replace ``final`` with ``text`` atomically, mode 0600: a temporary file beside it,
    fsync, rename, fsync the directory — a crash leaves the old file or the new one."""
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a stale .tmp keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    sync_dir(final.parent)


def sync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
